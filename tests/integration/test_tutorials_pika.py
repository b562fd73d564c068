"""The flows of the official RabbitMQ Python tutorials, with pika, against a real ``leveret serve``.

One test per tutorial flow: hello world, work queues (manual ack, fair dispatch with
prefetch_count=1, durable and quorum queues, persistent messages, redelivery when a worker dies),
publish/subscribe (fanout, exclusive server-named queues), routing (direct), topics, RPC and
publisher confirms (one by one, in batches, asynchronously). BlockingConnection runs every flow;
SelectConnection runs hello world, a work queue and the confirm strategies.

Several connections in one thread are driven by ``pump`` until a condition holds or a deadline
passes; each step waits on an event (a delivery, a reply), never on a fixed sleep.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

TIMEOUT = 5.0


def connect(port: int) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))


def pump(connections: list[pika.BlockingConnection], done: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Process I/O on every connection until ``done()`` or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the broker")
        for conn in connections:
            conn.process_data_events(time_limit=0.01 if len(connections) > 1 else 0.1)


def sync(channel: BlockingChannel, queue: str) -> int:
    """A round trip on ``channel`` (a passive declare); returns the queue's ready-message count.
    Leveret writes deliveries before the reply to a later method, so afterwards every delivery the
    broker would make so far has reached the client."""
    return channel.queue_declare(queue, passive=True).method.message_count


# --------------------------------------------------------------------------- 1. hello world


def test_hello_world(amqp_port, unique):
    sender = connect(amqp_port)
    ch = sender.channel()
    ch.queue_declare(queue=unique)
    ch.basic_publish(exchange="", routing_key=unique, body="Hello World!")
    sender.close()

    receiver = connect(amqp_port)
    ch = receiver.channel()
    ch.queue_declare(queue=unique)  # idempotent: the receiver declares too
    received: list[bytes] = []
    ch.basic_consume(queue=unique, on_message_callback=lambda c, m, p, body: received.append(body), auto_ack=True)
    pump([receiver], lambda: bool(received))
    assert received == [b"Hello World!"]
    assert sync(ch, unique) == 0  # auto_ack: nothing left, nothing unacked
    receiver.close()


# --------------------------------------------------------------------------- 2. work queues


@pytest.mark.parametrize("arguments", [None, {"x-queue-type": "quorum"}], ids=["classic", "quorum"])
def test_work_queue_fair_dispatch(amqp_port, unique, arguments):
    """Two workers with prefetch_count=1: the busy one (holding an unacked task) gets nothing more;
    the other takes every remaining task. Tasks are persistent in a durable queue."""
    workers = [connect(amqp_port), connect(amqp_port)]
    got: dict[str, list[bytes]] = {"busy": [], "free": []}
    held: list[int] = []
    channels = {}
    for name, conn in zip(("busy", "free"), workers, strict=True):
        ch = conn.channel()
        ch.queue_declare(queue=unique, durable=True, arguments=arguments)
        ch.basic_qos(prefetch_count=1)

        def on_task(c, method, properties, body, name=name):
            assert properties.delivery_mode == 2
            got[name].append(body)
            if name == "busy":
                held.append(method.delivery_tag)  # still working on it
            else:
                c.basic_ack(delivery_tag=method.delivery_tag)

        ch.basic_consume(queue=unique, on_message_callback=on_task)
        channels[name] = ch

    producer = connect(amqp_port)
    pch = producer.channel()
    pch.queue_declare(queue=unique, durable=True, arguments=arguments)
    tasks = [f"task {i} {'.' * i}".encode() for i in range(8)]
    for body in tasks:
        pch.basic_publish(
            exchange="",
            routing_key=unique,
            body=body,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
        )
    producer.close()

    pump(workers, lambda: len(got["busy"]) + len(got["free"]) == len(tasks))
    sync(channels["busy"], unique)
    workers[0].process_data_events(0)
    assert len(got["busy"]) == 1, "prefetch_count=1: one unacked task at a time"
    assert len(got["free"]) == len(tasks) - 1
    assert sorted(got["busy"] + got["free"]) == sorted(tasks)

    channels["busy"].basic_ack(held[0])
    assert sync(channels["busy"], unique) == 0
    for conn in workers:
        conn.close()


@pytest.mark.parametrize("arguments", [None, {"x-queue-type": "quorum"}], ids=["classic", "quorum"])
def test_work_queue_task_of_dead_worker_is_redelivered(amqp_port, unique, arguments):
    """Manual acks: a worker that dies before acking loses nothing; another worker gets the task
    again, marked redelivered."""
    producer = connect(amqp_port)
    pch = producer.channel()
    pch.queue_declare(queue=unique, durable=True, arguments=arguments)
    pch.basic_publish("", unique, b"important task", pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))

    dying = connect(amqp_port)
    dch = dying.channel()
    dch.basic_qos(prefetch_count=1)
    first: list[tuple[bytes, bool]] = []
    dch.basic_consume(unique, lambda c, m, p, body: first.append((body, m.redelivered)))
    pump([dying], lambda: bool(first))
    assert first == [(b"important task", False)]
    assert sync(pch, unique) == 0  # it is out, unacked
    dying.close()  # the worker dies without acking

    worker = connect(amqp_port)
    wch = worker.channel()
    wch.basic_qos(prefetch_count=1)
    second: list[tuple[bytes, bool]] = []

    def on_task(c, method, properties, body):
        second.append((body, method.redelivered))
        c.basic_ack(method.delivery_tag)

    wch.basic_consume(unique, on_task)
    pump([worker], lambda: bool(second))
    assert second == [(b"important task", True)]
    assert sync(pch, unique) == 0
    worker.close()
    producer.close()


def test_work_queue_round_robin_without_prefetch(amqp_port, unique):
    """The tutorial's first work queue: without prefetch, tasks alternate between the workers."""
    workers = [connect(amqp_port), connect(amqp_port)]
    got: list[list[int]] = [[], []]
    for i, conn in enumerate(workers):
        ch = conn.channel()
        ch.queue_declare(queue=unique, durable=True)

        def on_task(c, method, properties, body, i=i):
            got[i].append(int(body))
            c.basic_ack(method.delivery_tag)

        ch.basic_consume(unique, on_task)
        sync(ch, unique)  # consumer 0 is registered before consumer 1

    producer = connect(amqp_port)
    pch = producer.channel()
    for n in range(10):
        pch.basic_publish("", unique, str(n).encode(), pika.BasicProperties(delivery_mode=2))
    producer.close()
    pump(workers, lambda: len(got[0]) + len(got[1]) == 10)
    assert sorted(got[0] + got[1]) == list(range(10))
    assert len(got[0]) == len(got[1]) == 5
    assert got[0] == sorted(got[0]) and got[1] == sorted(got[1])
    for conn in workers:
        conn.close()


