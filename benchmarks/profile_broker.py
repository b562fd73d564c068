"""Where a Leveret broker spends its time under one of ``compare.py``'s scenarios: a py-spy top list.

Starts a ``leveret serve`` of its own (as ``compare.py`` does), runs ``leveret bench`` with the
scenario's arguments, and meanwhile records the broker with py-spy (``--rate`` Hz for ``--seconds``,
starting 2 s into the run, in py-spy's raw "collapsed stacks" format). Then prints two top lists over
the broker's busy samples (idle ones are left out by py-spy): **self** time (the function on top of
the stack) and **total** time (the function anywhere on the stack), each as a share of all samples.

    .venv/bin/python benchmarks/profile_broker.py --scenario S1
    .venv/bin/python benchmarks/profile_broker.py --scenario S4 --seconds 10 --top 15 --keep /tmp/s4.txt

Needs py-spy (in the dev venv) and permission to ptrace the broker (root, or ptrace_scope 0). Not
part of ``make test``.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import SCENARIOS, cpu_seconds, raise_nofile, start_leveret

PY_SPY = Path(sys.executable).parent / "py-spy"


def parse(raw: str) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """Samples, self counts and total counts per function from py-spy's raw output."""
    total = 0
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for name in set(frames):
            anywhere[name] += n
    return total, own, anywhere


def _name(frame: str) -> str:
    """``function (path/to/module.py:123)`` -> ``function (module.py)``: lines apart, one entry."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{func} ({'/'.join(path.split('/')[-2:])})" if path else func


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="S1", help="a timed scenario of compare.py: S1, S2, S3 or S4 (S1)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long py-spy records (10)")
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second (200)")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--keep", default="", help="also write py-spy's raw output here")
    args = p.parse_args()
    s = SCENARIOS[args.scenario]
    if s.kind != "rate":
        raise SystemExit("profile_broker profiles the timed scenarios (S1-S4)")
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="leveret-profile-") as tmp:
        proc, port = start_leveret(tmp)
        try:
            uri = f"amqp://guest:guest@127.0.0.1:{port}/"
            bench = subprocess.Popen(
                [sys.executable, "-m", "leveret", "bench", "--uri", uri, "--quiet", *s.bench_args,
                 "--duration", str(args.seconds + 4)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(2)
            out = Path(tmp) / "profile.txt"
            cpu0 = cpu_seconds(proc.pid)
            subprocess.run(
                [str(PY_SPY), "record", "--pid", str(proc.pid), "--duration", str(int(args.seconds)),
                 "--rate", str(args.rate), "--format", "raw", "--output", str(out), "--nonblocking"],
                check=True, capture_output=True,
            )  # fmt: skip
            cpu = cpu_seconds(proc.pid) - cpu0
            stdout, _ = bench.communicate(timeout=60)
            raw = out.read_text()
            if args.keep:
                Path(args.keep).write_text(raw)
        finally:
            proc.terminate()
            proc.wait(30)
    total, own, anywhere = parse(raw)
    print(f"{args.scenario}: {s.title}")
    print(f"bench: {stdout.strip()[:300]}")
    print(f"broker CPU while recording: {cpu / args.seconds:.2f} cores; {total} busy samples")
    for title, counts in (("self", own), ("total (anywhere on the stack)", anywhere)):
        print(f"\ntop {args.top} by {title}:")
        for name, n in counts.most_common(args.top):
            print(f"  {100 * n / max(1, total):5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
