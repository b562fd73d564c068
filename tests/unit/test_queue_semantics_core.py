"""Queue semantics in the core, without sockets: policies and how they combine with arguments, timers
on an injected clock (TTL at the head, queue expiry), priority queues with requeue, length limits,
dead-lettering with x-death, and policies surviving a journal replay."""

from __future__ import annotations

from typing import Any

import pytest

from leveret.amqp.properties import WIRE_PROPERTIES, BasicProperties, decode_properties, encode_properties
from leveret.core.broker import Broker
from leveret.core.clock import Clock
from leveret.core.errors import BrokerError, ErrorKind
from leveret.core.message import Message
from leveret.core.priority_queue import PriorityQueue
from leveret.core.queue import Queue
from leveret.core.vhost import VirtualHost


class FakeTime:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def vh(clock: FakeTime) -> VirtualHost:
    return VirtualHost("/", clock=Clock(clock))


def msg(body: bytes = b"m", routing_key: str = "q", **props: Any) -> Message:
    persistent = props.get("delivery_mode") == 2
    m = Message("", routing_key, encode_properties(BasicProperties(**props)), body, persistent, codec=WIRE_PROPERTIES)
    peek = WIRE_PROPERTIES.peek(m.properties)
    if peek is not None:
        expiration, priority, _ = peek
        m.ttl = int(expiration) if expiration is not None else -1
        m.priority = priority or 0
    return m


def publish(vh: VirtualHost, queue: str, m: Message) -> bool:
    return vh.publish_to(vh.route("", queue, m), m)


def drain(q: Queue) -> list[bytes]:
    out = []
    while (item := q.pop()) is not None:
        assert item[0].body is not None
        out.append(item[0].body)
    return out


def run(vh: VirtualHost, clock: FakeTime, seconds: float) -> None:
    clock.t += seconds
    vh.run_timers(clock.t)


# ---------------------------------------------------------------------------------- policies


def test_policy_sets_limits_and_the_lower_number_wins(vh: VirtualHost) -> None:
    q = vh.declare_queue(None, "orders.in", arguments={"x-max-length": 5})
    vh.set_policy("cap", r"^orders\.", {"max-length": 2, "message-ttl": 1000})
    assert (q.max_length, q.ttl, q.policy.name) == (2, 1000, "cap")
    vh.set_policy("cap", r"^orders\.", {"max-length": 9})
    assert (q.max_length, q.ttl) == (5, None)  # the argument is lower now; the TTL went with the policy


def test_for_strings_the_argument_wins(vh: VirtualHost) -> None:
    q = vh.declare_queue(None, "a", arguments={"x-dead-letter-exchange": "from-arg"})
    vh.set_policy("dl", ".*", {"dead-letter-exchange": "from-policy", "overflow": "reject-publish"})
    assert q.dead_letter_exchange == "from-arg"
    assert q.overflow == "reject-publish"


def test_highest_priority_policy_applies_and_apply_to_filters(vh: VirtualHost) -> None:
    q = vh.declare_queue(None, "jobs")
    vh.declare_exchange("jobs-x", "fanout")
    vh.set_policy("low", "jobs", {"max-length": 1}, priority=1)
    vh.set_policy("high", "jobs", {"max-length": 2}, priority=5, apply_to="queues")
    vh.set_policy("ex", "jobs", {"alternate-exchange": "ae"}, priority=9, apply_to="exchanges")
    assert q.policy.name == "high" and q.max_length == 2
    assert vh.exchanges["jobs-x"].alternate_exchange == "ae"
    vh.clear_policy("high")
    assert q.policy.name == "low" and q.max_length == 1


def test_policy_applies_to_queues_declared_later_and_to_existing_messages(vh: VirtualHost) -> None:
    q = vh.declare_queue(None, "later")
    for i in range(5):
        publish(vh, "later", msg(b"%d" % i, "later"))
    vh.set_policy("trim", "^later$", {"max-length": 2})
    assert drain(q) == [b"3", b"4"]  # a shorter limit trims at once, from the head
    q2 = vh.declare_queue(None, "later2")
    vh.set_policy("trim", "^later", {"max-length": 1})
    assert q2.max_length == 1


