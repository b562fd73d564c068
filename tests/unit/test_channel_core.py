"""A channel's broker-side state (``leveret.core.channel``): consumers, prefetch, acks, requeue order,
recover, close, basic.get and transactions. Pure: the door is replaced by a recording sink.

Cases marked "RabbitMQ 3.10" were checked against a live RabbitMQ 3.10 node with pika.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from leveret.core.broker import Broker
from leveret.core.channel import Channel
from leveret.core.consumer import Consumer
from leveret.core.errors import BrokerError, ErrorKind
from leveret.core.message import Message
from leveret.core.queue import Queue
from leveret.core.session import Session
from leveret.core.vhost import VirtualHost


@contextmanager
def refused(kind: ErrorKind) -> Iterator[None]:
    with pytest.raises(BrokerError) as info:
        yield
    assert info.value.kind is kind, info.value.text


class Delivered:
    __slots__ = ("body", "consumer", "redelivered", "tag")

    def __init__(self, consumer: str, tag: int, redelivered: bool, body: bytes) -> None:
        self.consumer = consumer
        self.tag = tag
        self.redelivered = redelivered
        self.body = body

    def __repr__(self) -> str:
        return f"<{self.consumer} #{self.tag} {self.body!r}{' R' if self.redelivered else ''}>"


class Sink:
    """The door's side of a channel: records what the core hands over."""

    def __init__(self) -> None:
        self.deliveries: list[Delivered] = []
        self.cancelled: list[str] = []

    def deliver(self, consumer: Consumer, delivery_tag: int, redelivered: bool, message: Message) -> None:
        self.deliveries.append(Delivered(consumer.tag, delivery_tag, redelivered, message.body))

    def consumer_cancelled(self, consumer: Consumer) -> None:
        self.cancelled.append(consumer.tag)

    def take(self) -> list[Delivered]:
        taken, self.deliveries = self.deliveries, []
        return taken

    def bodies(self) -> list[bytes]:
        return [d.body for d in self.take()]


