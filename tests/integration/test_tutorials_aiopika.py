"""The flows of the official RabbitMQ Python tutorials, with aio-pika, against a real ``leveret serve``.

Hello world, work queues (manual ack, prefetch_count=1 fair dispatch, durable and quorum queues,
persistent messages, redelivery after a worker dies), publish/subscribe, routing, topics, RPC with
futures keyed by correlation id, and publisher confirms one by one, in batches and asynchronously.
Waits are on events and futures with a timeout, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import aio_pika
import pytest
from aio_pika import DeliveryMode, ExchangeType, Message
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pamqp.commands import Basic

TIMEOUT = 5.0


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Yield to the loop until ``condition()`` holds (deliveries arrive as callbacks)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


async def settle(channel: AbstractChannel, queue: str) -> int:
    """A round trip on ``channel``; then let the delivery callbacks already received run.
    Returns the queue's ready-message count."""
    declared = await channel.declare_queue(queue, passive=True)
    for _ in range(10):
        await asyncio.sleep(0)
    return declared.declaration_result.message_count


# --------------------------------------------------------------------------- 1. hello world


async def test_hello_world(amqp_url, unique):
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.declare_queue(unique)
        await channel.default_exchange.publish(Message(b"Hello World!"), routing_key=unique)

    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(unique)
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def on_message(message: AbstractIncomingMessage) -> None:
            got.set_result(message.body)

        await queue.consume(on_message, no_ack=True)
        assert await asyncio.wait_for(got, TIMEOUT) == b"Hello World!"
        assert await settle(channel, unique) == 0


# --------------------------------------------------------------------------- 2. work queues


@pytest.mark.parametrize("arguments", [None, {"x-queue-type": "quorum"}], ids=["classic", "quorum"])
async def test_work_queue_fair_dispatch(amqp_url, unique, arguments):
    connections = [await aio_pika.connect(amqp_url) for _ in range(2)]
    got: dict[str, list[bytes]] = {"busy": [], "free": []}
    held: list[AbstractIncomingMessage] = []
    channels = {}
    for name, connection in zip(("busy", "free"), connections, strict=True):
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue(unique, durable=True, arguments=arguments)

        async def on_task(message: AbstractIncomingMessage, name: str = name) -> None:
            assert message.delivery_mode == DeliveryMode.PERSISTENT
            got[name].append(message.body)
            if name == "busy":
                held.append(message)  # still working on it
            else:
                await message.ack()

        await queue.consume(on_task)
        channels[name] = channel

    async with await aio_pika.connect(amqp_url) as producer:
        channel = await producer.channel()
        tasks = [f"task {i}".encode() for i in range(8)]
        for body in tasks:
            await channel.default_exchange.publish(
                Message(body, delivery_mode=DeliveryMode.PERSISTENT), routing_key=unique
            )

    await until(lambda: len(got["busy"]) + len(got["free"]) == len(tasks))
    await settle(channels["busy"], unique)
    assert len(got["busy"]) == 1
    assert len(got["free"]) == len(tasks) - 1
    assert sorted(got["busy"] + got["free"]) == sorted(tasks)
    await held[0].ack()
    assert await settle(channels["busy"], unique) == 0
    for connection in connections:
        await connection.close()


@pytest.mark.parametrize("arguments", [None, {"x-queue-type": "quorum"}], ids=["classic", "quorum"])
async def test_work_queue_task_of_dead_worker_is_redelivered(amqp_url, unique, arguments):
    async with await aio_pika.connect(amqp_url) as producer:
        channel = await producer.channel()
        await channel.declare_queue(unique, durable=True, arguments=arguments)
        await channel.default_exchange.publish(
            Message(b"important", delivery_mode=DeliveryMode.PERSISTENT), routing_key=unique
        )

    dying = await aio_pika.connect(amqp_url)
    channel = await dying.channel()
    await channel.set_qos(prefetch_count=1)
    queue = await channel.declare_queue(unique, durable=True, arguments=arguments)
    first = await queue.get(timeout=TIMEOUT)  # manual ack, never given
    assert (first.body, first.redelivered) == (b"important", False)
    await dying.close()

    async with await aio_pika.connect(amqp_url) as worker:
        channel = await worker.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue(unique, durable=True, arguments=arguments)
        async with queue.iterator(timeout=TIMEOUT) as messages:
            async for message in messages:
                async with message.process():
                    assert (message.body, message.redelivered) == (b"important", True)
                break
        assert await settle(channel, unique) == 0


