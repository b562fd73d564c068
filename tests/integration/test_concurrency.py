"""Several connections and channels publishing and consuming at once.

Every message carries (producer, sequence). Checks: each message is acked exactly once across
competing consumers, nothing unexpected arrives, and within what each consumer received every
producer's messages are in the order it published them (RabbitMQ's per-channel FIFO guarantee).
With pika each connection has its own thread (pika connections are not thread-safe); with aio-pika
everything shares one event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import aio_pika
import pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

TIMEOUT = 20.0


def connect(port: int) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))


def check_streams(streams: list[list[tuple[str, int]]], producers: list[str], per_producer: int) -> None:
    """Exactly once overall; per producer, increasing sequence numbers within each consumer's stream."""
    counts = Counter(item for stream in streams for item in stream)
    expected = {(p, seq) for p in producers for seq in range(per_producer)}
    assert set(counts) == expected, f"missing {len(expected - set(counts))}, unexpected {set(counts) - expected}"
    duplicates = {item: n for item, n in counts.items() if n > 1}
    assert not duplicates, f"delivered more than once: {list(duplicates)[:5]}"
    for stream in streams:
        last: dict[str, int] = {}
        for producer, seq in stream:
            assert seq > last.get(producer, -1), f"{producer} out of order: {seq} after {last[producer]}"
            last[producer] = seq


def decode(body: bytes) -> tuple[str, int]:
    producer, seq = body.decode().split(":")
    return producer, int(seq)


# ------------------------------------------------------------------------------------- pika


def test_competing_consumers_threads_pika(amqp_port, unique):
    """3 publishing connections x 2 channels each, 3 consuming connections x 2 consumers each."""
    per_producer = 400
    setup = connect(amqp_port)
    setup.channel().queue_declare(unique)

    producers = [f"p{c}.{ch}" for c in range(3) for ch in range(2)]
    total = len(producers) * per_producer
    streams: list[list[tuple[str, int]]] = []
    errors: list[BaseException] = []
    received = Counter[str]()
    lock = threading.Lock()
    done = threading.Event()

    def consume(index: int) -> None:
        try:
            conn = connect(amqp_port)
            for k in range(2):
                ch = conn.channel()
                ch.basic_qos(prefetch_count=[1, 20][k])
                stream: list[tuple[str, int]] = []
                with lock:
                    streams.append(stream)

                def on_message(c, method, props, body, stream=stream):
                    assert not method.redelivered
                    stream.append(decode(body))
                    c.basic_ack(method.delivery_tag)
                    with lock:
                        received["n"] += 1
                        if received["n"] == total:
                            done.set()

                ch.basic_consume(unique, on_message)
            while not done.is_set():
                conn.process_data_events(time_limit=0.05)
            conn.close()
        except BaseException as exc:
            errors.append(exc)
            done.set()

    def produce(index: int) -> None:
        try:
            conn = connect(amqp_port)
            channels = [(f"p{index}.{k}", conn.channel()) for k in range(2)]
            for seq in range(per_producer):
                for name, ch in channels:
                    ch.basic_publish("", unique, f"{name}:{seq}".encode())
            conn.close()
        except BaseException as exc:
            errors.append(exc)

    consumers = [threading.Thread(target=consume, args=(i,)) for i in range(3)]
    for t in consumers:
        t.start()
    producer_threads = [threading.Thread(target=produce, args=(i,)) for i in range(3)]
    for t in producer_threads:
        t.start()
    assert done.wait(TIMEOUT), f"received {received['n']} of {total}"
    for t in producer_threads + consumers:
        t.join(TIMEOUT)
    assert not errors, errors
    check_streams(streams, producers, per_producer)
    assert sum(1 for s in streams if s) >= 2, "the load was shared"
    declared = setup.channel().queue_declare(unique, passive=True).method
    assert (declared.message_count, declared.consumer_count) == (0, 0)
    setup.close()


