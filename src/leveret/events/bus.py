"""The :class:`EventBus`: publish events with confirms, register handlers per consumer group."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import TracebackType
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from .worker import JSON, GroupMetrics, GroupWorker, Handler, HandlerSpec

OCTET_STREAM = "application/octet-stream"


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

    Retry delays do not survive in the broker itself (per-message TTL and dead-lettering come with the
    queue-semantics issue): the delay is a timer in this process. No event is lost for that: during the
    delay the original delivery stays unacked, and it is acked only after its successor (the copy with
    ``x-retry-count`` + 1 on the group's queue, or the dead letter) was confirmed; if the worker or the
    broker dies during the delay, the original is redelivered. Delivery is at-least-once.

    ``await bus.close()`` stops consuming, waits for the handlers that are running, then closes.
    ``bus.metrics[group]`` counts handled, failed, retried, dead-lettered and in-flight events.
    """

    def __init__(self, url: str = "amqp://guest:guest@localhost/", exchange: str = "leveret.events") -> None:
        self.url = url
        self.exchange_name = exchange
        self.specs: list[HandlerSpec] = []
        self.metrics: dict[str, GroupMetrics] = {}
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._workers: list[GroupWorker] = []

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
        for worker in self._workers:
            worker.closing.set()
        for worker in self._workers:
            await worker.stop()
        self._workers.clear()
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None:
            await connection.close()

    async def __aenter__(self) -> EventBus:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
