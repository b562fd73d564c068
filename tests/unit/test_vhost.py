"""Queue definitions in a ``VirtualHost`` (declare, passive, exclusive, equivalence, delete), and the
broker/session around it. Pure: no sockets. Cases marked "RabbitMQ 3.10" were checked against a live
RabbitMQ 3.10 node with pika.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from leveret.core.broker import Broker
from leveret.core.channel import Channel
from leveret.core.consumer import Consumer
from leveret.core.errors import BrokerError, ErrorKind
from leveret.core.message import Message
from leveret.core.session import Session
from leveret.core.vhost import VirtualHost


@contextmanager
def refused(kind: ErrorKind) -> Iterator[None]:
    with pytest.raises(BrokerError) as info:
        yield
    assert info.value.kind is kind, info.value.text


class Sink:
    def __init__(self) -> None:
        self.deliveries: list[tuple[str, int, bool, bytes]] = []
        self.cancelled: list[str] = []

    def deliver(self, consumer: Consumer, delivery_tag: int, redelivered: bool, message: Message) -> None:
        self.deliveries.append((consumer.tag, delivery_tag, redelivered, message.body))

    def consumer_cancelled(self, consumer: Consumer) -> None:
        self.cancelled.append(consumer.tag)


class World:
    def __init__(self) -> None:
        self.broker = Broker()
        self.guest = self.broker.users["guest"]
        self.s1 = self.broker.open_session(self.guest, "/")
        self.s2 = self.broker.open_session(self.guest, "/")
        self.vh: VirtualHost = self.s1.vhost

    def channel(self, session: Session, number: int = 1) -> tuple[Channel, Sink]:
        sink = Sink()
        return session.open_channel(number, sink), sink


@pytest.fixture
def w() -> World:
    return World()


def publish(channel: Channel, queue: str, body: bytes = b"m") -> None:
    channel.publish("", queue, Message("", queue, b"\x00\x00", body), mandatory=False)


# ------------------------------------------------------------------------------- declare


def test_declare_creates_once_and_returns_the_same_queue(w: World) -> None:
    q = w.vh.declare_queue(w.s1, "q", durable=True)
    assert q.name == "q" and q.durable and not q.exclusive and not q.auto_delete
    assert w.vh.declare_queue(w.s1, "q", durable=True) is q
    assert w.vh.declare_queue(w.s2, "q", durable=True) is q
    assert w.vh.declare_queue(w.s2, "q", passive=True) is q
    assert w.vh.queue("q") is q


def test_server_named_queues(w: World) -> None:
    names = {w.vh.declare_queue(w.s1, "", exclusive=True).name for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert name.startswith("amq.gen-") and len(name) > len("amq.gen-") + 16
        assert w.vh.queue(name).exclusive_owner is w.s1
    assert set(w.s1.exclusive_queues) == names


def test_reserved_queue_names_refused(w: World) -> None:
    with refused(ErrorKind.ACCESS_REFUSED):
        w.vh.declare_queue(w.s1, "amq.custom")
    with refused(ErrorKind.ACCESS_REFUSED):  # also for a name that exists (a server-named queue)
        w.vh.declare_queue(w.s1, w.vh.declare_queue(w.s1, "").name)
    with refused(ErrorKind.NOT_FOUND):  # passive: just a lookup
        w.vh.declare_queue(w.s1, "amq.custom", passive=True)
    assert "amq.custom" not in w.vh.queues


def test_not_found(w: World) -> None:
    ch, _ = w.channel(w.s1)
    with refused(ErrorKind.NOT_FOUND):
        w.vh.declare_queue(w.s1, "missing", passive=True)
    with refused(ErrorKind.NOT_FOUND):
        w.vh.purge_queue(w.s1, "missing")
    with refused(ErrorKind.NOT_FOUND):
        w.vh.bind_queue(w.s1, "missing", "amq.direct", "k", {})
    with refused(ErrorKind.NOT_FOUND):
        w.vh.unbind_queue(w.s1, "missing", "amq.direct", "k", {})
    with refused(ErrorKind.NOT_FOUND):
        ch.consume("missing", "", no_ack=False, exclusive=False)
    with refused(ErrorKind.NOT_FOUND):
        ch.get("missing", no_ack=False)


def test_declare_ok_counts(w: World) -> None:
    """queue.declare-ok's message count is the ready messages (not the unacked ones)."""
    ch, sink = w.channel(w.s1)
    q = w.vh.declare_queue(w.s1, "q")
    for i in range(5):
        publish(ch, "q", b"%d" % i)
    assert (q.message_count(), q.consumer_count()) == (5, 0)
    got = ch.get("q", no_ack=False)
    assert got is not None and got[3] == 4  # messages left, as basic.get-ok reports it
    ch.qos(0, 2, False)
    consumer = ch.consume("q", "c1", no_ack=False, exclusive=False)
    ch.start(consumer)
    ch2, _ = w.channel(w.s2)
    ch2.consume("q", "c2", no_ack=False, exclusive=False)
    again = w.vh.declare_queue(w.s2, "q", passive=True)
    assert (again.message_count(), again.consumer_count()) == (2, 2)
    assert len(sink.deliveries) == 2