# ----------------------------------------------------------------------- 3. publish/subscribe


def test_publish_subscribe_fanout(amqp_port, unique):
    logs = unique + "-logs"
    emitter = connect(amqp_port)
    ech = emitter.channel()
    ech.exchange_declare(exchange=logs, exchange_type="fanout")
    ech.basic_publish(exchange=logs, routing_key="", body=b"nobody listens yet")  # dropped: no queue bound

    receivers = [connect(amqp_port), connect(amqp_port)]
    got: list[list[bytes]] = [[], []]
    queue_names = []
    for i, conn in enumerate(receivers):
        ch = conn.channel()
        ch.exchange_declare(exchange=logs, exchange_type="fanout")
        result = ch.queue_declare(queue="", exclusive=True)
        name = result.method.queue
        assert name.startswith("amq.gen-")
        ch.queue_bind(exchange=logs, queue=name)
        ch.basic_consume(name, lambda c, m, p, body, i=i: got[i].append(body), auto_ack=True)
        queue_names.append(name)
    assert queue_names[0] != queue_names[1]

    lines = [f"log line {n}".encode() for n in range(5)]
    for line in lines:
        ech.basic_publish(exchange=logs, routing_key="anything", body=line)
    pump(receivers, lambda: len(got[0]) == len(got[1]) == len(lines))
    assert got == [lines, lines]

    # Exclusive queues belong to their connection: others cannot use them, and they go with it.
    other = emitter.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        other.basic_consume(queue_names[0], lambda *a: None)
    assert info.value.reply_code == 405
    receivers[0].close()
    probe = emitter.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        probe.queue_declare(queue_names[0], passive=True)
    assert info.value.reply_code == 404
    receivers[1].close()
    ech.exchange_delete(logs)
    emitter.close()