@pytest.mark.parametrize(
    ("definition", "apply_to"),
    [
        ({"max-priority": 5}, "all"),
        ({"max-length": -1}, "all"),
        ({"no-such-key": 1}, "all"),
        ({}, "all"),
        ({"max-length": 1}, "streams"),
    ],
)
def test_invalid_policies_are_refused(vh: VirtualHost, definition: dict[str, Any], apply_to: str) -> None:
    with pytest.raises(BrokerError) as info:
        vh.set_policy("bad", ".*", definition, apply_to=apply_to)
    assert info.value.kind is ErrorKind.PRECONDITION_FAILED


def test_policies_are_journaled_and_replayed() -> None:
    broker = Broker()
    broker.vhosts["/"].declare_queue(None, "durable", durable=True)
    broker.set_policy("/", "ttl", "^dur", {"message-ttl": 5000, "dead-letter-exchange": "dlx"}, 3, "queues")
    broker.set_policy("/", "gone", ".*", {"max-length": 1})
    broker.clear_policy("/", "gone")
    commands = broker.definitions()
    fresh = Broker()
    report = fresh.replay_definitions(commands)
    assert not report.failures
    policy = fresh.vhosts["/"].policies["ttl"]
    assert (policy.pattern, policy.priority, policy.apply_to) == ("^dur", 3, "queues")
    assert "gone" not in fresh.vhosts["/"].policies
    assert fresh.vhosts["/"].queues["durable"].ttl == 5000


# ------------------------------------------------------------------------------------ timers


def test_ttl_expires_at_the_head_on_the_owners_timer(vh: VirtualHost, clock: FakeTime) -> None:
    q = vh.declare_queue(None, "t", arguments={"x-message-ttl": 1000})
    publish(vh, "t", msg(b"a", "t"))
    run(vh, clock, 0.5)
    publish(vh, "t", msg(b"b", "t"))
    run(vh, clock, 0.6)  # a is 1.1 s old, b 0.6 s
    assert q.message_count() == 1
    run(vh, clock, 0.5)
    assert q.message_count() == 0
    assert q.stats_expired == 2


def test_queue_expiry_waits_while_consumed_or_used(vh: VirtualHost, clock: FakeTime) -> None:
    q = vh.declare_queue(None, "x", arguments={"x-expires": 1000})
    run(vh, clock, 0.8)
    vh.declare_queue(None, "x", arguments={"x-expires": 1000})  # a redeclare renews it
    run(vh, clock, 0.8)
    assert "x" in vh.queues
    run(vh, clock, 0.3)
    assert "x" not in vh.queues and q.deleted


# ------------------------------------------------------------------------- priorities, limits


def test_priority_queue_orders_by_level_then_position() -> None:
    q = PriorityQueue("p", arguments={"x-max-priority": 3})
    for body, prio in ((b"a", 0), (b"b", 3), (b"c", 9), (b"d", 1)):
        m = msg(body, "p", priority=prio)
        q.enqueue(m)
    first = q.pop()
    assert first is not None and first[0].body == b"b"
    second = q.pop()
    assert second is not None and second[0].body == b"c"  # 9 is capped at 3, after b
    q.requeue(second[1], second[0])
    q.requeue(first[1], first[0])
    assert drain(q) == [b"b", b"c", b"d", b"a"]
    assert q.message_count() == 0 and q.ready_bytes == 0


def test_ready_bytes_follow_the_messages(vh: VirtualHost) -> None:
    q = vh.declare_queue(None, "bytes")
    for body in (b"12345", b"123"):
        publish(vh, "bytes", msg(body, "bytes"))
    assert q.ready_bytes == 8
    item = q.pop()
    assert item is not None and q.ready_bytes == 3
    q.requeue(item[1], item[0])
    assert q.ready_bytes == 8
    q.purge()
    assert q.ready_bytes == 0


