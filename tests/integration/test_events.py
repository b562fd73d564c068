"""``leveret.events`` against a real broker: publish/handle, competing workers, fan-out across groups,
retries with ``x-retry-count``, dead-lettering, and ``leveret events run`` as a worker process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import aio_pika

from leveret.events import Event, EventBus
from tests.conftest import BrokerProcess


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def queue_depth(url: str, name: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        count = queue.declaration_result.message_count
        return int(count or 0)


async def test_publish_and_handle_json_and_bytes(leveret_url: str, leveret_prefix: str) -> None:
    exchange, group = leveret_prefix + "events", leveret_prefix + "billing"
    received: list[Event] = []
    bus = EventBus(leveret_url, exchange=exchange)

    @bus.handler("order.*", group=group)
    async def on_order(event: Event) -> None:
        received.append(event)

    async with bus:
        # a plain queue on the same exchange shows what went over the wire
        connection = await aio_pika.connect(leveret_url)
        async with connection:
            channel = await connection.channel()
            tap = await channel.declare_queue(leveret_prefix + "tap", durable=True)
            await tap.bind(exchange, routing_key="#")
            await bus.publish("order.created", {"id": 1, "total": 9.5})
            await bus.publish("order.raw", b"\x00\xffraw")
            await bus.publish("invoice.sent", {"ignored": True})
            await wait_until(lambda: len(received) == 2)
            wire = [await tap.get(timeout=5) for _ in range(3)]
            for message in wire:
                await message.ack()
        assert [(e.name, e.payload, e.retry_count) for e in received] == [
            ("order.created", {"id": 1, "total": 9.5}, 0),
            ("order.raw", b"\x00\xffraw", 0),
        ]
        assert [(m.routing_key, m.content_type, m.delivery_mode) for m in wire] == [
            ("order.created", "application/json", aio_pika.DeliveryMode.PERSISTENT),
            ("order.raw", "application/octet-stream", aio_pika.DeliveryMode.PERSISTENT),
            ("invoice.sent", "application/json", aio_pika.DeliveryMode.PERSISTENT),
        ]
        assert json.loads(wire[0].body) == {"id": 1, "total": 9.5}
        await wait_until(lambda: bus.metrics[group].handled == 2)
        assert bus.metrics[group].in_flight == 0
    assert await queue_depth(leveret_url, group) == 0


async def test_two_workers_of_one_group_share_the_load(leveret_url: str, leveret_prefix: str) -> None:
    exchange, group = leveret_prefix + "events", leveret_prefix + "billing"
    seen: dict[str, list[int]] = {"a": [], "b": []}
    buses = [EventBus(leveret_url, exchange=exchange) for _ in range(2)]

    @buses[0].handler("order.#", group=group, prefetch=1)
    def worker_a(event: Event) -> None:  # sync: runs in a thread
        seen["a"].append(event.payload["n"])

    @buses[1].handler("order.#", group=group, prefetch=1, concurrency=2)
    async def worker_b(event: Event) -> None:
        seen["b"].append(event.payload["n"])

    for bus in buses:
        await bus.connect()
    try:
        for n in range(40):
            await buses[0].publish("order.created", {"n": n})
        await wait_until(lambda: len(seen["a"]) + len(seen["b"]) >= 40)
    finally:
        for bus in buses:
            await bus.close()
    assert sorted(seen["a"] + seen["b"]) == list(range(40))
    assert seen["a"] and seen["b"], seen
    assert buses[0].metrics[group].handled + buses[1].metrics[group].handled == 40
    assert await queue_depth(leveret_url, group) == 0


async def test_every_group_gets_every_event(leveret_url: str, leveret_prefix: str) -> None:
    exchange = leveret_prefix + "events"
    billing, shipping = leveret_prefix + "billing", leveret_prefix + "shipping"
    seen: dict[str, list[int]] = {billing: [], shipping: []}
    bus = EventBus(leveret_url, exchange=exchange)

    @bus.handler("order.*", group=billing)
    async def bill(event: Event) -> None:
        seen[billing].append(event.payload)

    @bus.handler("#", group=shipping)
    def ship(event: Event) -> None:
        seen[shipping].append(event.payload)

    async with bus:
        for n in range(10):
            await bus.publish("order.created", n)
        await wait_until(lambda: len(seen[billing]) == 10 and len(seen[shipping]) == 10)
    assert sorted(seen[billing]) == sorted(seen[shipping]) == list(range(10))


async def test_failing_twice_then_succeeding_is_retried_and_acked(leveret_url: str, leveret_prefix: str) -> None:
    exchange, group = leveret_prefix + "events", leveret_prefix + "billing"
    attempts: list[tuple[int, object]] = []
    bus = EventBus(leveret_url, exchange=exchange)

    @bus.handler("order.*", group=group, retries=3, backoff=(0.05, 0.1))
    async def flaky(event: Event) -> None:
        attempts.append((event.retry_count, event.headers.get("x-retry-count")))
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    async with bus:
        await bus.publish("order.created", {"id": 7})
        metrics = bus.metrics[group]
        # the retry counter moves when the copy is confirmed, which may be after the copy was handled
        await wait_until(lambda: (metrics.handled, metrics.retried) == (1, 2))
        assert (metrics.failed, metrics.dead_lettered, metrics.in_flight) == (2, 0, 0)
    assert attempts == [(0, None), (1, 1), (2, 2)]
    assert await queue_depth(leveret_url, group) == 0
    assert await queue_depth(leveret_url, group + ".dlq") == 0


async def test_always_failing_goes_to_the_dead_letter_queue(leveret_url: str, leveret_prefix: str) -> None:
    exchange, group = leveret_prefix + "events", leveret_prefix + "billing"
    attempts: list[int] = []
    bus = EventBus(leveret_url, exchange=exchange)

    @bus.handler("order.*", group=group, retries=2, backoff=(0.01,))
    def broken(event: Event) -> None:
        attempts.append(event.retry_count)
        raise ValueError(f"cannot bill order {event.payload['id']}")

    async with bus:
        await bus.publish("order.created", {"id": 42})
        metrics = bus.metrics[group]
        await wait_until(lambda: (metrics.dead_lettered, metrics.retried) == (1, 2))
        assert (metrics.handled, metrics.failed, metrics.in_flight) == (0, 3, 0)
    assert attempts == [0, 1, 2]
    assert await queue_depth(leveret_url, group) == 0
    connection = await aio_pika.connect(leveret_url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(group + ".dlq", passive=True)
        dead = await dlq.get(timeout=5)
        await dead.ack()
    assert json.loads(dead.body) == {"id": 42}
    assert dead.content_type == "application/json"
    assert dead.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    headers = dead.headers
    assert headers["x-error-type"] == "ValueError"
    assert headers["x-error-message"] == "cannot bill order 42"
    assert headers["x-retry-count"] == 2
    assert headers["x-original-routing-key"] == "order.created"


async def test_close_waits_for_the_running_handler(leveret_url: str, leveret_prefix: str) -> None:
    exchange, group = leveret_prefix + "events", leveret_prefix + "billing"
    started, release = asyncio.Event(), asyncio.Event()
    bus = EventBus(leveret_url, exchange=exchange)

    @bus.handler("order.*", group=group)
    async def slow(event: Event) -> None:
        started.set()
        await release.wait()

    await bus.connect()
    await bus.publish("order.created", 1)
    await asyncio.wait_for(started.wait(), 10)
    closing = asyncio.create_task(bus.close())
    done, _ = await asyncio.wait({closing}, timeout=0.2)
    assert not done, "close() returned while a handler was running"
    assert bus.metrics[group].in_flight == 1
    release.set()
    await asyncio.wait_for(closing, 10)
    assert (bus.metrics[group].handled, bus.metrics[group].in_flight) == (1, 0)
    assert await queue_depth(leveret_url, group) == 0


async def test_events_run_cli_handles_events_and_stops_on_sigterm(
    leveret_url: str, leveret_prefix: str, tmp_path: Path
) -> None:
    exchange, group = leveret_prefix + "events", leveret_prefix + "billing"
    out = tmp_path / "handled.txt"
    (tmp_path / "evmod.py").write_text(
        textwrap.dedent(f"""
        from leveret.events import EventBus

        bus = EventBus("amqp://guest:guest@127.0.0.1:1/", exchange={exchange!r})

        @bus.handler("order.*", group={group!r})
        def handle(event):
            with open({str(out)!r}, "a") as f:
                f.write(f"{{event.name}} {{event.payload['n']}}\\n")
        """)
    )
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "leveret", "events", "run", "evmod:bus", "--url", leveret_url],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
    try:
        await wait_until(lambda: "ready" in log_path.read_text() or proc.poll() is not None, timeout=15)
        assert proc.poll() is None, log_path.read_text()
        async with EventBus(leveret_url, exchange=exchange) as publisher:
            for n in range(3):
                await publisher.publish("order.created", {"n": n})
        await wait_until(lambda: out.exists() and len(out.read_text().splitlines()) == 3)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(out.read_text().splitlines()) == [f"order.created {n}" for n in range(3)]
    assert "stopped" in log_path.read_text()


async def test_broker_restart_during_backoff_loses_nothing(fresh_broker: BrokerProcess) -> None:
    url = fresh_broker.url + "?reconnect_interval=0.1"
    attempts: list[int] = []
    bus = EventBus(url)

    @bus.handler("order.*", group="billing", retries=3, backoff=(0.5,))
    async def flaky(event: Event) -> None:
        attempts.append(event.retry_count)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")

    async with bus:
        await bus.publish("order.created", {"id": 1})
        metrics = bus.metrics["billing"]
        await wait_until(lambda: metrics.retried == 1)
        # the retry waits in the broker's durable delay queue; the broker goes away under it
        assert await queue_depth(fresh_broker.url, "billing.retry-500") == 1
        await asyncio.to_thread(fresh_broker.restart, True)  # kill -9
        await wait_until(lambda: metrics.handled == 1, timeout=20)
        await wait_until(lambda: not any(worker._tasks for worker in bus._workers))
    assert attempts == [0, 1]
    assert await queue_depth(fresh_broker.url, "billing") == 0
    assert await queue_depth(fresh_broker.url, "billing.retry-500") == 0
    assert await queue_depth(fresh_broker.url, "billing.dlq") == 0


async def test_retry_delays_are_held_by_the_broker(leveret_url: str, leveret_prefix: str) -> None:
    """A retry comes back after its backoff delay through a TTL + dead-letter queue, also when the
    worker that failed is gone by then: another worker of the group handles it."""
    exchange, group = leveret_prefix + "events", leveret_prefix + "held"
    first = EventBus(leveret_url, exchange=exchange)
    failed_at: list[float] = []

    @first.handler("order.*", group=group, retries=1, backoff=(0.3,))
    async def fails(event: Event) -> None:
        failed_at.append(time.monotonic())
        raise RuntimeError("down")

    async with first:
        await first.publish("order.created", {"id": 7})
        await wait_until(lambda: first.metrics[group].retried == 1)
    second = EventBus(leveret_url, exchange=exchange)
    got: list[tuple[int, float]] = []

    @second.handler("order.*", group=group, retries=1, backoff=(0.3,))
    async def works(event: Event) -> None:
        got.append((event.retry_count, time.monotonic()))

    async with second:
        await wait_until(lambda: bool(got))
    assert got[0][0] == 1
    assert got[0][1] - failed_at[0] >= 0.29


def test_handled_rate_is_h_of_t_over_a_sliding_window() -> None:
    from leveret.events import GroupMetrics

    metrics = GroupMetrics()
    for i in range(50):
        metrics.note_handled(now=100.0 + i * 0.1)  # 50 events over 5 s
    assert metrics.handled == 50
    assert metrics.handled_rate(window=10.0, now=105.0) == 5.0
    assert metrics.handled_rate(window=10.0, now=200.0) == 0.0


async def test_two_worker_processes_share_one_group(leveret_url: str, leveret_prefix: str, tmp_path: Path) -> None:
    exchange, group = leveret_prefix + "events", leveret_prefix + "work"
    out = tmp_path / "handled.txt"
    (tmp_path / "twomod.py").write_text(
        textwrap.dedent(f"""
        import os, time
        from leveret.events import EventBus

        bus = EventBus("amqp://guest:guest@127.0.0.1:1/", exchange={exchange!r})

        @bus.handler("job.*", group={group!r}, prefetch=1)
        def handle(event):
            time.sleep(0.02)  # long enough that the other worker gets its share
            with open({str(out)!r}, "a") as f:
                f.write(f"{{os.getpid()}} {{event.payload['n']}}\\n")
        """)
    )
    procs, logs = [], []
    try:
        for i in range(2):
            log_path = tmp_path / f"worker{i}.log"
            logs.append(log_path)
            with open(log_path, "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "leveret", "events", "run", "twomod:bus", "--url", leveret_url],
                        cwd=tmp_path,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=dict(os.environ, PYTHONUNBUFFERED="1"),
                    )
                )
        for p, log_path in zip(procs, logs, strict=True):
            await wait_until(lambda lp=log_path, pr=p: "ready" in lp.read_text() or pr.poll() is not None, timeout=15)
            assert p.poll() is None, log_path.read_text()
        async with EventBus(leveret_url, exchange=exchange) as publisher:
            for n in range(40):
                await publisher.publish("job.created", {"n": n})
        await wait_until(lambda: out.exists() and len(out.read_text().splitlines()) == 40, timeout=20)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    lines = [line.split() for line in out.read_text().splitlines()]
    assert sorted(int(n) for _, n in lines) == list(range(40))  # every event exactly once
    by_pid = {pid for pid, _ in lines}
    assert len(by_pid) == 2, "both worker processes handled events"
