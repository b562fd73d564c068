"""Durable definitions across restarts, with pika against a real broker that is stopped with SIGTERM
or killed with SIGKILL and started again on the same data directory and port.

Durable exchanges, queues and bindings (both ends durable) come back; transient and exclusive ones do
not; deletions stay deleted; queue uids are kept and never reused. The auto-delete cases follow what
RabbitMQ 3.10 does (checked against a live node): a durable auto-delete queue that has a consumer is
deleted by a clean stop (its consumer goes with the connection) but survives a kill -9.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions
import pytest

from leveret.store.journal import decode_command
from leveret.store.records import JOURNAL_MAGIC, read_records

from ..conftest import BrokerProcess

HEADERS_ARGS = {"x-match": "any", "colour": "red", "size": 5}
QUEUE_ARGS = {"x-max-priority": 5, "x-message-ttl": 60000}


@contextmanager
def channel(broker: BrokerProcess) -> Iterator[Any]:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


def exists(broker: BrokerProcess, kind: str, name: str) -> bool:
    with channel(broker) as ch:
        try:
            if kind == "queue":
                ch.queue_declare(name, passive=True)
            else:
                ch.exchange_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 404
            return False
        return True


def journal_commands(broker: BrokerProcess) -> list[dict[str, Any]]:
    """The journal as it is on disk now (read only: the broker may be running)."""
    data = (broker.data_dir / "defs" / "journal.log").read_bytes()
    return [decode_command(bytes(payload)) for _, payload in read_records(data, JOURNAL_MAGIC)]


def uids(broker: BrokerProcess) -> dict[str, int]:
    """Queue name -> uid of its latest declaration in the journal."""
    return {c["name"]: c["uid"] for c in journal_commands(broker) if c["op"] == "declare_queue"}


def declare_world(broker: BrokerProcess) -> str:
    """Everything the survival test checks; returns the server-generated durable queue's name."""
    with channel(broker) as ch:
        ch.exchange_declare("d-direct", "direct", durable=True)
        ch.exchange_declare("d-topic", "topic", durable=True)
        ch.exchange_declare("d-headers", "headers", durable=True, arguments={"alternate-exchange": "d-direct"})
        ch.queue_declare("d-queue", durable=True, arguments=QUEUE_ARGS)
        ch.queue_bind("d-queue", "d-direct", "rk")
        ch.exchange_bind("d-direct", "d-topic", "a.*")  # exchange to exchange: d-topic -> d-direct
        ch.queue_bind("d-queue", "d-headers", "", arguments=HEADERS_ARGS)
        ch.queue_bind("d-queue", "amq.fanout")
        generated = ch.queue_declare("", durable=True).method.queue
        # Not durable, so not kept: transient exchange/queue, exclusive queue, bindings to them.
        ch.exchange_declare("t-exchange", "fanout")
        ch.queue_declare("t-queue")
        ch.queue_bind("t-queue", "d-direct", "rk")
        ch.queue_bind("d-queue", "t-exchange")
        # Deleted before the restart: must stay deleted.
        ch.queue_declare("gone-queue", durable=True)
        ch.queue_bind("gone-queue", "d-direct", "rk")
        ch.queue_delete("gone-queue")
        ch.exchange_declare("gone-exchange", "fanout", durable=True)
        ch.exchange_delete("gone-exchange")
        ch.exchange_declare("ad-exchange", "direct", durable=True, auto_delete=True)
        ch.queue_bind("d-queue", "ad-exchange", "x")
        ch.queue_unbind("d-queue", "ad-exchange", "x")  # last binding gone: auto-deleted
        # Exclusive (asked durable) on a connection that the restart ends anyway.
        ch.queue_declare("x-queue", durable=True, exclusive=True)
        assert exists(broker, "exchange", "t-exchange") and not exists(broker, "exchange", "ad-exchange")
        return str(generated)


