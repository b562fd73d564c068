"""Smoke test of ``leveret bench`` against a real broker: a short run gives sane numbers and cleans up."""

from __future__ import annotations

import json
import subprocess
import sys

import pika
import pytest

from tests.conftest import free_port


def _bench(url: str, queue: str, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "leveret", "bench", "--uri", url, "--queue", queue, *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout
    return json.loads(lines[0])


def _exists(url: str, kind: str, name: str) -> bool:
    """Whether a queue or exchange (``kind``) of that name exists, by a passive declare."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        (ch.queue_declare if kind == "queue" else ch.exchange_declare)(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404
        return False
    finally:
        if conn.is_open:
            conn.close()


def _queue_exists(url: str, queue: str) -> bool:
    return _exists(url, "queue", queue)


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


def test_bench_with_confirms_and_fixed_rate(broker, unique, tmp_path) -> None:
    out = tmp_path / "latencies.txt"
    r = _bench(
        broker.url, unique, "--duration", "1", "--confirm", "50", "--rate", "2000", "--persistent",
        "--latencies-out", str(out),
    )  # fmt: skip
    assert 0 < r["confirmed"] <= r["published"]
    assert r["nacked"] == 0
    # a fixed rate is a ceiling: 2000 msg/s for 1 s, with a little slack for the last tick
    assert r["published"] <= 2100
    assert 0 < r["consumed"] <= r["published"]
    # every sample, in microseconds: the same ones the percentiles came from
    samples = sorted(int(line) for line in out.read_text().split())
    assert len(samples) == r["latency_samples"] == r["consumed"]
    assert samples[-1] / 1000 == pytest.approx(r["latency_ms"]["max"], abs=0.001)


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


def _depth(url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        conn.close()


def _delete(url: str, *queues: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = conn.channel()
        for q in queues:
            ch.queue_delete(q)
    finally:
        conn.close()


def _exchange_exists(url: str, exchange: str) -> bool:
    return _exists(url, "exchange", exchange)


def test_bench_spreads_one_publisher_over_several_queues(broker, unique) -> None:
    # one publisher takes turns over the queues, one burst (200 x 16 B) each: 200 per queue
    r = _bench(broker.url, unique, "--queues", "3", "--consumers", "0", "--publish-count", "600", "--keep-queue")
    names = [f"{unique}-{i}" for i in (1, 2, 3)]
    try:
        assert r["queues"] == 3 and r["published"] == 600
        assert [_depth(broker.url, q) for q in names] == [200, 200, 200]
    finally:
        _delete(broker.url, *names)


def test_bench_with_several_queues_consumes_from_all_and_deletes_them(broker, unique) -> None:
    r = _bench(broker.url, unique, "--queues", "3", "--publishers", "2", "--consumers", "2", "--publish-count", "900")
    assert r["queues"] == 3 and r["consumers"] == 2
    assert r["published"] == 1800 and r["consumed"] == 1800  # a bounded run ends once all is consumed
    assert not any(_queue_exists(broker.url, f"{unique}-{i}") for i in (1, 2, 3))


def test_bench_fanout_delivers_each_publish_to_every_queue(broker, unique) -> None:
    r = _bench(broker.url, unique, "--fanout", "3", "--publish-count", "500", "--consumers", "1")
    assert r["fanout"] == 3 and r["queues"] == 3 and r["consumers"] == 3  # one consumer per queue
    assert r["published"] == 500 and r["consumed"] == 1500
    assert r["latency_samples"] == 1500
    assert not _exchange_exists(broker.url, f"{unique}-fanout")
    assert not any(_queue_exists(broker.url, f"{unique}-{i}") for i in (1, 2, 3))


def test_bench_backlog_publishes_then_drains(broker, unique) -> None:
    cmd = [sys.executable, "-m", "leveret", "bench", "--uri", broker.url, "--queue", unique, "--quiet"]
    cmd += ["--backlog", "3001", "--publishers", "2", "--consumers", "2", "--persistent", "--confirm", "100"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["mode"] == "backlog" and r["backlog_messages"] == 3001
    assert r["published"] == r["confirmed"] == r["consumed"] == 3001
    assert r["publish_s"] > 0 and r["drain_s"] > 0
    assert r["publish_rate_overall"] == pytest.approx(3001 / r["publish_s"], rel=0.05)  # publish_s is rounded
    # the driver's cue to sample the broker's memory comes between the phases, even with --quiet
    assert out.stderr == f"bench: backlog of 3001 messages published in {r['publish_s']:.3f} s\n"
    assert not _queue_exists(broker.url, unique)


def test_bench_holds_idle_connections(broker) -> None:
    cmd = [sys.executable, "-m", "leveret", "bench", "--uri", broker.url, "--idle-connections", "30", "--hold", "0.2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["mode"] == "idle"
    assert (r["attempted"], r["opened"], r["held"], r["failed"]) == (30, 30, 30, 0)
    assert r["nofile"] >= 1024 and r["cpu_s"] > 0
    assert "bench: 30 idle connections open; holding 0.2 s" in out.stderr


def test_bench_idle_connections_stop_trying_once_a_window_failed(broker) -> None:
    uri = f"amqp://guest:guest@127.0.0.1:{free_port()}/"  # nobody listens there
    cmd = [sys.executable, "-m", "leveret", "bench", "--uri", uri, "--idle-connections", "500", "--hold", "0"]
    out = subprocess.run([*cmd, "--connect-concurrency", "5"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["opened"] == 0 and r["failed"] == r["attempted"]
    assert 5 <= r["attempted"] <= 11  # the lone first try, then one window of 5 (and stragglers)
    assert "refused" in r["first_failure"].lower()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fanout", "2", "--queues", "2"], "--fanout N declares its own N queues"),
        (["--backlog", "10", "--consumers", "0"], "--backlog needs publishers and consumers"),
        (["--queues", "0"], "--queues must be >= 1"),
    ],
)
def test_bench_refuses_contradictory_options(broker, flags, message) -> None:
    cmd = [sys.executable, "-m", "leveret", "bench", "--uri", broker.url, *flags]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert message in out.stderr
