"""What the message store promises, through pika against a real broker that is stopped and killed:
confirmed persistent messages of durable queues survive, come back redelivered and in order; what
is acked (or taken with no-ack) stays gone; transient messages and non-durable queues do not survive;
disk use returns near zero after a drain."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from tests.conftest import BrokerProcess

PERSISTENT = pika.BasicProperties(delivery_mode=2)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path / "b")
    yield proc
    proc.stop()


def _channel(node: BrokerProcess) -> tuple[pika.BlockingConnection, pika.adapters.blocking_connection.BlockingChannel]:
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    return conn, conn.channel()


def _drain(ch: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> list[tuple[bytes, bool]]:
    got = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return got
        got.append((body, method.redelivered))


def _disk(node: BrokerProcess) -> int:
    d = node.data_dir / "msgs"
    return sum(f.stat().st_size for f in d.iterdir())


@pytest.mark.parametrize("kill", [True, False], ids=["sigkill", "sigterm"])
def test_confirmed_persistent_messages_survive_and_come_back_redelivered_in_order(
    node: BrokerProcess, kill: bool
) -> None:
    conn, ch = _channel(node)
    ch.queue_declare("dq", durable=True)
    ch.confirm_delivery()
    for i in range(300):
        ch.basic_publish("", "dq", f"m{i}".encode(), PERSISTENT)
    for _ in range(100):  # ack the first 100: they must stay gone
        method, _p, _b = ch.basic_get("dq")
        ch.basic_ack(method.delivery_tag)
    method, _p, body = ch.basic_get("dq")  # delivered, never acked: comes back
    assert body == b"m100" and not method.redelivered
    node.restart(kill=kill)
    conn, ch = _channel(node)
    got = _drain(ch, "dq")
    bodies = [b for b, _ in got]
    # Acks are recorded lazily: after a kill the last few may be lost, which only means those messages
    # come back (a redelivery, never a loss). After a clean stop none may come back.
    first = 300 - len(bodies)
    assert bodies == [f"m{i}".encode() for i in range(first, 300)]
    assert first == 100 if not kill else 80 <= first <= 100
    assert all(redelivered for _, redelivered in got)
    conn.close()
    node.restart()  # and what was drained (no-ack) stays drained (a clean stop writes every ack)
    conn, ch = _channel(node)
    assert ch.queue_declare("dq", passive=True).method.message_count == 0
    conn.close()


def test_transient_messages_and_non_durable_queues_do_not_survive(node: BrokerProcess) -> None:
    conn, ch = _channel(node)
    ch.queue_declare("dq", durable=True)
    ch.queue_declare("tq", durable=False)
    ch.exchange_declare("fan", "fanout", durable=True)
    ch.queue_bind("dq", "fan")
    ch.queue_bind("tq", "fan")
    ch.confirm_delivery()
    ch.basic_publish("fan", "", b"persistent", PERSISTENT)
    ch.basic_publish("fan", "", b"transient", pika.BasicProperties(delivery_mode=1))
    conn.close()
    node.restart(kill=True)
    conn, ch = _channel(node)
    assert [b for b, _ in _drain(ch, "dq")] == [b"persistent"]
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_declare("tq", passive=True)
    assert info.value.reply_code == 404
    conn.close()


def test_a_message_to_many_durable_queues_is_written_once(node: BrokerProcess) -> None:
    conn, ch = _channel(node)
    ch.exchange_declare("fan", "fanout", durable=True)
    for i in range(5):
        ch.queue_declare(f"q{i}", durable=True)
        ch.queue_bind(f"q{i}", "fan")
    ch.confirm_delivery()
    body = os.urandom(64 * 1024)
    ch.basic_publish("fan", "", body, PERSISTENT)
    conn.close()
    assert 64 * 1024 < _disk(node) < 2 * 64 * 1024  # once, not five times
    node.restart(kill=True)
    conn, ch = _channel(node)
    for i in range(5):
        assert _drain(ch, f"q{i}") == [(body, True)]
    conn.close()


def test_disk_use_returns_near_zero_after_a_drain(node: BrokerProcess) -> None:
    conn, ch = _channel(node)
    ch.queue_declare("dq", durable=True)
    ch.confirm_delivery()
    for _ in range(3000):
        ch.basic_publish("", "dq", os.urandom(1024), PERSISTENT)
    assert _disk(node) > 3_000_000
    ch.basic_qos(prefetch_count=500)
    n = 0
    for method, _p, _b in ch.consume("dq", inactivity_timeout=2):
        if method is None:
            break
        ch.basic_ack(method.delivery_tag)
        n += 1
    assert n == 3000
    ch.queue_declare("dq", passive=True)  # a round trip: the acks are processed
    conn.close()
    node.restart()  # clean stop: everything written
    assert _disk(node) < 64 * 1024


def test_purge_and_delete_are_remembered(node: BrokerProcess) -> None:
    conn, ch = _channel(node)
    ch.queue_declare("p", durable=True)
    ch.queue_declare("d", durable=True)
    ch.confirm_delivery()
    for q in ("p", "d"):
        for i in range(10):
            ch.basic_publish("", q, f"{q}{i}".encode(), PERSISTENT)
    assert ch.queue_purge("p").method.message_count == 10
    ch.queue_delete("d")
    ch.queue_declare("d", durable=True)  # same name, new queue: the old messages must not reappear
    conn.close()
    node.restart(kill=True)
    conn, ch = _channel(node)
    assert ch.queue_declare("p", passive=True).method.message_count == 0
    assert ch.queue_declare("d", passive=True).method.message_count == 0
    conn.close()


def test_store_check_passes_on_a_live_data_dir(node: BrokerProcess) -> None:
    import subprocess
    import sys

    conn, ch = _channel(node)
    ch.queue_declare("dq", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "dq", b"x", PERSISTENT)
    conn.close()
    node.stop()
    result = subprocess.run(
        [sys.executable, "-m", "leveret", "store", "check", "--data-dir", str(node.data_dir)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
