"""The ZeroMQ door: pyzmq publishers and subscribers, pika on the AMQP side, a broker on free ports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
import zmq

from tests.conftest import BrokerProcess

EXCHANGE = "leveret.events"
PROBE = b"__probe"


@pytest.fixture
def zbroker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path / "broker", zmq=True)
    yield proc
    proc.stop()


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def amqp(broker: BrokerProcess) -> pika.adapters.blocking_connection.BlockingChannel:
    conn = pika.BlockingConnection(pika.URLParameters(broker.url))
    return conn.channel()


def durable_queue(ch: pika.adapters.blocking_connection.BlockingChannel, name: str, key: str = "#") -> None:
    ch.queue_declare(name, durable=True)
    ch.queue_bind(name, EXCHANGE, key)


def get_all(ch: pika.adapters.blocking_connection.BlockingChannel, queue: str, n: int, timeout: float = 5.0) -> list:
    """Poll ``queue`` until ``n`` messages were taken (acked) or the timeout passes; probes are skipped."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue)
        if method is None:
            ch.connection.sleep(0.01)
            continue
        ch.basic_ack(method.delivery_tag)
        if method.routing_key != PROBE.decode():
            out.append((method.routing_key, props, body))
    return out


def subscriber(ctx: zmq.Context, broker: BrokerProcess, *prefixes: bytes) -> zmq.Socket:
    sub = ctx.socket(zmq.SUB)
    sub.connect(f"tcp://127.0.0.1:{broker.zmq_subscribe_port}")
    for prefix in (*prefixes, PROBE):
        sub.subscribe(prefix)
    return sub


