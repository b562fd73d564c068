"""The long kill -9 storm (RELIABILITY.md, "Fault scenarios"), run by hand; the short one is
tests/faults/test_kill9.py, whose ``run_storm`` this drives.

    .venv/bin/python benchmarks/soak_kill9.py --minutes 5           # ~200 kills at 1-2 s
    .venv/bin/python benchmarks/soak_kill9.py --kills 50 --seed 7   # replay a seed

Publishers with confirms (persistent, durable queue behind a durable exchange) and an acking
consumer run while the broker is SIGKILLed every ``--interval`` seconds (jittered) and restarted at
once; the consumer runs for ``--consumer-phase`` kills, pauses for as many, and so on, so a backlog
must survive kills and acks are recorded too; then a last
kill, a quiet drain and the shared checker. Prints the figures; exits 1 if lost, unexpected or
corrupt is not 0, or the broker logged damage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import BrokerProcess
from tests.faults.checker import recoveries, recovery_problems, run_seed
from tests.faults.test_kill9 import run_storm


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=0.0, help="run about this long (sets --kills)")
    p.add_argument("--kills", type=int, default=30, help="SIGKILLs during the run (30)")
    p.add_argument("--interval", type=float, nargs=2, default=(1.0, 2.0), help="seconds between kills (1 2)")
    p.add_argument("--publishers", type=int, default=3)
    p.add_argument("--window", type=int, default=32, help="unconfirmed publishes per publisher (32)")
    p.add_argument("--consumer-phase", type=int, default=5, help="kills with the consumer on, then off, ... (5)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: LEVERET_FAULT_SEED or 1)")
    p.add_argument("--data-dir", type=Path, default=None, help="broker data dir (default: a new temp dir)")
    args = p.parse_args()
    kills = args.kills
    if args.minutes:
        kills = max(1, int(args.minutes * 60 / (sum(args.interval) / 2 + 0.35)))  # ~0.35 s per restart
    seed = args.seed if args.seed is not None else run_seed(1)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="leveret-soak-")) / "data"
    print(f"soak: seed={seed} kills={kills} interval={args.interval} data_dir={data_dir}", flush=True)
    broker = BrokerProcess(data_dir)
    try:
        result = asyncio.run(
            run_storm(
                broker,
                seed,
                kills,
                interval=tuple(args.interval),
                publishers=args.publishers,
                window=args.window,
                consumer_phase=args.consumer_phase,
                progress=True,
            )
        )
    finally:
        broker.stop()
    print(result)
    log = broker.log()
    starts = recoveries(log)
    slowest = max(starts, key=lambda r: r.seconds, default=None)
    if slowest is not None:
        print(f"recoveries: {len(starts)}, slowest {slowest.seconds:.3f} s: {slowest.line}")
    problems = recovery_problems(log)
    for line in problems:
        print(f"BROKER: {line}")
    report = result.report
    ok = not report.lost and not report.unexpected and not report.corrupt and not report.returned and not problems
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