# ----------------------------------------------------------------------- 3. publish/subscribe


async def test_publish_subscribe_fanout(amqp_url, unique):
    async with await aio_pika.connect(amqp_url) as emitter:
        channel = await emitter.channel()
        logs = await channel.declare_exchange(unique + "-logs", ExchangeType.FANOUT)

        receivers = [await aio_pika.connect(amqp_url) for _ in range(3)]
        got: list[list[bytes]] = [[] for _ in receivers]
        for i, receiver in enumerate(receivers):
            rch = await receiver.channel()
            exchange = await rch.declare_exchange(unique + "-logs", ExchangeType.FANOUT)
            queue = await rch.declare_queue(exclusive=True)
            assert queue.name.startswith("amq.gen-")
            await queue.bind(exchange)

            async def on_log(message: AbstractIncomingMessage, i: int = i) -> None:
                got[i].append(message.body)

            await queue.consume(on_log, no_ack=True)

        lines = [f"line {n}".encode() for n in range(10)]
        for line in lines:
            await logs.publish(Message(line), routing_key="")
        await until(lambda: all(len(g) == len(lines) for g in got))
        assert got == [lines] * len(receivers)
        for receiver in receivers:
            await receiver.close()
        await logs.delete()


# -------------------------------------------------------------------------------- 4. routing


async def test_routing_direct(amqp_url, unique):
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        direct = await channel.declare_exchange(unique + "-direct", ExchangeType.DIRECT)
        got: dict[str, list[tuple[str, bytes]]] = {"errors": [], "all": []}
        queues = {}
        for name, severities in (("errors", ["error"]), ("all", ["info", "warning", "error"])):
            queue = await channel.declare_queue(exclusive=True)
            for severity in severities:
                await queue.bind(direct, routing_key=severity)

            async def on_log(message: AbstractIncomingMessage, name: str = name) -> None:
                got[name].append((message.routing_key, message.body))

            await queue.consume(on_log, no_ack=True)
            queues[name] = queue

        for severity, body in [("info", b"i"), ("debug", b"d"), ("warning", b"w"), ("error", b"e")]:
            await direct.publish(Message(body), routing_key=severity)
        await until(lambda: len(got["errors"]) == 1 and len(got["all"]) == 3)
        await settle(channel, queues["all"].name)
        assert got["errors"] == [("error", b"e")]
        assert got["all"] == [("info", b"i"), ("warning", b"w"), ("error", b"e")]
        await direct.delete()


# --------------------------------------------------------------------------------- 5. topics


async def test_topics(amqp_url, unique):
    bindings = {"Q1": ["*.orange.*"], "Q2": ["*.*.rabbit", "lazy.#"], "all": ["#"], "one-word": ["*"]}
    cases = {
        "quick.orange.rabbit": {"Q1", "Q2", "all"},
        "lazy.orange.elephant": {"Q1", "Q2", "all"},
        "quick.orange.fox": {"Q1", "all"},
        "lazy.brown.fox": {"Q2", "all"},
        "lazy.pink.rabbit": {"Q2", "all"},
        "quick.brown.fox": {"all"},
        "orange": {"all", "one-word"},
        "quick.orange.new.rabbit": {"all"},
        "lazy.orange.new.rabbit": {"Q2", "all"},
        "lazy": {"Q2", "all", "one-word"},
    }
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        topic = await channel.declare_exchange(unique + "-topic", ExchangeType.TOPIC)
        got: dict[str, list[str]] = {name: [] for name in bindings}
        for name, keys in bindings.items():
            queue = await channel.declare_queue(exclusive=True)
            for key in keys:
                await queue.bind(topic, routing_key=key)

            async def on_message(message: AbstractIncomingMessage, name: str = name) -> None:
                got[name].append(message.body.decode())

            await queue.consume(on_message, no_ack=True)

        for key in cases:
            await topic.publish(Message(key.encode()), routing_key=key)
        expected = {name: [k for k, dest in cases.items() if name in dest] for name in bindings}
        await until(lambda: len(got["all"]) == len(cases))
        await settle(channel, queue.name)
        assert got == expected
        await topic.delete()


