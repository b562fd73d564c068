"""The connections of ``leveret bench``: ``asyncio.Protocol`` shells over the sans-I/O client.

Theory of operation: a ``Link`` is one AMQP connection. It feeds received bytes to a
``ClientConnection`` and handles the events; ``call`` writes a synchronous method and awaits its reply.
``PublisherLink`` writes pre-encoded ``basic.publish`` frames in bursts, one timestamp per burst (the
first 8 bytes of each body, ``time.monotonic_ns``), for as long as the transport does not ask it to
pause (TCP back-pressure), the confirm window has room and the fixed rate (if any) allows.
``ConsumerLink`` counts deliveries straight from the events, takes each one's latency from its body's
timestamp, and acks every N deliveries with ``multiple=true``.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from array import array
from collections import deque
from collections.abc import Sequence

from leveret.amqp import methods as m
from leveret.amqp.client import (
    ChannelClosed,
    ClientConnection,
    ConnectionClosed,
    ConnectionOpened,
    DeliveryReceived,
)
from leveret.amqp.events import ConnectionFailed, Event, MethodReceived
from leveret.amqp.properties import EMPTY_PROPERTIES, PERSISTENT_PROPERTIES

_TS = struct.Struct(">Q")
CHANNEL = 1


class BenchError(Exception):
    """The broker refused or closed something the benchmark needs."""


class Link(asyncio.Protocol):
    """One connection: handshake, synchronous calls awaited by reply type, orderly close."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.failure = ""  # why the broker closed this link (or the connection was lost), if it did
        self._closing = False
        self._calls: deque[tuple[tuple[type[m.Method], ...], asyncio.Future[m.Method]]] = deque()

    # ------------------------------------------------------------------------------- I/O

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.write(self.conn.initiate())

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive(data):
            self.handle(event)
        self.flush()

    def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.write(out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self._closing:
            self._fail_all(BenchError(f"connection lost: {exc or 'closed by the broker'}"))
        if not self.closed.done():
            self.closed.set_result(None)

    # ---------------------------------------------------------------------------- events

    def handle(self, event: Event) -> None:
        if type(event) is MethodReceived:
            self._reply(event.method)
        elif type(event) is ConnectionOpened:
            if not self.opened.done():
                self.opened.set_result(None)
        elif type(event) is ChannelClosed:
            self._fail_all(BenchError(f"channel closed by the broker: {event.reply_code} {event.reply_text}"))
        elif type(event) is ConnectionClosed:
            if event.reply_code != 200:
                self._fail_all(BenchError(f"connection closed by the broker: {event.reply_code} {event.reply_text}"))
            self.flush()
            if self.transport is not None:
                self.transport.close()
        elif type(event) is ConnectionFailed:
            self._fail_all(BenchError(f"protocol error from the broker: {event.error}"))

    def _reply(self, method: m.Method) -> None:
        if self._calls and isinstance(method, self._calls[0][0]):
            _, fut = self._calls.popleft()
            if not fut.done():
                fut.set_result(method)

    def _fail_all(self, exc: BenchError) -> None:
        self.failure = self.failure or str(exc)
        if not self.opened.done():
            self.opened.set_exception(exc)
        while self._calls:
            _, fut = self._calls.popleft()
            if not fut.done():
                fut.set_exception(exc)

    # ---------------------------------------------------------------------------- calls

    async def call(self, method: m.Method, *replies: type[m.Method], timeout: float = 10.0) -> m.Method | None:
        """Send a method on the link's channel; await the first of ``replies`` (None: no reply)."""
        self.write(self.conn.send(CHANNEL if method.CLASS_ID != 10 else 0, method))
        if not replies:
            return None
        fut: asyncio.Future[m.Method] = self.loop.create_future()
        self._calls.append((replies, fut))
        try:
            return await asyncio.wait_for(fut, timeout)
        except BenchError as exc:
            raise BenchError(f"{method.NAME}: {exc}") from None
        except TimeoutError:
            raise BenchError(f"{method.NAME}: no reply within {timeout} s") from None

    async def open_channel(self) -> None:
        await self.call(m.ChannelOpen(), m.ChannelOpenOk)

    def abort(self) -> None:
        """Drop the connection now, without a close handshake (and without reporting it as a failure)."""
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    async def close(self, timeout: float = 2.0) -> None:
        self._closing = True
        if self.transport is None or self.transport.is_closing():
            return
        self.write(self.conn.send(0, m.ConnectionClose(200, "bench done", 0, 0)))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            pass
        if self.transport is not None:
            self.transport.close()


class PublisherLink(Link):
    """Publishes to the default exchange with the queue name as routing key."""

    def __init__(
        self,
        conn: ClientConnection,
        routing_keys: Sequence[str],
        size: int,
        persistent: bool,
        confirm: int,
        rate: float,
        count: int = 0,
        exchange: str = "",
    ) -> None:
        super().__init__(conn)
        self.confirm = confirm
        self.rate = rate
        self.count = count  # publish this many, then stop (0 = until stopped)
        self.sent = 0
        self.confirmed = 0
        self.nacked = 0
        self._running = False
        self._paused = False
        self._scheduled = False
        self._started = 0.0
        self._acked_upto = 0  # every publish tag <= this is settled
        self._acked_singles: set[int] = set()  # settled tags above _acked_upto
        props = PERSISTENT_PROPERTIES if persistent else EMPTY_PROPERTIES
        pad = bytes(max(0, size - _TS.size))
        self.timed = size >= _TS.size
        # one (prefix, suffix) pair per routing key around the body's timestamp; bursts take turns
        self._frames: list[tuple[bytes, bytes]] = []
        for key in routing_keys:
            probe = conn.publish(CHANNEL, exchange, key, props, _TS.pack(0) + pad if self.timed else bytes(size))
            if self.timed:  # the body starts after the method frame, the header frame and a body frame head
                cut = len(conn.send(CHANNEL, m.BasicPublish(0, exchange, key))) + 7 + 12 + len(props) + 1 + 7
                self._frames.append((probe[:cut], probe[cut + _TS.size :]))
            else:
                self._frames.append((probe, b""))
        self._turn = 0
        self.burst = max(1, min(200, 16384 // len(probe)))

    async def setup(self) -> None:
        await self.open_channel()
        if self.confirm:
            await self.call(m.ConfirmSelect(), m.ConfirmSelectOk)

    def start(self) -> None:
        self._running = True
        self._started = time.monotonic()
        self._schedule()

    def stop(self) -> None:
        self._running = False

    def done(self) -> bool:
        """All of ``count`` published (and settled, with confirms)."""
        if not self.count or self.sent < self.count:
            return False
        return not self.confirm or self.confirmed + self.nacked >= self.sent

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._schedule()

    def _schedule(self, delay: float = 0.0) -> None:
        if self._scheduled or not self._running:
            return
        self._scheduled = True
        if delay:
            self.loop.call_later(delay, self._tick)
        else:
            self.loop.call_soon(self._tick)

    def _tick(self) -> None:
        self._scheduled = False
        if not self._running or self._paused or self.transport is None:
            return
        n = self.burst
        if self.rate:
            due = int(self.rate * (time.monotonic() - self._started)) - self.sent
            if due <= 0:
                self._schedule(0.001)  # what is due goes out in batches, at most 1 ms apart
                return
            n = min(n, due)
        if self.count:
            n = min(n, self.count - self.sent)
            if n <= 0:
                self._running = False
                return
        if self.confirm:
            n = min(n, self.confirm - (self.sent - self.confirmed - self.nacked))
            if n <= 0:
                return  # an ack from the broker reschedules
        prefix, suffix = self._frames[self._turn]
        if len(self._frames) > 1:
            self._turn = (self._turn + 1) % len(self._frames)
        one = prefix + _TS.pack(time.monotonic_ns()) + suffix if self.timed else prefix
        self.transport.write(one * n)
        self.sent += n
        self._schedule()

    def handle(self, event: Event) -> None:
        if type(event) is MethodReceived:
            method = event.method
            if type(method) is m.BasicAck:
                self._settle(method.delivery_tag, method.multiple, False)
                return
            if type(method) is m.BasicNack:
                self._settle(method.delivery_tag, method.multiple, True)
                return
        super().handle(event)

    def _settle(self, tag: int, multiple: bool, nack: bool) -> None:
        """Count the publishes a confirm settles (``multiple``: all up to ``tag``)."""
        count = 0
        if multiple:
            if tag > self._acked_upto:
                singles = self._acked_singles
                below = [t for t in singles if t <= tag] if singles else []
                for t in below:
                    singles.discard(t)
                count = tag - self._acked_upto - len(below)
                self._acked_upto = tag
        elif tag > self._acked_upto and tag not in self._acked_singles:
            self._acked_singles.add(tag)
            count = 1
        while self._acked_upto + 1 in self._acked_singles:
            self._acked_upto += 1
            self._acked_singles.discard(self._acked_upto)
        if nack:
            self.nacked += count
        else:
            self.confirmed += count
        if self._running and not self._paused:
            self._schedule()


class ConsumerLink(Link):
    """One consumer on its own connection; ``latencies`` in microseconds, one per delivery."""

    def __init__(self, conn: ClientConnection, ack_every: int, auto_ack: bool, timed: bool) -> None:
        super().__init__(conn)
        self.multiple = ack_every > 1
        self.ack_every = max(1, ack_every)
        self.auto_ack = auto_ack
        self.timed = timed
        self.received = 0
        self.latencies: array[int] = array("q")
        self._countdown = self.ack_every
        self.cancelled = False

    async def setup(self, queues: Sequence[str], prefetch: int, tag: str) -> None:
        """Consume from each of ``queues`` on the one channel (its delivery tags stay one sequence)."""
        await self.open_channel()
        if prefetch:
            await self.call(m.BasicQos(0, prefetch, False), m.BasicQosOk)
        for i, queue in enumerate(queues):
            name = tag if len(queues) == 1 else f"{tag}-{i}"
            consume = m.BasicConsume(0, queue, name, False, self.auto_ack, False, False, {})
            await self.call(consume, m.BasicConsumeOk)

    def data_received(self, data: bytes) -> None:
        now_us = time.monotonic_ns() // 1000
        events = self.conn.receive(data)
        count = 0
        countdown = self._countdown
        acks: list[bytes] = []
        record = self.latencies.append
        unpack = _TS.unpack_from
        timed = self.timed
        for event in events:
            if type(event) is DeliveryReceived:
                count += 1
                if timed:
                    record(now_us - unpack(event.body)[0] // 1000)
                countdown -= 1
                if not countdown:
                    countdown = self.ack_every
                    if not self.auto_ack:
                        acks.append(self.conn.ack(CHANNEL, event.delivery_tag, self.multiple))
            elif type(event) is MethodReceived and type(event.method) is m.BasicCancel:
                self.cancelled = True  # the queue went away (end of run)
            else:
                self.handle(event)
        self.received += count
        self._countdown = countdown
        if acks:
            self.write(b"".join(acks))
        self.flush()

    def ack_rest(self) -> None:
        """Ack what the last ``multiple`` ack did not cover (tags run 1, 2, ... on the one channel)."""
        if not self.auto_ack and self._countdown != self.ack_every and self.transport is not None:
            self.write(self.conn.ack(CHANNEL, self.received, True))
            self._countdown = self.ack_every


def latency_summary(samples: Sequence[int]) -> dict[str, float]:
    """Percentiles (nearest rank) of latencies in microseconds, reported in milliseconds."""
    if not len(samples):
        return {}
    ordered: list[int] = sorted(samples)
    last = len(ordered) - 1

    def pick(q: float) -> float:
        return round(ordered[min(last, int(q * len(ordered)))] / 1000, 3)

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "p99.9": pick(0.999), "max": pick(1.0)}