def test_confirmed_publishers_threads_pika(amqp_port, unique):
    """Publishers in confirm mode from several threads; every publish is confirmed; all are there."""
    setup = connect(amqp_port)
    sch = setup.channel()
    sch.queue_declare(unique, durable=True)
    per_producer = 150
    errors: list[BaseException] = []

    def produce(index: int) -> None:
        try:
            conn = connect(amqp_port)
            ch = conn.channel()
            ch.confirm_delivery()
            for seq in range(per_producer):
                ch.basic_publish("", unique, f"p{index}:{seq}".encode(), pika.BasicProperties(delivery_mode=2))
            conn.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors, errors
    assert sch.queue_declare(unique, passive=True).method.message_count == 4 * per_producer

    stream = []
    while True:
        method, _props, body = sch.basic_get(unique, auto_ack=True)
        if method is None:
            break
        stream.append(decode(body))
    check_streams([stream], [f"p{i}" for i in range(4)], per_producer)
    sch.queue_delete(unique)
    setup.close()


# --------------------------------------------------------------------------------- aio-pika


async def test_competing_consumers_asyncio_aio_pika(amqp_url, unique):
    """4 connections x 3 channels publish with confirms; 2 connections x 2 channels consume."""
    per_producer = 250
    setup = await aio_pika.connect(amqp_url)
    setup_channel = await setup.channel()
    await setup_channel.declare_queue(unique, durable=True)

    producers = [f"p{c}.{k}" for c in range(4) for k in range(3)]
    total = len(producers) * per_producer
    streams: list[list[tuple[str, int]]] = []
    all_done = asyncio.Event()
    count = 0

    consumer_connections = [await aio_pika.connect(amqp_url) for _ in range(2)]
    for conn in consumer_connections:
        for prefetch in (5, 50):
            channel = await conn.channel()
            await channel.set_qos(prefetch_count=prefetch)
            queue = await channel.declare_queue(unique, durable=True)
            stream: list[tuple[str, int]] = []
            streams.append(stream)

            async def on_message(message: AbstractIncomingMessage, stream=stream) -> None:
                nonlocal count
                assert not message.redelivered
                stream.append(decode(message.body))
                await message.ack()
                count += 1
                if count == total:
                    all_done.set()

            await queue.consume(on_message)

    async def produce(name: str, channel: aio_pika.abc.AbstractChannel) -> None:
        for seq in range(per_producer):
            await channel.default_exchange.publish(aio_pika.Message(f"{name}:{seq}".encode()), routing_key=unique)

    producer_connections = [await aio_pika.connect(amqp_url) for _ in range(4)]
    jobs = []
    for c, conn in enumerate(producer_connections):
        for k in range(3):
            jobs.append(produce(f"p{c}.{k}", await conn.channel()))
    await asyncio.wait_for(asyncio.gather(*jobs), TIMEOUT)
    await asyncio.wait_for(all_done.wait(), TIMEOUT)

    check_streams(streams, producers, per_producer)
    assert sum(1 for s in streams if s) >= 2
    for conn in producer_connections + consumer_connections:
        await conn.close()
    declared = await setup_channel.declare_queue(unique, passive=True)
    assert declared.declaration_result.message_count == 0
    await setup_channel.queue_delete(unique)
    await setup.close()


