"""``leveret bench``: an AMQP 0-9-1 load generator over real sockets, in the spirit of RabbitMQ PerfTest.

Theory of operation: one process, one event loop (uvloop), one connection per publisher and per
consumer (``bench_links``) plus a control connection that declares the queue, purges it before the
run and deletes it after. Consumers start first, then publishers; for ``--duration`` seconds a
progress line per second goes to stderr; then the publishers stop, the counters are read, and one
JSON line goes to stdout: publish and consume rates (the median of the per-second samples and the
overall average, msg/s), latency percentiles (ms, from the timestamp in each body) and the CPU
seconds this process used during the run (to show it was not the bottleneck).

Backlog mode: ``--publish-count N`` makes each publisher stop after N messages and ends the run once
they are confirmed and consumed (``--duration`` is then only a cap); ``--keep-queue`` leaves the
queue's contents alone (no purge, no delete), so ``--consumers 0 --publish-count N --keep-queue``
builds a backlog and ``--publishers 0 --keep-queue`` drains it (the run ends when the consumers have
received what the queue held at start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from leveret.amqp import methods as m
from leveret.amqp.client import ClientConnection

from .bench_links import BenchError, ConsumerLink, Link, PublisherLink, latency_summary

L = TypeVar("L", bound=Link)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="AMQP load generator (publish/consume rates, latency)",
        description="Publish and consume over real AMQP connections; progress on stderr, one JSON line on stdout.",
    )
    p.add_argument("--uri", default="amqp://guest:guest@127.0.0.1:5672/", help="broker URI (%(default)s)")
    p.add_argument("--publishers", type=int, default=1, help="publisher connections (1)")
    p.add_argument("--consumers", type=int, default=1, help="consumer connections (1)")
    p.add_argument("--size", type=int, default=16, help="body size in bytes; >= 8 carries a timestamp (16)")
    p.add_argument("--prefetch", type=int, default=1000, help="consumer prefetch count, 0 = unlimited (1000)")
    p.add_argument(
        "--multi-ack-every", type=int, default=100, help="ack every N deliveries with multiple=true; 0/1 = each (100)"
    )
    p.add_argument("--auto-ack", action="store_true", help="consume with no_ack=true")
    p.add_argument("--duration", type=float, default=20.0, help="seconds to run (20)")
    p.add_argument("--queue", default="", help="queue name (default: leveret-bench-<pid>)")
    p.add_argument("--persistent", action="store_true", help="durable queue and delivery_mode=2 messages")
    p.add_argument("--confirm", type=int, default=0, help="publisher confirm window (unconfirmed publishes), 0 = off")
    p.add_argument("--rate", type=float, default=0.0, help="publish rate per publisher in msg/s, 0 = unlimited")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--publish-count",
        type=int,
        default=0,
        help="each publisher publishes N messages then stops; the run ends once they are confirmed (with"
        " --confirm) and consumed (with consumers), or at --duration; 0 = publish for --duration (0)",
    )
    p.add_argument(
        "--keep-queue",
        action="store_true",
        help="do not purge the queue at start nor delete it at the end; with --publishers 0 the run ends"
        " once the consumers have received the messages the queue held at start",
    )


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    username: str
    password: str
    vhost: str


def parse_uri(uri: str) -> Target:
    """``amqp://user:pass@host:port/vhost``; an empty path or ``/`` is the default vhost ``/``."""
    parts = urlsplit(uri)
    if parts.scheme != "amqp":
        raise ValueError(f"only amqp:// URIs are supported, not {uri!r}")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    return Target(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5672,
        username=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        vhost=unquote(path) if path else "/",
    )