# -------------------------------------------------------------------------------- 4. routing


def test_routing_direct(amqp_port, unique):
    direct_logs = unique + "-direct"
    emitter = connect(amqp_port)
    ech = emitter.channel()
    ech.exchange_declare(exchange=direct_logs, exchange_type="direct")

    severities = {"errors-only": ["error"], "all": ["info", "warning", "error"]}
    receivers = {name: connect(amqp_port) for name in severities}
    got: dict[str, list[tuple[str, bytes]]] = {name: [] for name in severities}
    synced = {}
    for name, conn in receivers.items():
        ch = conn.channel()
        ch.exchange_declare(exchange=direct_logs, exchange_type="direct")
        queue = ch.queue_declare(queue="", exclusive=True).method.queue
        synced[name] = (ch, queue)
        for severity in severities[name]:
            ch.queue_bind(exchange=direct_logs, queue=queue, routing_key=severity)

        def on_log(c, method, properties, body, name=name):
            got[name].append((method.routing_key, body))

        ch.basic_consume(queue, on_log, auto_ack=True)

    sent = [("info", b"i1"), ("debug", b"d1"), ("warning", b"w1"), ("error", b"e1"), ("error", b"e2")]
    for severity, body in sent:
        ech.basic_publish(exchange=direct_logs, routing_key=severity, body=body)
    pump(list(receivers.values()), lambda: len(got["errors-only"]) == 2 and len(got["all"]) == 4)
    for name, conn in receivers.items():
        sync(*synced[name])  # nothing more is on its way
        conn.process_data_events(0)
    assert got["errors-only"] == [("error", b"e1"), ("error", b"e2")]
    assert got["all"] == [("info", b"i1"), ("warning", b"w1"), ("error", b"e1"), ("error", b"e2")]
    for conn in receivers.values():
        conn.close()
    ech.exchange_delete(direct_logs)
    emitter.close()


# --------------------------------------------------------------------------------- 5. topics

TOPIC_BINDINGS = {
    "Q1": ["*.orange.*"],
    "Q2": ["*.*.rabbit", "lazy.#"],
    "all": ["#"],
    "kern": ["kern.*"],
    "exact": ["quick.brown.fox"],
}
# routing key -> the queues that must get it (each exactly once)
TOPIC_CASES = {
    "quick.orange.rabbit": {"Q1", "Q2", "all"},
    "lazy.orange.elephant": {"Q1", "Q2", "all"},
    "quick.orange.fox": {"Q1", "all"},
    "lazy.brown.fox": {"Q2", "all"},
    "lazy.pink.rabbit": {"Q2", "all"},  # matches both Q2 bindings, delivered once
    "quick.brown.fox": {"all", "exact"},
    "orange": {"all"},
    "quick.orange.new.rabbit": {"all"},
    "lazy.orange.new.rabbit": {"Q2", "all"},
    "lazy": {"Q2", "all"},  # '#' matches zero words
    "lazy.": {"Q2", "all"},  # an empty last word
    "kern.critical": {"kern", "all"},
    "kern": {"all"},  # '*' needs exactly one word
    "kern.critical.disk": {"all"},
    "": {"all"},
}


