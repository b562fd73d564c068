"""The seed example, verbatim but for the port, against a broker of its own; then read it back.

The seed publishes 'Hello World!' to the queue 'hello' through the default exchange and closes. The
test then checks the message is really there (exactly one, the right body, not redelivered), once
with pika and once with the same flow written for aio-pika.
"""

from __future__ import annotations

import asyncio

import aio_pika
import pika


def seed_example(port: int) -> None:
    # The seed's code, line for line; only the port is added to ConnectionParameters.
    # fmt: off
    # 创建连接
    connection = pika.BlockingConnection(pika.ConnectionParameters('localhost', port=port))

    # 创建通道
    channel = connection.channel()

    # 声明队列
    channel.queue_declare(queue='hello')

    # 创建生产者
    producer = channel.basic_publish(exchange='', routing_key='hello', body='Hello World!')

    # 关闭连接
    connection.close()
    # fmt: on

    assert producer is None  # pika's basic_publish returns nothing without publisher confirms


def test_seed_example_with_pika(fresh_broker):
    seed_example(fresh_broker.port)

    connection = pika.BlockingConnection(pika.ConnectionParameters("localhost", port=fresh_broker.port))
    channel = connection.channel()
    declared = channel.queue_declare(queue="hello", passive=True)
    assert declared.method.message_count == 1
    assert declared.method.consumer_count == 0

    received = []

    def on_message(ch, method, properties, body):
        received.append((body, method.redelivered, method.routing_key, method.exchange))
        ch.basic_ack(method.delivery_tag)
        ch.stop_consuming()

    channel.basic_consume(queue="hello", on_message_callback=on_message)
    connection.call_later(5, channel.stop_consuming)  # a safety net: fail instead of hanging
    channel.start_consuming()
    assert received == [(b"Hello World!", False, "hello", "")]

    assert channel.queue_declare(queue="hello", passive=True).method.message_count == 0
    connection.close()


async def test_seed_example_with_aio_pika(fresh_broker):
    connection = await aio_pika.connect(host="localhost", port=fresh_broker.port)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("hello")
        await channel.default_exchange.publish(aio_pika.Message(body=b"Hello World!"), routing_key="hello")

    connection = await aio_pika.connect(host="localhost", port=fresh_broker.port)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("hello", passive=True)
        assert queue.declaration_result.message_count == 1
        async with queue.iterator(timeout=5) as messages:
            async for message in messages:
                async with message.process():
                    assert message.body == b"Hello World!"
                    assert message.routing_key == "hello"
                    assert message.exchange == ""
                    assert not message.redelivered
                break
        again = await channel.declare_queue("hello", passive=True)
        assert again.declaration_result.message_count == 0


def test_seed_example_then_aio_pika_reads_it(fresh_broker):
    """The two clients interoperate: what the pika seed published, aio-pika consumes."""
    seed_example(fresh_broker.port)

    async def read_one() -> bytes:
        connection = await aio_pika.connect(host="localhost", port=fresh_broker.port)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("hello")
            message = await queue.get(timeout=5, no_ack=True)
            assert message is not None
            return message.body

    assert asyncio.run(read_one()) == b"Hello World!"