async def test_consumer_dies_mid_stream_aio_pika(amqp_url, unique):
    """One of two consumers disappears holding unacked messages: they go to the survivor, marked
    redelivered; every message is acked exactly once, and first deliveries are never redelivered."""
    total = 300
    setup = await aio_pika.connect(amqp_url)
    channel = await setup.channel()
    await channel.declare_queue(unique)

    acked: list[tuple[str, int]] = []
    first_time: list[tuple[str, int]] = []
    redelivered: list[tuple[str, int]] = []
    all_done = asyncio.Event()
    doomed_got = asyncio.Event()

    doomed = await aio_pika.connect(amqp_url)
    dch = await doomed.channel()
    await dch.set_qos(prefetch_count=10)
    dqueue = await dch.declare_queue(unique)
    doomed_seen: list[tuple[str, int]] = []

    async def hold(message: AbstractIncomingMessage) -> None:
        doomed_seen.append(decode(message.body))  # never acked
        first_time.append(decode(message.body))
        if len(doomed_seen) == 10:
            doomed_got.set()

    await dqueue.consume(hold)

    survivor = await aio_pika.connect(amqp_url)
    sch = await survivor.channel()
    await sch.set_qos(prefetch_count=10)
    squeue = await sch.declare_queue(unique)

    async def work(message: AbstractIncomingMessage) -> None:
        item = decode(message.body)
        (redelivered if message.redelivered else first_time).append(item)
        acked.append(item)
        await message.ack()
        if len(acked) == total:
            all_done.set()

    await squeue.consume(work)

    for seq in range(total):
        await channel.default_exchange.publish(aio_pika.Message(f"p:{seq}".encode()), routing_key=unique)
    await asyncio.wait_for(doomed_got.wait(), TIMEOUT)
    await doomed.close()
    await asyncio.wait_for(all_done.wait(), TIMEOUT)

    assert sorted(acked) == [("p", seq) for seq in range(total)]
    assert sorted(redelivered) == sorted(doomed_seen)
    assert len(first_time) == total  # each message had exactly one first delivery
    await survivor.close()
    await channel.queue_delete(unique)
    await setup.close()


async def test_many_connections_open_close_concurrently_aio_pika(amqp_url, unique):
    """Connections opening, declaring, round-tripping a message and closing all at once."""

    async def one(i: int) -> bytes:
        async with await aio_pika.connect(amqp_url) as conn:
            ch = await conn.channel()
            q = await ch.declare_queue(exclusive=True)
            await ch.default_exchange.publish(aio_pika.Message(f"{unique}-{i}".encode()), routing_key=q.name)
            message = await q.get(no_ack=True, timeout=5)
            return message.body

    bodies = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(20))), TIMEOUT)
    assert bodies == [f"{unique}-{i}".encode() for i in range(20)]


# ----------------------------------------------------------------------------- flow control


@pytest.fixture
def low_flow_broker(monkeypatch, request):
    """A broker of its own that starts pausing publishers when a queue holds 200 ready messages."""
    monkeypatch.setenv("LEVERET_FLOW_HIGH", "200")
    monkeypatch.setenv("LEVERET_FLOW_LOW", "100")
    return request.getfixturevalue("fresh_broker")


async def test_publisher_not_stalled_by_a_queue_that_cannot_drain(low_flow_broker, unique):
    """A deep queue whose only consumer sits at its prefetch limit does not drain; RabbitMQ keeps
    accepting the publisher's messages (the queue grows), so a round trip must come back promptly
    instead of the publisher being paused until it is dropped for missed heartbeats."""
    async with await aio_pika.connect(low_flow_broker.url) as consumer_conn:
        channel = await consumer_conn.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue(unique)
        held: list[AbstractIncomingMessage] = []

        async def hold(message: AbstractIncomingMessage) -> None:
            held.append(message)  # busy for good: never acks

        await queue.consume(hold)

        async with await aio_pika.connect(low_flow_broker.url) as publisher:
            pchannel = await publisher.channel(publisher_confirms=False)
            for seq in range(2000):
                await pchannel.default_exchange.publish(aio_pika.Message(f"p:{seq}".encode()), routing_key=unique)
            declared = await asyncio.wait_for(pchannel.declare_queue(unique, passive=True), 5)
            assert declared.declaration_result.message_count == 1999
            assert declared.declaration_result.consumer_count == 1
        assert len(held) == 1


