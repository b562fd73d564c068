"""Broker memory, disk and recovery with a large backlog of persistent messages (issue 3).

Starts its own ``leveret serve`` (fresh data dir, free port, log level INFO), then:

1. publishes ``--count`` (1,000,000) persistent ``--size`` (1 KiB) messages with confirms (window
   ``--confirm``, 1000) to a durable queue with no consumer (``leveret bench --consumers 0
   --publish-count N --keep-queue``); reports publish time, peak and final broker RSS, bytes per queued
   message ((RSS - RSS at start) / N) and the disk used under the data dir;
2. restarts the broker (SIGTERM, or SIGKILL with ``--kill``) and reports the recovery time from its
   log line ``message store: ... recovered ... in X s``, the time until the port answers, and the RSS
   after recovery;
3. drains the queue with one consumer (prefetch 1000, ack every 100: ``leveret bench --publishers 0
   --keep-queue``), reports the drain time, checks that the count matches and that the queue is
   empty, and reports the disk used after the drain.

The broker's RSS (``/proc/<pid>/status`` VmRSS) is sampled every 0.1 s throughout; the target is
under 250 MB with 1M queued 1 KiB persistent messages.

    .venv/bin/python benchmarks/backlog_memory.py                     # ~2-4 min
    .venv/bin/python benchmarks/backlog_memory.py --count 100000 --kill --out /tmp/backlog.json

Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import answers, free_port, rss_mb

QUEUE = "backlog-memory"
TARGET_MB = 250.0
RECOVERED = re.compile(r"message store: (\w+) stop; (\d+) messages recovered into (\d+) queues in ([\d.]+) s")


class Sampler(threading.Thread):
    """The broker's RSS every 0.1 s; ``peak_since(t)`` for a phase."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.samples.append((time.monotonic(), rss_mb(self.pid)))
            except OSError:
                return
            self.done.wait(0.1)

    def peak_since(self, t0: float) -> float:
        return max((mb for t, mb in self.samples if t >= t0), default=0.0)

    def stop(self) -> None:
        self.done.set()
        self.join()