# ----------------------------------------------------------------------------- exclusive


def test_exclusive_queue_locked_for_other_sessions(w: World) -> None:
    w.vh.declare_queue(w.s1, "ex", exclusive=True)
    ch2, _ = w.channel(w.s2)
    for attempt in (
        lambda: w.vh.declare_queue(w.s2, "ex", exclusive=True),
        lambda: w.vh.declare_queue(w.s2, "ex"),
        lambda: w.vh.declare_queue(w.s2, "ex", passive=True),
        lambda: w.vh.bind_queue(w.s2, "ex", "amq.direct", "k", {}),
        lambda: w.vh.unbind_queue(w.s2, "ex", "amq.direct", "k", {}),
        lambda: w.vh.purge_queue(w.s2, "ex"),
        lambda: w.vh.delete_queue(w.s2, "ex"),
        lambda: ch2.consume("ex", "", no_ack=False, exclusive=False),
        lambda: ch2.get("ex", no_ack=True),
    ):
        with refused(ErrorKind.RESOURCE_LOCKED):
            attempt()
    assert "ex" in w.vh.queues
    publish(ch2, "ex")  # publishing to another connection's exclusive queue is allowed
    assert w.vh.queue("ex").message_count() == 1


def test_exclusive_flag_must_match_on_redeclare(w: World) -> None:
    """RabbitMQ 3.10: redeclaring one's own exclusive queue as non-exclusive, or a shared queue as
    exclusive, is 405 RESOURCE_LOCKED."""
    w.vh.declare_queue(w.s1, "ex", exclusive=True)
    with refused(ErrorKind.RESOURCE_LOCKED):
        w.vh.declare_queue(w.s1, "ex", exclusive=False)
    assert w.vh.declare_queue(w.s1, "ex", exclusive=True).exclusive_owner is w.s1
    w.vh.declare_queue(w.s1, "shared")
    with refused(ErrorKind.RESOURCE_LOCKED):
        w.vh.declare_queue(w.s1, "shared", exclusive=True)
    assert not w.vh.queue("shared").exclusive


def test_exclusive_queue_is_never_durable(w: World) -> None:
    """RabbitMQ 3.10: exclusive+durable declares a non-durable queue; redeclaring it with either
    durable flag is accepted."""
    q = w.vh.declare_queue(w.s1, "ex", durable=True, exclusive=True)
    assert not q.durable
    assert w.vh.declare_queue(w.s1, "ex", durable=False, exclusive=True) is q
    assert w.vh.declare_queue(w.s1, "ex", durable=True, exclusive=True) is q


def test_exclusive_queues_deleted_with_their_session(w: World) -> None:
    ch1, _ = w.channel(w.s1)
    w.vh.declare_queue(w.s1, "ex", exclusive=True)
    w.vh.declare_queue(w.s1, "shared")
    w.vh.bind_queue(w.s1, "ex", "amq.fanout", "", {})
    publish(ch1, "ex")
    w.broker.close_session(w.s1)
    assert "ex" not in w.vh.queues and "shared" in w.vh.queues
    assert w.vh.exchange("amq.fanout").bindings == {}
    assert w.s1 not in w.broker.sessions
    q = w.vh.declare_queue(w.s2, "ex", exclusive=True)  # the name is free again
    assert q.exclusive_owner is w.s2 and q.message_count() == 0


def test_deleting_an_exclusive_queue_forgets_it_in_the_session(w: World) -> None:
    w.vh.declare_queue(w.s1, "ex", exclusive=True)
    assert w.vh.delete_queue(w.s1, "ex") == 0
    assert w.s1.exclusive_queues == {}
    w.s1.close()
    assert "ex" not in w.vh.queues