def test_reject_publish_refuses_without_enqueueing(vh: VirtualHost) -> None:
    q = vh.declare_queue(None, "r", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    assert publish(vh, "r", msg(b"1", "r")) is False
    assert publish(vh, "r", msg(b"2", "r")) is True
    assert drain(q) == [b"1"] and q.stats_dropped == 1


# ----------------------------------------------------------------------------- dead letters


def test_dead_letter_history_counts_and_orders_most_recent_first(vh: VirtualHost, clock: FakeTime) -> None:
    vh.declare_queue(None, "a", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "b"})
    b = vh.declare_queue(None, "b", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "a"})
    a = vh.queues["a"]
    publish(vh, "a", msg(b"m", "a", expiration="5"))
    for _ in range(2):  # a -> b -> a -> b, each by rejection
        for src in (a, b):
            item = src.pop()
            assert item is not None
            src.discard(item[0], "rejected")
    item = a.pop()
    assert item is not None
    props = decode_properties(item[0].properties)
    assert props.expiration is None
    deaths = props.headers["x-death"]  # type: ignore[index]
    assert [(d["queue"], d["count"]) for d in deaths] == [("b", 2), ("a", 2)]
    assert deaths[-1]["original-expiration"] == "5"
    assert props.headers["x-first-death-queue"] == "a"  # type: ignore[index]


def test_automatic_dead_letter_cycle_is_dropped(vh: VirtualHost, clock: FakeTime) -> None:
    args = {"x-dead-letter-exchange": "", "x-message-ttl": 10}
    vh.declare_queue(None, "a", arguments={**args, "x-dead-letter-routing-key": "b"})
    vh.declare_queue(None, "b", arguments={**args, "x-dead-letter-routing-key": "a"})
    publish(vh, "a", msg(b"m", "a"))
    for _ in range(4):
        run(vh, clock, 0.02)
    assert vh.queues["a"].message_count() == vh.queues["b"].message_count() == 0
    assert vh.queues["b"].stats_dead_lettered == 1  # a -> b, then b -> a would close the cycle


# ------------------------------------------------------------------------------ compact backlogs


def test_deep_transient_backlog_is_kept_as_bodies_and_comes_back_whole(vh: VirtualHost) -> None:
    from leveret.core.queue import COMPACT_AFTER

    q = vh.declare_queue(None, "deep")
    n = COMPACT_AFTER + 50
    for i in range(n):
        publish(vh, "deep", msg(b"%d" % i, "deep", content_type="text/plain"))
    odd = msg(b"odd", "deep", content_type="application/json")  # not like the template: kept whole
    publish(vh, "deep", odd)
    entries = list(q._ready)
    assert all(type(e) is Message for e in entries[:COMPACT_AFTER])
    assert all(type(e) is bytes for e in entries[COMPACT_AFTER:n])
    assert entries[-1] is odd
    assert q.ready_bytes == sum(len(b"%d" % i) for i in range(n)) + 3
    got = []
    while (item := q.pop()) is not None:
        m = item[0]
        got.append((m.body, decode_properties(m.properties).content_type, m.routing_key))
    assert got[:n] == [(b"%d" % i, "text/plain", "deep") for i in range(n)]
    assert got[-1] == (b"odd", "application/json", "deep")
    assert q.ready_bytes == 0


def test_stored_backlog_is_kept_as_positions_and_restores_as_redelivered(tmp_path: Any) -> None:
    from leveret.store.message_store import MessageStore

    store = MessageStore(str(tmp_path / "msgs"))
    store.open([])
    vh = VirtualHost("/")
    vh.store = store
    q = vh.declare_queue(None, "d", durable=True)
    q.page_after = 10
    for i in range(30):
        publish(vh, "d", msg(b"%d" % i, "d", delivery_mode=2))
    store.flush()
    assert sum(type(e) is int for e in q._ready) == 20
    first = q.pop()
    assert first is not None and first[0].body == b"0" and not first[2]
    assert [m[0].body for m in iter(q.pop, None)] == [b"%d" % i for i in range(1, 30)]  # type: ignore[index]
    # A restart: the positions come back as entries, delivered as redelivered with their content.
    q2 = vh.declare_queue(None, "r", durable=True)
    publish(vh, "r", msg(b"kept", "r", delivery_mode=2))
    location = q2._ready[0].location
    q3 = vh.declare_queue(None, "r3", durable=True)
    q3.restore([location], WIRE_PROPERTIES)
    item = q3.pop()
    assert item is not None and item[0].body == b"kept" and item[2] is True
