"""``leveret bench``: an AMQP 0-9-1 load generator over real sockets, in the spirit of RabbitMQ PerfTest.

Theory of operation: one process, one event loop (uvloop), one connection per publisher and per
consumer (``bench_links``) plus a control connection that declares the topology (queues; with
``--fanout``, a fanout exchange bound to them), purges the queues before the run and deletes them
after. Consumers start first, then publishers; for ``--duration`` seconds a progress line per second
goes to stderr; then the publishers stop, the counters are read, and one JSON line goes to stdout:
publish and consume rates (the median of the per-second samples and the overall average, msg/s),
latency percentiles (ms, from the timestamp in each body) and the CPU seconds this process used
during the run (to show it was not the bottleneck).

Topology: ``--queues N`` declares N queues; publisher i publishes to queue i mod N (or, with fewer
publishers than queues, takes turns over every P-th queue, one burst each) and consumers are spread
the same way (one channel consuming from several queues when there are fewer consumers).
``--fanout N`` declares N queues bound to one fanout exchange, one consumer each; publishers publish
to the exchange, so each publish is N deliveries.

Modes besides the timed run:

- ``--backlog N``: publish N messages with no consumer, wait until the queues hold them all (polled
  with passive declares), print ``bench: backlog of N messages published in X s`` on stderr (a
  benchmark driver samples the broker's memory then; ``--backlog-pause`` gives it time), then attach
  the consumers and drain; the JSON line gains ``publish_s`` and ``drain_s``.
- ``--idle-connections N`` (``bench_idle``): open N connections with a channel each, hold them
  ``--hold`` seconds, close them; reports how many opened.
- ``--publish-count N`` makes each publisher stop after N messages and ends the run once they are
  confirmed and consumed (``--duration`` is then only a cap); ``--keep-queue`` leaves the queue's
  contents alone (no purge, no delete), so ``--consumers 0 --publish-count N --keep-queue`` builds a
  backlog and ``--publishers 0 --keep-queue`` drains it (the run ends when the consumers have
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from leveret.amqp import methods as m
from leveret.amqp.client import ClientConnection

from .bench_links import BenchError, ConsumerLink, Link, PublisherLink, latency_summary

L = TypeVar("L", bound=Link)
DEFAULT_DURATION = 20.0
BACKLOG_CAP = 3600.0  # --backlog: the default cap on each phase when --duration is not given


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
    p.add_argument(
        "--duration", type=float, default=None, help="seconds to run (20); with --backlog a cap on each phase (3600)"
    )
    p.add_argument(
        "--queue", default="", help="queue name, or prefix with --queues/--fanout: <name>-1... (leveret-bench-<pid>)"
    )
    p.add_argument("--queues", type=int, default=1, help="queues; publishers and consumers spread over them (1)")
    p.add_argument(
        "--fanout", type=int, default=0, help="N queues bound to a fanout exchange, one consumer each; 0 = off (0)"
    )
    p.add_argument("--persistent", action="store_true", help="durable queue and delivery_mode=2 messages")
    p.add_argument("--confirm", type=int, default=0, help="publisher confirm window (unconfirmed publishes), 0 = off")
    p.add_argument("--rate", type=float, default=0.0, help="publish rate per publisher in msg/s, 0 = unlimited")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--latencies-out",
        default="",
        metavar="FILE",
        help="write every latency sample (µs, one per line, in order of arrival) to FILE, for histograms",
    )
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
    p.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="publish N messages (in total) with no consumer, wait until queued, then drain with the consumers (0)",
    )
    p.add_argument(
        "--backlog-pause", type=float, default=0.0, help="seconds between the publish and the drain phase (0)"
    )
    p.add_argument(
        "--idle-connections", type=int, default=0, help="open N connections with a channel each and hold them (0)"
    )
    p.add_argument("--hold", type=float, default=5.0, help="--idle-connections: seconds to hold them (5)")
    p.add_argument(
        "--connect-concurrency", type=int, default=100, help="--idle-connections: handshakes in flight (100)"
    )
    p.add_argument(
        "--connect-timeout", type=float, default=10.0, help="--idle-connections: seconds per connection (10)"
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


def share(items: Sequence[str], i: int, n: int) -> list[str]:
    """What link ``i`` of ``n`` serves: item ``i mod len`` if there are enough links, else every n-th."""
    if n >= len(items):
        return [items[i % len(items)]]
    return list(items[i::n])


def split(total: int, n: int) -> list[int]:
    """``total`` in ``n`` near-equal parts."""
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


class Run:
    """One benchmark run: the topology, the links, the per-second samples, the result."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.target = parse_uri(args.uri)
        base = args.queue or f"leveret-bench-{os.getpid()}"
        count = args.fanout or args.queues
        self.queue = base
        self.queues = [base] if count == 1 else [f"{base}-{i + 1}" for i in range(count)]
        self.exchange = f"{base}-fanout" if args.fanout else ""
        self.copies = len(self.queues) if args.fanout else 1  # deliveries per publish
        self.consumer_count = args.fanout if args.fanout and args.consumers else args.consumers
        self.control: Link | None = None
        self.publishers: list[PublisherLink] = []
        self.consumers: list[ConsumerLink] = []
        self.publish_samples: list[float] = []
        self.consume_samples: list[float] = []
        self.held = 0  # messages the queues held at start (only with --keep-queue)

    def published(self) -> int:
        return sum(p.sent for p in self.publishers)

    def consumed(self) -> int:
        return sum(c.received for c in self.consumers)

    # ------------------------------------------------------------------------------ set-up

    async def declare(self) -> None:
        a = self.args
        self.control = control = await _connect(self.target, Link)
        await control.open_channel()
        if self.exchange:
            declare_x = m.ExchangeDeclare(0, self.exchange, "fanout", False, a.persistent, False, False, False, {})
            await control.call(declare_x, m.ExchangeDeclareOk)
        for queue in self.queues:
            declare = m.QueueDeclare(0, queue, False, a.persistent, False, False, False, {})
            declared = await control.call(declare, m.QueueDeclareOk)
            if a.keep_queue:
                assert isinstance(declared, m.QueueDeclareOk)
                self.held += declared.message_count
            else:
                await control.call(m.QueuePurge(0, queue, False), m.QueuePurgeOk)
            if self.exchange:
                await control.call(m.QueueBind(0, queue, self.exchange, "", False, {}), m.QueueBindOk)

    async def connect_consumers(self) -> None:
        a = self.args
        every = a.multi_ack_every
        if a.prefetch and every > a.prefetch:
            every = a.prefetch  # never wait for more acks than the prefetch window lets arrive
        n = self.consumer_count
        for i in range(n):
            c = await _connect(self.target, ConsumerLink, every, a.auto_ack, a.size >= 8)
            await c.setup(share(self.queues, i, n), a.prefetch, f"bench-{i}")
            self.consumers.append(c)

    async def connect_publishers(self, counts: Sequence[int]) -> None:
        a = self.args
        keys = [""] if self.exchange else self.queues
        for i, count in enumerate(counts):
            p = await _connect(
                self.target,
                PublisherLink,
                share(keys, i, len(counts)),
                a.size,
                a.persistent,
                a.confirm,
                a.rate,
                count,
                self.exchange,
            )
            await p.setup()
            self.publishers.append(p)

    async def depth(self) -> int:
        """Messages ready in the run's queues (passive declares on the control link)."""
        assert self.control is not None
        total = 0
        for queue in self.queues:
            ok = await self.control.call(
                m.QueueDeclare(0, queue, True, False, False, False, False, {}), m.QueueDeclareOk
            )
            assert isinstance(ok, m.QueueDeclareOk)
            total += ok.message_count
        return total

    # --------------------------------------------------------------------------- timed run

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
        return self._result(elapsed, cpu)

    def bounded(self) -> bool:
        """The run has an end of its own: a publish count, or a drain of a kept queue."""
        return bool(self.args.publish_count) or (not self.publishers and self.args.keep_queue)

    def finished(self) -> bool:
        if not all(p.done() for p in self.publishers):
            return False
        return not self.consumers or self.consumed() >= self.held + self.published() * self.copies

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

    # ------------------------------------------------------------------------- backlog mode

    async def measure_backlog(self) -> dict[str, Any]:
        """Publish ``--backlog`` messages with no consumer, wait until queued, then drain them."""
        a = self.args
        expected = a.backlog * self.copies
        await self.connect_publishers(split(a.backlog, a.publishers))
        cpu0, t0 = _cpu(), time.monotonic()
        for p in self.publishers:
            p.start()
        meter = _Meter(t0, a.quiet, "published", self.published)
        depth = 0
        while True:
            await asyncio.sleep(0.01)
            self._check_links()
            meter.tick(self.publish_samples)
            if all(p.done() for p in self.publishers):
                depth = await self.depth()
                if depth >= expected:
                    break
            if time.monotonic() - t0 > a.duration:
                raise BenchError(f"backlog: {self.published():,} published, {depth:,} queued after {a.duration} s")
        publish_s, cpu_publish = time.monotonic() - t0, _cpu() - cpu0
        print(f"bench: backlog of {expected} messages published in {publish_s:.3f} s", file=sys.stderr, flush=True)
        await asyncio.sleep(a.backlog_pause)
        cpu1, t1 = _cpu(), time.monotonic()
        await self.connect_consumers()
        meter = _Meter(t1, a.quiet, "drained", self.consumed)
        while self.consumed() < expected:
            await asyncio.sleep(0.005)
            self._check_links()
            meter.tick(self.consume_samples)
            if time.monotonic() - t1 > a.duration:
                raise BenchError(f"backlog: {self.consumed():,} of {expected:,} drained after {a.duration} s")
        drain_s, cpu_drain = time.monotonic() - t1, _cpu() - cpu1
        for c in self.consumers:
            c.ack_rest()
        result = self._result(publish_s + drain_s, cpu_publish + cpu_drain)
        result.update(
            mode="backlog",
            backlog_messages=expected,
            publish_s=round(publish_s, 3),
            drain_s=round(drain_s, 3),
            publish_rate_overall=round(self.published() / publish_s),
            consume_rate_overall=round(self.consumed() / drain_s),
            cpu_publish_s=round(cpu_publish, 3),
            cpu_drain_s=round(cpu_drain, 3),
        )
        return result

    # ------------------------------------------------------------------------------ report

    def _check_links(self) -> None:
        """A link the broker closed mid-run makes the whole run invalid: say which and why."""
        named: list[tuple[str, Link]] = [(f"publisher {i + 1}", p) for i, p in enumerate(self.publishers)]
        named += [(f"consumer {i + 1}", c) for i, c in enumerate(self.consumers)]
        if self.control is not None:
            named.append(("control", self.control))
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

    def _result(self, elapsed: float, cpu: float) -> dict[str, Any]:
        a = self.args
        published, consumed = self.published(), self.consumed()
        samples: list[int] = []
        for c in self.consumers:
            samples += c.latencies
        if a.latencies_out:
            Path(a.latencies_out).write_text("".join(f"{x}\n" for x in samples))
        return {
            "mode": "rate",
            "uri": f"amqp://{self.target.host}:{self.target.port}/",
            "queue": self.queue,
            "queues": len(self.queues),
            "fanout": a.fanout,
            "publishers": a.publishers,
            "consumers": len(self.consumers),
            "size": a.size,
            "prefetch": a.prefetch,
            "multi_ack_every": a.multi_ack_every,
            "auto_ack": a.auto_ack,
            "persistent": a.persistent,
            "confirm": a.confirm,
            "rate": a.rate,
            "publish_count": a.publish_count,
            "keep_queue": a.keep_queue,
            "backlog": self.held,
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
            "cpu_cores": round(cpu / elapsed, 3),
        }

    async def teardown(self) -> None:
        for p in self.publishers:
            p.stop()
        links: list[Link] = [*self.publishers, *self.consumers]
        if self.control is not None:
            links.append(self.control)
            if not self.args.keep_queue:
                await self._delete_topology(self.control)
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)

    async def _delete_topology(self, control: Link) -> None:
        deletes: list[tuple[m.Method, type[m.Method]]] = [
            (m.QueueDelete(0, queue, False, False, False), m.QueueDeleteOk) for queue in self.queues
        ]
        if self.exchange:
            deletes.append((m.ExchangeDelete(0, self.exchange, False, False), m.ExchangeDeleteOk))
        try:
            if control.failure:  # the broker closed its channel (a failed set-up): use a fresh link
                control = await _connect(self.target, Link)
                await control.open_channel()
            try:
                for method, reply in deletes:
                    await control.call(method, reply, timeout=5)
            finally:
                if control is not self.control:
                    await control.close()
        except (BenchError, OSError, TimeoutError) as exc:
            print(f"bench: could not delete {', '.join(self.queues)}: {exc}", file=sys.stderr)


