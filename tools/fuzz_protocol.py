"""Long fuzz run of the sans-I/O server connection (the property of tests/unit/test_fuzz_protocol.py).

    .venv/bin/python tools/fuzz_protocol.py --cases 100000 [--seed N]

Prints the number of cases run, the events they produced, how many ended in a connection failure,
and the time taken; exits non-zero with Hypothesis's minimal failing case if the property breaks.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypothesis import HealthCheck, given, seed, settings
from tests.unit import test_fuzz_protocol as fuzz


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    stats: Counter[str] = Counter()

    @seed(args.seed)
    @settings(
        max_examples=args.cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(*fuzz.CASE)
    def property_(handshake_steps: int, frames: list[bytes], cuts: list[int]) -> None:
        stats["cases"] += 1
        stats["frames"] += len(frames)
        stats["events"] += fuzz.run_case(handshake_steps, frames, cuts)

    started = time.monotonic()
    property_()
    elapsed = time.monotonic() - started
    print(
        f"seed {args.seed}: {stats['cases']} cases, {stats['frames']} frames, {stats['events']} events, "
        f"no failure, {elapsed:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