def test_topics(amqp_port, unique):
    topic_logs = unique + "-topic"
    conn = connect(amqp_port)
    ch = conn.channel()
    ch.exchange_declare(exchange=topic_logs, exchange_type="topic")
    queues = {}
    got: dict[str, list[str]] = {}
    for name, keys in TOPIC_BINDINGS.items():
        queue = ch.queue_declare(queue="", exclusive=True).method.queue
        for key in keys:
            ch.queue_bind(exchange=topic_logs, queue=queue, routing_key=key)
        queues[name] = queue
        got[name] = []
        ch.basic_consume(queue, lambda c, m, p, body, name=name: got[name].append(body.decode()), auto_ack=True)

    for key in TOPIC_CASES:
        ch.basic_publish(exchange=topic_logs, routing_key=key, body=key.encode())
    expected = {name: [k for k, dest in TOPIC_CASES.items() if name in dest] for name in TOPIC_BINDINGS}
    pump([conn], lambda: all(len(got[n]) >= len(expected[n]) for n in expected))
    sync(ch, queues["all"])
    conn.process_data_events(0)
    assert got == expected

    # Unbinding takes effect for the next message.
    ch.queue_unbind(queue=queues["Q2"], exchange=topic_logs, routing_key="lazy.#")
    ch.basic_publish(exchange=topic_logs, routing_key="lazy.brown.fox", body=b"after unbind")
    ch.basic_publish(exchange=topic_logs, routing_key="a.b.rabbit", body=b"still bound")
    pump([conn], lambda: len(got["all"]) == len(expected["all"]) + 2)
    sync(ch, queues["all"])
    conn.process_data_events(0)
    assert got["Q2"][len(expected["Q2"]) :] == ["still bound"]
    conn.close()


# ------------------------------------------------------------------------------------ 6. RPC


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def test_rpc(amqp_port, unique):
    rpc_queue = unique + "-rpc"
    server = connect(amqp_port)
    sch = server.channel()
    sch.queue_declare(queue=rpc_queue)
    sch.basic_qos(prefetch_count=1)

    def on_request(c, method, props, body):
        response = fib(int(body))
        c.basic_publish(
            exchange="",
            routing_key=props.reply_to,
            properties=pika.BasicProperties(correlation_id=props.correlation_id),
            body=str(response),
        )
        c.basic_ack(delivery_tag=method.delivery_tag)

    sch.basic_consume(queue=rpc_queue, on_message_callback=on_request)

    client = connect(amqp_port)
    cch = client.channel()
    callback_queue = cch.queue_declare(queue="", exclusive=True).method.queue
    responses: dict[str, int] = {}
    strangers: list[str] = []

    def on_response(c, method, props, body):
        if props.correlation_id in calls:
            responses[props.correlation_id] = int(body)
        else:
            strangers.append(props.correlation_id)

    cch.basic_consume(queue=callback_queue, on_message_callback=on_response, auto_ack=True)

    calls = {str(uuid.uuid4()): n for n in (0, 1, 10, 20)}
    for corr_id, n in calls.items():
        cch.basic_publish(
            exchange="",
            routing_key=rpc_queue,
            properties=pika.BasicProperties(reply_to=callback_queue, correlation_id=corr_id),
            body=str(n),
        )
    pump([server, client], lambda: len(responses) == len(calls))
    assert responses == {corr_id: fib(n) for corr_id, n in calls.items()}
    assert strangers == []
    assert sync(sch, rpc_queue) == 0
    client.close()
    server.close()


# ------------------------------------------------------------------ 7. publisher confirms (blocking)