# --------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"durable": True}, {"durable": False}),
        ({"durable": False}, {"durable": True}),
        ({"auto_delete": True}, {"auto_delete": False}),
        ({"arguments": {"x-max-length": 10}}, {"arguments": {"x-max-length": 11}}),
        ({"arguments": {"x-max-length": 10}}, {}),  # RabbitMQ 3.10: absent vs present is inequivalent
        ({}, {"arguments": {"x-max-length": 10}}),
        ({"arguments": {"x-message-ttl": 100}}, {"arguments": {"x-message-ttl": 200}}),
        ({"durable": True}, {"durable": True, "arguments": {"x-queue-type": "quorum"}}),
        ({"durable": True, "arguments": {"x-queue-type": "quorum"}}, {"durable": True}),
        (
            {"durable": True, "arguments": {"x-queue-type": "quorum"}},
            {"durable": True, "arguments": {"x-queue-type": "classic"}},
        ),
    ],
)
def test_inequivalent_redeclare_is_406(w: World, first: dict[str, Any], second: dict[str, Any]) -> None:
    q = w.vh.declare_queue(w.s1, "q", **first)
    with refused(ErrorKind.PRECONDITION_FAILED):
        w.vh.declare_queue(w.s1, "q", **second)
    assert w.vh.queue("q") is q


def test_equivalent_redeclares(w: World) -> None:
    """RabbitMQ 3.10: an explicit x-queue-type 'classic' equals no x-queue-type; arguments that are
    not compared (e.g. custom ones) may differ."""
    q = w.vh.declare_queue(w.s1, "q", arguments={"x-queue-type": "classic", "x-custom": 1})
    assert w.vh.declare_queue(w.s1, "q") is q
    assert w.vh.declare_queue(w.s1, "q", arguments={"x-custom": 2}) is q
    q2 = w.vh.declare_queue(w.s1, "q2")
    assert w.vh.declare_queue(w.s1, "q2", arguments={"x-queue-type": "classic"}) is q2


def test_passive_declare_ignores_properties(w: World) -> None:
    q = w.vh.declare_queue(w.s1, "q", durable=True, arguments={"x-max-length": 3})
    assert w.vh.declare_queue(w.s1, "q", passive=True, durable=False, auto_delete=True) is q


# ------------------------------------------------------------------------------- quorum


@pytest.mark.parametrize(
    ("kwargs", "prop"),
    [
        ({"durable": False}, "non-durable"),
        ({"durable": True, "exclusive": True}, "exclusive-owner"),
        ({"durable": True, "auto_delete": True}, "auto-delete"),
    ],
)
def test_quorum_queue_requirements(w: World, kwargs: dict[str, Any], prop: str) -> None:
    with pytest.raises(BrokerError) as info:
        w.vh.declare_queue(w.s1, "qq", arguments={"x-queue-type": "quorum"}, **kwargs)
    assert info.value.kind is ErrorKind.PRECONDITION_FAILED
    assert f"invalid property '{prop}'" in info.value.text  # RabbitMQ 3.10's wording
    assert "qq" not in w.vh.queues


def test_quorum_queue_accepted_when_durable_and_shared(w: World) -> None:
    q = w.vh.declare_queue(w.s1, "qq", durable=True, arguments={"x-queue-type": "quorum"})
    assert q.queue_type == "quorum"


@pytest.mark.parametrize("qtype", ["stream", "nonsense"])
def test_unsupported_queue_types_refused(w: World, qtype: str) -> None:
    with refused(ErrorKind.PRECONDITION_FAILED):
        w.vh.declare_queue(w.s1, "s", durable=True, arguments={"x-queue-type": qtype})
    assert "s" not in w.vh.queues


# ------------------------------------------------------------------------------- delete


def test_delete_if_unused_and_if_empty(w: World) -> None:
    ch, sink = w.channel(w.s1)
    w.vh.declare_queue(w.s1, "q")
    publish(ch, "q")
    publish(ch, "q")
    with refused(ErrorKind.PRECONDITION_FAILED):
        w.vh.delete_queue(w.s1, "q", if_empty=True)
    consumer = ch.consume("q", "c", no_ack=False, exclusive=False)
    with refused(ErrorKind.PRECONDITION_FAILED):
        w.vh.delete_queue(w.s1, "q", if_unused=True)
    ch.cancel(consumer.tag)
    assert w.vh.delete_queue(w.s1, "q", if_unused=True) == 2
    assert "q" not in w.vh.queues
    assert sink.cancelled == []


