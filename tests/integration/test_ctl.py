"""``leveret ctl`` (through the HTTP API), ``leveret publish`` and ``leveret consume`` (AMQP) as a
shell user runs them, against a real broker."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import BrokerProcess
from .test_http_api import Http


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path_factory.mktemp("ctl") / "data", http=True)
    yield proc
    proc.stop()


def leveret(*args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "leveret", *args], capture_output=True, text=True, input=stdin, timeout=60
    )
    if ok:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def ctl(node: BrokerProcess, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return leveret("ctl", "--url", node.http_url, *args, ok=ok)


def rows(table: str) -> list[list[str]]:
    lines = table.strip().splitlines()
    assert set(lines[1]) <= {"-", " "}
    return [line.split() for line in lines[2:]]


def test_publish_consume_and_lists(node: BrokerProcess, unique: str) -> None:
    assert ctl(node, "declare", "queue", unique).stdout.strip() == f"declared queue {unique}"
    pub = leveret("publish", "--url", node.url, unique, "hello", "--count", "2000", "--persistent")
    assert "published 2000/2000" in pub.stderr
    leveret("publish", "--url", node.url, unique, stdin="line one\nline two\n")
    queues = {r[0]: r for r in rows(ctl(node, "list", "queues").stdout)}
    assert queues[unique][2] == "2002"  # ready
    got = leveret("consume", "--url", node.url, unique, "--count", "2000")
    assert got.stdout.splitlines() == ["hello"] * 2000
    assert "consumed 2000/2000" in got.stderr
    rest = leveret("consume", "--url", node.url, unique, "--idle-timeout", "0.5", "--quiet")
    assert rest.stdout.splitlines() == ["line one", "line two"]
    assert json.loads(ctl(node, "--json", "list", "queues").stdout)[0]["messages"] == 0
    leveret("publish", "--url", node.url, unique, "x", "--count", "3", "--quiet")
    assert ctl(node, "purge", unique).stdout.strip() == f"purged queue {unique}"
    assert any(r[0] == "amq.topic" for r in rows(ctl(node, "list", "exchanges").stdout))
    bindings = rows(ctl(node, "list", "bindings").stdout)
    assert [unique, "queue", unique] in bindings  # the default exchange's: its name column is empty
    ctl(node, "delete", "queue", unique)
    failed = ctl(node, "delete", "queue", unique, ok=False)
    assert failed.returncode == 1 and "404" in failed.stderr


def test_users_vhosts_permissions_policies(node: BrokerProcess, unique: str) -> None:
    vhost = unique + "-v"
    ctl(node, "add-vhost", vhost, "--description", "made by ctl")
    ctl(node, "add-user", unique, "pw", "--tags", "management")
    ctl(node, "set-permissions", unique, "^own-", ".*", ".*", "--vhost", vhost)
    perms = rows(ctl(node, "list", "permissions").stdout)
    assert [unique, vhost, "^own-", ".*", ".*"] in perms
    as_user = ("ctl", "--url", node.http_url, "-u", unique, "-p", "pw", "--vhost", vhost)
    leveret(*as_user, "declare", "queue", "own-1")
    refused = leveret(*as_user, "declare", "queue", "other", ok=False)
    assert refused.returncode == 1 and "refused" in refused.stderr
    ctl(node, "set-policy", "cap", "^own", '{"max-length": 5}', "--vhost", vhost, "--apply-to", "queues")
    assert rows(ctl(node, "list", "policies", "--vhost", vhost).stdout)[0][:4] == ["cap", "^own", "queues", "0"]
    assert [unique, "management"] in rows(ctl(node, "list", "users").stdout)
    ctl(node, "delete", "policy", "cap", "--vhost", vhost)
    ctl(node, "delete", "user", unique)
    ctl(node, "delete", "vhost", vhost)
    assert vhost not in ctl(node, "list", "vhosts").stdout


def test_export_import_with_progress(node: BrokerProcess, unique: str, tmp_path: Path) -> None:
    vhost = unique + "-big"
    defs = {
        "vhosts": [{"name": vhost}],
        "permissions": [{"user": "guest", "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}],
        "queues": [{"name": f"q{i}", "vhost": vhost, "durable": True} for i in range(2500)],
        "exchanges": [{"name": "fan", "vhost": vhost, "type": "fanout", "durable": True}],
        "bindings": [
            {"source": "fan", "vhost": vhost, "destination": f"q{i}", "destination_type": "queue", "routing_key": ""}
            for i in range(10)
        ],
    }
    path = tmp_path / "defs.json"
    path.write_text(json.dumps(defs))
    out = ctl(node, "import", str(path))
    assert "imported 2513/2513" in out.stderr
    api = Http(node.http_url)
    assert api.get(f"/api/queues/{vhost}?page=1&page_size=1")["total_count"] == 2500
    assert len(api.get(f"/api/exchanges/{vhost}/fan/bindings/source")) == 10
    exported = tmp_path / "out.json"
    ctl(node, "export", str(exported))
    back = json.loads(exported.read_text())
    assert sum(1 for x in back["queues"] if x["vhost"] == vhost) == 2500
    assert any(v["name"] == vhost for v in back["vhosts"])
    ctl(node, "delete", "vhost", vhost)
