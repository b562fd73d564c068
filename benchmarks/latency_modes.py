"""S3's latency distributions side by side: where the tail of a 1,000 msg/s run comes from.

Runs ``leveret bench --rate 1000`` (16 B, one publisher, one consumer) against a fresh Leveret and
against the RabbitMQ on ``--rabbitmq-port`` (``benchmarks/rabbitmq.sh start``), alternated, with
``--latencies-out`` so that every sample is kept; then prints, per broker, percentiles, a histogram in
25 µs buckets and the share of samples above ``--slow-us`` (the second mode both brokers show on this
machine; see docs/performance.md, "S3").

    .venv/bin/python benchmarks/latency_modes.py --runs 2 --duration 10

Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import answers, raise_nofile, start_leveret


def bench(uri: str, duration: float, out: Path) -> None:
    cmd = [sys.executable, "-m", "leveret", "bench", "--uri", uri, "--rate", "1000", "--size", "16"]
    cmd += ["--duration", str(duration), "--quiet", "--latencies-out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def summary(name: str, samples: list[int], slow_us: int) -> None:
    s = sorted(samples)
    n = len(s)
    cuts = ", ".join(f"p{q * 100:g} {s[min(n - 1, int(n * q))]}" for q in (0.5, 0.9, 0.95, 0.99, 0.999))
    slow = sum(1 for x in s if x > slow_us) / n
    print(f"{name}: {n} samples (µs): {cuts}; above {slow_us} µs: {slow:.1%}")
    buckets = collections.Counter(min(x // 25 * 25, 1000) for x in s)
    for start in range(0, 1025, 25):
        share = buckets.get(start, 0) / n
        if share >= 0.001:  # the rarer buckets are in the percentiles above
            label = f"{start:>4}-{start + 24:<4}" if start < 1000 else ">=1000   "
            print(f"  {label} {share:6.1%} {'#' * max(1, round(60 * share))}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--rabbitmq-port", type=int, default=5673)
    p.add_argument("--slow-us", type=int, default=150)
    args = p.parse_args()
    raise_nofile()
    samples: dict[str, list[int]] = {"leveret": [], "rabbitmq": []}
    with tempfile.TemporaryDirectory(prefix="leveret-latency-") as tmp:
        proc, port = start_leveret(tmp)
        try:
            uris = {"leveret": f"amqp://guest:guest@127.0.0.1:{port}/"}
            if answers(args.rabbitmq_port):
                uris["rabbitmq"] = f"amqp://guest:guest@127.0.0.1:{args.rabbitmq_port}/"
            else:
                print(f"no RabbitMQ on port {args.rabbitmq_port}: Leveret only", file=sys.stderr)
            for run in range(args.runs):
                for name, uri in uris.items():
                    out = Path(tmp) / f"{name}-{run}.txt"
                    bench(uri, args.duration, out)
                    samples[name] += [int(line) for line in out.read_text().split()]
        finally:
            proc.terminate()
            proc.wait(30)
    for name, values in samples.items():
        if values:
            summary(name, values, args.slow_us)
    return 0


if __name__ == "__main__":
    sys.exit(main())