def wait_subscribed(sub: zmq.Socket, ch: pika.adapters.blocking_connection.BlockingChannel) -> None:
    """Publish probes over AMQP until one reaches ``sub``: its subscriptions are then at the door."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ch.basic_publish(EXCHANGE, PROBE.decode(), b"probe")
        if sub.poll(50):
            while sub.poll(50):
                frames = sub.recv_multipart()
                assert frames[0] == PROBE
            return
    raise AssertionError("subscription never reached the door")


def recv(sub: zmq.Socket, n: int, timeout: float = 5.0) -> list[list[bytes]]:
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        if sub.poll(50):
            frames = sub.recv_multipart()
            if frames[0] != PROBE:
                out.append(frames)
    return out


def test_seed_publisher_reaches_a_durable_queue_and_a_subscriber(zbroker: BrokerProcess, ctx: zmq.Context) -> None:
    ch = amqp(zbroker)
    durable_queue(ch, "seed")
    sub = subscriber(ctx, zbroker, b"")
    wait_subscribed(sub, ch)

    # The seed's publisher, connected long enough for the handshake (see README, "slow joiner").
    socket = ctx.socket(zmq.PUB)
    socket.connect(f"tcp://localhost:{zbroker.zmq_publish_port}")
    time.sleep(0.3)
    socket.send(b"Hello World!")
    socket.close(linger=1000)

    got = get_all(ch, "seed", 1)
    assert [(key, body) for key, _, body in got] == [("", b"Hello World!")]
    props = got[0][1]
    assert props.delivery_mode == 2
    assert props.headers == {"x-leveret-source": "zmq"}
    assert recv(sub, 1) == [[b"Hello World!"]]
    ch.connection.close()


def test_push_publisher_sending_at_once_loses_nothing(zbroker: BrokerProcess, ctx: zmq.Context) -> None:
    ch = amqp(zbroker)
    durable_queue(ch, "pushed")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{zbroker.zmq_push_port}")
    for i in range(100):
        push.send_multipart([b"orders.created", b"%d" % i])
    push.close(linger=5000)
    got = get_all(ch, "pushed", 100)
    assert [body for _, _, body in got] == [b"%d" % i for i in range(100)]
    assert {key for key, _, _ in got} == {"orders.created"}
    assert len(get_all(ch, "pushed", 1, timeout=0.2)) == 0
    ch.connection.close()


def test_multipart_routes_by_topic_and_more_frames_go_to_a_header(zbroker: BrokerProcess, ctx: zmq.Context) -> None:
    ch = amqp(zbroker)
    durable_queue(ch, "orders", "orders.*")
    durable_queue(ch, "users", "users.#")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{zbroker.zmq_push_port}")
    push.send_multipart([b"orders.created", b"o1"])
    push.send_multipart([b"users.signed.up", b"u1"])
    push.send_multipart([b"orders.paid", b"m1", b"m2", b"o2"])
    push.send_multipart([b"\xff\xfe", b"not utf-8: dropped from AMQP"])
    push.close(linger=5000)
    orders = get_all(ch, "orders", 2)
    assert [(k, b) for k, _, b in orders] == [("orders.created", b"o1"), ("orders.paid", b"o2")]
    assert orders[1][1].headers == {"x-leveret-source": "zmq", "x-zmq-frames": [b"m1", b"m2"]}
    assert [(k, b) for k, _, b in get_all(ch, "users", 1)] == [("users.signed.up", b"u1")]
    ch.connection.close()


def test_prefix_subscriptions_filter(zbroker: BrokerProcess, ctx: zmq.Context) -> None:
    ch = amqp(zbroker)
    orders = subscriber(ctx, zbroker, b"orders.")
    everything = subscriber(ctx, zbroker, b"")
    wait_subscribed(orders, ch)
    wait_subscribed(everything, ch)
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{zbroker.zmq_push_port}")
    for topic in (b"users.x", b"orders.a", b"audit", b"orders.b"):
        push.send_multipart([topic, b"body"])
    push.close(linger=5000)
    assert [f[0] for f in recv(everything, 4)] == [b"users.x", b"orders.a", b"audit", b"orders.b"]
    assert [f[0] for f in recv(orders, 2)] == [b"orders.a", b"orders.b"]
    assert recv(orders, 1, timeout=0.2) == []
    ch.connection.close()


def test_amqp_publish_reaches_zmq_and_is_not_looped_back(zbroker: BrokerProcess, ctx: zmq.Context) -> None:
    ch = amqp(zbroker)
    durable_queue(ch, "all")
    sub = subscriber(ctx, zbroker, b"")
    wait_subscribed(sub, ch)
    ch.basic_publish(EXCHANGE, "invoice.sent", b"from amqp", pika.BasicProperties(delivery_mode=2))
    assert recv(sub, 1) == [[b"invoice.sent", b"from amqp"]]
    got = get_all(ch, "all", 2, timeout=0.5)
    assert [(k, b) for k, _, b in got] == [("invoice.sent", b"from amqp")]  # once, not looped back
    # and a ZeroMQ message goes out on XPUB exactly once
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{zbroker.zmq_push_port}")
    push.send_multipart([b"from.zmq", b"z"])
    push.close(linger=5000)
    assert recv(sub, 2, timeout=0.5) == [[b"from.zmq", b"z"]]
    assert [(k, b) for k, _, b in get_all(ch, "all", 2, timeout=0.5)] == [("from.zmq", b"z")]
    ch.connection.close()


def test_durable_queue_keeps_a_zmq_message_across_a_restart(zbroker: BrokerProcess, ctx: zmq.Context) -> None:
    ch = amqp(zbroker)
    durable_queue(ch, "kept")
    ch.connection.close()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{zbroker.zmq_push_port}")
    push.send_multipart([b"orders.created", b"survives"])
    push.close(linger=5000)
    ch = amqp(zbroker)
    deadline = time.monotonic() + 5
    while ch.queue_declare("kept", passive=True).method.message_count < 1 and time.monotonic() < deadline:
        ch.connection.sleep(0.01)
    ch.connection.close()
    zbroker.restart()
    assert "ZeroMQ door stopped" in zbroker.log()
    ch = amqp(zbroker)
    got = get_all(ch, "kept", 1)
    assert [(k, b) for k, _, b in got] == [("orders.created", b"survives")]
    ch.connection.close()


def test_port_zero_turns_the_door_off(broker: BrokerProcess) -> None:
    assert broker.zmq_publish_port == 0
    assert "ZeroMQ door off" in broker.log()