def test_publisher_confirms_one_by_one_blocking(amqp_port, unique):
    conn = connect(amqp_port)
    ch = conn.channel()
    queue = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.confirm_delivery()
    for i in range(50):
        ch.basic_publish(exchange="", routing_key=queue, body=str(i).encode())  # waits for the ack
    assert sync(ch, queue) == 50

    # A mandatory message nobody can take is returned, and pika sees the return before the ack.
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        ch.basic_publish(exchange="", routing_key=unique + "-nowhere", body=b"lost", mandatory=True)
    assert [m.body for m in info.value.messages] == [b"lost"]
    # A non-mandatory unroutable message is simply confirmed.
    ch.basic_publish(exchange="", routing_key=unique + "-nowhere", body=b"dropped")
    assert sync(ch, queue) == 50
    conn.close()


# -------------------------------------------------------------------------- SelectConnection


class SelectFlow:
    """Runs one SelectConnection with one channel until ``finish()`` or a timeout.
    Subclasses implement ``start(channel)``; assertions are made by the test after ``run()``."""

    def __init__(self, port: int, timeout: float = TIMEOUT) -> None:
        self.port = port
        self.timeout = timeout
        self.timed_out = False
        self.error: object = None
        self.connection: pika.SelectConnection | None = None
        self.channel = None

    def run(self) -> None:
        params = pika.ConnectionParameters("127.0.0.1", self.port)
        self.connection = pika.SelectConnection(
            params,
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._channel_open),
            on_open_error_callback=self._failed,
            on_close_callback=lambda conn, reason: conn.ioloop.stop(),
        )
        self.connection.ioloop.call_later(self.timeout, self._timeout)
        self.connection.ioloop.start()
        assert not self.timed_out, f"{type(self).__name__} timed out"
        assert self.error is None, self.error

    def _channel_open(self, channel) -> None:
        self.channel = channel
        channel.add_on_close_callback(self._channel_closed)
        self.start(channel)

    def _channel_closed(self, channel, reason) -> None:
        if not isinstance(reason, pika.exceptions.ChannelClosedByClient):
            self.error = reason
            self.finish()

    def _failed(self, conn, error) -> None:
        self.error = error
        conn.ioloop.stop()

    def _timeout(self) -> None:
        self.timed_out = True
        self.finish()

    def finish(self) -> None:
        assert self.connection is not None
        if self.connection.is_open:
            self.connection.close()
        else:
            self.connection.ioloop.stop()

    def start(self, channel) -> None:
        raise NotImplementedError


class HelloWorldSelect(SelectFlow):
    def __init__(self, port: int, queue: str) -> None:
        super().__init__(port)
        self.queue = queue
        self.received: list[bytes] = []

    def start(self, channel) -> None:
        channel.queue_declare(self.queue, callback=self._declared)

    def _declared(self, frame) -> None:
        self.channel.basic_publish("", self.queue, b"Hello World!")
        self.channel.basic_consume(self.queue, self._on_message, auto_ack=True)

    def _on_message(self, channel, method, properties, body) -> None:
        self.received.append(body)
        self.finish()


def test_hello_world_select_connection(amqp_port, unique):
    flow = HelloWorldSelect(amqp_port, unique)
    flow.run()
    assert flow.received == [b"Hello World!"]


