"""Smoke test of ``leveret bench`` against a real broker: a short run gives sane numbers and cleans up."""

from __future__ import annotations

import json
import subprocess
import sys

import pika
import pytest


def _bench(url: str, queue: str, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "leveret", "bench", "--uri", url, "--queue", queue, *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout
    return json.loads(lines[0])


def _queue_exists(url: str, queue: str) -> bool:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        conn.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False
    finally:
        if conn.is_open:
            conn.close()


def test_bench_reports_rates_latency_and_deletes_its_queue(broker, unique) -> None:
    r = _bench(broker.url, unique, "--duration", "2", "--prefetch", "100", "--multi-ack-every", "10")
    assert r["publish_rate"] > 0 and r["consume_rate"] > 0
    assert 0 < r["consumed"] <= r["published"]
    assert r["publish_rate_overall"] > 0 and r["consume_rate_overall"] > 0
    assert len(r["consume_samples"]) == 2
    lat = r["latency_ms"]
    assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert lat["max"] < 10_000  # no message can be older than the run: the timestamps are read right
    assert r["latency_samples"] == r["consumed"]
    assert r["cpu_s"] > 0
    assert not _queue_exists(broker.url, unique)


def test_bench_with_confirms_and_fixed_rate(broker, unique) -> None:
    r = _bench(broker.url, unique, "--duration", "1", "--confirm", "50", "--rate", "2000", "--persistent")
    assert 0 < r["confirmed"] <= r["published"]
    assert r["nacked"] == 0
    # a fixed rate is a ceiling: 2000 msg/s for 1 s, with a little slack for the last tick
    assert r["published"] <= 2100
    assert 0 < r["consumed"] <= r["published"]


def test_bench_fails_when_the_broker_closes_a_link_mid_run(broker, unique) -> None:
    # Leveret's max message size is 16 MiB: the publisher's channel is closed with 406
    cmd = [sys.executable, "-m", "leveret", "bench", "--uri", broker.url, "--queue", unique]
    cmd += ["--duration", "1", "--size", "17000000", "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stdout == ""
    assert "publisher 1: channel closed by the broker: 406" in out.stderr
    assert not _queue_exists(broker.url, unique)


@pytest.mark.parametrize("uri", ["amqp://guest:wrong@127.0.0.1:{port}/", "amqp://guest:guest@127.0.0.1:1/"])
def test_bench_fails_cleanly(broker, uri) -> None:
    cmd = [sys.executable, "-m", "leveret", "bench", "--uri", uri.format(port=broker.port), "--duration", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.startswith("bench: ")
