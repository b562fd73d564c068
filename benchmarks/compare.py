"""Leveret vs RabbitMQ on one scenario, same machine, same load generator, runs alternated.

Scenario S1 (the defaults): 1 publisher, 1 consumer, 16-byte bodies, prefetch 1000, ack every 100 with
multiple=true, 20 s, transient messages, unlimited publish rate. Each broker is measured ``--runs``
times (3), alternating L R R L L R so slow drifts of the machine hit both alike; the report gives the
medians, the ratio Leveret/RabbitMQ for publish and consume rates, and each broker's CPU (from
/proc/<pid>/stat, in cores and in microseconds per consumed message) and peak RSS during the run.

    .venv/bin/python benchmarks/compare.py                 # S1, 3 x 20 s per broker (~2.5 min)
    .venv/bin/python benchmarks/compare.py --duration 5 --runs 1 --out /tmp/cmp.json

Leveret: a ``leveret serve`` of its own on a free port (stopped at the end). RabbitMQ: port 5673
(``benchmarks/rabbitmq.sh start`` runs unless the port already answers; the script stops the node
only if this run started it). Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def listener_pid(port: int) -> int | None:
    """The pid of the process listening on ``port`` (via /proc/net/tcp* inodes and /proc/*/fd)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{cols[9]}]")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    cols = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(cols) - cols[3] - cols[4]) / TICKS


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return
            self.done.wait(0.25)


def bench(uri: str, pid: int, args: argparse.Namespace) -> dict[str, float]:
    cmd = [
        sys.executable, "-m", "leveret", "bench", "--uri", uri,
        "--publishers", str(args.publishers), "--consumers", str(args.consumers),
        "--size", str(args.size), "--prefetch", str(args.prefetch),
        "--multi-ack-every", str(args.multi_ack_every), "--duration", str(args.duration),
        "--confirm", str(args.confirm), "--rate", str(args.rate), "--quiet",
    ]  # fmt: skip
    if args.persistent:
        cmd.append("--persistent")
    sampler = RssSampler(pid)
    sampler.start()
    cpu0, busy0, child0, wall0 = cpu_seconds(pid), machine_busy_seconds(), children_cpu(), time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 120)
    cpu, busy = cpu_seconds(pid) - cpu0, machine_busy_seconds() - busy0
    child, wall = children_cpu() - child0, time.monotonic() - wall0
    sampler.done.set()
    sampler.join()
    if out.returncode != 0:
        raise SystemExit(f"bench failed against {uri}: {out.stderr.strip()}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    consumed = max(1, r["consumed"])
    return {
        "publish_rate": r["publish_rate"],
        "consume_rate": r["consume_rate"],
        "consume_rate_overall": r["consume_rate_overall"],
        "latency_p50_ms": r["latency_ms"].get("p50", 0.0),
        "latency_p99_ms": r["latency_ms"].get("p99", 0.0),
        "broker_cpu_cores": round(cpu / r["duration_s"], 3),
        "broker_us_per_msg": round(cpu * 1e6 / consumed, 2),
        "broker_rss_mb": round(sampler.peak, 1),
        "bench_cpu_cores": round(r["cpu_s"] / r["duration_s"], 3),
        # everything else the machine ran meanwhile (other users, set-up and tear-down): high = noisy run
        "other_cpu_cores": round(max(0.0, busy - cpu - child) / wall, 3),
    }


def start_leveret(data_dir: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = open(Path(data_dir) / "broker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "leveret", "serve", "--host", "127.0.0.1", "--amqp-port", str(port),
         "--data-dir", data_dir, "--log-level", "WARNING", "--http-port", "0"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while not answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"leveret serve did not start; see {data_dir}/broker.log")
        time.sleep(0.05)
    return proc, port


def table(title: str, rows: list[dict[str, float]]) -> dict[str, float]:
    keys = list(rows[0])
    med = {k: round(statistics.median(r[k] for r in rows), 3) for k in keys}
    print(f"\n{title}")
    print("  " + " ".join(f"{k:>22}" for k in ["run", *keys[:5]]))
    for i, r in enumerate([*rows, med]):
        name = "median" if i == len(rows) else str(i + 1)
        print("  " + " ".join(f"{v:>22}" for v in [name, *(f"{r[k]:,}" for k in keys[:5])]))
    print("  " + " ".join(f"{k:>22}" for k in ["run", *keys[5:]]))
    for i, r in enumerate([*rows, med]):
        name = "median" if i == len(rows) else str(i + 1)
        print("  " + " ".join(f"{v:>22}" for v in [name, *(f"{r[k]:,}" for k in keys[5:])]))
    return med


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--publishers", type=int, default=1)
    p.add_argument("--consumers", type=int, default=1)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--prefetch", type=int, default=1000)
    p.add_argument("--multi-ack-every", type=int, default=100)
    p.add_argument("--confirm", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--persistent", action="store_true")
    p.add_argument("--rabbitmq-port", type=int, default=5673)
    p.add_argument("--leveret-uri", default="", help="use a running Leveret instead of starting one")
    p.add_argument("--out", default="", help="write the runs and medians as JSON here")
    args = p.parse_args()

    started_rabbit = False
    if not answers(args.rabbitmq_port):
        env = dict(os.environ, RMQ_PORT=str(args.rabbitmq_port))
        subprocess.run(["bash", str(HERE / "rabbitmq.sh"), "start"], check=True, env=env)
        started_rabbit = True
    rabbit_pid = listener_pid(args.rabbitmq_port)
    if rabbit_pid is None:
        raise SystemExit(f"no process found listening on {args.rabbitmq_port}")
    tmp = tempfile.TemporaryDirectory(prefix="leveret-compare-")
    proc = None
    try:
        if args.leveret_uri:
            port = int(args.leveret_uri.rsplit(":", 1)[1].split("/")[0])
        else:
            proc, port = start_leveret(tmp.name)
        lev_pid = listener_pid(port)
        assert lev_pid is not None
        brokers = {
            "leveret": (f"amqp://guest:guest@127.0.0.1:{port}/", lev_pid),
            "rabbitmq": (f"amqp://guest:guest@127.0.0.1:{args.rabbitmq_port}/", rabbit_pid),
        }
        results: dict[str, list[dict[str, float]]] = {"leveret": [], "rabbitmq": []}
        for i in range(args.runs):
            order = ["leveret", "rabbitmq"] if i % 2 == 0 else ["rabbitmq", "leveret"]
            for name in order:
                uri, pid = brokers[name]
                r = bench(uri, pid, args)
                results[name].append(r)
                print(
                    f"run {i + 1} {name:>8}: publish {r['publish_rate']:,.0f} msg/s, consume {r['consume_rate']:,.0f}"
                    f" msg/s, broker {r['broker_cpu_cores']} cores, {r['broker_rss_mb']} MB, others {r['other_cpu_cores']} cores",
                    file=sys.stderr,
                    flush=True,
                )
        med = {name: table(name, rows) for name, rows in results.items()}
        ratio = {
            k: round(med["leveret"][k] / med["rabbitmq"][k], 2) if med["rabbitmq"][k] else None
            for k in ("publish_rate", "consume_rate", "broker_us_per_msg")
        }
        print(f"\nLeveret/RabbitMQ (medians of {args.runs}): {ratio}")
        if args.out:
            summary = {"scenario": vars(args), "runs": results, "medians": med, "ratio": ratio}
            Path(args.out).write_text(json.dumps(summary, indent=2))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        tmp.cleanup()
        if started_rabbit:
            env = dict(os.environ, RMQ_PORT=str(args.rabbitmq_port))
            subprocess.run(["bash", str(HERE / "rabbitmq.sh"), "stop"], check=False, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