class WorkQueueSelect(SelectFlow):
    """Durable queue, persistent tasks, prefetch_count=1, manual acks; at the end the queue is empty."""

    def __init__(self, port: int, queue: str, count: int, arguments=None) -> None:
        super().__init__(port)
        self.queue = queue
        self.count = count
        self.arguments = arguments
        self.received: list[bytes] = []
        self.max_unacked = 0
        self.unacked = 0
        self.left_over: int | None = None

    def start(self, channel) -> None:
        channel.queue_declare(self.queue, durable=True, arguments=self.arguments, callback=self._declared)

    def _declared(self, frame) -> None:
        self.channel.basic_qos(prefetch_count=1, callback=self._qos_ok)

    def _qos_ok(self, frame) -> None:
        props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        for i in range(self.count):
            self.channel.basic_publish("", self.queue, f"task {i}".encode(), props)
        self.channel.basic_consume(self.queue, self._on_task)

    def _on_task(self, channel, method, properties, body) -> None:
        self.received.append(body)
        self.unacked += 1
        self.max_unacked = max(self.max_unacked, self.unacked)
        # Ack on the next loop turn: the broker must not send another task meanwhile.
        self.connection.ioloop.call_later(0, lambda: self._ack(method.delivery_tag))

    def _ack(self, tag: int) -> None:
        self.unacked -= 1
        self.channel.basic_ack(tag)
        if len(self.received) == self.count:
            self.channel.queue_declare(self.queue, passive=True, callback=self._checked)

    def _checked(self, frame) -> None:
        self.left_over = frame.method.message_count
        self.finish()


@pytest.mark.parametrize("arguments", [None, {"x-queue-type": "quorum"}], ids=["classic", "quorum"])
def test_work_queue_select_connection(amqp_port, unique, arguments):
    flow = WorkQueueSelect(amqp_port, unique, 20, arguments)
    flow.run()
    assert flow.received == [f"task {i}".encode() for i in range(20)]
    assert flow.max_unacked == 1
    assert flow.left_over == 0


class ConfirmsSelect(SelectFlow):
    """Publisher confirms handled asynchronously: an ack/nack callback settles outstanding sequence
    numbers (``multiple`` settles every one up to the tag). With ``batch`` set, the next batch is
    published only when the previous one is wholly confirmed."""

    def __init__(self, port: int, queue: str, count: int, batch: int | None = None) -> None:
        super().__init__(port)
        self.queue = queue
        self.count = count
        self.batch = batch or count
        self.published = 0
        self.outstanding: dict[int, int] = {}  # delivery tag -> message number
        self.confirmed: list[int] = []
        self.nacked: list[int] = []
        self.bogus: list[tuple[int, bool]] = []  # confirms for nothing outstanding
        self.batches_done = 0
        self.final_count: int | None = None

    def start(self, channel) -> None:
        channel.queue_declare(self.queue, exclusive=True, callback=self._declared)

    def _declared(self, frame) -> None:
        self.channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=lambda f: self._publish_batch())

    def _publish_batch(self) -> None:
        for _ in range(min(self.batch, self.count - self.published)):
            self.published += 1
            self.outstanding[self.published] = self.published  # tags count from 1 per channel
            self.channel.basic_publish("", self.queue, str(self.published).encode())

    def _on_confirm(self, frame) -> None:
        method = frame.method
        if method.multiple:
            tags = [t for t in self.outstanding if t <= method.delivery_tag]
        else:
            tags = [method.delivery_tag] if method.delivery_tag in self.outstanding else []
        if not tags:
            self.bogus.append((method.delivery_tag, method.multiple))
        for tag in tags:
            n = self.outstanding.pop(tag)
            (self.confirmed if isinstance(method, pika.spec.Basic.Ack) else self.nacked).append(n)
        if self.outstanding:
            return
        self.batches_done += 1
        if self.published < self.count:
            self._publish_batch()
        else:
            self.channel.queue_declare(self.queue, passive=True, callback=self._checked)

    def _checked(self, frame) -> None:
        self.final_count = frame.method.message_count
        self.finish()


@pytest.mark.parametrize(("count", "batch", "batches"), [(300, None, 1), (300, 50, 6), (40, 1, 40)])
def test_publisher_confirms_select_connection(amqp_port, unique, count, batch, batches):
    """Asynchronous handling (all at once), in batches of 50, and one at a time."""
    flow = ConfirmsSelect(amqp_port, unique, count, batch)
    flow.run()
    assert sorted(flow.confirmed) == list(range(1, count + 1))
    assert flow.nacked == []
    assert flow.bogus == []
    assert flow.batches_done == batches
    assert flow.final_count == count
