"""Dead-lettering of persistent messages is at-least-once across kill -9 (issue 4): the copy is
written to the log before the source's ack record, so whatever prefix of the log survives holds the
message in the source queue, in the dead-letter queue, or in both, never in neither.

Rejections, expiries and length-limit drops are each cut short by a kill at once, then by a kill
after the broker had time to sync; after each restart every message is somewhere, and once synced
it is in the dead-letter queue only."""

from __future__ import annotations

import time
from pathlib import Path

import pika
import pytest

from tests.conftest import BrokerProcess

N = 20


def channel(broker: BrokerProcess) -> tuple[pika.BlockingConnection, pika.adapters.blocking_connection.BlockingChannel]:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    return conn, conn.channel()


def counts(broker: BrokerProcess, *queues: str) -> list[int]:
    conn, ch = channel(broker)
    try:
        return [ch.queue_declare(q, passive=True).method.message_count for q in queues]
    finally:
        conn.close()


def bodies(broker: BrokerProcess, queue: str) -> set[bytes]:
    conn, ch = channel(broker)
    got = set()
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=False)
        if method is None:
            break
        got.add(body)
    conn.close()  # nothing acked: all requeued
    return got


@pytest.mark.parametrize("synced", [False, True], ids=["kill-at-once", "kill-after-sync"])
@pytest.mark.parametrize("cause", ["rejected", "expired", "maxlen"])
def test_dead_lettered_persistent_messages_survive_kill9(tmp_path: Path, cause: str, synced: bool) -> None:
    broker = BrokerProcess(tmp_path / "data")
    try:
        conn, ch = channel(broker)
        ch.exchange_declare("dlx", "fanout", durable=True)
        ch.queue_declare("dlq", durable=True)
        ch.queue_bind("dlq", "dlx")
        args: dict[str, object] = {"x-dead-letter-exchange": "dlx"}
        if cause == "expired":
            args["x-message-ttl"] = 1
        elif cause == "maxlen":
            args["x-max-length"] = 0  # everything is dropped from the head at once
        ch.queue_declare("src", durable=True, arguments=args)
        ch.confirm_delivery()
        expected = {b"%d" % i for i in range(N)}
        for body in sorted(expected):
            ch.basic_publish("", "src", body, pika.BasicProperties(delivery_mode=2))
        if cause == "rejected":
            for _ in range(N):
                method, _, _ = ch.basic_get("src")
                ch.basic_reject(method.delivery_tag, requeue=False)
            ch.queue_declare("src", durable=True, passive=True)  # a round trip: the rejects were handled
        if synced:
            time.sleep(0.5)  # group commit has synced the copies and the source's ack records
        broker.restart(kill=True)
        if synced:
            assert counts(broker, "src", "dlq") == [0, N]
            assert bodies(broker, "dlq") == expected
        else:
            found = bodies(broker, "src") | bodies(broker, "dlq")  # a message may be in both
            assert expected <= found, f"lost: {sorted(expected - found)}"
    finally:
        broker.stop()
