"""The :class:`EventBus`: publish events with confirms, register handlers per consumer group, and
report each group's h(t) to the broker (see :meth:`EventBus._report`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from .worker import JSON, GroupMetrics, GroupWorker, Handler, HandlerSpec

OCTET_STREAM = "application/octet-stream"
REPORT_EXCHANGE = "leveret.metrics"
REPORT_WINDOW = 10.0  # seconds of handled events behind a reported h(t)

log = logging.getLogger(__name__)
_bus_numbers = itertools.count(1)


def default_instance() -> str:
    """``hostname:pid``; the second and later buses of one process get ``-2``, ``-3``..."""
    number = next(_bus_numbers)
    base = f"{socket.gethostname()}:{os.getpid()}"
    return base if number == 1 else f"{base}-{number}"


class EventBus:
    """Events on a durable topic exchange, handled by consumer groups.

    ``await bus.publish("order.created", {"id": 1})`` sends a persistent message and returns once the
    broker confirmed it; payloads are JSON (``application/json``) unless they are ``bytes``, which go
    raw (``application/octet-stream``).

    ``@bus.handler("order.*", group="billing")`` registers a handler (sync: run in a thread; async: on
    the loop) receiving an :class:`~leveret.events.Event`. Each group is a durable queue named after the
    group, bound with the pattern: instances of one group compete, every group gets every event. A
    handler that returns is acked; one that raises is retried ``retries`` times, waiting
    ``backoff[i]`` seconds before retry ``i + 1`` (the last value repeats), and then dead-lettered to
    the durable queue ``<group>.dlq`` with ``x-error-type``, ``x-error-message``, ``x-retry-count`` and
    ``x-original-routing-key`` headers.

    Retry delays are held by the broker (delay queues with a TTL that dead-letter back to the group's
    queue, see ``worker``). No event is lost on the way: the original delivery is acked only after its
    successor (the retry copy or the dead letter) was confirmed; if the worker or the broker dies in
    between, the original is redelivered. Delivery is at-least-once.

    ``await bus.close()`` stops consuming, waits for the handlers that are running, then closes.
    ``bus.metrics[group]`` counts handled, failed, retried, dead-lettered and in-flight events.

    Every ``report_interval`` seconds (5 by default; 0 turns it off) the bus publishes one small
    transient JSON report per group, best effort, to the topic exchange ``leveret.metrics`` with
    routing key ``events.<group>``: the counters above and ``handled_rate``, h(t) over the last 10 s.
    Leveret's management door aggregates them per group (``/api/leveret/handlers``, ``/metrics``, the
    web UI); against RabbitMQ they are ordinary messages nobody has to read. ``instance`` names this
    bus in the reports (default ``hostname:pid``).
    """

    def __init__(
        self,
        url: str = "amqp://guest:guest@localhost/",
        exchange: str = "leveret.events",
        *,
        report_interval: float = 5.0,
        instance: str | None = None,
    ) -> None:
        if report_interval < 0:
            raise ValueError("report_interval must be >= 0 (0 turns reports off)")
        self.url = url
        self.exchange_name = exchange
        self.report_interval = report_interval
        self.instance = instance or default_instance()
        self.specs: list[HandlerSpec] = []
        self.metrics: dict[str, GroupMetrics] = {}
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._workers: list[GroupWorker] = []
        self._reporter: asyncio.Task[None] | None = None

    def handler(
        self,
        pattern: str,
        *,
        group: str,
        concurrency: int = 1,
        prefetch: int = 16,
        retries: int = 3,
        backoff: tuple[float, ...] = (0.1, 1.0, 5.0),
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of ``group`` for events matching ``pattern``."""
        if self._connection is not None:
            raise RuntimeError("register handlers before connect()")
        if group in self.metrics:
            raise ValueError(f"group {group!r} already has a handler on this bus")
        if concurrency < 1 or prefetch < 0 or retries < 0:
            raise ValueError("concurrency must be >= 1, prefetch and retries >= 0")

        def register(func: Handler) -> Handler:
            self.specs.append(HandlerSpec(pattern, group, func, concurrency, prefetch, retries, tuple(backoff)))
            self.metrics[group] = GroupMetrics()
            return func

        return register

    async def connect(self) -> None:
        """Connect (reconnecting automatically), declare the exchange and start the registered handlers."""
        if self._connection is not None:
            return
        self._connection = await aio_pika.connect_robust(self.url)
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for spec in self.specs:
            worker = GroupWorker(spec, self.metrics[spec.group], await self._connection.channel())
            await worker.start(self.exchange_name)
            self._workers.append(worker)
        if self.report_interval > 0 and self.specs:
            self._reporter = asyncio.get_running_loop().create_task(self._report(self._connection))

    async def publish(self, name: str, payload: Any, *, headers: dict[str, Any] | None = None) -> None:
        """Publish event ``name`` (the routing key); returns when the broker confirmed it."""
        if self._exchange is None:
            raise RuntimeError("EventBus is not connected: await bus.connect() first")
        if isinstance(payload, bytes | bytearray | memoryview):
            body, content_type = bytes(payload), OCTET_STREAM
        else:
            body, content_type = json.dumps(payload).encode(), JSON
        message = aio_pika.Message(
            body, headers=headers, content_type=content_type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        await self._exchange.publish(message, routing_key=name, mandatory=False)

    async def close(self) -> None:
        """Stop consuming, wait for in-flight handlers, close the connection."""
        reporter, self._reporter = self._reporter, None
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        for worker in self._workers:
            worker.closing.set()
        for worker in self._workers:
            await worker.stop()
        self._workers.clear()
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None:
            await connection.close()

    def report(self, group: str) -> dict[str, Any]:
        """What the bus reports for ``group`` (one registered with :meth:`handler`)."""
        spec = next(s for s in self.specs if s.group == group)
        m = self.metrics[group]
        return {
            "group": group,
            "pattern": spec.pattern,
            "instance": self.instance,
            "handled": m.handled,
            "failed": m.failed,
            "retried": m.retried,
            "dead_lettered": m.dead_lettered,
            "in_flight": m.in_flight,
            "handled_rate": round(m.handled_rate(REPORT_WINDOW), 3),
            "interval": self.report_interval,
            "at": round(time.time(), 3),
        }

    async def _report(self, connection: AbstractConnection) -> None:
        """Publish every group's report every ``report_interval`` seconds, on a channel of its own
        without confirms: best effort, a task apart, so handlers never wait for it. A failed publish
        (connection lost: the robust connection comes back) is skipped until the next interval."""
        channel = None
        try:
            channel = await connection.channel(publisher_confirms=False)
            exchange = await channel.declare_exchange(REPORT_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        except Exception as exc:  # e.g. no configure permission on leveret.metrics
            log.warning("handler reports off: cannot declare exchange %s: %r", REPORT_EXCHANGE, exc)
            if channel is not None:
                with contextlib.suppress(Exception):
                    await channel.close()
            return
        expiration = max(1.0, 3 * self.report_interval)  # a stale report is worth nothing
        while True:
            for spec in self.specs:
                body = json.dumps(self.report(spec.group)).encode()
                message = aio_pika.Message(body, content_type=JSON, expiration=expiration)
                try:
                    await exchange.publish(message, routing_key=f"events.{spec.group}", mandatory=False)
                except Exception as exc:
                    log.debug("handler report for %s not sent: %r", spec.group, exc)
            await asyncio.sleep(self.report_interval)

    async def __aenter__(self) -> EventBus:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
