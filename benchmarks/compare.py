"""Leveret vs RabbitMQ on the fixed scenarios of issue 8, same machine, same load generator, runs alternated.

Scenarios (``--scenario S1,S3``; ``S5`` and ``S6`` select both of their parts; default: all):

    S1   transient, 1 publisher, 1 consumer, 16 B, prefetch 1000, ack every 100 (multiple), 20 s
    S2   persistent, durable queue, confirm window 1000, 1 publisher, 1 consumer, 1 KiB, 20 s
    S3   latency at a fixed 1,000 msg/s, 16 B (p50 / p99 / p99.9), 20 s
    S4   fanout exchange bound to 10 queues, one consumer each, 1 publisher, 16 B, 20 s
    S5a  backlog: 1,000,000 x 16 B transient with no consumer, then drained by one consumer
    S5b  backlog: 200,000 x 1 KiB persistent (confirm window 1000), then drained
    S6a  1,000 idle connections (a channel each) held 5 s: broker RSS per connection; RabbitMQ
         with Debian's default open-file limit (1,024)
    S6b  10,000 idle connections: how many each broker holds; RabbitMQ's limit raised to the hard limit

Each broker runs each scenario ``--runs`` times (3), alternating L R, R L, L R so slow drifts of the
machine hit both alike; the report gives per-run figures, the medians, the ratios Leveret/RabbitMQ,
and the targets of issue 8 met or missed. For each run: the broker's CPU (``/proc/<pid>/stat``),
its RSS sampled every 0.1 s (peak; for S5 the RSS once the backlog is queued, for S6 while the
connections are held, each minus the RSS just before the run), the load generator's own CPU, and
``other_cpu_cores``: what the rest of the machine used meanwhile (high = a noisy run).

    .venv/bin/python benchmarks/compare.py --out /tmp/cmp.json            # everything, ~20 min
    .venv/bin/python benchmarks/compare.py --scenario S1                  # S1, 3 x 20 s per broker
    .venv/bin/python benchmarks/compare.py --scenario S1,S3 --duration 5 --runs 1
    .venv/bin/python benchmarks/compare.py --rate 20000 --duration 10     # a custom shape (S1 + flags)

Leveret: a ``leveret serve`` of its own on a free port with a temporary data dir, started afresh for
each scenario (and for each run of S5 and S6, whose memory figures need a fresh process), with its
open-file limit raised to the hard limit. RabbitMQ: port 5673 (``benchmarks/rabbitmq.sh start``
runs unless the port already answers; the script stops the node only if this run started it). S5 and
S6 use a RabbitMQ node of their own per run instead (``rabbit-idle@localhost`` on
``--rabbitmq-idle-port``, 5674, under a temporary base dir): S5 for a fresh process, as for Leveret;
S6 because a node out of file descriptors is left broken. S6a runs it with Debian's open-file limit
(1,024), S6b with the limit raised to the hard limit (an ``ulimit -n`` in the node's
``RABBITMQ_CONF_ENV_FILE``).
Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")
BACKLOG_MARK = "bench: backlog of "
IDLE_MARK = " idle connections open; holding "


# ------------------------------------------------------------------------------------------ /proc


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


def open_files_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return "/".join(line.split()[3:5])  # soft/hard
    return "?"


class RssSampler(threading.Thread):
    """The broker's RSS every 0.1 s, with timestamps: ``peak`` overall, ``peak_between`` for a phase."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    @property
    def peak(self) -> float:
        return max((mb for _, mb in self.samples), default=0.0)

    def peak_between(self, t0: float, t1: float) -> float:
        return max((mb for t, mb in self.samples if t0 <= t <= t1), default=0.0)

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.samples.append((time.monotonic(), rss_mb(self.pid)))
            except OSError:
                return
            self.done.wait(0.1)

    def stop(self) -> None:
        self.done.set()
        self.join()


# -------------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    kind: str  # "rate" (timed run), "backlog" (publish N, then drain) or "idle" (hold N connections)
    bench_args: tuple[str, ...]
    ratios: tuple[str, ...]  # keys whose Leveret/RabbitMQ ratio is reported
    targets: tuple[tuple[str, str, float], ...] = field(default=())  # (key, "ratio>=" etc., bound)
    fresh_leveret_per_run: bool = False
    # "shared": the RabbitMQ on --rabbitmq-port; "own" / "own-raised": a node of our own per run (on
    # --rabbitmq-idle-port) with Debian's open-file limit (1,024) or raised to the hard limit. S5 wants a
    # fresh node (the memory a backlog takes, not what an earlier one left); S6 needs its own: out of descriptors, RabbitMQ 3.10's vm_memory_monitor crashes (emfile) and, after its
    # restarts, queue declarations fail with 541 until the app is restarted.
    rabbit: str = "shared"


