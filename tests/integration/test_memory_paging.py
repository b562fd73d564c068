"""Under memory pressure transient messages of deep queues page out to disk: the broker's memory
stays bounded while the backlog grows, and every message comes back intact on drain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pika

from tests.conftest import BrokerProcess

COUNT = 120_000
SIZE = 1024


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _bench(url: str, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "leveret", "bench", "--uri", url, "--quiet", "--size", str(SIZE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_transient_backlog_pages_out_and_drains_intact(tmp_path: Path, unique: str) -> None:
    broker = BrokerProcess(tmp_path / "b", "--memory-limit", str(80 * 1024 * 1024))
    try:
        start_rss = _rss_mb(broker.proc.pid)
        pub = _bench(
            broker.url,
            "--queue",
            unique,
            "--consumers",
            "0",
            "--publish-count",
            str(COUNT),
            "--confirm",
            "1000",
            "--keep-queue",
            "--duration",
            "90",
        )
        assert pub["published"] == COUNT
        grown = _rss_mb(broker.proc.pid) - start_rss
        # Held in RAM, 120k x 1 KiB bodies would add well over 120 MB; paged, only the index stays.
        assert grown < 80, f"broker grew by {grown:.0f} MB"
        assert "paging transient messages out" in broker.log()
        assert list((broker.data_dir / "msgs").glob("*.seg"))

        conn = pika.BlockingConnection(pika.URLParameters(broker.url))
        ch = conn.channel()
        assert ch.queue_declare(unique, passive=True).method.message_count == COUNT
        first = ch.basic_get(unique, auto_ack=True)
        assert first[0] is not None and len(first[2]) == SIZE and first[0].redelivered is False
        conn.close()

        drained = _bench(broker.url, "--queue", unique, "--publishers", "0", "--keep-queue", "--duration", "90")
        assert drained["consumed"] == COUNT - 1
    finally:
        broker.stop()