class _Meter:
    """Per-second samples (and progress lines) of one growing count during a backlog phase."""

    def __init__(self, t0: float, quiet: bool, what: str, count: Any) -> None:
        self.t0, self.quiet, self.what, self.count = t0, quiet, what, count
        self.last_t, self.last_n = t0, 0

    def tick(self, samples: list[float]) -> None:
        now = time.monotonic()
        if now - self.last_t < 1.0:
            return
        n = self.count()
        samples.append((n - self.last_n) / (now - self.last_t))
        self.last_t, self.last_n = now, n
        if not self.quiet:
            print(f"[{now - self.t0:5.1f}s] {self.what} {n:,} ({samples[-1]:,.0f} msg/s)", file=sys.stderr, flush=True)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    if args.idle_connections:
        from .bench_idle import hold_idle

        return await hold_idle(parse_uri(args.uri), args)
    run = Run(args)
    try:
        await run.declare()
        if args.backlog:
            return await run.measure_backlog()
        await run.connect_consumers()
        await run.connect_publishers([args.publish_count] * args.publishers)
        return await run.measure()
    finally:
        await run.teardown()


def _check(args: argparse.Namespace) -> None:
    """Refuse combinations that make no sense; fill in the duration's default."""
    if args.duration is None:
        args.duration = BACKLOG_CAP if args.backlog else DEFAULT_DURATION
    if args.idle_connections < 0 or args.hold < 0 or args.connect_concurrency < 1 or args.connect_timeout <= 0:
        raise SystemExit("bench: --idle-connections, --hold must be >= 0, --connect-* > 0")
    if args.idle_connections:
        return
    if args.publishers < 0 or args.consumers < 0 or args.publishers + args.consumers == 0:
        raise SystemExit("bench: need at least one publisher or consumer")
    if args.size < 0 or args.duration <= 0 or args.publish_count < 0 or args.backlog < 0:
        raise SystemExit("bench: --size, --publish-count and --backlog must be >= 0 and --duration > 0")
    if args.queues < 1 or args.fanout < 0 or (args.fanout and args.queues != 1):
        raise SystemExit("bench: --queues must be >= 1; --fanout N declares its own N queues (no --queues)")
    if args.backlog and (args.publish_count or args.keep_queue or not args.publishers or not args.consumers):
        raise SystemExit("bench: --backlog needs publishers and consumers, and no --publish-count or --keep-queue")


def run(args: argparse.Namespace) -> int:
    _check(args)
    from leveret.server.runtime import install_uvloop

    install_uvloop()
    try:
        result = asyncio.run(_bench(args))
    except (BenchError, OSError, TimeoutError, ValueError) as exc:
        print(f"bench: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0
