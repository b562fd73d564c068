"""Errors as RabbitMQ gives them: reply code, reply text prefix and scope, via pika and aio-pika.

A channel-scoped error (404, 403, 405, 406) closes only the channel that caused it: the same
connection's other channels, new channels on it and other connections keep working. A connection-
scoped error (503, 530, 540) closes the connection and nothing else. Each case runs with a bystander
channel opened beforehand on the same connection and another connection, and checks both afterwards.

Both clients refuse a duplicate consumer tag themselves, so that case sends the raw basic.consume.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aio_pika
import aiormq
import pika
import pytest
from aio_pika import ExchangeType, Message
from pika.adapters.blocking_connection import BlockingChannel

CODE_NAMES = {
    403: "ACCESS_REFUSED",
    404: "NOT_FOUND",
    405: "RESOURCE_LOCKED",
    406: "PRECONDITION_FAILED",
    503: "COMMAND_INVALID",
    530: "NOT_ALLOWED",
    540: "NOT_IMPLEMENTED",
}


def connect(port: int, **kwargs) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, **kwargs))


def check_channel_works(ch: BlockingChannel) -> None:
    """Declare, publish, get: the channel (and its connection) is fully usable."""
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", queue, b"still alive")
    method, _props, body = ch.basic_get(queue, auto_ack=True)
    assert method is not None and body == b"still alive"
    ch.queue_delete(queue)


def round_trip(ch: BlockingChannel) -> None:
    """A synchronous method: an asynchronous error (after publish or ack) surfaces here."""
    ch.basic_qos(prefetch_count=0)


# ------------------------------------------------------------------ channel errors with pika
# Each case gets (channel, helper channel on another connection, unique name) and must raise
# through the channel; the helper connection owns exclusive queues and consumers where needed.

ChannelCase = Callable[[BlockingChannel, BlockingChannel, str], object]


def passive_missing_queue(ch, helper, name):
    ch.queue_declare(name, passive=True)


def passive_missing_exchange(ch, helper, name):
    ch.exchange_declare(name, "direct", passive=True)


def publish_to_missing_exchange(ch, helper, name):
    ch.basic_publish(name, "key", b"body")
    round_trip(ch)


def bind_to_missing_exchange(ch, helper, name):
    ch.queue_declare(name, auto_delete=True)
    ch.queue_bind(name, name + "-nowhere")


def bind_missing_queue(ch, helper, name):
    ch.queue_bind(name + "-nowhere", "amq.direct")


def consume_missing_queue(ch, helper, name):
    ch.basic_consume(name, lambda *a: None)


def declare_amq_exchange(ch, helper, name):
    ch.exchange_declare("amq." + name, "direct")


def declare_amq_queue(ch, helper, name):
    ch.queue_declare("amq." + name)


def delete_amq_exchange(ch, helper, name):
    ch.exchange_delete("amq.direct")


def bind_to_default_exchange(ch, helper, name):
    ch.queue_declare(name, auto_delete=True)
    ch.queue_bind(name, "", routing_key=name)


def publish_to_internal_exchange(ch, helper, name):
    helper.exchange_declare(name, "fanout", internal=True, auto_delete=True)
    ch.basic_publish(name, "", b"body")
    round_trip(ch)


def _exclusive_queue_of_other_connection(helper, name):
    helper.queue_declare(name, exclusive=True)


def exclusive_redeclare(ch, helper, name):
    _exclusive_queue_of_other_connection(helper, name)
    ch.queue_declare(name)


def exclusive_passive(ch, helper, name):
    _exclusive_queue_of_other_connection(helper, name)
    ch.queue_declare(name, passive=True)


def exclusive_consume(ch, helper, name):
    _exclusive_queue_of_other_connection(helper, name)
    ch.basic_consume(name, lambda *a: None)


def exclusive_get(ch, helper, name):
    _exclusive_queue_of_other_connection(helper, name)
    ch.basic_get(name)


def exclusive_delete(ch, helper, name):
    _exclusive_queue_of_other_connection(helper, name)
    ch.queue_delete(name)


def exclusive_purge(ch, helper, name):
    _exclusive_queue_of_other_connection(helper, name)
    ch.queue_purge(name)


def queue_durable_mismatch(ch, helper, name):
    helper.queue_declare(name, durable=True)
    ch.queue_declare(name, durable=False)


def queue_type_mismatch(ch, helper, name):
    helper.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})
    ch.queue_declare(name, durable=True)


def queue_argument_mismatch(ch, helper, name):
    helper.queue_declare(name, arguments={"x-max-length": 10})
    ch.queue_declare(name, arguments={"x-max-length": 20})


def exchange_durable_mismatch(ch, helper, name):
    helper.exchange_declare(name, "direct", durable=True)
    ch.exchange_declare(name, "direct", durable=False)


def exchange_type_mismatch(ch, helper, name):
    helper.exchange_declare(name, "direct")
    ch.exchange_declare(name, "topic")


def amq_exchange_durable_mismatch(ch, helper, name):
    ch.exchange_declare("amq.direct", "direct", durable=False)


def ack_unknown_tag(ch, helper, name):
    ch.basic_ack(delivery_tag=99)
    round_trip(ch)


def ack_unknown_tag_multiple(ch, helper, name):
    ch.basic_ack(delivery_tag=99, multiple=True)
    round_trip(ch)


def nack_unknown_tag(ch, helper, name):
    ch.basic_nack(delivery_tag=7)
    round_trip(ch)


def reject_unknown_tag(ch, helper, name):
    ch.basic_reject(delivery_tag=7)
    round_trip(ch)


def _one_unacked(ch, name) -> int:
    ch.queue_declare(name, auto_delete=True)
    ch.basic_publish("", name, b"m")
    method, _props, _body = ch.basic_get(name)
    assert method is not None
    return method.delivery_tag


def double_ack(ch, helper, name):
    tag = _one_unacked(ch, name)
    ch.basic_ack(tag)
    round_trip(ch)  # the first ack is fine
    ch.basic_ack(tag)
    round_trip(ch)


def ack_after_reject(ch, helper, name):
    tag = _one_unacked(ch, name)
    ch.basic_reject(tag, requeue=False)
    ch.basic_ack(tag)
    round_trip(ch)


def ack_on_another_channel(ch, helper, name):
    other = ch.connection.channel()
    tag = _one_unacked(other, name)
    ch.basic_ack(tag)  # delivery tags are per channel
    round_trip(ch)


def delete_queue_if_unused(ch, helper, name):
    helper.queue_declare(name)
    helper.basic_consume(name, lambda *a: None)
    ch.queue_delete(name, if_unused=True)


def delete_queue_if_empty(ch, helper, name):
    helper.queue_declare(name)
    helper.confirm_delivery()  # confirmed: the message is in the queue
    helper.basic_publish("", name, b"x")
    ch.queue_delete(name, if_empty=True)


def delete_exchange_if_unused(ch, helper, name):
    helper.exchange_declare(name, "direct")
    helper.queue_declare(name, exclusive=True)
    helper.queue_bind(name, name, routing_key="k")
    ch.exchange_delete(name, if_unused=True)


def tx_commit_without_select(ch, helper, name):
    ch.tx_commit()


def tx_rollback_without_select(ch, helper, name):
    ch.tx_rollback()


def tx_after_confirm(ch, helper, name):
    ch.confirm_delivery()
    ch.tx_select()


def exclusive_consume_taken(ch, helper, name):
    helper.queue_declare(name)
    helper.basic_consume(name, lambda *a: None, exclusive=True)
    ch.basic_consume(name, lambda *a: None)


CHANNEL_CASES: list[tuple[ChannelCase, int, str]] = [
    (passive_missing_queue, 404, "no queue"),
    (passive_missing_exchange, 404, "no exchange"),
    (publish_to_missing_exchange, 404, "no exchange"),
    (bind_to_missing_exchange, 404, "no exchange"),
    (bind_missing_queue, 404, "no queue"),
    (consume_missing_queue, 404, "no queue"),
    (declare_amq_exchange, 403, "exchange name"),
    (declare_amq_queue, 403, "queue name"),
    (delete_amq_exchange, 403, ""),
    (bind_to_default_exchange, 403, ""),
    (publish_to_internal_exchange, 403, ""),
    (exclusive_redeclare, 405, "cannot obtain exclusive access"),
    (exclusive_passive, 405, "cannot obtain exclusive access"),
    (exclusive_consume, 405, "cannot obtain exclusive access"),
    (exclusive_get, 405, "cannot obtain exclusive access"),
    (exclusive_delete, 405, "cannot obtain exclusive access"),
    (exclusive_purge, 405, "cannot obtain exclusive access"),
    (exclusive_consume_taken, 403, ""),
    (queue_durable_mismatch, 406, "inequivalent arg 'durable'"),
    (queue_type_mismatch, 406, "inequivalent arg 'x-queue-type'"),
    (queue_argument_mismatch, 406, "inequivalent arg 'x-max-length'"),
    (exchange_durable_mismatch, 406, "inequivalent arg 'durable'"),
    (exchange_type_mismatch, 406, "inequivalent arg 'type'"),
    (amq_exchange_durable_mismatch, 406, "inequivalent arg 'durable'"),
    (ack_unknown_tag, 406, "unknown delivery tag 99"),
    (ack_unknown_tag_multiple, 406, "unknown delivery tag 99"),
    (nack_unknown_tag, 406, "unknown delivery tag 7"),
    (reject_unknown_tag, 406, "unknown delivery tag 7"),
    (double_ack, 406, "unknown delivery tag"),
    (ack_after_reject, 406, "unknown delivery tag"),
    (ack_on_another_channel, 406, "unknown delivery tag"),
    (delete_queue_if_unused, 406, "in use"),
    (delete_queue_if_empty, 406, "not empty"),
    (delete_exchange_if_unused, 406, "in use"),
    (tx_commit_without_select, 406, "channel is not transactional"),
    (tx_rollback_without_select, 406, "channel is not transactional"),
    (tx_after_confirm, 406, ""),
]


@pytest.fixture
def helper(amqp_port):
    conn = connect(amqp_port)
    yield conn.channel()
    if conn.is_open:
        conn.close()


@pytest.mark.parametrize(("case", "code", "text"), CHANNEL_CASES, ids=[c[0].__name__ for c in CHANNEL_CASES])
def test_channel_error_pika(amqp_port, unique, helper, case, code, text):
    conn = connect(amqp_port)
    bystander = conn.channel()
    other = connect(amqp_port)
    other_ch = other.channel()
    ch = conn.channel()

    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        case(ch, helper, unique)
    assert info.value.reply_code == code
    assert info.value.reply_text.startswith(CODE_NAMES[code] + " - "), info.value.reply_text
    assert text in info.value.reply_text

    assert ch.is_closed
    assert conn.is_open
    check_channel_works(bystander)
    check_channel_works(conn.channel())
    check_channel_works(other_ch)
    check_channel_works(helper)
    conn.close()
    other.close()
    helper.queue_delete(unique)
    helper.exchange_delete(unique)


# --------------------------------------------------------------- connection errors with pika


def reuse_consumer_tag(ch: BlockingChannel, name: str) -> None:
    ch.queue_declare(name, auto_delete=True)
    ch.basic_consume(name, lambda *a: None, consumer_tag="dup")
    # pika refuses a duplicate tag itself (DuplicateConsumerTag); send the raw method.
    ch._impl._send_method(pika.spec.Basic.Consume(queue=name, consumer_tag="dup"))
    ch.connection.process_data_events(time_limit=5)


def unknown_exchange_type(ch: BlockingChannel, name: str) -> None:
    ch.exchange_declare(name, "no-such-type")


def qos_prefetch_size(ch: BlockingChannel, name: str) -> None:
    ch.basic_qos(prefetch_size=4096)


CONNECTION_CASES = [
    (reuse_consumer_tag, 530, "reuse consumer tag"),
    (unknown_exchange_type, 503, "exchange type 'no-such-type'"),
    (qos_prefetch_size, 540, "prefetch_size"),
]


@pytest.mark.parametrize(("case", "code", "text"), CONNECTION_CASES, ids=[c[0].__name__ for c in CONNECTION_CASES])
def test_connection_error_pika(amqp_port, unique, case, code, text):
    conn = connect(amqp_port)
    other = connect(amqp_port)
    other_ch = other.channel()
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        case(ch, unique)
    assert info.value.reply_code == code
    assert info.value.reply_text.startswith(CODE_NAMES[code] + " - "), info.value.reply_text
    assert text in info.value.reply_text
    assert conn.is_closed
    check_channel_works(other_ch)
    check_channel_works(connect(amqp_port).channel())
    other.close()


def test_bad_password_is_access_refused_pika(amqp_port):
    for user, password in (("guest", "wrong"), ("no-such-user", "guest")):
        with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
            connect(amqp_port, credentials=pika.PlainCredentials(user, password))
        # pika wraps the broker's connection.close: "ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - ..."
        assert "(403) 'ACCESS_REFUSED - Login was refused" in str(info.value)
    check_channel_works(connect(amqp_port).channel())


def test_unknown_vhost_is_not_allowed_pika(amqp_port):
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        connect(amqp_port, virtual_host="no-such-vhost")
    assert "(530) 'NOT_ALLOWED - vhost no-such-vhost not found'" in str(info.value)
    check_channel_works(connect(amqp_port).channel())


def test_redeclare_amq_exchange_equivalently_is_allowed(amqp_port):
    """RabbitMQ checks the amq.* prefix only when creating an exchange: re-declaring an existing
    one with the same properties (as some clients do for amq.topic) succeeds."""
    conn = connect(amqp_port)
    ch = conn.channel()
    for name, type_ in (("amq.direct", "direct"), ("amq.topic", "topic"), ("amq.fanout", "fanout")):
        ch.exchange_declare(name, type_, durable=True)
        ch.exchange_declare(name, type_, passive=True)
    check_channel_works(ch)
    conn.close()


def test_deleting_missing_queue_and_exchange_succeeds(amqp_port, unique):
    conn = connect(amqp_port)
    ch = conn.channel()
    assert ch.queue_delete(unique).method.message_count == 0
    ch.exchange_delete(unique)
    check_channel_works(ch)
    conn.close()


# ---------------------------------------------------------------------------- aio-pika


async def ignore(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    pass


async def aio_check_works(connection: aio_pika.abc.AbstractConnection) -> None:
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await channel.default_exchange.publish(Message(b"still alive"), routing_key=queue.name)
    message = await queue.get(no_ack=True, timeout=5)
    assert message.body == b"still alive"
    await channel.close()


async def aio_passive_queue(channel, helper, name):
    await channel.declare_queue(name, passive=True)


async def aio_passive_exchange(channel, helper, name):
    await channel.declare_exchange(name, passive=True)


async def aio_publish_missing_exchange(channel, helper, name):
    exchange = aio_pika.Exchange(channel, name, ExchangeType.DIRECT)
    await exchange.publish(Message(b"x"), routing_key="k")  # confirms on: waits, sees the close


async def aio_amq_exchange(channel, helper, name):
    await channel.declare_exchange("amq." + name, ExchangeType.TOPIC)


async def aio_exclusive(channel, helper, name):
    await helper.declare_queue(name, exclusive=True)
    await channel.declare_queue(name)


async def aio_durable_mismatch(channel, helper, name):
    await helper.declare_queue(name, durable=True)
    await channel.declare_queue(name, durable=False)


async def aio_exchange_type_mismatch(channel, helper, name):
    await helper.declare_exchange(name, ExchangeType.FANOUT)
    await channel.declare_exchange(name, ExchangeType.HEADERS)


async def aio_double_ack(channel, helper, name):
    queue = await channel.declare_queue(name, auto_delete=True)
    await channel.default_exchange.publish(Message(b"m"), routing_key=name)
    message = await queue.get(timeout=5)
    await message.ack()
    # aio-pika refuses a second ack itself; ack the tag again at the aiormq level.
    underlay = await channel.get_underlay_channel()
    await underlay.basic_ack(message.delivery_tag)
    await channel.set_qos(prefetch_count=0)


async def aio_queue_delete_if_unused(channel, helper, name):
    queue = await helper.declare_queue(name)
    await queue.consume(ignore)
    await channel.queue_delete(name, if_unused=True)


async def aio_queue_delete_if_empty(channel, helper, name):
    await helper.declare_queue(name)
    await helper.default_exchange.publish(Message(b"x"), routing_key=name)
    await channel.queue_delete(name, if_empty=True)


async def aio_exchange_delete_if_unused(channel, helper, name):
    exchange = await helper.declare_exchange(name, ExchangeType.DIRECT)
    queue = await helper.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="k")
    await channel.exchange_delete(name, if_unused=True)


async def aio_tx_commit(channel, helper, name):
    underlay = await channel.get_underlay_channel()
    await underlay.tx_commit()


AIO_CHANNEL_CASES = [
    (aio_passive_queue, aiormq.exceptions.ChannelNotFoundEntity, 404),
    (aio_passive_exchange, aiormq.exceptions.ChannelNotFoundEntity, 404),
    (aio_publish_missing_exchange, aiormq.exceptions.ChannelNotFoundEntity, 404),
    (aio_amq_exchange, aiormq.exceptions.ChannelAccessRefused, 403),
    (aio_exclusive, aiormq.exceptions.ChannelLockedResource, 405),
    (aio_durable_mismatch, aiormq.exceptions.ChannelPreconditionFailed, 406),
    (aio_exchange_type_mismatch, aiormq.exceptions.ChannelPreconditionFailed, 406),
    (aio_double_ack, aiormq.exceptions.ChannelPreconditionFailed, 406),
    (aio_queue_delete_if_unused, aiormq.exceptions.ChannelPreconditionFailed, 406),
    (aio_queue_delete_if_empty, aiormq.exceptions.ChannelPreconditionFailed, 406),
    (aio_exchange_delete_if_unused, aiormq.exceptions.ChannelPreconditionFailed, 406),
    (aio_tx_commit, aiormq.exceptions.ChannelPreconditionFailed, 406),
]


@pytest.mark.parametrize(("case", "error", "code"), AIO_CHANNEL_CASES, ids=[c[0].__name__ for c in AIO_CHANNEL_CASES])
async def test_channel_error_aio_pika(amqp_url, unique, case, error, code):
    connection = await aio_pika.connect(amqp_url)
    helper_connection = await aio_pika.connect(amqp_url)
    other = await aio_pika.connect(amqp_url)
    bystander = await connection.channel()
    channel = await connection.channel()
    helper = await helper_connection.channel()

    with pytest.raises(error) as info:
        await asyncio.wait_for(case(channel, helper, unique), 5)
    assert str(info.value.args[0]).startswith(CODE_NAMES[code] + " - ")

    assert channel.is_closed
    assert not connection.is_closed
    assert not bystander.is_closed
    await bystander.declare_queue(unique + "-bystander", exclusive=True)
    await aio_check_works(connection)
    await aio_check_works(other)
    await helper.queue_delete(unique)
    await helper.exchange_delete(unique)
    for c in (connection, helper_connection, other):
        await c.close()


async def test_reused_consumer_tag_closes_connection_aio_pika(amqp_url, unique):
    connection = await aio_pika.connect(amqp_url)
    other = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(unique, auto_delete=True)
    await queue.consume(ignore, consumer_tag="dup")
    underlay = await channel.get_underlay_channel()
    underlay.consumers.pop("dup")  # aiormq refuses a duplicate tag itself: make it forget the first
    with pytest.raises(aiormq.exceptions.ConnectionNotAllowed) as info:
        await asyncio.wait_for(underlay.basic_consume(unique, ignore, consumer_tag="dup"), 5)
    assert str(info.value.args[0]) == "NOT_ALLOWED - attempt to reuse consumer tag 'dup'"
    await aio_check_works(other)
    await other.close()


@pytest.mark.parametrize(
    ("declare", "error", "code"),
    [
        (
            lambda ch, name: ch.declare_exchange(name, "no-such-type"),
            aiormq.exceptions.ConnectionCommandInvalid,
            503,
        ),
        (lambda ch, name: ch.set_qos(prefetch_size=4096), aiormq.exceptions.ConnectionNotImplemented, 540),
    ],
    ids=["unknown_exchange_type", "qos_prefetch_size"],
)
async def test_connection_error_aio_pika(amqp_url, unique, declare, error, code):
    connection = await aio_pika.connect(amqp_url)
    other = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    with pytest.raises(error) as info:
        await asyncio.wait_for(declare(channel, unique), 5)
    assert str(info.value.args[0]).startswith(CODE_NAMES[code] + " - ")
    await aio_check_works(other)
    await other.close()


async def test_bad_password_aio_pika(amqp_port):
    with pytest.raises(aiormq.exceptions.ProbableAuthenticationError) as info:
        await aio_pika.connect(f"amqp://guest:wrong@127.0.0.1:{amqp_port}/")
    assert str(info.value.args[0]).startswith("ACCESS_REFUSED - Login was refused")


async def test_unknown_vhost_aio_pika(amqp_port):
    # aiormq expects open-ok and reports the connection.close it got instead as a frame error.
    with pytest.raises(aiormq.exceptions.AMQPError) as info:
        await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:{amqp_port}/no-such-vhost")
    assert "Connection.Close" in str(info.value)