async def test_flow_control_loses_nothing_and_keeps_order(low_flow_broker, unique):
    """Publishers outpacing an acking consumer get paused and resumed many times over; every
    message still arrives once, in order."""
    total = 3000
    async with await aio_pika.connect(low_flow_broker.url) as consumer_conn:
        channel = await consumer_conn.channel()
        await channel.set_qos(prefetch_count=10)
        queue = await channel.declare_queue(unique)
        stream: list[tuple[str, int]] = []
        all_done = asyncio.Event()

        async def work(message: AbstractIncomingMessage) -> None:
            stream.append(decode(message.body))
            await message.ack()
            if len(stream) == 2 * total:
                all_done.set()

        await queue.consume(work)

        async def produce(name: str) -> None:
            async with await aio_pika.connect(low_flow_broker.url) as publisher:
                pchannel = await publisher.channel(publisher_confirms=False)
                for seq in range(total):
                    await pchannel.default_exchange.publish(
                        aio_pika.Message(f"{name}:{seq}".encode()), routing_key=unique
                    )
                await pchannel.declare_queue(unique, passive=True)  # everything sent has been read

        await asyncio.wait_for(asyncio.gather(produce("a"), produce("b")), TIMEOUT)
        await asyncio.wait_for(all_done.wait(), TIMEOUT)
        check_streams([stream], ["a", "b"], total)


# ------------------------------------------------------------------------ big reads, in slices


@pytest.mark.parametrize("size", [8, 1000], ids=["small-sliced", "big-whole"])
def test_a_huge_pipelined_read_is_handled_in_order_while_others_are_served(
    amqp_port: int, unique: str, size: int
) -> None:
    """One write of ~1 MB of publishes (a read far bigger than ``READ_SLICE``): small messages are
    handled a slice per loop turn, big ones whole; either way every message arrives, in order, and a
    second client is served alongside."""
    import socket
    import struct
    import threading

    from leveret.amqp import methods as m
    from leveret.amqp.codec import decode_method
    from leveret.amqp.constants import PROTOCOL_HEADER
    from leveret.amqp.frames import content_frames, method_frame

    sock = socket.create_connection(("127.0.0.1", amqp_port), timeout=10)
    buf = b""

    def read_method() -> m.Method:
        nonlocal buf
        while True:
            if len(buf) >= 7:
                size = struct.unpack(">BHI", buf[:7])[2]
                if len(buf) >= 8 + size:
                    payload, buf = buf[7 : 7 + size], buf[8 + size :]
                    return decode_method(payload)
            buf += sock.recv(65536)

    sock.sendall(PROTOCOL_HEADER)
    read_method()
    sock.sendall(method_frame(0, m.ConnectionStartOk({}, "PLAIN", b"\x00guest\x00guest", "en_US")))
    read_method()
    sock.sendall(method_frame(0, m.ConnectionTuneOk(2047, 131072, 0)) + method_frame(0, m.ConnectionOpen("/")))
    read_method()
    sock.sendall(method_frame(1, m.ChannelOpen()))
    read_method()
    q = f"{unique}-slices-{size}"
    sock.sendall(method_frame(1, m.QueueDeclare(0, q, False, False, False, False, False, {})))
    assert isinstance(read_method(), m.QueueDeclareOk)
    n = 12_000 if size == 8 else 1_500
    blob = b"".join(
        method_frame(1, m.BasicPublish(0, "", q, False, False))
        + b"".join(content_frames(1, b"\x00\x00", (b"%08d" % i).ljust(size, b"."), 131072))
        for i in range(n)
    )
    assert len(blob) > 50 * 16384
    answered: list[float] = []

    def bystander() -> None:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp_port))
        ch = conn.channel()
        for _ in range(20):
            ch.queue_declare("", exclusive=True)
            answered.append(1.0)
        conn.close()

    other = threading.Thread(target=bystander)
    other.start()
    sock.sendall(blob)
    sock.sendall(method_frame(1, m.QueueDeclare(0, q, True, False, False, False, False, {})))  # passive
    ok = read_method()
    other.join()
    assert isinstance(ok, m.QueueDeclareOk) and ok.message_count == n
    assert len(answered) == 20
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp_port))
    ch = conn.channel()
    got = [ch.basic_get(q, auto_ack=True)[2] for _ in range(n)]
    assert got == [(b"%08d" % i).ljust(size, b".") for i in range(n)]
    ch.queue_delete(q)
    conn.close()
    sock.close()