def test_delete_if_empty_counts_ready_messages_only(w: World) -> None:
    ch, _ = w.channel(w.s1)
    w.vh.declare_queue(w.s1, "q")
    publish(ch, "q")
    assert ch.get("q", no_ack=False) is not None
    assert w.vh.delete_queue(w.s1, "q", if_empty=True) == 0  # the unacked one does not count


def test_delete_missing_queue_succeeds(w: World) -> None:
    assert w.vh.delete_queue(w.s1, "missing") == 0
    assert w.vh.delete_queue(w.s1, "missing", if_unused=True, if_empty=True) == 0


def test_delete_queue_drops_its_bindings(w: World) -> None:
    w.vh.declare_queue(w.s1, "q")
    w.vh.declare_exchange("t", "topic")
    w.vh.bind_queue(w.s1, "q", "t", "#", {})
    w.vh.bind_queue(w.s1, "q", "amq.direct", "k", {})
    w.vh.delete_queue(w.s1, "q")
    assert w.vh.exchange("t").bindings == {} and w.vh.exchange("amq.direct").bindings == {}
    q = w.vh.declare_queue(w.s1, "q")  # a new queue of the same name starts unbound
    assert q.bindings == {}
    assert w.vh.route("t", "a", Message("t", "a", b"\x00\x00", b"")) == []


def test_default_exchange_routes_follow_queues_coming_and_going(w: World) -> None:
    """The default exchange's routes are cached like any other's: a deleted queue stops taking
    messages at once, and a queue of the same name declared afterwards takes them again."""
    ch, _ = w.channel(w.s1)
    first = w.vh.declare_queue(w.s1, "q")
    publish(ch, "q", b"1")
    publish(ch, "q", b"2")
    assert first.message_count() == 2
    w.vh.delete_queue(w.s1, "q")
    assert w.vh.route("", "q", Message("", "q", b"\x00\x00", b"3")) == []
    second = w.vh.declare_queue(w.s1, "q")
    publish(ch, "q", b"4")
    assert second is not first and second.message_count() == 1 and first.message_count() == 0
    assert w.vh.exchanges[""].stats_in == 4 and w.vh.exchanges[""].stats_out == 3


def test_purge(w: World) -> None:
    ch, _ = w.channel(w.s1)
    w.vh.declare_queue(w.s1, "q")
    for _ in range(3):
        publish(ch, "q")
    got = ch.get("q", no_ack=False)
    assert got is not None
    assert w.vh.purge_queue(w.s1, "q") == 2
    assert w.vh.queue("q").message_count() == 0
    ch.nack(got[0], False, True)  # an unacked message survives a purge and can come back
    assert w.vh.queue("q").message_count() == 1


# --------------------------------------------------------------------------- broker, session


def test_authenticate() -> None:
    broker = Broker()
    assert broker.authenticate("guest", "guest") is broker.users["guest"]
    assert broker.authenticate("guest", "wrong") is None
    assert broker.authenticate("nobody", "guest") is None
    assert broker.authenticate("guest", "") is None


def test_open_session_checks_the_vhost() -> None:
    broker = Broker()
    with refused(ErrorKind.NOT_ALLOWED):
        broker.open_session(broker.users["guest"], "/missing")
    broker.add_vhost("/other")
    user = broker.add_user("u", None)
    broker.set_permissions("u", "/", ".*", ".*", ".*")
    with refused(ErrorKind.NOT_ALLOWED):
        broker.open_session(user, "/other")
    session = broker.open_session(broker.users["guest"], "/")
    assert session in broker.sessions and session.vhost is broker.vhosts["/"]


def test_vhosts_are_separate() -> None:
    broker = Broker()
    broker.add_vhost("/other")
    user = broker.add_user("u", None)
    for vhost in ("/", "/other"):
        broker.set_permissions("u", vhost, ".*", ".*", ".*")
    a = broker.open_session(user, "/")
    b = broker.open_session(user, "/other")
    a.vhost.declare_queue(a, "q")
    with refused(ErrorKind.NOT_FOUND):
        b.vhost.declare_queue(b, "q", passive=True)