async def _connect(target: Target, make: type[L], *args: Any) -> L:
    loop = asyncio.get_running_loop()
    conn = ClientConnection(target.username, target.password, target.vhost)
    _, link = await loop.create_connection(lambda: make(conn, *args), target.host, target.port)
    await asyncio.wait_for(link.opened, 10)
    return link


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Run:
    """One benchmark run: the links, the per-second samples, the result."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.target = parse_uri(args.uri)
        self.queue = args.queue or f"leveret-bench-{os.getpid()}"
        self.control: Link | None = None
        self.publishers: list[PublisherLink] = []
        self.consumers: list[ConsumerLink] = []
        self.publish_samples: list[float] = []
        self.consume_samples: list[float] = []
        self.backlog = 0  # messages the queue held at start (only with --keep-queue)

    def published(self) -> int:
        return sum(p.sent for p in self.publishers)

    def consumed(self) -> int:
        return sum(c.received for c in self.consumers)

    async def setup(self) -> None:
        a = self.args
        self.control = await _connect(self.target, Link)
        await self.control.open_channel()
        declare = m.QueueDeclare(0, self.queue, False, a.persistent, False, False, False, {})
        declared = await self.control.call(declare, m.QueueDeclareOk)
        if a.keep_queue:
            assert isinstance(declared, m.QueueDeclareOk)
            self.backlog = declared.message_count
        else:
            await self.control.call(m.QueuePurge(0, self.queue, False), m.QueuePurgeOk)
        timed = a.size >= 8
        every = a.multi_ack_every
        if a.prefetch and every > a.prefetch:
            every = a.prefetch  # never wait for more acks than the prefetch window lets arrive
        for i in range(a.consumers):
            c = await _connect(self.target, ConsumerLink, every, a.auto_ack, timed)
            await c.setup(self.queue, a.prefetch, f"bench-{i}")
            self.consumers.append(c)
        for _ in range(a.publishers):
            p = await _connect(
                self.target, PublisherLink, self.queue, a.size, a.persistent, a.confirm, a.rate, a.publish_count
            )
            await p.setup()
            self.publishers.append(p)

    async def measure(self) -> dict[str, Any]:
        a = self.args
        cpu0, t0 = _cpu(), time.monotonic()
        for p in self.publishers:
            p.start()
        last_t, last_pub, last_con = t0, 0, 0
        lat_seen = [0] * len(self.consumers)
        second = 0
        while True:
            second += 1
            deadline = t0 + min(second, a.duration)
            finished = await self._wait(deadline)
            self._check_links()
            now, pub, con = time.monotonic(), self.published(), self.consumed()
            if now - last_t >= 0.5:  # a last fraction of a second is too short to be a sample
                self.publish_samples.append((pub - last_pub) / (now - last_t))
                self.consume_samples.append((con - last_con) / (now - last_t))
                if not a.quiet:
                    self._progress(now - t0, lat_seen)
            last_t, last_pub, last_con = now, pub, con
            if now - t0 >= a.duration or finished:
                break
        for p in self.publishers:
            p.stop()
        if a.keep_queue or a.publish_count:
            for c in self.consumers:
                c.ack_rest()  # leave nothing unacked to be requeued when the link closes
        elapsed, cpu = max(1e-6, time.monotonic() - t0), _cpu() - cpu0  # a drain of nothing ends at once
        return self._result(elapsed, cpu, lat_seen)

    def bounded(self) -> bool:
        """The run has an end of its own: a publish count, or a drain of a kept queue."""
        return bool(self.args.publish_count) or (not self.publishers and self.args.keep_queue)

    def finished(self) -> bool:
        if not all(p.done() for p in self.publishers):
            return False
        return not self.consumers or self.consumed() >= self.backlog + self.published()

    async def _wait(self, deadline: float) -> bool:
        """Sleep until ``deadline``; a bounded run wakes every 5 ms and returns True once finished."""
        if not self.bounded():
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            return False
        while not self.finished():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._check_links()
            await asyncio.sleep(min(0.005, left))
        return True

    def _check_links(self) -> None:
        """A link the broker closed mid-run makes the whole run invalid: say which and why."""
        named: list[tuple[str, Link]] = [(f"publisher {i + 1}", p) for i, p in enumerate(self.publishers)]
        named += [(f"consumer {i + 1}", c) for i, c in enumerate(self.consumers)]
        for name, link in named:
            if link.failure:
                raise BenchError(f"{name}: {link.failure}")

    def _progress(self, elapsed: float, lat_seen: list[int]) -> None:
        recent: list[int] = []
        for i, c in enumerate(self.consumers):
            recent += c.latencies[lat_seen[i] :]
            lat_seen[i] = len(c.latencies)
        lat = latency_summary(recent)
        text = f", latency p50 {lat['p50']} ms, p99 {lat['p99']} ms" if lat else ""
        print(
            f"[{elapsed:5.1f}s] sent {self.publish_samples[-1]:,.0f} msg/s, "
            f"received {self.consume_samples[-1]:,.0f} msg/s{text}",
            file=sys.stderr,
            flush=True,
        )

    def _result(self, elapsed: float, cpu: float, lat_seen: list[int]) -> dict[str, Any]:
        a = self.args
        published, consumed = self.published(), self.consumed()
        samples: list[int] = []
        for c in self.consumers:
            samples += c.latencies
        return {
            "uri": f"amqp://{self.target.host}:{self.target.port}/",
            "queue": self.queue,
            "publishers": a.publishers,
            "consumers": a.consumers,
            "size": a.size,
            "prefetch": a.prefetch,
            "multi_ack_every": a.multi_ack_every,
            "auto_ack": a.auto_ack,
            "persistent": a.persistent,
            "confirm": a.confirm,
            "rate": a.rate,
            "publish_count": a.publish_count,
            "keep_queue": a.keep_queue,
            "backlog": self.backlog,
            "duration_s": round(elapsed, 3),
            "published": published,
            "consumed": consumed,
            "confirmed": sum(p.confirmed for p in self.publishers),
            "nacked": sum(p.nacked for p in self.publishers),
            "publish_rate": round(_median(self.publish_samples)),
            "consume_rate": round(_median(self.consume_samples)),
            "publish_rate_overall": round(published / elapsed),
            "consume_rate_overall": round(consumed / elapsed),
            "publish_samples": [round(x) for x in self.publish_samples],
            "consume_samples": [round(x) for x in self.consume_samples],
            "latency_ms": latency_summary(samples),
            "latency_samples": len(samples),
            "cpu_s": round(cpu, 3),
        }

    async def teardown(self) -> None:
        for p in self.publishers:
            p.stop()
        links: list[Link] = [*self.publishers, *self.consumers]
        if self.control is not None:
            links.append(self.control)
            if not self.args.keep_queue:
                await self._delete_queue(self.control)
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)

    async def _delete_queue(self, control: Link) -> None:
        delete = m.QueueDelete(0, self.queue, False, False, False)
        try:
            if control.failure:  # the broker closed its channel (a failed set-up): use a fresh link
                control = await _connect(self.target, Link)
                await control.open_channel()
            try:
                await control.call(delete, m.QueueDeleteOk, timeout=5)
            finally:
                if control is not self.control:
                    await control.close()
        except (BenchError, OSError, TimeoutError) as exc:
            print(f"bench: could not delete queue {self.queue!r}: {exc}", file=sys.stderr)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    run = Run(args)
    try:
        await run.setup()
        return await run.measure()
    finally:
        await run.teardown()


def run(args: argparse.Namespace) -> int:
    if args.publishers < 0 or args.consumers < 0 or args.publishers + args.consumers == 0:
        raise SystemExit("bench: need at least one publisher or consumer")
    if args.size < 0 or args.duration <= 0 or args.publish_count < 0:
        raise SystemExit("bench: --size and --publish-count must be >= 0 and --duration > 0")
    from leveret.server.runtime import install_uvloop

    install_uvloop()
    try:
        result = asyncio.run(_bench(args))
    except (BenchError, OSError, TimeoutError, ValueError) as exc:
        print(f"bench: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0