class World:
    def __init__(self) -> None:
        self.broker = Broker()
        self.session = self.open_session()
        self.vh: VirtualHost = self.session.vhost
        self.sinks: dict[Channel, Sink] = {}

    def open_session(self) -> Session:
        return self.broker.open_session(self.broker.users["guest"], "/")

    def channel(self, session: Session | None = None, number: int | None = None) -> tuple[Channel, Sink]:
        session = session or self.session
        sink = Sink()
        channel = session.open_channel(number or len(session.channels) + 1, sink)
        self.sinks[channel] = sink
        return channel, sink

    def queue(self, name: str = "q", **kwargs: object) -> Queue:
        return self.vh.declare_queue(self.session, name, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def w() -> World:
    return World()


def msg(body: bytes | str, routing_key: str = "q", exchange: str = "") -> Message:
    raw = body.encode() if isinstance(body, str) else body
    return Message(exchange, routing_key, b"\x00\x00", raw)


def publish(channel: Channel, *bodies: str, queue: str = "q") -> None:
    for body in bodies:
        channel.publish("", queue, msg(body, queue), mandatory=False)


def consume(
    channel: Channel, queue: str = "q", tag: str = "", no_ack: bool = False, exclusive: bool = False
) -> Consumer:
    consumer = channel.consume(queue, tag, no_ack, exclusive)
    channel.start(consumer)
    return consumer


def get_body(channel: Channel, queue: str = "q", no_ack: bool = True) -> tuple[bytes, bool] | None:
    got = channel.get(queue, no_ack)
    return None if got is None else (got[1].body, got[2])


def drain(channel: Channel, queue: str = "q") -> list[tuple[str, bool]]:
    out = []
    while (got := get_body(channel, queue)) is not None:
        out.append((got[0].decode(), got[1]))
    return out


# ------------------------------------------------------------------------------ consuming


def test_consume_delivers_in_order_with_increasing_tags(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    publish(ch, "a", "b")
    c = consume(ch, tag="c1")
    publish(ch, "c")
    got = sink.take()
    assert [(d.consumer, d.tag, d.redelivered, d.body) for d in got] == [
        ("c1", 1, False, b"a"),
        ("c1", 2, False, b"b"),
        ("c1", 3, False, b"c"),
    ]
    assert c.unacked == 3 and len(ch.unacked) == 3
    assert w.vh.queue("q").message_count() == 0


def test_consume_waits_for_start(w: World) -> None:
    """The door sends consume-ok first, then calls ``start``: no delivery may precede it."""
    w.queue()
    ch, sink = w.channel()
    publish(ch, "a")
    consumer = ch.consume("q", "c", no_ack=False, exclusive=False)
    assert sink.deliveries == []
    ch.start(consumer)
    assert sink.bodies() == [b"a"]


def test_generated_consumer_tags(w: World) -> None:
    w.queue()
    ch, _ = w.channel()
    tags = {ch.consume("q", "", no_ack=False, exclusive=False).tag for _ in range(20)}
    assert len(tags) == 20 and all(t.startswith("amq.ctag-") for t in tags)


def test_reused_consumer_tag_is_not_allowed(w: World) -> None:
    w.queue()
    w.queue("q2")
    ch, _ = w.channel()
    consume(ch, tag="t")
    with refused(ErrorKind.NOT_ALLOWED):
        ch.consume("q2", "t", no_ack=False, exclusive=False)
    other, _ = w.channel()
    consume(other, tag="t")  # tags are per channel
    ch.cancel("t")
    consume(ch, tag="t")  # free again once cancelled


def test_cancel_stops_deliveries_and_keeps_unacked(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    consume(ch, tag="c")
    publish(ch, "a")
    assert ch.cancel("c") is not None
    assert ch.cancel("c") is None  # unknown tag: nothing to cancel
    publish(ch, "b")
    assert sink.bodies() == [b"a"]
    assert w.vh.queue("q").message_count() == 1
    ch.ack(1, False)  # a delivery outlives its consumer
    assert len(ch.unacked) == 0


def test_round_robin_across_consumers_and_channels(w: World) -> None:
    w.queue()
    ch1, sink1 = w.channel()
    ch2, sink2 = w.channel()
    consume(ch1, tag="a")
    consume(ch1, tag="b")
    consume(ch2, tag="c")
    publish(ch1, *[str(i) for i in range(9)])
    got = sink1.take() + sink2.take()
    per = {tag: [d.body for d in got if d.consumer == tag] for tag in "abc"}
    assert per == {"a": [b"0", b"3", b"6"], "b": [b"1", b"4", b"7"], "c": [b"2", b"5", b"8"]}


def test_round_robin_of_a_backlog(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    publish(ch, *[str(i) for i in range(6)])
    ch.qos(0, 1, False)
    consume(ch, tag="a")
    consume(ch, tag="b")
    assert [(d.consumer, d.body) for d in sink.take()] == [("a", b"0"), ("b", b"1")]
    ch.ack(0, True)
    assert sorted((d.consumer, d.body) for d in sink.take()) == [("a", b"2"), ("b", b"3")]


# -------------------------------------------------------------------------------- prefetch


def test_per_consumer_prefetch(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    ch.qos(0, 2, False)
    consume(ch, tag="a")
    ch.qos(0, 1, False)  # applies to consumers started from now on
    consume(ch, tag="b")
    publish(ch, *[str(i) for i in range(10)])
    got = sink.take()
    assert [(d.consumer, d.body) for d in got] == [("a", b"0"), ("b", b"1"), ("a", b"2")]
    ch.ack(got[1].tag, False)  # b's only one
    assert [(d.consumer, d.body) for d in sink.take()] == [("b", b"3")]
    ch.ack(got[0].tag, False)
    assert [(d.consumer, d.body) for d in sink.take()] == [("a", b"4")]


def test_global_prefetch_is_shared_by_the_channel(w: World) -> None:
    w.queue()
    w.queue("q2")
    ch, sink = w.channel()
    ch.qos(0, 3, True)
    consume(ch, "q", tag="a")
    consume(ch, "q2", tag="b")
    publish(ch, "1", "2", "3", "4")
    publish(ch, "x", "y", queue="q2")
    assert [d.body for d in sink.take()] == [b"1", b"2", b"3"]
    ch.ack(1, False)
    assert [(d.consumer, d.body) for d in sink.take()] in ([("a", b"4")], [("b", b"x")])


def test_global_and_per_consumer_prefetch_both_apply(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    ch.qos(0, 1, False)
    ch.qos(0, 3, True)
    for tag in "abcd":
        consume(ch, tag=tag)
    publish(ch, *[str(i) for i in range(8)])
    got = sink.take()
    assert [d.consumer for d in got] == ["a", "b", "c"]  # each capped at 1, all together at 3
    ch.ack(got[0].tag, False)
    assert [d.consumer for d in sink.take()] == ["d"]


def test_per_consumer_qos_lifts_an_earlier_global_limit(w: World) -> None:
    """RabbitMQ (rabbit_channel, basic.qos global=false): the channel-wide limit is removed."""
    w.queue()
    ch, sink = w.channel()
    ch.qos(0, 1, True)
    ch.qos(0, 2, False)
    consume(ch, tag="a")
    consume(ch, tag="b")
    publish(ch, *[str(i) for i in range(6)])
    assert len(sink.take()) == 4


def test_raising_prefetch_delivers_at_once(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    ch.qos(0, 1, True)
    consume(ch)
    publish(ch, "a", "b", "c")
    assert sink.bodies() == [b"a"]
    ch.qos(0, 0, True)  # unlimited
    assert sink.bodies() == [b"b", b"c"]


def test_basic_get_does_not_count_against_global_prefetch(w: World) -> None:
    """RabbitMQ 3.10: with basic.qos(prefetch_count=1, global=true) and one unacked basic.get
    message, a consumer still receives a message (the limiter counts consumer deliveries only)."""
    w.queue()
    ch, sink = w.channel()
    publish(ch, *[str(i) for i in range(5)])
    ch.qos(0, 1, True)
    assert ch.get("q", no_ack=False) is not None
    consume(ch)
    assert sink.bodies() == [b"1"]


def test_basic_get_does_not_count_against_consumer_prefetch(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    publish(ch, *[str(i) for i in range(5)])
    ch.qos(0, 1, False)
    assert ch.get("q", no_ack=False) is not None
    consume(ch)
    assert sink.bodies() == [b"1"]


def test_acking_a_get_message_does_not_free_consumer_credit(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    publish(ch, *[str(i) for i in range(5)])
    ch.qos(0, 1, True)
    got = ch.get("q", no_ack=False)
    assert got is not None
    consume(ch)
    assert sink.bodies() == [b"1"]
    ch.ack(got[0], False)
    assert sink.bodies() == []  # the consumer still holds its one


def test_no_ack_consumers_ignore_prefetch(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    ch.qos(0, 1, True)
    ch.qos(0, 1, False)
    consume(ch, no_ack=True)
    publish(ch, "a", "b", "c")
    assert sink.bodies() == [b"a", b"b", b"c"]
    assert len(ch.unacked) == 0
    with refused(ErrorKind.PRECONDITION_FAILED):
        ch.ack(1, False)


def test_prefetch_size_not_implemented(w: World) -> None:
    ch, _ = w.channel()
    with refused(ErrorKind.NOT_IMPLEMENTED):
        ch.qos(1024, 0, False)


def test_paused_channel_stops_and_resumes(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    consume(ch)
    ch.set_paused(True)
    publish(ch, "a", "b")
    assert sink.bodies() == []
    ch.set_paused(False)
    assert sink.bodies() == [b"a", b"b"]


# ------------------------------------------------------------------------------- exclusive


def test_exclusive_consumer(w: World) -> None:
    w.queue()
    ch, _ = w.channel()
    other, _ = w.channel(w.open_session())
    consume(ch, tag="x", exclusive=True)
    with refused(ErrorKind.ACCESS_REFUSED):
        other.consume("q", "", no_ack=False, exclusive=False)
    with refused(ErrorKind.ACCESS_REFUSED):
        ch.consume("q", "y", no_ack=False, exclusive=False)
    ch.cancel("x")
    consume(other, tag="z")
    with refused(ErrorKind.ACCESS_REFUSED):  # exclusive needs the queue to itself
        ch.consume("q", "x", no_ack=False, exclusive=True)


# ------------------------------------------------------------------------- ack/nack/reject


def test_ack_single_and_multiple(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    consume(ch)
    publish(ch, *"abcde")
    assert [d.tag for d in sink.take()] == [1, 2, 3, 4, 5]
    ch.ack(2, False)
    assert list(ch.unacked) == [1, 3, 4, 5]
    ch.ack(4, True)
    assert list(ch.unacked) == [5]
    ch.ack(0, True)  # multiple with tag 0: everything outstanding
    assert list(ch.unacked) == []
    ch.ack(0, True)  # nothing outstanding: still fine
    q = w.vh.queue("q")
    assert q.unacked == 0 and q.stats_acked == 5


@pytest.mark.parametrize(
    ("acks", "bad"),
    [
        ([], (9, False)),  # never delivered
        ([(2, False)], (2, False)),  # double ack
        ([], (0, False)),  # tag 0 without multiple
        ([(2, False)], (2, True)),  # RabbitMQ 3.10: multiple up to an already-acked tag is 406 too
        ([], (8, True)),  # RabbitMQ 3.10: multiple beyond every outstanding tag is 406
    ],
)
def test_unknown_delivery_tag_is_precondition_failed(
    w: World, acks: list[tuple[int, bool]], bad: tuple[int, bool]
) -> None:
    w.queue()
    ch, _ = w.channel()
    consume(ch)
    publish(ch, "a", "b", "c")
    for tag, multiple in acks:
        ch.ack(tag, multiple)
    before = list(ch.unacked)
    with refused(ErrorKind.PRECONDITION_FAILED):
        ch.ack(*bad)
    with refused(ErrorKind.PRECONDITION_FAILED):
        ch.nack(bad[0], bad[1], True)
    assert list(ch.unacked) == before  # a refused ack settles nothing


def test_tags_belong_to_their_channel(w: World) -> None:
    w.queue()
    ch, _ = w.channel()
    other, _ = w.channel()
    consume(ch)
    publish(ch, "a")
    with refused(ErrorKind.PRECONDITION_FAILED):
        other.ack(1, False)
    ch.ack(1, False)


def test_requeued_messages_return_to_their_original_position(w: World) -> None:
    """RabbitMQ 3.10: publish 0..4, get four, nack 2, nack 0, reject 3 (requeue): the queue then
    yields 0, 2, 3 (redelivered) and 4 (not)."""
    w.queue()
    ch, _ = w.channel()
    publish(ch, *"01234")
    tags = []
    for _ in range(4):
        got = ch.get("q", no_ack=False)
        assert got is not None
        tags.append(got[0])
    ch.nack(tags[2], False, True)
    ch.nack(tags[0], False, True)
    ch.nack(tags[3], False, True)  # basic.reject is nack without multiple
    assert drain(ch) == [("0", True), ("2", True), ("3", True), ("4", False)]
    ch.ack(tags[1], False)


def test_nack_multiple_requeue_to_a_consumer(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    ch.qos(0, 3, False)
    consume(ch)
    publish(ch, *"abcdef")
    assert sink.bodies() == [b"a", b"b", b"c"]
    ch.nack(2, True, True)  # a and b back in front of d
    got = sink.take()
    assert [(d.body, d.redelivered) for d in got] == [(b"a", True), (b"b", True)]
    ch.ack(0, True)
    assert [(d.body, d.redelivered) for d in sink.take()] == [(b"d", False), (b"e", False), (b"f", False)]


def test_requeue_order_survives_interleaving(w: World) -> None:
    """Messages requeued in any order come back in queue order, ahead of never-delivered ones."""
    w.queue()
    ch, _ = w.channel()
    publish(ch, *"abcdefg")
    tags = {}
    for _ in range(5):
        got = ch.get("q", no_ack=False)
        assert got is not None
        tags[got[1].body] = got[0]
    ch.nack(tags[b"d"], False, True)
    got = get_body(ch)  # d comes straight back
    assert got == (b"d", True)
    ch.nack(tags[b"b"], False, True)
    ch.nack(tags[b"e"], False, True)
    ch.nack(tags[b"a"], False, True)
    assert drain(ch) == [("a", True), ("b", True), ("e", True), ("f", False), ("g", False)]


def test_nack_without_requeue_discards(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    consume(ch)
    publish(ch, "a", "b", "c")
    ch.nack(2, True, False)
    ch.nack(3, False, False)
    assert list(ch.unacked) == []
    assert w.vh.queue("q").message_count() == 0
    assert len(sink.take()) == 3


def test_recover_requeues_everything_unacked(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    ch.qos(0, 2, False)
    consume(ch)
    publish(ch, *"abc")
    assert sink.bodies() == [b"a", b"b"]
    got = ch.get("q", no_ack=False)  # c, unacked by basic.get
    assert got is not None and got[1].body == b"c"
    ch.recover(True)
    assert [(d.body, d.redelivered) for d in sink.take()] == [(b"a", True), (b"b", True)]
    assert drain(ch) == [("c", True)]
    with refused(ErrorKind.NOT_IMPLEMENTED):
        ch.recover(False)


# -------------------------------------------------------------------------------- basic.get


def test_basic_get(w: World) -> None:
    w.queue()
    ch, _ = w.channel()
    assert ch.get("q", no_ack=False) is None
    publish(ch, "a", "b")
    got = ch.get("q", no_ack=False)
    assert got is not None
    tag, message, redelivered, left = got
    assert (tag, message.body, redelivered, left) == (1, b"a", False, 1)
    got = ch.get("q", no_ack=True)
    assert got is not None and got[1].body == b"b" and got[3] == 0
    assert list(ch.unacked) == [1]  # the no-ack one is not recorded
    ch.nack(1, False, True)
    got = ch.get("q", no_ack=False)
    assert got is not None and (got[0], got[1].body, got[2]) == (3, b"a", True)


def test_get_and_consume_share_the_queue(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    ch.qos(0, 1, False)
    consume(ch)
    publish(ch, "a", "b", "c")
    assert sink.bodies() == [b"a"]
    assert get_body(ch) == (b"b", False)
    ch.ack(1, False)
    assert sink.bodies() == [b"c"]


# ------------------------------------------------------------------------------ close, delete


def test_channel_close_requeues_unacked_in_order(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    consume(ch)
    publish(ch, *"abcd")
    ch.ack(2, False)
    got = ch.get("q", no_ack=False)
    assert got is None  # all four went to the consumer
    w.session.close_channel(ch.number)
    assert ch.closed and ch.consumers == {} and ch.unacked == {}
    assert w.vh.queue("q").consumer_count() == 0
    other, _ = w.channel()
    assert drain(other) == [("a", True), ("c", True), ("d", True)]
    assert sink.cancelled == []  # a client-side close is not a broker cancel
    ch.close()  # closing twice is harmless


def test_channel_close_hands_requeued_messages_to_other_consumers(w: World) -> None:
    w.queue()
    ch1, sink1 = w.channel()
    ch2, sink2 = w.channel(w.open_session())
    ch1.qos(0, 2, False)
    consume(ch1)
    publish(ch1, "a", "b", "c")
    assert sink1.bodies() == [b"a", b"b"]
    consume(ch2)
    assert sink2.bodies() == [b"c"]
    w.session.close_channel(ch1.number)
    assert [(d.body, d.redelivered) for d in sink2.take()] == [(b"a", True), (b"b", True)]


def test_session_close_requeues_and_deletes_exclusive_queues(w: World) -> None:
    w.queue()
    w.queue("ex", exclusive=True)
    ch, _ = w.channel()
    ch2, _ = w.channel()
    consume(ch, "q")
    consume(ch2, "ex")
    publish(ch, "a")
    publish(ch, "x", queue="ex")
    w.broker.close_session(w.session)
    assert "ex" not in w.vh.queues
    assert w.session.channels == {}
    other, _ = w.channel(w.open_session())
    assert drain(other) == [("a", True)]


def test_queue_delete_cancels_consumers_everywhere(w: World) -> None:
    w.queue()
    ch1, sink1 = w.channel()
    ch2, sink2 = w.channel(w.open_session())
    consume(ch1, tag="c1")
    consume(ch2, tag="c2")
    publish(ch1, "a", "b")
    assert w.vh.delete_queue(w.session, "q") == 0
    assert sink1.cancelled == ["c1"] and sink2.cancelled == ["c2"]
    assert ch1.consumers == {} and ch2.consumers == {}
    consume_again = ch1.consume  # the tag is free: the consumer is gone
    w.queue()
    consume_again("q", "c1", no_ack=False, exclusive=False)
    # deliveries of the deleted queue can still be settled, and are not resurrected
    ch1.nack(1, False, True)
    ch2.ack(1, False)
    assert w.vh.queue("q").message_count() == 0


def test_auto_delete_queue_goes_after_last_cancel(w: World) -> None:
    w.queue("ad", auto_delete=True)
    ch, sink = w.channel()
    publish(ch, "a", queue="ad")
    assert ch.get("ad", no_ack=True) is not None  # basic.get is not a consumer
    assert "ad" in w.vh.queues
    consume(ch, "ad", tag="c1")
    consume(ch, "ad", tag="c2")
    ch.cancel("c1")
    assert "ad" in w.vh.queues
    ch.cancel("c2")
    assert "ad" not in w.vh.queues
    assert sink.cancelled == []  # the client cancelled: no broker cancel


def test_auto_delete_queue_goes_when_its_consumer_channel_closes(w: World) -> None:
    w.queue("ad", auto_delete=True)
    ch, _ = w.channel()
    consume(ch, "ad")
    publish(ch, "a", queue="ad")
    w.session.close_channel(ch.number)
    assert "ad" not in w.vh.queues


# -------------------------------------------------------------------------------- publish


def test_publish_returns_reached_queues(w: World) -> None:
    w.queue()
    w.queue("q2")
    ch, _ = w.channel()
    w.vh.bind_queue(w.session, "q", "amq.fanout", "", {})
    w.vh.bind_queue(w.session, "q2", "amq.fanout", "", {})
    reached = ch.publish("amq.fanout", "", msg("m", "", "amq.fanout"), mandatory=True)
    assert reached is not None and sorted(q.name for q in reached) == ["q", "q2"]
    assert ch.publish("amq.direct", "none", msg("m", "none", "amq.direct"), mandatory=True) == []


# ---------------------------------------------------------------------------- transactions


def test_tx_publish_waits_for_commit(w: World) -> None:
    w.queue()
    ch, _ = w.channel()
    ch.tx_select()
    ch.tx_select()  # idempotent
    assert ch.publish("", "q", msg("a"), mandatory=False) is None
    assert w.vh.queue("q").message_count() == 0
    assert ch.tx_commit() == []
    assert w.vh.queue("q").message_count() == 1
    ch.publish("", "q", msg("b"), mandatory=False)
    ch.tx_rollback()
    assert ch.tx_commit() == []
    assert drain(ch) == [("a", False)]


def test_tx_acks_wait_for_commit(w: World) -> None:
    w.queue()
    ch, sink = w.channel()
    ch.qos(0, 2, False)
    consume(ch)
    ch.tx_select()
    publish(ch, "x")  # buffered
    ch.tx_commit()
    publish(ch, "a", "b")
    ch.tx_commit()
    assert sink.bodies() == [b"x", b"a"]
    ch.ack(1, False)
    assert sink.bodies() == []  # not applied yet: no credit back
    ch.tx_commit()
    assert sink.bodies() == [b"b"]
    ch.ack(2, True)
    ch.tx_rollback()
    assert sink.bodies() == []
    assert set(ch.unacked) == {2, 3}
    ch.nack(3, False, True)
    ch.ack(2, False)
    ch.tx_commit()
    got = sink.take()
    assert [(d.body, d.redelivered) for d in got] == [(b"b", True)]
    assert list(ch.unacked) == [got[0].tag]


def test_tx_double_ack_is_refused_at_once(w: World) -> None:
    """RabbitMQ 3.10: in a transaction, acking the same tag twice is 406 on the second ack."""
    w.queue()
    ch, _ = w.channel()
    publish(ch, "a", "b")
    tag = ch.get("q", no_ack=False)
    assert tag is not None
    ch.tx_select()
    ch.ack(tag[0], False)
    with refused(ErrorKind.PRECONDITION_FAILED):
        ch.ack(tag[0], False)


def test_tx_multiple_covers_earlier_acks(w: World) -> None:
    w.queue()
    ch, _ = w.channel()
    publish(ch, "a", "b", "c")
    tags = [got[0] for got in (ch.get("q", no_ack=False) for _ in range(3)) if got is not None]
    ch.tx_select()
    ch.ack(tags[2], True)
    with refused(ErrorKind.PRECONDITION_FAILED):  # tag 1 already settled by the multiple ack
        ch.nack(tags[0], False, True)


def test_tx_ack_rollback_ack_commit(w: World) -> None:
    """RabbitMQ 3.10: ack in a transaction, roll back, ack again, commit: the message is acked."""
    w.queue()
    ch, _ = w.channel()
    publish(ch, "a")
    got = ch.get("q", no_ack=False)
    assert got is not None
    ch.tx_select()
    ch.ack(got[0], False)
    ch.tx_rollback()
    ch.ack(got[0], False)
    ch.tx_commit()
    assert list(ch.unacked) == []
    assert w.vh.queue("q").stats_acked == 1


def test_tx_rollback_keeps_unacked_in_tag_order(w: World) -> None:
    w.queue()
    ch, _ = w.channel()
    publish(ch, *"abcd")
    for _ in range(4):
        ch.get("q", no_ack=False)
    ch.tx_select()
    ch.ack(3, False)
    ch.ack(1, False)
    ch.tx_rollback()
    assert list(ch.unacked) == [1, 2, 3, 4]
    ch.nack(2, True, True)  # multiple up to 2 covers exactly 1 and 2 again
    ch.tx_commit()
    assert list(ch.unacked) == [3, 4]
    assert drain(ch) == [("a", True), ("b", True)]


def test_tx_mandatory_unroutable_returned_at_commit(w: World) -> None:
    w.queue()
    ch, _ = w.channel()
    ch.tx_select()
    unroutable = msg("lost", "nowhere", "amq.direct")
    ch.publish("amq.direct", "nowhere", unroutable, mandatory=True)
    ch.publish("amq.direct", "nowhere", msg("quiet", "nowhere", "amq.direct"), mandatory=False)
    ch.publish("", "q", msg("kept"), mandatory=True)
    returned = ch.tx_commit()
    assert returned == [("amq.direct", "nowhere", unroutable)]
    assert drain(ch) == [("kept", False)]
    assert ch.tx_commit() == []  # a fresh transaction


def test_tx_routes_at_commit_time(w: World) -> None:
    ch, _ = w.channel()
    ch.tx_select()
    ch.publish("amq.fanout", "", msg("m", "", "amq.fanout"), mandatory=False)
    w.queue()
    w.vh.bind_queue(w.session, "q", "amq.fanout", "", {})
    ch.tx_commit()
    assert drain(ch) == [("m", False)]


def test_tx_errors(w: World) -> None:
    ch, _ = w.channel()
    with refused(ErrorKind.PRECONDITION_FAILED):
        ch.tx_commit()
    with refused(ErrorKind.PRECONDITION_FAILED):
        ch.tx_rollback()
    ch.tx_select()
    with refused(ErrorKind.NOT_FOUND):  # the exchange is checked at publish time
        ch.publish("missing", "k", msg("m", "k", "missing"), mandatory=False)
    with refused(ErrorKind.PRECONDITION_FAILED):
        ch.ack(1, False)
    with refused(ErrorKind.PRECONDITION_FAILED):
        ch.confirm_select()
    confirm, _ = w.channel()
    confirm.confirm_select()
    with refused(ErrorKind.PRECONDITION_FAILED):
        confirm.tx_select()


def test_channel_close_requeues_acks_pending_in_a_transaction(w: World) -> None:
    w.queue()
    ch, _ = w.channel()
    publish(ch, "a", "b")
    ch.get("q", no_ack=False)
    ch.get("q", no_ack=False)
    ch.tx_select()
    ch.ack(2, True)  # never committed
    publish(ch, "c")  # never committed
    w.session.close_channel(ch.number)
    other, _ = w.channel()
    assert drain(other) == [("a", True), ("b", True)]
