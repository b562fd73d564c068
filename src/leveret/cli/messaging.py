"""``leveret publish`` and ``leveret consume``: messages from and to a shell, over AMQP.

Both use the project's own sans-I/O client (``leveret.amqp.client``) through the connection shell of
``leveret bench`` (``bench_links.Link``). ``publish`` uses publisher confirms and reports what the
broker confirmed; ``consume`` acknowledges each message after printing it. Long runs (``--count``)
show progress on stderr, so stdout stays the messages alone.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, TextIO

from leveret.amqp import methods as m
from leveret.amqp.client import DeliveryReceived
from leveret.amqp.events import Event, MethodReceived
from leveret.amqp.properties import BasicProperties, encode_properties

from .bench import _connect, parse_uri
from .bench_links import CHANNEL, BenchError, Link

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
WINDOW = 1000  # unconfirmed messages in flight at most


class Progress:
    """A one-line counter on stderr, redrawn at most every 0.2 s (and at the end)."""

    def __init__(self, what: str, total: int | None, out: TextIO = sys.stderr, quiet: bool = False) -> None:
        self.what, self.total, self.out, self.quiet = what, total, out, quiet
        self.started = self._last = time.monotonic()

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not final and now - self._last < 0.2):
            return
        self._last = now
        rate = done / max(now - self.started, 1e-9)
        of = f"/{self.total}" if self.total else ""
        end = "\n" if final else "\r"
        self.out.write(f"{self.what} {done}{of} ({rate:,.0f} msg/s){end}")
        self.out.flush()


class PublishLink(Link):
    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.sent = 0
        self.confirmed = 0
        self.nacked = 0
        self.changed = asyncio.Event()
        self._outstanding: dict[int, None] = {}

    def handle(self, event: Event) -> None:
        if type(event) is MethodReceived and isinstance(event.method, m.BasicAck | m.BasicNack):
            method = event.method
            tags = [t for t in self._outstanding if t <= method.delivery_tag] if method.multiple else []
            if not method.multiple and method.delivery_tag in self._outstanding:
                tags = [method.delivery_tag]
            for tag in tags:
                del self._outstanding[tag]
            if isinstance(method, m.BasicAck):
                self.confirmed += len(tags)
            else:
                self.nacked += len(tags)
            self.changed.set()
            return
        super().handle(event)

    def publish(self, exchange: str, routing_key: str, properties: bytes, body: bytes) -> None:
        self.sent += 1
        self._outstanding[self.sent] = None
        self.write(self.conn.publish(CHANNEL, exchange, routing_key, properties, body))

    def in_flight(self) -> int:
        return len(self._outstanding)


class ConsumeLink(Link):
    def __init__(self, conn: Any, out: TextIO, limit: int | None, no_ack: bool) -> None:
        super().__init__(conn)
        self.out, self.limit, self.no_ack = out, limit, no_ack
        self.received = 0
        self.done = asyncio.Event()
        self.last_seen = time.monotonic()

    def handle(self, event: Event) -> None:
        if type(event) is DeliveryReceived:
            if self.limit is not None and self.received >= self.limit:
                return  # past the count: left unacked, the broker requeues it when we close
            self.received += 1
            self.last_seen = time.monotonic()
            self.out.write(event.body.decode("utf-8", "replace") + "\n")
            if not self.no_ack:
                self.write(self.conn.ack(CHANNEL, event.delivery_tag))
            if self.limit is not None and self.received >= self.limit:
                self.done.set()
            return
        super().handle(event)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("publish", help="publish messages (AMQP, with publisher confirms)")
    p.add_argument("routing_key", help="routing key (with the default exchange: the queue name)")
    p.add_argument("body", nargs="?", help="message body (default: each line of stdin is a message)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"AMQP URL ({DEFAULT_URL})")
    p.add_argument("--exchange", default="", help="exchange (default: the default exchange)")
    p.add_argument("--count", type=int, default=1, help="publish the body this many times (1)")
    p.add_argument("--persistent", action="store_true", help="delivery mode 2")
    p.add_argument("--content-type", help="content_type property")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")

    c = sub.add_parser("consume", help="print messages from a queue (AMQP), acknowledging each")
    c.add_argument("queue")
    c.add_argument("--url", default=DEFAULT_URL, help=f"AMQP URL ({DEFAULT_URL})")
    c.add_argument("--count", type=int, help="stop after this many messages")
    c.add_argument("--idle-timeout", type=float, help="stop after this many seconds without a message")
    c.add_argument("--prefetch", type=int, default=100, help="basic.qos prefetch count (100)")
    c.add_argument("--no-ack", action="store_true", help="consume without acknowledgements")
    c.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run_publish(args: argparse.Namespace) -> int:
    if args.body is not None:
        bodies = [args.body.encode()] * args.count
    else:
        bodies = [line.rstrip("\n").encode() for line in sys.stdin]
    props = BasicProperties(delivery_mode=2 if args.persistent else None, content_type=args.content_type)
    return _run(_publish(args, encode_properties(props), bodies))


async def _publish(args: argparse.Namespace, properties: bytes, bodies: list[bytes]) -> int:
    link = await _connect(parse_uri(args.url), PublishLink)
    progress = Progress("published", len(bodies), quiet=args.quiet or len(bodies) < 2)
    try:
        await link.open_channel()
        await link.call(m.ConfirmSelect(False), m.ConfirmSelectOk)
        for body in bodies:
            while link.in_flight() >= WINDOW:
                link.changed.clear()
                await asyncio.wait_for(link.changed.wait(), 30)
            link.publish(args.exchange, args.routing_key, properties, body)
            if link.sent % 100 == 0:
                progress.update(link.confirmed)
                await asyncio.sleep(0)  # let confirms in
        while link.in_flight():
            link.changed.clear()
            await asyncio.wait_for(link.changed.wait(), 30)
        progress.update(link.confirmed, final=True)
    finally:
        await link.close()
    if link.nacked:
        print(f"{link.nacked} messages nacked by the broker", file=sys.stderr)
        return 1
    return 0


def run_consume(args: argparse.Namespace) -> int:
    return _run(_consume(args))


async def _consume(args: argparse.Namespace) -> int:
    link = await _connect(parse_uri(args.url), ConsumeLink, sys.stdout, args.count, args.no_ack)
    progress = Progress("consumed", args.count, quiet=args.quiet or not args.count or args.count < 2)
    try:
        await link.open_channel()
        await link.call(m.BasicQos(0, args.prefetch, False), m.BasicQosOk)
        await link.call(m.BasicConsume(0, args.queue, "", False, args.no_ack, False, False, {}), m.BasicConsumeOk)
        while not link.done.is_set():
            try:
                await asyncio.wait_for(link.done.wait(), 0.2)
            except TimeoutError:
                pass
            if link.failure:
                raise BenchError(link.failure)
            progress.update(link.received)
            if args.idle_timeout and time.monotonic() - link.last_seen > args.idle_timeout:
                break
        progress.update(link.received, final=True)
    finally:
        sys.stdout.flush()
        await link.close()
    return 0


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except (BenchError, OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
