"""How a user tests RabbitMQ client code with Leveret's pytest plugin: no Docker, no conftest.

``pip install leveret`` registers the plugin; the fixtures ``leveret_url`` (an AMQP URL) and
``leveret_prefix`` (a name prefix unique to the test, cleaned up afterwards) are then available.
"""

from __future__ import annotations

import aio_pika
import pika
import pytest

from leveret.testing import LeveretBroker

DECLARED: list[str] = []  # queue names the tests below declared, checked by the last one


def test_pika_round_trip(leveret_url: str, leveret_prefix: str) -> None:
    queue = leveret_prefix + "orders"
    DECLARED.append(queue)
    with pika.BlockingConnection(pika.URLParameters(leveret_url)) as connection:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        channel.confirm_delivery()
        channel.basic_publish("", queue, b"order #1", pika.BasicProperties(delivery_mode=2))
        method, _properties, body = channel.basic_get(queue)
        assert body == b"order #1"
        assert method is not None
        channel.basic_ack(method.delivery_tag)


def test_pika_topic_exchange(leveret_url: str, leveret_prefix: str) -> None:
    exchange, queue = leveret_prefix + "events", leveret_prefix + "created"
    DECLARED.append(queue)
    with pika.BlockingConnection(pika.URLParameters(leveret_url)) as connection:
        channel = connection.channel()
        channel.exchange_declare(exchange, "topic")
        channel.queue_declare(queue)
        channel.queue_bind(queue, exchange, "order.created")
        channel.confirm_delivery()
        channel.basic_publish(exchange, "order.created", b"yes")
        channel.basic_publish(exchange, "order.deleted", b"no")
        assert channel.queue_declare(queue, passive=True).method.message_count == 1


@pytest.mark.asyncio
async def test_aio_pika_consume(leveret_url: str, leveret_prefix: str) -> None:
    connection = await aio_pika.connect_robust(leveret_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(leveret_prefix + "jobs")
        DECLARED.append(queue.name)
        await channel.default_exchange.publish(aio_pika.Message(b"job"), routing_key=queue.name)
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    assert message.body == b"job"
                break


def test_previous_tests_left_nothing_behind(leveret_broker: LeveretBroker, leveret_url: str) -> None:
    # What the tests above declared under their prefixes was deleted when each of them ended.
    assert len(DECLARED) == 3
    with pika.BlockingConnection(pika.URLParameters(leveret_url)) as connection:
        for queue in DECLARED:
            channel = connection.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
                channel.queue_declare(queue, passive=True)
            assert closed.value.reply_code == 404
    assert leveret_broker.port > 0
    assert leveret_broker.data_dir.is_dir()
