"""The layer rules of DESIGN.md, enforced two ways: import-linter's contracts (pyproject.toml) and a
walk of every import statement (which also forbids asyncio/socket in amqp/ and core/)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "leveret"

# package -> leveret packages it may import
ALLOWED = {
    "amqp": set(),
    "core": set(),
    "store": set(),
    "events": set(),
    "server": {"amqp", "core", "store"},
    "cli": {"server", "amqp", "core", "store", "events"},
    "testing": {"cli", "server"},
}
# modules the sans-I/O and synchronous layers must never import
FORBIDDEN_STDLIB = {"amqp": {"asyncio", "socket", "selectors", "threading"}, "core": {"asyncio", "socket", "selectors"}}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = path.relative_to(SRC.parent).with_suffix("").parts[: -node.level]
                names.append(".".join((*base, node.module or "")).rstrip("."))
            elif node.module:
                names.append(node.module)
    return names


def test_layers_import_only_downwards() -> None:
    bad = []
    for pkg, allowed in ALLOWED.items():
        for path in (SRC / pkg).rglob("*.py"):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "leveret" and len(parts) > 1 and parts[1] in ALLOWED:
                    if parts[1] != pkg and parts[1] not in allowed:
                        bad.append(f"{path.relative_to(SRC)} imports {name}")
                if parts[0] in FORBIDDEN_STDLIB.get(pkg, set()):
                    bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert not bad, "\n".join(bad)


def test_import_linter_contracts() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], capture_output=True, text=True, cwd=SRC.parents[1])
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_clean() -> None:
    ruff = Path(sys.executable).parent / "ruff"
    root = SRC.parents[1]
    paths = ["src", "tests", "tools", "benchmarks"]
    result = subprocess.run([str(ruff), "check", *paths], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run([str(ruff), "format", "--check", *paths], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_methods_are_up_to_date(tmp_path: Path) -> None:
    root = SRC.parents[1]
    generated = subprocess.run(
        [sys.executable, "tools/gen_methods.py"], capture_output=True, text=True, cwd=root, check=True
    ).stdout
    out = tmp_path / "methods.py"
    out.write_text(generated)
    ruff = Path(sys.executable).parent / "ruff"
    subprocess.run(
        [str(ruff), "format", "-q", "--config", str(root / "pyproject.toml"), str(out)], check=True, cwd=root
    )
    assert out.read_text() == (SRC / "amqp" / "methods.py").read_text()


def test_mypy_strict_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], capture_output=True, text=True, cwd=SRC.parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