RATE_BASE = ("--publishers", "1", "--consumers", "1", "--prefetch", "1000", "--multi-ack-every", "100")
RATE_RATIOS = ("publish_rate", "consume_rate", "broker_us_per_msg", "latency_p50_ms", "latency_p99_ms")
BACKLOG_RATIOS = ("publish_s", "drain_s", "bytes_per_msg", "rss_peak_mb")

SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "S1",
            "transient, 1 pub, 1 cons, 16 B, prefetch 1000, ack every 100",
            "rate",
            (*RATE_BASE, "--size", "16"),
            RATE_RATIOS,
            (("consume_rate", "ratio>=", 2.0),),
        ),
        Scenario(
            "S2",
            "persistent + durable queue, confirm window 1000, 1 pub, 1 cons, 1 KiB",
            "rate",
            (*RATE_BASE, "--size", "1024", "--persistent", "--confirm", "1000"),
            RATE_RATIOS,
            (("consume_rate", "ratio>=", 3.0),),
        ),
        Scenario(
            "S3",
            "latency at a fixed 1,000 msg/s, 16 B",
            "rate",
            (*RATE_BASE, "--size", "16", "--rate", "1000"),
            (*RATE_RATIOS, "latency_p999_ms"),
            (("latency_p99_ms", "ratio<=", 0.5),),
        ),
        Scenario(
            "S4",
            "fanout exchange to 10 queues, 10 consumers, 1 pub, 16 B",
            "rate",
            (*RATE_BASE, "--size", "16", "--fanout", "10"),
            RATE_RATIOS,
            (("consume_rate", "ratio>=", 2.0),),
        ),
        Scenario(
            "S5a",
            "backlog 1,000,000 x 16 B transient, then drain (1 pub, 1 cons)",
            "backlog",
            (*RATE_BASE, "--size", "16", "--backlog", "1000000", "--backlog-pause", "1"),
            BACKLOG_RATIOS,
            (("publish_s", "ratio<=", 0.5), ("drain_s", "ratio<=", 0.5), ("bytes_per_msg", "leveret<=", 100)),
            fresh_leveret_per_run=True,
            rabbit="own",
        ),
        Scenario(
            "S5b",
            "backlog 200,000 x 1 KiB persistent (confirm window 1000), then drain",
            "backlog",
            (*RATE_BASE, "--size", "1024", "--persistent", "--confirm", "1000", "--backlog", "200000"),
            BACKLOG_RATIOS,
            (("publish_s", "ratio<=", 0.5), ("drain_s", "ratio<=", 0.5), ("bytes_per_msg", "leveret<=", 100)),
            fresh_leveret_per_run=True,
            rabbit="own",
        ),
        Scenario(
            "S6a",
            "1,000 idle connections, a channel each, held 5 s",
            "idle",
            ("--idle-connections", "1000", "--hold", "5"),
            ("kb_per_connection", "opened"),
            (("kb_per_connection", "ratio<=", 1.0),),
            fresh_leveret_per_run=True,
            rabbit="own",
        ),
        Scenario(
            "S6b",
            "10,000 idle connections, a channel each, held 5 s",
            "idle",
            ("--idle-connections", "10000", "--hold", "5"),
            ("kb_per_connection", "opened"),
            (("held", "leveret>=", 10000), ("kb_per_connection", "ratio<=", 1.0)),
            fresh_leveret_per_run=True,
            rabbit="own-raised",
        ),
    )
}
GROUPS = {"S5": ["S5a", "S5b"], "S6": ["S6a", "S6b"]}
CUSTOM_FLAGS = ("publishers", "consumers", "size", "prefetch", "multi_ack_every", "confirm", "rate")


def select(spec: str) -> list[Scenario]:
    names: list[str] = []
    for token in filter(None, (t.strip() for t in spec.split(","))):
        for name in GROUPS.get(token, [token]):
            if name not in SCENARIOS:
                raise SystemExit(f"unknown scenario {token!r}; known: {', '.join([*SCENARIOS, *GROUPS])}")
            if name not in names:
                names.append(name)
    return [SCENARIOS[n] for n in names]


