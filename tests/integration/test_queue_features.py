"""RabbitMQ's optional queue semantics through pika: TTL, queue expiry, length limits, dead-lettering
with ``x-death``, priorities, single active consumer, consumer priorities, consumer timeout, delivery
limits (quorum queues), direct reply-to.

Every test here also runs against RabbitMQ 3.10 (``LEVERET_REFERENCE_PORT=5673 pytest ...``) except
where marked ``leveret_only`` (features RabbitMQ 3.10 lacks: per-queue consumer timeout, the 4.x
quorum delivery limit default, delivery limits on classic queues). That is how the expectations were
checked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker

REFERENCE = os.environ.get("LEVERET_REFERENCE_PORT")
leveret_only = pytest.mark.skipif(bool(REFERENCE), reason="a Leveret extension (RabbitMQ 3.10 lacks it)")


@pytest.fixture
def port(request: pytest.FixtureRequest) -> int:
    if REFERENCE:
        return int(REFERENCE)
    broker = request.getfixturevalue("broker")
    return int(broker.port)


@pytest.fixture
def conn(port: int) -> Iterator[pika.BlockingConnection]:
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    yield connection
    if connection.is_open:
        connection.close()


@pytest.fixture
def ch(conn: pika.BlockingConnection) -> BlockingChannel:
    return conn.channel()


@pytest.fixture
def names(ch: BlockingChannel, unique: str) -> Iterator[Callable[[str], str]]:
    """Unique queue/exchange names, deleted afterwards."""
    made: list[str] = []

    def name(suffix: str) -> str:
        made.append(f"{unique}-{suffix}")
        return made[-1]

    yield name
    if ch.is_open:
        for n in made:
            ch.queue_delete(n)
            ch.exchange_delete(n)


def publish(ch: BlockingChannel, queue: str, body: bytes, **props: Any) -> None:
    ch.basic_publish("", queue, body, pika.BasicProperties(**props))


def count(ch: BlockingChannel, queue: str) -> int:
    return int(ch.queue_declare(queue, passive=True).method.message_count)


def bodies(ch: BlockingChannel, queue: str) -> list[bytes]:
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append(body)


def get(ch: BlockingChannel, queue: str, timeout: float = 5.0) -> tuple[Any, Any, bytes]:
    """The next message, waiting for it (dead-lettering may land a moment after the cause)."""
    deadline = time.monotonic() + timeout
    while True:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, props, body
        assert time.monotonic() < deadline, f"nothing arrived in {queue}"
        time.sleep(0.02)


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def dead_letter_pair(ch: BlockingChannel, names: Callable[[str], str], **args: Any) -> tuple[str, str, str]:
    """(source queue, dead-letter exchange, dead-letter queue bound with '#')."""
    dlx, dlq, src = names("dlx"), names("dlq"), names("src")
    ch.exchange_declare(dlx, "topic")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx, "#")
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": dlx, **args})
    return src, dlx, dlq


# ----------------------------------------------------------------------------------------- TTL


def test_queue_ttl_expires_messages_nobody_took(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    q = names("ttl")
    ch.queue_declare(q, arguments={"x-message-ttl": 400})
    for i in range(3):
        publish(ch, q, b"%d" % i)
    wait_until(lambda: count(ch, q) == 3, timeout=0.3)  # all there within the TTL (RabbitMQ enqueues asynchronously)
    wait_until(lambda: count(ch, q) == 0)  # removed from an idle queue, not only when someone asks
    assert bodies(ch, q) == []


def test_message_expiration_zero_reaches_a_waiting_consumer_only(
    ch: BlockingChannel, names: Callable[[str], str]
) -> None:
    q = names("zero")
    ch.queue_declare(q)
    publish(ch, q, b"nobody waits", expiration="0")
    assert bodies(ch, q) == []
    got: list[bytes] = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    publish(ch, q, b"someone waits", expiration="0")
    ch.connection.process_data_events(time_limit=0.3)
    assert got == [b"someone waits"]


def test_the_shorter_of_message_and_queue_ttl_applies(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    q = names("min")
    ch.queue_declare(q, arguments={"x-message-ttl": 60_000})
    publish(ch, q, b"short", expiration="50")
    wait_until(lambda: count(ch, q) == 0)
    q2 = names("min2")
    ch.queue_declare(q2, arguments={"x-message-ttl": 50})
    publish(ch, q2, b"long", expiration="60000")
    wait_until(lambda: count(ch, q2) == 0)


def test_an_expired_message_behind_a_live_one_waits_for_the_head(
    ch: BlockingChannel, names: Callable[[str], str]
) -> None:
    """RabbitMQ removes expired messages at the head only (no scan of the whole queue)."""
    q = names("head")
    ch.queue_declare(q)
    publish(ch, q, b"lives")
    publish(ch, q, b"dies", expiration="20")
    time.sleep(0.2)
    assert count(ch, q) == 2
    assert bodies(ch, q) == [b"lives"]


@pytest.mark.parametrize(
    ("expiration", "reason"),
    [
        ("abc", "no_integer"),
        ("", "no_integer"),
        ("-1", "{value_negative,-1}"),
        ("1.5", '{leftover_string,".5"}'),
    ],
)
def test_a_malformed_expiration_is_refused(
    conn: pika.BlockingConnection, names: Callable[[str], str], expiration: str, reason: str
) -> None:
    ch = conn.channel()
    q = names("bad")
    ch.queue_declare(q)
    ch.basic_publish("", q, b"x", pika.BasicProperties(expiration=expiration))
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(q, passive=True)
    assert info.value.reply_code == 406
    assert info.value.reply_text == f"PRECONDITION_FAILED - invalid expiration '{expiration}': {reason}"


def test_requeued_message_keeps_its_expiry(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    q = names("requeue")
    ch.queue_declare(q, arguments={"x-message-ttl": 150})
    publish(ch, q, b"m")
    method, _, _ = ch.basic_get(q)
    time.sleep(0.3)
    ch.basic_nack(method.delivery_tag, requeue=True)
    wait_until(lambda: count(ch, q) == 0)


def test_unused_queue_expires(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    q = names("expires")
    ch.queue_declare(q, arguments={"x-expires": 200})
    publish(ch, q, b"kept until the queue goes")
    time.sleep(0.6)  # no polling meanwhile: a passive declare counts as use, as a redeclare does
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(q, passive=True)
    assert info.value.reply_code == 404


def test_queue_with_a_consumer_does_not_expire(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    q = names("busy")
    ch.queue_declare(q, arguments={"x-expires": 100})
    tag = ch.basic_consume(q, lambda *a: None)
    ch.connection.process_data_events(time_limit=0.4)
    assert count(ch, q) == 0  # still there
    ch.basic_cancel(tag)
    time.sleep(0.4)
    with pytest.raises(ChannelClosedByBroker):
        ch.queue_declare(q, passive=True)


# -------------------------------------------------------------------------------- length limits


def test_max_length_drops_from_the_head(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    q = names("maxlen")
    ch.queue_declare(q, arguments={"x-max-length": 3})
    for i in range(5):
        publish(ch, q, b"%d" % i)
    assert bodies(ch, q) == [b"2", b"3", b"4"]


def test_max_length_bytes_counts_bodies(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    q = names("maxbytes")
    ch.queue_declare(q, arguments={"x-max-length-bytes": 10})
    for body in (b"aaaa", b"bbbb", b"cccc"):
        publish(ch, q, body)
    assert bodies(ch, q) == [b"bbbb", b"cccc"]


def test_reject_publish_nacks_the_publisher(conn: pika.BlockingConnection, names: Callable[[str], str]) -> None:
    ch = conn.channel()
    q = names("reject")
    ch.queue_declare(q, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    outcomes = []
    for i in range(4):
        try:
            ch.basic_publish("", q, b"%d" % i)
            outcomes.append("ack")
        except pika.exceptions.NackError:
            outcomes.append("nack")
    assert outcomes == ["ack", "ack", "nack", "nack"]
    assert bodies(ch, q) == [b"0", b"1"]
    ch.basic_publish("", q, b"room again")
    assert bodies(ch, q) == [b"room again"]


def test_reject_publish_dlx_dead_letters_what_it_refuses(
    conn: pika.BlockingConnection, names: Callable[[str], str]
) -> None:
    ch = conn.channel()
    src, _dlx, dlq = dead_letter_pair(ch, names, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"})
    ch.confirm_delivery()
    ch.basic_publish("", src, b"in")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", src, b"out")
    _, props, body = get(ch, dlq)
    assert body == b"out"
    assert props.headers["x-death"][0]["reason"] == "maxlen"
    assert bodies(ch, src) == [b"in"]


def test_drop_head_dead_letters_with_reason_maxlen(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    src, _dlx, dlq = dead_letter_pair(ch, names, **{"x-max-length": 1})
    publish(ch, src, b"first")
    publish(ch, src, b"second")
    _, props, body = get(ch, dlq)
    assert body == b"first"
    assert props.headers["x-first-death-reason"] == "maxlen"


# ------------------------------------------------------------------------------- dead-lettering


def test_x_death_as_rabbitmq_writes_it(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    src, dlx, dlq = dead_letter_pair(ch, names)
    headers = {"CC": ["cc-key"], "BCC": ["secret"], "app": "kept"}
    ch.basic_publish("", src, b"m", pika.BasicProperties(headers=headers, expiration="60000", message_id="id1"))
    method, _, _ = ch.basic_get(src)
    ch.basic_reject(method.delivery_tag, requeue=False)
    method, props, body = get(ch, dlq)
    assert (method.exchange, method.routing_key, body) == (dlx, src, b"m")
    assert props.expiration is None  # moved into the x-death entry
    assert props.message_id == "id1"
    h = props.headers
    assert "BCC" not in h and h["CC"] == ["cc-key"] and h["app"] == "kept"
    assert h["x-first-death-reason"] == "rejected"
    assert h["x-first-death-queue"] == src
    assert h["x-first-death-exchange"] == ""
    (death,) = h["x-death"]
    assert list(death) == ["count", "reason", "queue", "time", "exchange", "routing-keys", "original-expiration"]
    assert death["count"] == 1
    assert (death["reason"], death["queue"], death["exchange"]) == ("rejected", src, "")
    assert death["routing-keys"] == [src, "cc-key"]
    assert death["original-expiration"] == "60000"
    assert isinstance(death["time"], datetime)
    assert abs(death["time"].timestamp() - time.time()) < 60


def test_dead_letter_routing_key_replaces_the_original(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    dlx, dlq, src = names("dlx"), names("dlq"), names("src")
    ch.exchange_declare(dlx, "direct")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx, "dead")
    ch.queue_declare(src, arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead"})
    publish(ch, src, b"m")
    method, _, _ = ch.basic_get(src)
    ch.basic_nack(method.delivery_tag, requeue=False)
    method, props, _ = get(ch, dlq)
    assert method.routing_key == "dead"
    assert props.headers["x-death"][0]["routing-keys"] == [src]


def test_rejections_in_a_loop_count_up_in_one_entry(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    """The default exchange as DLX sends a rejected message back to its own queue: no cycle (a
    rejection is never one), and the one (queue, reason) entry counts."""
    q = names("loop")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": ""})
    publish(ch, q, b"m")
    for expected in (1, 2, 3):
        method, _, _ = get_unacked(ch, q)
        ch.basic_reject(method.delivery_tag, requeue=False)
        method, props, _ = get_unacked(ch, q)
        assert [d["count"] for d in props.headers["x-death"]] == [expected]
        ch.basic_nack(method.delivery_tag, requeue=True)
    assert count(ch, q) == 1


def get_unacked(ch: BlockingChannel, queue: str) -> tuple[Any, Any, bytes]:
    deadline = time.monotonic() + 5
    while True:
        method, props, body = ch.basic_get(queue)
        if method is not None:
            return method, props, body
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_expiry_cycle_is_dropped(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    """A queue that dead-letters expired messages back into itself: RabbitMQ drops the message the
    second time round instead of looping forever."""
    q = names("cycle")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": "", "x-message-ttl": 30})
    publish(ch, q, b"m")
    wait_until(lambda: count(ch, q) == 0)
    time.sleep(0.2)
    assert count(ch, q) == 0


def test_expired_messages_are_dead_lettered(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    src, _dlx, dlq = dead_letter_pair(ch, names, **{"x-message-ttl": 50})
    publish(ch, src, b"late", expiration="40000")
    _, props, body = get(ch, dlq)
    death = props.headers["x-death"][0]
    assert (body, death["reason"], death["original-expiration"]) == (b"late", "expired", "40000")


def test_nack_multiple_dead_letters_every_message(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    src, _dlx, dlq = dead_letter_pair(ch, names)
    for i in range(3):
        publish(ch, src, b"%d" % i)
    last = None
    for _ in range(3):
        last, _, _ = ch.basic_get(src)
    ch.basic_nack(last.delivery_tag, multiple=True, requeue=False)
    wait_until(lambda: count(ch, dlq) == 3)
    assert bodies(ch, dlq) == [b"0", b"1", b"2"]


def test_missing_dead_letter_exchange_drops(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    q = names("nodlx")
    ch.queue_declare(q, arguments={"x-dead-letter-exchange": names("absent")})
    publish(ch, q, b"m")
    method, _, _ = ch.basic_get(q)
    ch.basic_reject(method.delivery_tag, requeue=False)
    assert count(ch, q) == 0


# ----------------------------------------------------------------------------------- priorities


def test_priority_queue_delivers_highest_first_fifo_within_a_level(
    ch: BlockingChannel, names: Callable[[str], str]
) -> None:
    q = names("prio")
    ch.queue_declare(q, arguments={"x-max-priority": 10})
    for body, priority in ((b"a1", 1), (b"b5", 5), (b"c3", 3), (b"d5", 5), (b"e0", None), (b"f99", 99)):
        publish(ch, q, body, priority=priority)
    # Above the maximum counts as the maximum: f99 sits at level 10.
    assert bodies(ch, q) == [b"f99", b"b5", b"d5", b"c3", b"a1", b"e0"]


def test_requeue_keeps_priority_and_position(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    q = names("prio-requeue")
    ch.queue_declare(q, arguments={"x-max-priority": 5})
    for body, priority in ((b"low", 1), (b"high1", 5), (b"high2", 5)):
        publish(ch, q, body, priority=priority)
    method, _, body = ch.basic_get(q)
    assert body == b"high1"
    ch.basic_nack(method.delivery_tag, requeue=True)
    publish(ch, q, b"high3", priority=5)
    assert bodies(ch, q) == [b"high1", b"high2", b"high3", b"low"]


def test_priority_over_255_is_refused(conn: pika.BlockingConnection, names: Callable[[str], str]) -> None:
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(names("p256"), arguments={"x-max-priority": 256})
    assert info.value.reply_code == 406


def test_priority_consumers_see_priorities(conn: pika.BlockingConnection, names: Callable[[str], str]) -> None:
    ch = conn.channel()
    q = names("prio-consume")
    ch.queue_declare(q, arguments={"x-max-priority": 9})
    for body, priority in ((b"1", 1), (b"9", 9), (b"5", 5)):
        publish(ch, q, body, priority=priority)
    got: list[bytes] = []
    ch.basic_qos(prefetch_count=10)
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    wait_until(lambda: (conn.process_data_events(time_limit=0.05), len(got) == 3)[1])
    assert got == [b"9", b"5", b"1"]


# ------------------------------------------------------------------------------------ consumers


def test_single_active_consumer_fails_over_in_order(conn: pika.BlockingConnection, names: Callable[[str], str]) -> None:
    ch = conn.channel()
    q = names("sac")
    ch.queue_declare(q, arguments={"x-single-active-consumer": True})
    got: dict[str, list[bytes]] = {"a": [], "b": [], "c": []}
    tags = {}
    for who in "abc":
        tags[who] = ch.basic_consume(q, lambda c, m, p, b, who=who: got[who].append(b), auto_ack=True)
    for i in range(4):
        publish(ch, q, b"%d" % i)
    wait_until(lambda: (conn.process_data_events(time_limit=0.05), len(got["a"]) == 4)[1])
    ch.basic_cancel(tags["a"])
    for i in range(4, 6):
        publish(ch, q, b"%d" % i)
    wait_until(lambda: (conn.process_data_events(time_limit=0.05), len(got["b"]) == 2)[1])
    assert got == {"a": [b"0", b"1", b"2", b"3"], "b": [b"4", b"5"], "c": []}


def test_single_active_consumer_hands_over_unacked_messages(
    port: int, names: Callable[[str], str], ch: BlockingChannel
) -> None:
    q = names("sac-fail")
    ch.queue_declare(q, arguments={"x-single-active-consumer": True})
    first = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    c1 = first.channel()
    held: list[bytes] = []
    c1.basic_consume(q, lambda c, m, p, b: held.append(b))
    got: list[bytes] = []
    c2 = ch.connection.channel()
    c2.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    publish(ch, q, b"x")
    wait_until(lambda: (first.process_data_events(time_limit=0.05), held == [b"x"])[1])
    first.close()  # the active consumer dies with the message unacked
    wait_until(lambda: (ch.connection.process_data_events(time_limit=0.05), got == [b"x"])[1])


def test_consumer_priorities(conn: pika.BlockingConnection, names: Callable[[str], str]) -> None:
    """Higher-priority consumers get the messages while they have credit; then the lower ones."""
    ch = conn.channel()
    q = names("cprio")
    ch.queue_declare(q)
    ch.basic_qos(prefetch_count=2)
    got: dict[str, list[bytes]] = {"low": [], "high": []}
    ch.basic_consume(q, lambda c, m, p, b: got["low"].append(b), arguments={"x-priority": 1})
    ch.basic_consume(q, lambda c, m, p, b: got["high"].append(b), arguments={"x-priority": 10})
    for i in range(3):
        publish(ch, q, b"%d" % i)
    wait_until(lambda: (conn.process_data_events(time_limit=0.05), len(got["low"]) + len(got["high"]) == 3)[1])
    assert got == {"high": [b"0", b"1"], "low": [b"2"]}


def test_consumer_priority_must_be_an_integer(conn: pika.BlockingConnection, names: Callable[[str], str]) -> None:
    ch = conn.channel()
    q = names("cprio-bad")
    ch.queue_declare(q)
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.basic_consume(q, lambda *a: None, arguments={"x-priority": "high"})
    assert info.value.reply_code == 406
    assert "invalid arg 'x-priority'" in info.value.reply_text


def test_cancel_on_ha_failover_is_accepted(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    q = names("ha")
    ch.queue_declare(q)
    tag = ch.basic_consume(q, lambda *a: None, arguments={"x-cancel-on-ha-failover": True})
    ch.basic_cancel(tag)


@leveret_only
def test_consumer_timeout_closes_the_channel_and_requeues(
    conn: pika.BlockingConnection, names: Callable[[str], str]
) -> None:
    ch = conn.channel()
    q = names("timeout")
    ch.queue_declare(q, arguments={"x-consumer-timeout": 200})
    publish(ch, q, b"slow")
    closed: list[Any] = []
    ch._impl.add_on_close_callback(lambda _channel, reason: closed.append(reason))
    ch.basic_consume(q, lambda *a: None)  # never acks
    wait_until(lambda: (conn.process_data_events(time_limit=0.05), bool(closed))[1], timeout=5)
    assert closed[0].reply_code == 406
    assert closed[0].reply_text.startswith("PRECONDITION_FAILED - delivery acknowledgement on channel")
    assert "Timeout value used: 200 ms" in closed[0].reply_text
    other = conn.channel()
    method, _, body = other.basic_get(q, auto_ack=True)
    assert body == b"slow" and method.redelivered


# ------------------------------------------------------------------- delivery limits, quorum


def test_quorum_queue_counts_deliveries_in_a_header(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    q = names("quorum")
    ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"})
    publish(ch, q, b"m")
    method, props, _ = get_unacked(ch, q)
    assert not (props.headers or {}).get("x-delivery-count")
    for expected in (1, 2):
        ch.basic_nack(method.delivery_tag, requeue=True)
        method, props, _ = get_unacked(ch, q)
        assert props.headers["x-delivery-count"] == expected
    ch.basic_ack(method.delivery_tag)


def test_delivery_limit_dead_letters_poison_messages(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    src, _dlx, dlq = dead_letter_pair(ch, names)
    ch.queue_delete(src)
    ch.queue_declare(
        src,
        durable=True,
        arguments={"x-queue-type": "quorum", "x-delivery-limit": 2, "x-dead-letter-exchange": _dlx},
    )
    publish(ch, src, b"poison")
    for _ in range(3):  # delivered three times: the third failure is one beyond the limit
        method, _, _ = get_unacked(ch, src)
        ch.basic_nack(method.delivery_tag, requeue=True)
    _, props, body = get(ch, dlq)
    assert body == b"poison"
    assert props.headers["x-death"][0]["reason"] == "delivery_limit"
    assert count(ch, src) == 0


@leveret_only
def test_quorum_queue_default_delivery_limit_is_rabbitmq_4s(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    q = names("quorum-default")
    ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"})
    publish(ch, q, b"poison")
    for _ in range(21):
        method, _, _ = get_unacked(ch, q)
        ch.basic_nack(method.delivery_tag, requeue=True)
    assert count(ch, q) == 0


@leveret_only
def test_delivery_limit_on_a_classic_queue(ch: BlockingChannel, names: Callable[[str], str]) -> None:
    src, _dlx, dlq = dead_letter_pair(ch, names, **{"x-delivery-limit": 0})
    publish(ch, src, b"once")
    method, props, _ = get_unacked(ch, src)
    ch.basic_reject(method.delivery_tag, requeue=True)
    _, props, _ = get(ch, dlq)
    assert props.headers["x-first-death-reason"] == "delivery_limit"


def test_stream_queues_are_refused_clearly(conn: pika.BlockingConnection, names: Callable[[str], str]) -> None:
    if REFERENCE:
        pytest.skip("RabbitMQ has streams")
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare(names("stream"), durable=True, arguments={"x-queue-type": "stream"})
    assert info.value.reply_code == 406


# ----------------------------------------------------------------------------- direct reply-to


def test_direct_reply_to_rpc(port: int, conn: pika.BlockingConnection, names: Callable[[str], str]) -> None:
    server = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    try:
        sch = server.channel()
        rpc = names("rpc")
        sch.queue_declare(rpc)

        def on_request(c: BlockingChannel, method: Any, props: Any, body: bytes) -> None:
            c.basic_publish("", props.reply_to, body.upper(), pika.BasicProperties(correlation_id=props.correlation_id))
            c.basic_ack(method.delivery_tag)

        sch.basic_consume(rpc, on_request)
        ch = conn.channel()
        replies: list[tuple[str, bytes]] = []
        ch.basic_consume(
            "amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append((p.correlation_id, b)), auto_ack=True
        )
        ch.basic_publish("", rpc, b"ping", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="7"))

        def answered() -> bool:
            server.process_data_events(time_limit=0.02)
            conn.process_data_events(time_limit=0.02)
            return bool(replies)

        wait_until(answered)
        assert replies == [("7", b"PING")]
    finally:
        server.close()


def test_direct_reply_to_needs_no_ack_and_a_consumer(conn: pika.BlockingConnection) -> None:
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.basic_consume("amq.rabbitmq.reply-to", lambda *a: None, auto_ack=False)
    assert info.value.reply_code == 406
    ch = conn.channel()
    ch.basic_publish("", "anything", b"x", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare("", exclusive=True)
    assert info.value.reply_code == 406
    assert "fast reply consumer does not exist" in info.value.reply_text


# ------------------------------------------------------------------------------ across restarts


@leveret_only
@pytest.mark.parametrize("kind", ["queue-ttl", "message-ttl", "priority-queue"])
def test_ttl_deadlines_survive_a_restart(fresh_broker: Any, kind: str) -> None:
    """A persistent message's enqueue time is stored with it (a PUBLISH_AT record): after a restart
    it expires when it would have, not one TTL later."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", fresh_broker.port))
    ch = conn.channel()
    args: dict[str, Any] = {"x-message-ttl": 1500} if kind == "queue-ttl" else {}
    if kind == "priority-queue":
        args["x-max-priority"] = 5
    ch.queue_declare("timed", durable=True, arguments=args)
    ch.queue_declare("untimed", durable=True)
    expiration = None if kind == "queue-ttl" else "1500"
    started = time.monotonic()
    ch.basic_publish("", "timed", b"t", pika.BasicProperties(delivery_mode=2, expiration=expiration, priority=1))
    ch.basic_publish("", "untimed", b"u", pika.BasicProperties(delivery_mode=2))
    conn.close()
    time.sleep(0.9)
    fresh_broker.restart(kill=True)
    restarted = time.monotonic()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", fresh_broker.port))
    ch = conn.channel()
    wait_until(lambda: count(ch, "timed") == 0, timeout=10)
    # Due at started + 1.5 s, at most ~0.6 s after the restart; a TTL counted afresh would take 1.5 s.
    assert time.monotonic() - max(restarted, started + 1.5) < 1.0
    assert count(ch, "untimed") == 1
    conn.close()
