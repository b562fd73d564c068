"""One consumer group: its queue, its dead-letter queue, and the ack / retry / dead-letter decision.

Theory of operation: every delivery becomes a task. The task runs the handler (under the group's
semaphore), then either acks, or, on an exception, publishes a copy with ``x-retry-count`` incremented
(persistent, publisher confirm) and only then acks the original. The backoff delay is held by the
broker, not by the worker: the copy goes to a durable delay queue ``<group>.retry-<ms>`` whose
``x-message-ttl`` is the delay and whose dead-letter exchange is the default exchange with the group's
queue as routing key, so the copy comes back to the group when the delay ends, whichever worker is
running then (RabbitMQ's usual pattern; it works the same against RabbitMQ). After the last retry the
copy goes, confirmed, to ``<group>.dlq`` with the error in its headers. At every instant the event is
held by the broker: as the unacked original or as its confirmed successor, so a crash or a restart
loses nothing (at worst the event is handled once more: delivery is at-least-once).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

log = logging.getLogger(__name__)

JSON = "application/json"
RETRY_COUNT = "x-retry-count"
ORIGINAL_KEY = "x-original-routing-key"


@dataclass(frozen=True)
class Event:
    """What a handler receives: the event's name (routing key), its payload (decoded JSON, or the raw
    bytes for any other content type), the message headers and how many retries preceded this one."""

    name: str
    payload: Any
    headers: dict[str, Any]
    retry_count: int


Handler = Callable[[Event], Any]


RATE_HISTORY = 600  # seconds of per-second handled counts kept for h(t)


@dataclass
class GroupMetrics:
    """Counters of one consumer group in this process (``failed`` counts handler exceptions)."""

    handled: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    _per_second: deque[list[int]] = field(default_factory=deque, repr=False, compare=False)

    def note_handled(self, now: float | None = None) -> None:
        self.handled += 1
        second = int(time.monotonic() if now is None else now)
        buckets = self._per_second
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += 1
            return
        buckets.append([second, 1])
        while len(buckets) > RATE_HISTORY:
            buckets.popleft()

    def handled_rate(self, window: float = 10.0, now: float | None = None) -> float:
        """h(t) of the flow model: events handled per second over the last ``window`` seconds."""
        current = time.monotonic() if now is None else now
        since = current - window
        return sum(count for second, count in self._per_second if second >= since) / window


@dataclass(frozen=True)
class HandlerSpec:
    pattern: str
    group: str
    func: Handler
    concurrency: int = 1
    prefetch: int = 16
    retries: int = 3
    backoff: tuple[float, ...] = (0.1, 1.0, 5.0)

    def delay(self, retry_count: int) -> float:
        """Delay before retry number ``retry_count + 1`` (the last value repeats)."""
        if not self.backoff:
            return 0.0
        return self.backoff[min(retry_count, len(self.backoff) - 1)]

    def delay_ms(self, retry_count: int) -> int:
        return max(0, round(self.delay(retry_count) * 1000))

    def retry_queue(self, retry_count: int) -> str:
        """Where retry number ``retry_count + 1`` waits: a delay queue, or the group's queue at once."""
        ms = self.delay_ms(retry_count)
        return f"{self.group}.retry-{ms}" if ms else self.group


def decode(message: AbstractIncomingMessage) -> Any:
    if message.content_type == JSON:
        return json.loads(message.body)
    return message.body


@dataclass
class GroupWorker:
    """Consumes one group's queue on a channel of its own (so ``prefetch`` is per handler)."""

    spec: HandlerSpec
    metrics: GroupMetrics
    channel: AbstractChannel
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    _queue: AbstractQueue | None = None
    _tag: str | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _semaphore: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self._semaphore = asyncio.Semaphore(self.spec.concurrency)

    async def start(self, exchange: str) -> None:
        await self.channel.set_qos(prefetch_count=self.spec.prefetch)
        await self.channel.declare_queue(f"{self.spec.group}.dlq", durable=True)
        for ms in sorted({self.spec.delay_ms(n) for n in range(self.spec.retries)} - {0}):
            await self.channel.declare_queue(
                f"{self.spec.group}.retry-{ms}",
                durable=True,
                arguments={
                    "x-message-ttl": ms,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.spec.group,
                },
            )
        self._queue = await self.channel.declare_queue(self.spec.group, durable=True)
        await self._queue.bind(exchange, routing_key=self.spec.pattern)
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self) -> None:
        """Stop consuming and let running handlers (and their confirmed republishes) finish."""
        self.closing.set()
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception:  # the connection may already be gone; nothing to cancel then
                log.debug("cancel of %s failed", self.spec.group, exc_info=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._process(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        raw = headers.get(RETRY_COUNT, 0)
        retry_count = raw if isinstance(raw, int) else 0
        name = str(headers.get(ORIGINAL_KEY) or message.routing_key or "")
        self.metrics.in_flight += 1
        try:
            async with self._semaphore:
                await self._call(Event(name, decode(message), headers, retry_count))
        except Exception as exc:
            self.metrics.failed += 1
            self.metrics.in_flight -= 1
            log.warning("handler of %s failed on %s (retry %d): %r", self.spec.group, name, retry_count, exc)
            await self._after_failure(message, headers, name, retry_count, exc)
            return
        self.metrics.in_flight -= 1
        self.metrics.note_handled()
        await _ack(message)

    async def _call(self, event: Event) -> None:
        func = self.spec.func
        if inspect.iscoroutinefunction(func):
            await func(event)
            return
        result = await asyncio.to_thread(func, event)
        if inspect.isawaitable(result):
            await result

    async def _after_failure(
        self, message: AbstractIncomingMessage, headers: dict[str, Any], name: str, retry_count: int, exc: Exception
    ) -> None:
        headers[ORIGINAL_KEY] = name
        if retry_count < self.spec.retries:
            if message.channel.is_closed:
                return  # the connection dropped: the broker requeued the original
            headers[RETRY_COUNT] = retry_count + 1
            for key in ("x-death", "x-first-death-reason", "x-first-death-queue", "x-first-death-exchange"):
                headers.pop(key, None)  # the delay queue's own bookkeeping; each retry starts clean
            await self._republish(message, headers, self.spec.retry_queue(retry_count), self._count_retry)
        else:
            headers[RETRY_COUNT] = retry_count
            headers["x-error-type"] = type(exc).__qualname__
            headers["x-error-message"] = str(exc)[:1000]
            await self._republish(message, headers, f"{self.spec.group}.dlq", self._count_dead_letter)

    async def _republish(
        self, message: AbstractIncomingMessage, headers: dict[str, Any], queue: str, count: Callable[[], None]
    ) -> None:
        copy = aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            timestamp=message.timestamp,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await self.channel.default_exchange.publish(copy, routing_key=queue, mandatory=False)
        except Exception:
            # Not confirmed: keep the original unacked, it comes back when the channel closes.
            log.exception("could not publish to %s; the original stays unacked", queue)
            return
        count()
        await _ack(message)

    def _count_retry(self) -> None:
        self.metrics.retried += 1

    def _count_dead_letter(self) -> None:
        self.metrics.dead_lettered += 1


async def _ack(message: AbstractIncomingMessage) -> None:
    try:
        await message.ack()
    except Exception:  # channel gone: the broker requeues the delivery itself
        log.warning("ack failed; the broker will redeliver", exc_info=True)