class Broker:
    def __init__(self, data_dir: str, port: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.uri = f"amqp://guest:guest@127.0.0.1:{port}/"
        self.log_path = Path(data_dir).parent / f"{Path(data_dir).name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.sampler: Sampler | None = None

    def start(self) -> float:
        """Start and wait for the port; returns the seconds until it answered."""
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "leveret", "serve", "--host", "127.0.0.1", "--amqp-port", str(self.port),
                 "--data-dir", self.data_dir, "--log-level", "INFO", "--http-port", "0"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        while not answers(self.port):
            if self.proc.poll() is not None or time.monotonic() - t0 > 600:
                raise SystemExit(f"leveret serve did not start; see {self.log_path}")
            time.sleep(0.02)
        ready = time.monotonic() - t0
        self.sampler = Sampler(self.proc.pid)
        self.sampler.start()
        return ready

    def stop(self, sig: int = signal.SIGTERM) -> float:
        assert self.proc is not None and self.sampler is not None
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(120)
        self.sampler.stop()
        return time.monotonic() - t0

    def rss(self) -> float:
        assert self.proc is not None
        return rss_mb(self.proc.pid)

    def recovery(self) -> dict[str, object]:
        """The last recovery line of the log."""
        found = RECOVERED.findall(self.log_path.read_text(errors="replace"))
        if not found:
            raise SystemExit(f"no recovery line in {self.log_path}")
        kind, messages, queues, seconds = found[-1]
        return {"stop": kind.lower(), "messages": int(messages), "queues": int(queues), "seconds": float(seconds)}


def disk_mb(path: str) -> dict[str, float]:
    """Allocated (st_blocks) and apparent size of everything under ``path``, in MB."""
    blocks = size = 0
    files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            blocks += st.st_blocks * 512
            size += st.st_size
            files += 1
    return {"allocated_mb": round(blocks / 1e6, 1), "apparent_mb": round(size / 1e6, 1), "files": files}


def bench(uri: str, *extra: str) -> dict[str, object]:
    cmd = [sys.executable, "-m", "leveret", "bench", "--uri", uri, "--queue", QUEUE, "--persistent", "--keep-queue"]
    cmd += ["--duration", "3600", "--quiet", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench failed: {out.stderr.strip()}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def queue_depth(uri: str) -> int:
    """Ready messages in the queue now (a passive declare through ``leveret bench``'s drain would
    consume them, so ask with pika)."""
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(uri))
    try:
        ok = conn.channel().queue_declare(QUEUE, passive=True)
        return int(ok.method.message_count)
    finally:
        conn.close()


def settle(broker: Broker, seconds: float = 1.0) -> float:
    """Wait for the RSS to stop moving (up to ``seconds``), then return it."""
    time.sleep(seconds)
    return broker.rss()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--confirm", type=int, default=1000)
    p.add_argument("--kill", action="store_true", help="restart with SIGKILL instead of SIGTERM")
    p.add_argument("--data-dir", default="", help="parent of the fresh data dir (default: a temp dir)")
    p.add_argument("--keep-data", action="store_true", help="leave the data dir and broker log behind")
    p.add_argument("--out", default="", help="write the figures as JSON here")
    args = p.parse_args()

    parent = tempfile.mkdtemp(prefix="leveret-backlog-", dir=args.data_dir or None)
    data_dir = os.path.join(parent, "data")
    broker = Broker(data_dir, free_port())
    r: dict[str, object] = {"count": args.count, "size": args.size, "confirm": args.confirm, "restart": "SIGTERM"}
    try:
        broker.start()
        assert broker.sampler is not None
        rss0 = settle(broker)
        r["rss_start_mb"] = round(rss0, 1)

        # 1. publish N with no consumer
        t0 = time.monotonic()
        pub = bench(broker.uri, "--consumers", "0", "--size", str(args.size), "--confirm", str(args.confirm),
                    "--publish-count", str(args.count))  # fmt: skip
        if pub["confirmed"] != args.count:
            raise SystemExit(f"published {pub['published']}, confirmed {pub['confirmed']}, nacked {pub['nacked']}")
        rss_final = settle(broker)
        r["publish_s"] = pub["duration_s"]
        r["publish_rate"] = pub["publish_rate_overall"]
        r["rss_peak_publish_mb"] = round(broker.sampler.peak_since(t0), 1)
        r["rss_after_publish_mb"] = round(rss_final, 1)
        r["bytes_per_message"] = round((rss_final - rss0) * 1024 * 1024 / args.count)
        r["disk_after_publish"] = disk_mb(data_dir)
        report("publish", r)

        # 2. restart
        sig = signal.SIGKILL if args.kill else signal.SIGTERM
        r["restart"] = sig.name
        r["stop_s"] = round(broker.stop(sig), 3)
        r["start_until_port_s"] = round(broker.start(), 3)
        assert broker.sampler is not None
        rec = broker.recovery()
        if rec["messages"] != args.count:
            raise SystemExit(f"recovered {rec['messages']} messages, expected {args.count}")
        t1 = time.monotonic()
        r["recovery"] = rec
        r["rss_after_recovery_mb"] = round(settle(broker), 1)
        report("restart", r)

        # 3. drain with one consumer
        drain = bench(broker.uri, "--publishers", "0", "--consumers", "1", "--prefetch", "1000",
                      "--multi-ack-every", "100", "--size", str(args.size))  # fmt: skip
        r["drain_s"] = drain["duration_s"]
        r["drain_rate"] = drain["consume_rate_overall"]
        r["drained"] = drain["consumed"]
        r["backlog_seen_by_drain"] = drain["backlog"]
        r["depth_after_drain"] = queue_depth(broker.uri)
        r["count_matches"] = drain["consumed"] == args.count and r["depth_after_drain"] == 0
        r["rss_peak_drain_mb"] = round(broker.sampler.peak_since(t1), 1)
        r["rss_after_drain_mb"] = round(settle(broker, 2.0), 1)  # lets the group commit write the acks
        r["disk_after_drain"] = disk_mb(data_dir)
        report("drain", r)
        r["rss_peak_mb"] = max(float(r["rss_peak_publish_mb"]), float(r["rss_peak_drain_mb"]))  # type: ignore[arg-type]
        r["target_met"] = float(r["rss_after_publish_mb"]) < TARGET_MB  # type: ignore[arg-type]
        print(json.dumps(r, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(r, indent=2))
    finally:
        if broker.proc is not None and broker.proc.poll() is None:
            broker.stop()
        if args.keep_data:
            print(f"data dir and log kept under {parent}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", parent], check=False)
    return 0 if r.get("count_matches") else 1


def report(phase: str, r: dict[str, object]) -> None:
    if phase == "publish":
        d = r["disk_after_publish"]
        text = (
            f"published {r['count']:,} x {r['size']} B in {r['publish_s']} s ({r['publish_rate']:,} msg/s); "
            f"RSS start {r['rss_start_mb']} MB, peak {r['rss_peak_publish_mb']} MB, after {r['rss_after_publish_mb']} MB "
            f"({r['bytes_per_message']} B/msg); disk {d}"  # type: ignore[index]
        )
    elif phase == "restart":
        text = (
            f"restart ({r['restart']}): stop {r['stop_s']} s, port answers after {r['start_until_port_s']} s, "
            f"recovery {r['recovery']}; RSS after recovery {r['rss_after_recovery_mb']} MB"
        )
    else:
        text = (
            f"drained {r['drained']:,} in {r['drain_s']} s ({r['drain_rate']:,} msg/s), depth after {r['depth_after_drain']}, "
            f"RSS peak {r['rss_peak_drain_mb']} MB, after {r['rss_after_drain_mb']} MB; disk {r['disk_after_drain']}"
        )
    print(f"[{phase}] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
