"""Restart at scale (RELIABILITY.md, "Fault scenarios"): publish 1,000,000 small persistent
messages with confirms (pipelined, ``leveret bench``) to a durable queue, stop the broker with
SIGKILL (or SIGTERM), start it again, and measure the recovery (from the broker's
"message store: ... recovered ... in X s" line), the broker's RSS after recovery, then drain and
count. Optionally adds a few big messages (``--big N`` of ``--big-size`` bytes) first.

    .venv/bin/python benchmarks/restart_1m.py                  # SIGKILL, 1M x 16 bytes
    .venv/bin/python benchmarks/restart_1m.py --signal TERM --messages 200000 --big 3

Prints one JSON line of figures at the end; exits 1 if the drain does not count every message.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import BrokerProcess
from tests.faults.checker import recoveries, recovery_problems

QUEUE = "restart-1m"


def bench(broker: BrokerProcess, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "leveret", "bench", "--uri", broker.url, "--queue", QUEUE, "--keep-queue", "--quiet"]
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"leveret bench failed ({out.returncode}): {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def dir_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / (1 << 20)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--size", type=int, default=16, help="body bytes (16)")
    p.add_argument("--publishers", type=int, default=4)
    p.add_argument("--confirm", type=int, default=2000, help="confirm window per publisher (2000)")
    p.add_argument("--big", type=int, default=0, help="also publish this many big messages first (0)")
    p.add_argument("--big-size", type=int, default=10 * 1024 * 1024, help="bytes per big message (10 MiB)")
    p.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
    p.add_argument("--data-dir", type=Path, default=None)
    args = p.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="leveret-1m-")) / "data"
    per_pub = args.messages // args.publishers
    total = per_pub * args.publishers
    figures: dict[str, Any] = {"messages": total, "size": args.size, "signal": args.signal, "big": args.big}
    broker = BrokerProcess(data_dir)
    try:
        if args.big:
            big = bench(
                broker,
                *("--publishers", "1", "--consumers", "0", "--persistent", "--confirm", "2"),
                *("--size", str(args.big_size), "--publish-count", str(args.big), "--duration", "600"),
            )
            figures["big_confirmed"] = big["confirmed"]
            total += big["confirmed"]
        t0 = time.monotonic()
        pub = bench(
            broker,
            *("--publishers", str(args.publishers), "--consumers", "0", "--persistent"),
            *("--confirm", str(args.confirm), "--size", str(args.size)),
            *("--publish-count", str(per_pub), "--duration", "3600"),
        )
        figures["publish_s"] = round(time.monotonic() - t0, 2)
        figures["publish_rate"] = round(pub["confirmed"] / figures["publish_s"])
        figures["confirmed"] = pub["confirmed"]
        figures["rss_before_mib"] = round(rss_mib(broker.proc.pid), 1)
        figures["data_dir_mib"] = round(dir_mib(data_dir / "msgs"), 1)
        print(f"published: {json.dumps(figures)}", flush=True)
        t0 = time.monotonic()
        broker.restart(kill=args.signal == "KILL")
        figures["restart_wall_s"] = round(time.monotonic() - t0, 2)  # stop + start + recovery, until listening
        last = recoveries(broker.log())[-1]
        figures["recovery_s"] = last.seconds
        figures["recovered"] = last.messages
        figures["recovery_line"] = last.line
        figures["rss_after_recovery_mib"] = round(rss_mib(broker.proc.pid), 1)
        t0 = time.monotonic()
        drained = bench(broker, "--publishers", "0", "--consumers", "2", "--persistent", "--duration", "3600")
        figures["drain_s"] = round(time.monotonic() - t0, 2)
        figures["drained"] = drained["consumed"]
        figures["rss_after_drain_mib"] = round(rss_mib(broker.proc.pid), 1)
        figures["broker_problems"] = recovery_problems(broker.log())
    finally:
        broker.stop()
    ok = figures.get("drained") == total and figures.get("recovered") == total and not figures.get("broker_problems")
    figures["ok"] = ok
    print(json.dumps(figures))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
