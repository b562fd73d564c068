"""Delivery semantics as RabbitMQ implements them, checked with pika (and aio-pika where it helps).

Acknowledgements (ack/nack/reject, multiple, requeue to the original position with redelivered=true),
basic.recover, requeue of unacked messages when a channel or connection closes, basic.get and
get-empty counts, purge and declare-ok counts, exclusive consumers, broker-sent basic.cancel,
auto-delete queues, mandatory returns before confirms, alternate exchanges, exchange-to-exchange
bindings, the headers exchange, transactions, and per-consumer and channel-wide prefetch.

"Nothing more arrives" is checked with a round trip on the same channel (a passive declare):
Leveret writes the deliveries it makes before the reply to a later method.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aio_pika
import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

TIMEOUT = 5.0


def connect(port: int) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))


@pytest.fixture
def conn(amqp_port):
    connection = connect(amqp_port)
    yield connection
    if connection.is_open:
        connection.close()


@pytest.fixture
def ch(conn):
    return conn.channel()


def pump(conn: pika.BlockingConnection, done: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out waiting for the broker"
        conn.process_data_events(time_limit=0.05)


def sync(ch: BlockingChannel, queue: str) -> tuple[int, int]:
    """Round trip on ``ch``, then dispatch what arrived; returns (ready messages, consumers)."""
    method = ch.queue_declare(queue, passive=True).method
    ch.connection.process_data_events(0)
    return method.message_count, method.consumer_count


def publish(ch: BlockingChannel, queue: str, bodies, **props) -> None:
    for body in bodies:
        ch.basic_publish(
            "", queue, body if isinstance(body, bytes) else str(body).encode(), pika.BasicProperties(**props)
        )


def get(ch: BlockingChannel, queue: str, auto_ack: bool = False) -> tuple[int, bytes, bool, int] | None:
    """basic.get: (delivery tag, body, redelivered, messages left) or None on get-empty."""
    method, _props, body = ch.basic_get(queue, auto_ack=auto_ack)
    if method is None:
        return None
    return method.delivery_tag, body, method.redelivered, method.message_count


def get_all(ch: BlockingChannel, queue: str) -> list[tuple[bytes, bool]]:
    """Drain the queue with auto-ack basic.get: [(body, redelivered), ...]."""
    out = []
    while (got := get(ch, queue, auto_ack=True)) is not None:
        out.append((got[1], got[2]))
    return out


class Collector:
    """A consumer callback that records deliveries and never acks by itself."""

    def __init__(self) -> None:
        self.items: list[tuple[int, bytes, bool]] = []

    def __call__(self, channel, method, properties, body) -> None:
        self.items.append((method.delivery_tag, body, method.redelivered))

    @property
    def bodies(self) -> list[bytes]:
        return [b for _t, b, _r in self.items]

    def tag(self, body: bytes) -> int:
        return next(t for t, b, _r in self.items if b == body)


# ---------------------------------------------------------------------------- acknowledgements


def test_ack_multiple_acks_up_to_the_tag(ch, unique):
    ch.queue_declare(unique, exclusive=True)
    publish(ch, unique, range(5))
    got = Collector()
    ch.basic_consume(unique, got)
    pump(ch.connection, lambda: len(got.items) == 5)
    assert got.bodies == [b"0", b"1", b"2", b"3", b"4"]
    assert [r for _t, _b, r in got.items] == [False] * 5

    ch.basic_ack(got.tag(b"2"), multiple=True)  # acks 0, 1, 2
    ch.basic_cancel(ch.consumer_tags[0])
    ch.basic_recover(requeue=True)  # 3 and 4 were still unacked: they come back
    assert get_all(ch, unique) == [(b"3", True), (b"4", True)]


def test_nack_multiple_requeue_restores_original_order(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    publish(ch, unique, range(1, 7))
    tags = {}
    for expected in range(1, 5):
        tag, body, redelivered, left = get(ch, unique)
        assert (body, redelivered, left) == (str(expected).encode(), False, 6 - expected)
        tags[expected] = tag

    ch.basic_nack(tags[3], multiple=True, requeue=True)  # 1, 2, 3 go back to the head, in order
    assert sync(ch, unique)[0] == 5
    again = [get(ch, unique) for _ in range(3)]
    assert [(b, r) for _t, b, r, _n in again] == [(b"1", True), (b"2", True), (b"3", True)]

    ch.basic_reject(tags[4], requeue=True)  # 4 goes back before 5 and 6
    assert get_all(ch, unique) == [(b"4", True), (b"5", False), (b"6", False)]


def test_requeue_position_does_not_depend_on_reject_order(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    publish(ch, unique, ["a", "b", "c", "d"])
    tags = [get(ch, unique)[0] for _ in range(3)]  # a, b, c unacked
    ch.basic_reject(tags[2], requeue=True)  # c first
    ch.basic_reject(tags[0], requeue=True)  # then a
    assert get_all(ch, unique) == [(b"a", True), (b"c", True), (b"d", False)]
    ch.basic_ack(tags[1])  # b was never settled and can still be acked
    assert sync(ch, unique)[0] == 0


def test_requeued_message_goes_to_the_head_for_consumers(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    publish(ch, unique, range(5))
    ch.basic_qos(prefetch_count=2)
    got = Collector()
    ch.basic_consume(unique, got)
    pump(ch.connection, lambda: len(got.items) == 2)
    assert got.bodies == [b"0", b"1"]
    ch.basic_nack(got.tag(b"0"), requeue=True)  # back to the head: redelivered before 2
    pump(ch.connection, lambda: len(got.items) == 3)
    assert got.items[2][1:] == (b"0", True)
    assert got.items[2][0] > got.items[1][0]  # a new delivery tag
    sync(ch, unique)
    assert len(got.items) == 3  # prefetch 2: 1 and the redelivered 0


def test_nack_and_reject_without_requeue_drop_the_message(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    publish(ch, unique, range(4))
    t0, t1, t2 = (get(ch, unique)[0] for _ in range(3))
    ch.basic_nack(t0, requeue=False)
    ch.basic_reject(t1, requeue=False)
    ch.basic_nack(t2, multiple=True, requeue=False)  # nothing left below t2 but t2 itself
    assert get_all(ch, unique) == [(b"3", False)]
    ch.close()


def test_ack_zero_multiple_acks_everything(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    publish(ch, unique, range(3))
    for _ in range(3):
        get(ch, unique)
    ch.basic_ack(0, multiple=True)
    ch.basic_recover(requeue=True)
    assert sync(ch, unique)[0] == 0


def test_basic_recover_redelivers_unacked(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    publish(ch, unique, ["x", "y", "z"])
    got = Collector()
    ch.basic_consume(unique, got)
    pump(ch.connection, lambda: len(got.items) == 3)
    ch.basic_ack(got.tag(b"y"))
    ch.basic_recover(requeue=True)
    pump(ch.connection, lambda: len(got.items) == 5)
    assert [(b, r) for _t, b, r in got.items[3:]] == [(b"x", True), (b"z", True)]
    for tag, _b, _r in got.items[3:]:
        ch.basic_ack(tag)
    assert sync(ch, unique) == (0, 1)


@pytest.mark.parametrize("close", ["channel", "connection"])
def test_unacked_messages_requeued_on_close(amqp_port, conn, ch, unique, close):
    ch.queue_declare(unique)
    publish(ch, unique, range(5))

    other_conn = connect(amqp_port)
    other = other_conn.channel()
    got = Collector()
    other.basic_qos(prefetch_count=3)
    other.basic_consume(unique, got)
    pump(other_conn, lambda: len(got.items) == 3)
    other.basic_ack(got.tag(b"1"))  # frees one slot: 3 is delivered
    pump(other_conn, lambda: len(got.items) == 4)
    sync(other, unique)
    assert got.bodies == [b"0", b"1", b"2", b"3"]
    assert sync(ch, unique) == (1, 1)
    if close == "channel":
        other.close()
        assert other_conn.is_open
    else:
        other_conn.close()
    assert sync(ch, unique) == (4, 0)
    assert get_all(ch, unique) == [(b"0", True), (b"2", True), (b"3", True), (b"4", False)]
    if other_conn.is_open:
        other_conn.close()
    ch.queue_delete(unique)


def test_cancel_keeps_unacked_deliveries_ackable(ch, unique):
    ch.queue_declare(unique, exclusive=True)
    publish(ch, unique, range(3))
    got = Collector()
    ch.basic_consume(unique, got, consumer_tag="c")
    pump(ch.connection, lambda: len(got.items) == 3)
    ch.basic_cancel("c")  # cancelling does not requeue what the consumer holds
    assert sync(ch, unique) == (0, 0)
    for tag, _b, _r in got.items:
        ch.basic_ack(tag)
    ch.basic_recover(requeue=True)
    assert sync(ch, unique) == (0, 0)


def test_settling_after_the_queue_is_deleted_is_not_an_error(ch, unique):
    ch.queue_declare(unique)
    publish(ch, unique, range(2))
    t0, t1 = get(ch, unique)[0], get(ch, unique)[0]
    ch.queue_delete(unique)
    ch.basic_ack(t0)
    ch.basic_reject(t1, requeue=True)  # nowhere to go back to: dropped
    ch.queue_declare(unique, exclusive=True)
    assert sync(ch, unique) == (0, 0)


@pytest.mark.parametrize("size", [0, 1, 131072 - 8, 131072, 1_000_003])
def test_bodies_of_any_size_round_trip(ch, unique, size):
    """Empty bodies, bodies at the frame boundary and bodies split over many frames."""
    ch.queue_declare(unique, exclusive=True)
    body = bytes(i % 251 for i in range(size))
    ch.basic_publish("", unique, body, pika.BasicProperties(content_type="application/octet-stream"))
    got = Collector()
    ch.basic_consume(unique, got, auto_ack=True)
    pump(ch.connection, lambda: len(got.items) == 1)
    assert got.items[0][1] == body


# ------------------------------------------------------------------------------------- counts


def test_basic_get_and_get_empty_with_message_count(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    assert get(ch, unique) is None  # get-empty
    publish(ch, unique, ["a", "b", "c"])
    assert [get(ch, unique, auto_ack=True)[1:] for _ in range(3)] == [
        (b"a", False, 2),
        (b"b", False, 1),
        (b"c", False, 0),
    ]
    assert get(ch, unique) is None


def test_get_ok_carries_exchange_routing_key_and_properties(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    ch.queue_bind(unique, "amq.direct", routing_key=unique)
    props = pika.BasicProperties(
        content_type="application/json",
        headers={"k": "v", "n": 7},
        correlation_id="c-1",
        message_id="m-1",
        priority=3,
        delivery_mode=2,
    )
    ch.basic_publish("amq.direct", unique, b"{}", props)
    method, got_props, body = ch.basic_get(unique, auto_ack=True)
    assert (method.exchange, method.routing_key, body) == ("amq.direct", unique, b"{}")
    assert got_props.content_type == "application/json"
    assert got_props.headers == {"k": "v", "n": 7}
    assert (got_props.correlation_id, got_props.message_id, got_props.priority) == ("c-1", "m-1", 3)
    assert got_props.delivery_mode == 2


def test_purge_counts_ready_messages_only(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    publish(ch, unique, range(5))
    tag = get(ch, unique)[0]
    assert ch.queue_purge(unique).method.message_count == 4
    assert ch.queue_purge(unique).method.message_count == 0
    ch.basic_reject(tag, requeue=True)  # the unacked one survived the purge
    assert get_all(ch, unique) == [(b"0", True)]


def test_declare_ok_and_delete_ok_counts(amqp_port, ch, unique):
    declared = ch.queue_declare(unique).method
    assert (declared.queue, declared.message_count, declared.consumer_count) == (unique, 0, 0)
    publish(ch, unique, range(3))
    assert sync(ch, unique) == (3, 0)

    other_conn = connect(amqp_port)
    other = other_conn.channel()
    other.basic_qos(prefetch_count=1)
    got = Collector()
    other.basic_consume(unique, got)
    pump(other_conn, lambda: len(got.items) == 1)
    redeclared = ch.queue_declare(unique).method  # a non-passive redeclare reports counts too
    assert (redeclared.message_count, redeclared.consumer_count) == (2, 1)  # ready only
    other_conn.close()
    assert sync(ch, unique) == (3, 0)
    assert ch.queue_delete(unique).method.message_count == 3


# ---------------------------------------------------------------------------------- consumers


def test_exclusive_consumer_refuses_others(amqp_port, ch, unique):
    ch.queue_declare(unique)
    ch.basic_consume(unique, Collector(), exclusive=True, consumer_tag="owner")

    other_conn = connect(amqp_port)
    for exclusive in (False, True):
        other = other_conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            other.basic_consume(unique, Collector(), exclusive=exclusive)
        assert info.value.reply_code == 403
        assert "in exclusive use" in info.value.reply_text

    ch.basic_cancel("owner")
    ch.basic_consume(unique, Collector())  # free again
    other = other_conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        other.basic_consume(unique, Collector(), exclusive=True)  # exclusive needs no other consumer
    assert info.value.reply_code == 403
    other_conn.close()
    ch.queue_delete(unique)


def test_queue_deletion_cancels_consumers_pika(amqp_port, conn, ch, unique):
    ch.queue_declare(unique)
    cancelled: list[str] = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    ch.basic_consume(unique, Collector(), consumer_tag="doomed")

    deleter = connect(amqp_port)
    deleter.channel().queue_delete(unique)
    deleter.close()
    pump(conn, lambda: bool(cancelled))
    assert cancelled == ["doomed"]
    assert ch.is_open  # a cancel, not a channel error
    assert ch.consumer_tags == []
    ch.queue_declare(unique, auto_delete=True)  # the channel works on


async def test_queue_deletion_cancels_consumers_aio_pika(amqp_url, unique):
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(unique)
        cancelled: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        underlay = await channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(lambda frame: cancelled.set_result(frame.consumer_tag))

        async def on_message(message):
            pass

        tag = await queue.consume(on_message)
        async with await aio_pika.connect(amqp_url) as other:
            await (await other.channel()).queue_delete(unique)
        assert await asyncio.wait_for(cancelled, TIMEOUT) == tag
        assert not channel.is_closed
        await channel.declare_queue(exclusive=True)


def test_auto_delete_queue_goes_with_its_last_consumer(amqp_port, ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    ch.basic_consume(unique, Collector(), consumer_tag="c1")
    ch.basic_consume(unique, Collector(), consumer_tag="c2")
    ch.basic_cancel("c1")
    assert sync(ch, unique) == (0, 1)
    ch.basic_cancel("c2")
    probe = ch.connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        probe.queue_declare(unique, passive=True)
    assert info.value.reply_code == 404

    # Never consumed: it stays. Consumer's channel closed: it goes.
    second = unique + "-2"
    ch.queue_declare(second, auto_delete=True)
    assert sync(ch, second) == (0, 0)
    other_conn = connect(amqp_port)
    other = other_conn.channel()
    other.basic_consume(second, Collector())
    other.close()
    probe = ch.connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        probe.queue_declare(second, passive=True)
    assert info.value.reply_code == 404
    other_conn.close()


# --------------------------------------------------------------------------- routing features


def test_mandatory_unroutable_returned_before_confirm(amqp_port, unique):
    """With SelectConnection the order of frames is visible: basic.return, then basic.ack."""
    events: list[tuple] = []
    state: dict[str, object] = {}

    def on_open(connection):
        connection.channel(on_open_callback=on_channel)

    def on_channel(channel):
        state["channel"] = channel
        channel.add_on_return_callback(
            lambda c, method, props, body: events.append(
                (
                    "return",
                    method.reply_code,
                    method.reply_text,
                    method.exchange,
                    method.routing_key,
                    body,
                    props.headers,
                )
            )
        )
        channel.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda frame: send())

    def send():
        channel = state["channel"]
        props = pika.BasicProperties(headers={"h": 1})
        channel.basic_publish("amq.direct", unique + "-nobody", b"returned", props, mandatory=True)
        channel.basic_publish("amq.direct", unique + "-nobody", b"dropped", props)  # not mandatory

    def on_confirm(frame):
        events.append((type(frame.method).__name__, frame.method.delivery_tag))
        if sum(1 for e in events if e[0] == "Ack") == 2 or frame.method.delivery_tag == 2:
            state["connection"].close()

    connection = pika.SelectConnection(
        pika.ConnectionParameters("127.0.0.1", amqp_port),
        on_open_callback=on_open,
        on_close_callback=lambda c, reason: c.ioloop.stop(),
    )
    state["connection"] = connection
    connection.ioloop.call_later(TIMEOUT, connection.ioloop.stop)
    connection.ioloop.start()

    assert events[0] == ("return", 312, "NO_ROUTE", "amq.direct", unique + "-nobody", b"returned", {"h": 1})
    acks = [e for e in events[1:] if e[0] == "Ack"]
    assert acks and max(tag for _n, tag in acks) == 2
    assert [e for e in events if e[0] == "return"] == events[:1]  # only the mandatory one came back


def test_alternate_exchange(ch, unique):
    ae, main = unique + "-ae", unique + "-main"
    ch.exchange_declare(ae, "fanout", auto_delete=False)
    ch.exchange_declare(main, "direct", arguments={"alternate-exchange": ae})
    ch.queue_declare(unique + "-unrouted", exclusive=True)
    ch.queue_bind(unique + "-unrouted", ae)
    ch.queue_declare(unique + "-routed", exclusive=True)
    ch.queue_bind(unique + "-routed", main, routing_key="known")

    ch.confirm_delivery()
    ch.basic_publish(main, "known", b"routed")
    ch.basic_publish(main, "unknown", b"to the AE", mandatory=True)  # routed via the AE: no return
    assert get_all(ch, unique + "-routed") == [(b"routed", False)]
    method, _props, body = ch.basic_get(unique + "-unrouted", auto_ack=True)
    assert (body, method.exchange, method.routing_key) == (b"to the AE", main, "unknown")
    ch.exchange_delete(main)
    ch.exchange_delete(ae)


def test_exchange_to_exchange_bindings(ch, unique):
    src, mid = unique + "-src", unique + "-mid"
    ch.exchange_declare(src, "topic", auto_delete=True)
    ch.exchange_declare(mid, "fanout", auto_delete=True)
    ch.exchange_bind(destination=mid, source=src, routing_key="orders.#")
    ch.exchange_bind(destination=src, source=mid)  # a cycle: still delivered once
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, mid)
    direct = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(direct, src, routing_key="orders.eu.new")  # bound to both src and, via mid, src

    ch.basic_publish(src, "orders.eu.new", b"order")
    ch.basic_publish(src, "invoices.eu", b"invoice")  # does not match the e2e binding
    assert get_all(ch, queue) == [(b"order", False)]
    assert get_all(ch, direct) == [(b"order", False)]

    ch.exchange_unbind(destination=mid, source=src, routing_key="orders.#")
    ch.basic_publish(src, "orders.eu.new", b"after unbind")
    assert get_all(ch, queue) == []
    assert get_all(ch, direct) == [(b"after unbind", False)]


def test_headers_exchange_all_and_any(ch, unique):
    hx = unique + "-headers"
    ch.exchange_declare(hx, "headers", auto_delete=True)
    bindings = {
        "all": {"x-match": "all", "format": "pdf", "type": "report"},
        "any": {"x-match": "any", "format": "pdf", "type": "log"},
        "default": {"format": "zip"},  # x-match defaults to all
        "presence": {"x-match": "any", "urgent": None},  # void: matches on the key alone
    }
    queues = {}
    for name, args in bindings.items():
        queues[name] = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(queues[name], hx, arguments=args)

    cases = [
        ({"format": "pdf", "type": "report"}, {"all", "any"}),
        ({"format": "pdf", "type": "report", "extra": 1}, {"all", "any"}),
        ({"format": "pdf"}, {"any"}),
        ({"type": "log"}, {"any"}),
        ({"format": "zip", "type": "report"}, {"default"}),
        ({"urgent": "yes"}, {"presence"}),
        ({"format": "doc"}, set()),
        (None, set()),
    ]
    for i, (headers, _dest) in enumerate(cases):
        ch.basic_publish(hx, "ignored", str(i).encode(), pika.BasicProperties(headers=headers))
    for name, queue in queues.items():
        expected = [(str(i).encode(), False) for i, (_h, dest) in enumerate(cases) if name in dest]
        assert get_all(ch, queue) == expected, name


def test_auto_delete_exchange_goes_with_its_last_binding(ch, unique):
    x = unique + "-x"
    ch.exchange_declare(x, "direct", auto_delete=True)
    q1 = ch.queue_declare("", exclusive=True).method.queue
    q2 = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q1, x, routing_key="a")
    ch.queue_bind(q2, x, routing_key="b")
    ch.queue_unbind(q1, x, routing_key="a")
    ch.exchange_declare(x, "direct", passive=True)  # one binding left
    ch.queue_delete(q2)  # the last binding goes with its queue
    probe = ch.connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        probe.exchange_declare(x, "direct", passive=True)
    assert info.value.reply_code == 404


# ------------------------------------------------------------------------------- transactions


def test_tx_commit_and_rollback_of_publishes(amqp_port, ch, unique):
    ch.queue_declare(unique)
    observer_conn = connect(amqp_port)
    observer = observer_conn.channel()

    ch.tx_select()
    publish(ch, unique, ["t1", "t2"])
    assert sync(observer, unique)[0] == 0  # invisible until commit
    ch.tx_commit()
    assert sync(observer, unique)[0] == 2

    publish(ch, unique, ["t3"])
    ch.tx_rollback()
    assert sync(observer, unique)[0] == 2
    ch.tx_commit()  # an empty transaction; t3 is gone for good
    assert get_all(observer, unique) == [(b"t1", False), (b"t2", False)]
    observer_conn.close()
    ch.queue_delete(unique)


def test_tx_acks_apply_at_commit(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    publish(ch, unique, ["a", "b"])
    tag_a = get(ch, unique)[0]
    tag_b = get(ch, unique)[0]
    ch.tx_select()
    ch.basic_ack(tag_a)
    ch.tx_rollback()  # the ack is discarded; a stays unacked (not requeued)
    assert sync(ch, unique)[0] == 0
    ch.basic_ack(tag_a)
    ch.basic_reject(tag_b, requeue=True)
    assert sync(ch, unique)[0] == 0  # nothing happens before commit
    ch.tx_commit()
    assert get_all(ch, unique) == [(b"b", True)]


def test_tx_mandatory_unroutable_is_returned_at_commit(ch, unique):
    returned: list[bytes] = []
    ch.add_on_return_callback(lambda c, method, props, body: returned.append(body))
    ch.tx_select()
    ch.basic_publish("amq.direct", unique + "-nobody", b"lost", mandatory=True)
    ch.tx_commit()
    ch.connection.process_data_events(0)
    assert returned == [b"lost"]


# ---------------------------------------------------------------------------------- prefetch


def test_per_consumer_prefetch(ch, unique):
    """basic.qos global=false: each consumer started afterwards gets its own limit."""
    q1, q2 = unique + "-1", unique + "-2"
    for q in (q1, q2):
        ch.queue_declare(q, auto_delete=True)
        publish(ch, q, range(10))
    ch.basic_qos(prefetch_count=2)
    a, b = Collector(), Collector()
    ch.basic_consume(q1, a)
    ch.basic_consume(q2, b)
    pump(ch.connection, lambda: len(a.items) == 2 and len(b.items) == 2)
    assert sync(ch, q1)[0] == 8 and sync(ch, q2)[0] == 8
    assert (len(a.items), len(b.items)) == (2, 2)

    ch.basic_ack(a.items[0][0])  # credit for a only
    pump(ch.connection, lambda: len(a.items) == 3)
    sync(ch, q1)
    assert (len(a.items), len(b.items)) == (3, 2)


def test_global_prefetch_is_shared_by_the_channel(ch, unique):
    q1, q2 = unique + "-1", unique + "-2"
    for q in (q1, q2):
        ch.queue_declare(q, auto_delete=True)
        publish(ch, q, range(10))
    ch.basic_qos(prefetch_count=3, global_qos=True)
    a, b = Collector(), Collector()
    ch.basic_consume(q1, a)
    ch.basic_consume(q2, b)
    pump(ch.connection, lambda: len(a.items) + len(b.items) == 3)
    sync(ch, q1)
    sync(ch, q2)
    assert len(a.items) + len(b.items) == 3

    first = (a.items or b.items)[0][0]
    ch.basic_ack(first)
    pump(ch.connection, lambda: len(a.items) + len(b.items) == 4)
    sync(ch, q1)
    assert len(a.items) + len(b.items) == 4


@pytest.mark.parametrize(
    ("order", "expected"),
    [(("consumer", "global"), (2, 1)), (("global", "consumer"), (2, 2))],
    ids=["per-consumer-then-global", "global-then-per-consumer"],
)
def test_per_consumer_and_global_prefetch_together(ch, unique, order, expected):
    """RabbitMQ's consumer prefetch page: per-consumer 2 then global 3 -> each consumer at most 2,
    the channel at most 3. A per-consumer basic.qos after a global one lifts the global limit
    (rabbit_channel resets it), so in that order only the per-consumer limit applies."""
    q1, q2 = unique + "-1", unique + "-2"
    for q in (q1, q2):
        ch.queue_declare(q, auto_delete=True)
        publish(ch, q, range(10))
    for kind in order:
        ch.basic_qos(prefetch_count=2 if kind == "consumer" else 3, global_qos=kind == "global")
    a, b = Collector(), Collector()
    ch.basic_consume(q1, a)
    pump(ch.connection, lambda: len(a.items) == 2)
    ch.basic_consume(q2, b)
    pump(ch.connection, lambda: len(b.items) == expected[1])
    sync(ch, q1)
    sync(ch, q2)
    assert (len(a.items), len(b.items)) == expected


def test_prefetch_zero_means_unlimited_and_no_ack_ignores_it(ch, unique):
    ch.queue_declare(unique, auto_delete=True)
    publish(ch, unique, range(50))
    ch.basic_qos(prefetch_count=1)
    got = Collector()
    ch.basic_consume(unique, got, auto_ack=True)
    pump(ch.connection, lambda: len(got.items) == 50)
    assert sync(ch, unique) == (0, 1)