# ------------------------------------------------------------------------------------ 6. RPC


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


async def test_rpc(amqp_url, unique):
    rpc_queue = unique + "-rpc"
    server = await aio_pika.connect(amqp_url)
    schannel = await server.channel()
    await schannel.set_qos(prefetch_count=1)
    requests = await schannel.declare_queue(rpc_queue)

    async def on_request(message: AbstractIncomingMessage) -> None:
        async with message.process(requeue=False):
            assert message.reply_to is not None
            n = int(message.body)
            await schannel.default_exchange.publish(
                Message(str(fib(n)).encode(), correlation_id=message.correlation_id),
                routing_key=message.reply_to,
            )

    await requests.consume(on_request)

    client = await aio_pika.connect(amqp_url)
    cchannel = await client.channel()
    callback_queue = await cchannel.declare_queue(exclusive=True)
    futures: dict[str, asyncio.Future[int]] = {}

    async def on_response(message: AbstractIncomingMessage) -> None:
        future = futures.pop(message.correlation_id or "", None)
        assert future is not None, f"unexpected correlation id {message.correlation_id}"
        future.set_result(int(message.body))

    await callback_queue.consume(on_response, no_ack=True)

    async def call(n: int) -> int:
        correlation_id = str(uuid.uuid4())
        future = asyncio.get_running_loop().create_future()
        futures[correlation_id] = future
        await cchannel.default_exchange.publish(
            Message(
                str(n).encode(), content_type="text/plain", correlation_id=correlation_id, reply_to=callback_queue.name
            ),
            routing_key=rpc_queue,
        )
        return await asyncio.wait_for(future, TIMEOUT)

    results = await asyncio.gather(*(call(n) for n in (1, 5, 10, 15, 20)))
    assert results == [fib(n) for n in (1, 5, 10, 15, 20)]
    assert futures == {}
    await client.close()
    await server.close()


# --------------------------------------------------------------------- 7. publisher confirms


async def _confirm_channel(amqp_url: str):
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    queue = await channel.declare_queue(exclusive=True)
    return connection, channel, queue


async def test_publisher_confirms_individually(amqp_url):
    connection, channel, queue = await _confirm_channel(amqp_url)
    async with connection:
        for i in range(100):
            confirmation = await channel.default_exchange.publish(Message(str(i).encode()), routing_key=queue.name)
            assert isinstance(confirmation, Basic.Ack)
            assert confirmation.delivery_tag == i + 1
        assert await settle(channel, queue.name) == 100


async def test_publisher_confirms_in_batches(amqp_url):
    connection, channel, queue = await _confirm_channel(amqp_url)
    async with connection:
        batch_size, total = 50, 500
        outstanding = []
        for i in range(total):
            outstanding.append(channel.default_exchange.publish(Message(str(i).encode()), routing_key=queue.name))
            if len(outstanding) == batch_size:
                confirmations = await asyncio.wait_for(asyncio.gather(*outstanding), TIMEOUT)
                assert all(isinstance(c, Basic.Ack) for c in confirmations)
                outstanding.clear()
        assert outstanding == []
        assert await settle(channel, queue.name) == total


async def test_publisher_confirms_handled_asynchronously(amqp_url):
    connection, channel, queue = await _confirm_channel(amqp_url)
    async with connection:
        total = 1000
        acked: list[int] = []
        failed: list[tuple[int, BaseException]] = []

        def handle_confirm(n: int, task: asyncio.Task) -> None:
            error = task.exception()
            if error is not None:
                failed.append((n, error))
            else:
                acked.append(n)

        tasks = []
        for n in range(total):
            task = asyncio.ensure_future(
                channel.default_exchange.publish(Message(str(n).encode()), routing_key=queue.name)
            )
            task.add_done_callback(lambda t, n=n: handle_confirm(n, t))
            tasks.append(task)
        await asyncio.wait_for(asyncio.wait(tasks), TIMEOUT)
        assert failed == []
        assert sorted(acked) == list(range(total))
        assert await settle(channel, queue.name) == total

        # The consumer sees them in publish order.
        bodies = []
        async with queue.iterator(no_ack=True) as messages:
            async for message in messages:
                bodies.append(int(message.body))
                if len(bodies) == total:
                    break
        assert bodies == list(range(total))