def custom(args: argparse.Namespace) -> Scenario | None:
    """S1 with the shape flags given on the command line (the compare.py of before the scenarios)."""
    given = {k: getattr(args, k) for k in CUSTOM_FLAGS if getattr(args, k) is not None}
    if not given and not args.persistent:
        return None
    shape = {"publishers": 1, "consumers": 1, "size": 16, "prefetch": 1000, "multi_ack_every": 100}
    shape.update(given)
    flags = [x for k, v in shape.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    if args.persistent:
        flags.append("--persistent")
    title = ", ".join(f"{k} {v}" for k, v in shape.items()) + (", persistent" if args.persistent else "")
    return Scenario("custom", title, "rate", tuple(flags), RATE_RATIOS)


# ------------------------------------------------------------------------------------------ runs


@dataclass
class Broker:
    name: str
    uri: str
    pid: int


def run_bench(broker: Broker, scenario: Scenario, args: argparse.Namespace) -> dict[str, float]:
    """One ``leveret bench`` against one broker, with the broker's CPU and memory around it."""
    bench_args = list(scenario.bench_args)
    for i, flag in enumerate(bench_args[:-1]):
        if flag in ("--backlog", "--idle-connections"):  # --scale: quick checks of S5 and S6
            bench_args[i + 1] = str(max(1, round(int(bench_args[i + 1]) * args.scale)))
    cmd = [sys.executable, "-m", "leveret", "bench", "--uri", broker.uri, "--quiet", *bench_args]
    if scenario.kind == "rate":
        cmd += ["--duration", str(args.duration)]
    pid = broker.pid
    rss0 = rss_mb(pid)
    sampler = RssSampler(pid)
    sampler.start()
    marks: list[tuple[float, str]] = []
    cpu0, busy0, child0, wall0 = cpu_seconds(pid), machine_busy_seconds(), children_cpu(), time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if BACKLOG_MARK in line or IDLE_MARK in line:
                marks.append((time.monotonic(), line))
            err.append(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    watchdog = threading.Timer(args.duration + 1800, proc.kill)
    watchdog.start()
    assert proc.stdout is not None
    stdout = proc.stdout.read()
    proc.wait()
    watchdog.cancel()
    reader.join()
    cpu, busy = cpu_seconds(pid) - cpu0, machine_busy_seconds() - busy0
    child, wall = children_cpu() - child0, time.monotonic() - wall0
    sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"bench failed against {broker.name} ({broker.uri}): {''.join(err).strip()}")
    r = json.loads(stdout.strip().splitlines()[-1])
    common = {
        "broker_cpu_s": round(cpu, 2),
        "broker_rss_before_mb": round(rss0, 1),
        "broker_rss_mb": round(sampler.peak, 1),
        "bench_cpu_cores": r["cpu_cores"],
        # everything else the machine ran meanwhile (other users, set-up and tear-down): high = noisy run
        "other_cpu_cores": round(max(0.0, busy - cpu - child) / wall, 3),
    }
    if scenario.kind == "rate":
        return rate_figures(r, cpu) | common
    mark = marks[0][0] if marks else wall0
    if scenario.kind == "backlog":
        return backlog_figures(r, rss0, sampler, mark) | common
    return idle_figures(r, rss0, sampler, mark) | common


def rate_figures(r: dict[str, Any], cpu: float) -> dict[str, float]:
    lat = r["latency_ms"]
    return {
        "publish_rate": r["publish_rate"],
        "consume_rate": r["consume_rate"],
        "consume_rate_overall": r["consume_rate_overall"],
        "latency_p50_ms": lat.get("p50", 0.0),
        "latency_p99_ms": lat.get("p99", 0.0),
        "broker_cpu_cores": round(cpu / r["duration_s"], 3),
        "broker_us_per_msg": round(cpu * 1e6 / max(1, r["consumed"]), 2),
        "latency_p95_ms": lat.get("p95", 0.0),
        "latency_p999_ms": lat.get("p99.9", 0.0),
    }


def backlog_figures(r: dict[str, Any], rss0: float, sampler: RssSampler, mark: float) -> dict[str, float]:
    n = r["backlog_messages"]
    queued = sampler.peak_between(mark, mark + 1.0) or sampler.peak  # the pause between the phases
    return {
        "publish_s": r["publish_s"],
        "drain_s": r["drain_s"],
        "publish_rate": r["publish_rate_overall"],
        "drain_rate": r["consume_rate_overall"],
        "rss_backlog_mb": round(queued, 1),
        "rss_peak_mb": round(sampler.peak, 1),
        "bytes_per_msg": round((queued - rss0) * 1024 * 1024 / n),
    }


def idle_figures(r: dict[str, Any], rss0: float, sampler: RssSampler, mark: float) -> dict[str, float]:
    held_mb = sampler.peak_between(mark, mark + float(r["hold_s"]))
    return {
        "opened": r["opened"],
        "held": r["held"],
        "failed": r["failed"],
        "open_s": r["open_s"],
        "rss_held_mb": round(held_mb, 1),
        "kb_per_connection": round((held_mb - rss0) * 1024 / max(1, r["opened"]), 1),
    }


def raise_nofile() -> int:
    """Raise our soft open-file limit to the hard limit: the brokers and benches we start inherit it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = hard if hard != resource.RLIM_INFINITY else 1 << 20
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def start_leveret(data_dir: str) -> tuple[subprocess.Popen[bytes], int]:
    """A ``leveret serve`` on a free port, other doors off (open-file limit: ours, raised in main)."""
    port = free_port()
    log = open(Path(data_dir) / "broker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "leveret", "serve", "--host", "127.0.0.1", "--amqp-port", str(port),
         "--data-dir", data_dir, "--log-level", "WARNING", "--http-port", "0",
         "--zmq-publish-port", "0", "--zmq-subscribe-port", "0", "--zmq-push-port", "0"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while not answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"leveret serve did not start; see {data_dir}/broker.log")
        time.sleep(0.05)
    return proc, port


class Leveret:
    """The Leveret under test: a running one (``--leveret-uri``) or fresh ones of our own."""

    def __init__(self, uri: str, tmp: str) -> None:
        self.fixed_uri, self.tmp = uri, tmp
        self.proc: subprocess.Popen[bytes] | None = None
        self.broker: Broker | None = None
        self.starts = 0

    def get(self, fresh: bool) -> Broker:
        if self.broker is not None and not fresh:
            return self.broker
        self.stop()
        if self.fixed_uri:
            port = int(self.fixed_uri.rsplit(":", 1)[1].split("/")[0])
            uri = self.fixed_uri
        else:
            self.starts += 1
            data_dir = Path(self.tmp) / f"leveret-{self.starts}"
            data_dir.mkdir()
            self.proc, port = start_leveret(str(data_dir))
            uri = f"amqp://guest:guest@127.0.0.1:{port}/"
        pid = listener_pid(port)
        assert pid is not None
        self.broker = Broker("leveret", uri, pid)
        return self.broker

    def stop(self) -> None:
        self.broker = None
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None


class OwnRabbit:
    """A RabbitMQ node of our own for one run (``rabbitmq.sh`` with its own node name, port and base)."""

    def __init__(self, port: int, raised: bool) -> None:
        self.base = tempfile.mkdtemp(prefix="leveret-compare-rmq-")
        os.chmod(self.base, 0o755)  # the node runs as user rabbitmq
        self.env = dict(os.environ, RMQ_PORT=str(port), RMQ_NODE="rabbit-idle@localhost", RMQ_BASE=self.base)
        if raised:
            conf = Path(self.base) / "rabbitmq-env.conf"
            conf.write_text(f"ulimit -n {resource.getrlimit(resource.RLIMIT_NOFILE)[1]}\n")
            conf.chmod(0o644)
            self.env["RABBITMQ_CONF_ENV_FILE"] = str(conf)
        self.port = port

    def start(self) -> Broker:
        if answers(self.port):
            raise SystemExit(f"port {self.port} already answers: pick another --rabbitmq-idle-port")
        subprocess.run(["bash", str(HERE / "rabbitmq.sh"), "start"], check=True, env=self.env, capture_output=True)
        pid = listener_pid(self.port)
        assert pid is not None
        return Broker("rabbitmq", f"amqp://guest:guest@127.0.0.1:{self.port}/", pid)

    def stop(self) -> None:
        subprocess.run(["bash", str(HERE / "rabbitmq.sh"), "stop"], check=False, env=self.env, capture_output=True)
        subprocess.run(["rm", "-rf", self.base], check=False)


# ----------------------------------------------------------------------------------------- report


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}


def print_table(title: str, rows: list[dict[str, float]], med: dict[str, float]) -> None:
    keys = list(med)
    print(f"\n{title}")
    for start in range(0, len(keys), 5):
        part = keys[start : start + 5]
        print("  " + " ".join(f"{k:>22}" for k in ["run", *part]))
        for i, r in enumerate([*rows, med]):
            name = "median" if i == len(rows) else str(i + 1)
            print("  " + " ".join(f"{v:>22}" for v in [name, *(f"{r[k]:,}" for k in part)]))


def check_targets(s: Scenario, med: dict[str, dict[str, float]], ratio: dict[str, float | None]) -> list[str]:
    lines = []
    for key, rule, bound in s.targets:
        who, op = rule[:-2], rule[-2:]
        value = ratio.get(key) if who == "ratio" else med["leveret"].get(key)
        if value is None:
            lines.append(f"{s.name} {key} {rule} {bound}: no figure")
            continue
        met = value >= bound if op == ">=" else value <= bound
        lines.append(f"{s.name} {key} {who} {value} ({op} {bound}): {'met' if met else 'MISSED'}")
    return lines


def run_scenario(s: Scenario, leveret: Leveret, rabbit: Broker, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n== {s.name}: {s.title}", file=sys.stderr, flush=True)
    results: dict[str, list[dict[str, float]]] = {"leveret": [], "rabbitmq": []}
    limits: dict[str, str] = {}
    for i in range(args.runs):
        order = ["leveret", "rabbitmq"] if i % 2 == 0 else ["rabbitmq", "leveret"]
        for name in order:
            own = None
            if name == "leveret":
                broker = leveret.get(fresh=s.fresh_leveret_per_run or i == 0)
            elif s.rabbit == "shared":
                broker = rabbit
                if s.kind != "rate":
                    time.sleep(2)  # let the node settle (freed memory, closed sockets) after the previous run
            else:
                own = OwnRabbit(args.rabbitmq_idle_port, raised=s.rabbit == "own-raised")
                broker = own.start()
            limits[name] = open_files_limit(broker.pid)
            try:
                r = run_bench(broker, s, args)
            finally:
                if own is not None:
                    own.stop()
            results[name].append(r)
            brief = ", ".join(f"{k} {v:,}" for k, v in list(r.items())[:4])
            print(
                f"run {i + 1} {name:>8}: {brief}, broker rss {r['broker_rss_mb']} MB, others {r['other_cpu_cores']} cores",
                file=sys.stderr,
                flush=True,
            )
    med = {name: medians(rows) for name, rows in results.items()}
    for name, rows in results.items():
        print_table(f"{s.name} {name}", rows, med[name])
    ratio = {k: round(med["leveret"][k] / med["rabbitmq"][k], 3) if med["rabbitmq"][k] else None for k in s.ratios}
    print(f"\n{s.name} Leveret/RabbitMQ (medians of {args.runs}): {ratio}")
    targets = check_targets(s, med, ratio)
    for line in targets:
        print(f"  {line}")
    return {
        "title": s.title,
        "bench_args": list(s.bench_args),
        "open_files_soft_hard": limits,
        "runs": results,
        "medians": med,
        "ratio": ratio,
        "targets": targets,
    }


HEADLINE = {  # the figures the summary table shows per kind: (key, label, format)
    "rate": (("consume_rate", "consume msg/s", "{:,.0f}"), ("publish_rate", "publish msg/s", "{:,.0f}"),
             ("latency_p50_ms", "p50 ms", "ms"), ("latency_p99_ms", "p99 ms", "ms"),
             ("latency_p999_ms", "p99.9 ms", "ms"), ("broker_cpu_cores", "broker cores", "{:.2f}"),
             ("broker_us_per_msg", "broker µs/msg", "{:.1f}"), ("broker_rss_mb", "peak RSS MB", "{:,.0f}")),
    "backlog": (("publish_s", "publish s", "{:.2f}"), ("drain_s", "drain s", "{:.2f}"),
                ("bytes_per_msg", "bytes/queued msg", "{:,.0f}"), ("rss_peak_mb", "peak RSS MB", "{:,.0f}"),
                ("broker_cpu_s", "broker CPU s", "{:.1f}")),
    "idle": (("opened", "opened", "{:,.0f}"), ("held", "held", "{:,.0f}"), ("open_s", "open s", "{:.2f}"),
             ("kb_per_connection", "KB/conn", "{:.1f}"), ("rss_held_mb", "RSS held MB", "{:,.0f}")),
}  # fmt: skip


def _cell(value: float, fmt: str) -> str:
    if fmt == "ms":  # latencies: three significant digits, no exponent
        return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
    return fmt.format(value)


def markdown(summary: dict[str, Any]) -> str:
    """One table per scenario kind: medians for each broker and the ratio, then the targets."""
    lines: list[str] = []
    for kind, cols in HEADLINE.items():
        rows = [(n, s) for n, s in summary["scenarios"].items() if SCENARIOS.get(n, SCENARIOS["S1"]).kind == kind]
        if not rows:
            continue
        lines += ["", "| scenario | broker | " + " | ".join(c[1] for c in cols) + " | other load (cores) |"]
        lines.append("|---|---|" + "---:|" * (len(cols) + 1))
        for name, s in rows:
            med, ratio = s["medians"], s["ratio"]
            for who in ("leveret", "rabbitmq"):
                cells = [_cell(med[who][key], fmt) for key, _, fmt in cols]
                lines.append(f"| {name} | {who} | " + " | ".join(cells) + f" | {med[who]['other_cpu_cores']:.2f} |")
            cells = [f"**{ratio[key]:.2f}**" if ratio.get(key) is not None else "" for key, _, _ in cols]
            lines.append(f"| {name} | L/R | " + " | ".join(cells) + " | |")
    lines += ["", "Targets:", ""]
    lines += [f"- {t}" for s in summary["scenarios"].values() for t in s["targets"]]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")  # fmt: skip
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="", help="comma-separated: S1,S2,S3,S4,S5 (S5a,S5b),S6 (S6a,S6b); all")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=20.0, help="seconds per timed run (S1-S4): 20")
    for flag in CUSTOM_FLAGS:
        kind = float if flag == "rate" else int
        p.add_argument(f"--{flag.replace('_', '-')}", type=kind, default=None, help="custom shape (S1 + this)")
    p.add_argument("--persistent", action="store_true", help="custom shape (S1 + this)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply S5's and S6's message/connection counts")
    p.add_argument("--rabbitmq-port", type=int, default=5673)
    p.add_argument("--rabbitmq-idle-port", type=int, default=5674, help="S6's own RabbitMQ nodes (5674)")
    p.add_argument("--leveret-uri", default="", help="use a running Leveret instead of starting one")
    p.add_argument("--out", default="", help="write the runs, medians, ratios and targets as JSON here")
    p.add_argument("--markdown", default="", help="print the tables of a saved --out file as Markdown and exit")
    args = p.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    extra = custom(args)
    scenarios = select(args.scenario) if args.scenario or extra is None else []
    if not args.scenario and extra is None:
        scenarios = list(SCENARIOS.values())
    if extra is not None:
        scenarios.append(extra)

    raise_nofile()
    started_rabbit = False
    env = dict(os.environ, RMQ_PORT=str(args.rabbitmq_port))
    if not answers(args.rabbitmq_port):
        subprocess.run(["bash", str(HERE / "rabbitmq.sh"), "start"], check=True, env=env)
        started_rabbit = True
    rabbit_pid = listener_pid(args.rabbitmq_port)
    if rabbit_pid is None:
        raise SystemExit(f"no process found listening on {args.rabbitmq_port}")
    rabbit = Broker("rabbitmq", f"amqp://guest:guest@127.0.0.1:{args.rabbitmq_port}/", rabbit_pid)
    tmp = tempfile.TemporaryDirectory(prefix="leveret-compare-")
    leveret = Leveret(args.leveret_uri, tmp.name)
    summary: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "args": vars(args),
        "scenarios": {},
    }
    try:
        for s in scenarios:
            summary["scenarios"][s.name] = run_scenario(s, leveret, rabbit, args)
            leveret.stop()
            if args.out:  # after each scenario, so a long run that breaks keeps what it measured
                write(args.out, summary)
        print(markdown(summary))
    finally:
        leveret.stop()
        tmp.cleanup()
        if started_rabbit:
            subprocess.run(["bash", str(HERE / "rabbitmq.sh"), "stop"], check=False, env=env)
    return 0


def write(path: str, summary: dict[str, Any]) -> None:
    out = dict(summary)
    if len(summary["scenarios"]) == 1:  # the shape of a one-scenario compare.py of before
        only = next(iter(summary["scenarios"].values()))
        out.update(scenario=summary["args"], runs=only["runs"], medians=only["medians"], ratio=only["ratio"])
    Path(path).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