def routed(broker: BrokerProcess, exchange: str, routing_key: str, headers: dict[str, Any] | None = None) -> bool:
    """Publish one message and see whether it reached d-queue (which is drained first)."""
    with channel(broker) as ch:
        ch.queue_purge("d-queue")
        ch.basic_publish(exchange, routing_key, b"probe", pika.BasicProperties(headers=headers))
        ch.queue_declare("d-queue", passive=True)  # a round trip: the publish has been routed
        method, _, body = ch.basic_get("d-queue", auto_ack=True)
        return method is not None and body == b"probe"


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_durable_definitions_survive_restart(fresh_broker: BrokerProcess, kill: bool) -> None:
    generated = declare_world(fresh_broker)
    before = uids(fresh_broker)
    fresh_broker.restart(kill=kill)
    assert "3 exchanges, 2 queues, 4 bindings restored" in fresh_broker.log()

    for name in ("d-direct", "d-topic", "d-headers"):
        assert exists(fresh_broker, "exchange", name), name
    assert exists(fresh_broker, "queue", "d-queue") and exists(fresh_broker, "queue", generated)
    for kind, name in (
        ("exchange", "t-exchange"),
        ("queue", "t-queue"),
        ("queue", "x-queue"),
        ("queue", "gone-queue"),
        ("exchange", "gone-exchange"),
        ("exchange", "ad-exchange"),
    ):
        assert not exists(fresh_broker, kind, name), name

    # The bindings, by routing through them.
    assert routed(fresh_broker, "d-direct", "rk")
    assert not routed(fresh_broker, "d-direct", "other")
    assert routed(fresh_broker, "d-topic", "a.b") is False  # d-direct has no "a.b" binding...
    with channel(fresh_broker) as ch:
        ch.queue_bind("d-queue", "d-direct", "a.b")
    assert routed(fresh_broker, "d-topic", "a.b")  # ...so this went d-topic -> d-direct -> d-queue
    assert routed(fresh_broker, "d-headers", "zzz", {"colour": "red"})
    assert not routed(fresh_broker, "d-headers", "zzz", {"colour": "blue"})
    assert routed(fresh_broker, "d-headers", "rk", {"colour": "blue"})  # via its alternate exchange
    assert routed(fresh_broker, "amq.fanout", "")

    # Flags and arguments came back: equivalent redeclares pass, inequivalent ones are refused.
    with channel(fresh_broker) as ch:
        ch.queue_declare("d-queue", durable=True, arguments=QUEUE_ARGS)
        ch.exchange_declare("d-headers", "headers", durable=True, arguments={"alternate-exchange": "d-direct"})
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.queue_declare("d-queue", durable=True, arguments={**QUEUE_ARGS, "x-max-priority": 6})
        assert info.value.reply_code == 406

    # Queue uids: kept across the restart, never reused (not even the deleted queue's).
    with channel(fresh_broker) as ch:
        ch.queue_declare("new-queue", durable=True)
    after = uids(fresh_broker)
    assert after["d-queue"] == before["d-queue"] and after[generated] == before[generated]
    assert after["new-queue"] > max(before.values())
    assert before["gone-queue"] not in {after["d-queue"], after[generated], after["new-queue"]}


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_durable_auto_delete_queue_with_a_consumer(fresh_broker: BrokerProcess, kill: bool) -> None:
    """RabbitMQ 3.10: a clean stop closes the consumer's connection, which deletes the queue; a
    kill -9 does not. A durable auto-delete queue that never had a consumer survives both."""
    with channel(fresh_broker) as ch:
        ch.queue_declare("ad-idle", durable=True, auto_delete=True)
    conn = pika.BlockingConnection(pika.URLParameters(fresh_broker.url))
    ch = conn.channel()
    ch.queue_declare("ad-consumed", durable=True, auto_delete=True)
    ch.basic_consume("ad-consumed", lambda *args: None)
    fresh_broker.restart(kill=kill)
    with pytest.raises(pika.exceptions.AMQPError):
        conn.process_data_events(time_limit=5)  # the broker went away under it
    assert exists(fresh_broker, "queue", "ad-idle")
    assert exists(fresh_broker, "queue", "ad-consumed") is kill


def test_leftover_compaction_file_and_torn_tail_boot_cleanly(fresh_broker: BrokerProcess) -> None:
    with channel(fresh_broker) as ch:
        ch.exchange_declare("d-direct", "direct", durable=True)
        ch.queue_declare("d-queue", durable=True)
        ch.queue_bind("d-queue", "d-direct", "rk")
    fresh_broker.restart(kill=True)
    defs = fresh_broker.data_dir / "defs"
    journal = defs / "journal.log"
    good = journal.read_bytes()
    shutil.copy(journal, defs / "journal.log.tmp")  # a compaction that crashed before its rename...
    with open(defs / "journal.log.tmp", "ab") as fh:
        fh.write(b"\x40\x00\x00\x00half a record")  # ...half written
    with channel(fresh_broker) as ch:
        ch.queue_declare("late-queue", durable=True)
    fresh_broker.proc.kill()
    fresh_broker.proc.wait()
    whole = journal.read_bytes()
    journal.write_bytes(whole[: len(good) + (len(whole) - len(good)) // 2])  # the last record torn
    fresh_broker.restart()
    log = fresh_broker.log()
    assert "unfinished compaction discarded" in log and "torn tail" in log
    assert not (defs / "journal.log.tmp").exists()
    assert exists(fresh_broker, "queue", "d-queue") and not exists(fresh_broker, "queue", "late-queue")
    assert routed(fresh_broker, "d-direct", "rk")
    with channel(fresh_broker) as ch:  # and the journal takes new records after the truncation
        ch.queue_declare("later-queue", durable=True)
    fresh_broker.restart(kill=True)
    assert exists(fresh_broker, "queue", "later-queue") and exists(fresh_broker, "queue", "d-queue")
