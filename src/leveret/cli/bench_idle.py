"""``leveret bench --idle-connections N``: how many idle connections a broker holds, and at what cost.

Theory of operation: raise this process's open-file limit to its hard limit (one descriptor per
connection), then open N AMQP connections, each with one channel: the first alone (a broker that
caches logins then pays its password hash once), the rest with at most ``--connect-concurrency``
handshakes in flight and ``--connect-timeout`` seconds each. A broker out of descriptors stops
accepting: its handshakes time out, and once a whole window of them has failed no more are tried.
The open connections are held ``--hold`` seconds -- the line ``bench: N idle connections open;
holding S s`` on stderr tells a benchmark driver to sample the broker's memory now -- then closed.
The JSON line says how many opened, how many were still open after the hold, and the first failure.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from typing import TYPE_CHECKING, Any

from leveret.amqp import methods as m
from leveret.amqp.client import ClientConnection

from .bench_links import BenchError, Link

if TYPE_CHECKING:
    from .bench import Target


def raise_nofile() -> int:
    """Set the soft RLIMIT_NOFILE to the hard limit (capped at 1M when unlimited); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass  # keep what we have; the JSON line reports it
    return soft


async def open_idle(target: Target, timeout: float) -> Link:
    """One connection with one open channel, or an exception; a half-open one is closed, not leaked."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    conn = ClientConnection(target.username, target.password, target.vhost)
    connect = loop.create_connection(lambda: Link(conn), target.host, target.port)
    _, link = await asyncio.wait_for(connect, timeout)
    try:
        await asyncio.wait_for(link.opened, max(0.001, deadline - loop.time()))
        await link.call(m.ChannelOpen(), m.ChannelOpenOk, timeout=max(0.001, deadline - loop.time()))
    except BaseException:
        link.abort()
        raise
    return link


async def hold_idle(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    usage0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    nofile = raise_nofile()
    n, window = args.idle_connections, args.connect_concurrency
    links: list[Link] = []
    failures: list[str] = []
    gate = asyncio.Semaphore(window)
    attempted = 0

    async def one() -> None:
        nonlocal attempted
        async with gate:
            if len(failures) >= window:
                return  # a whole window failed: the broker has stopped accepting
            attempted += 1
            try:
                links.append(await open_idle(target, args.connect_timeout))
            except TimeoutError:
                failures.append(f"no connection with an open channel within {args.connect_timeout} s")
            except (BenchError, OSError) as exc:
                failures.append(str(exc) or type(exc).__name__)

    if n:
        await one()  # alone: a broker that caches a successful login pays its password KDF once, not per racer
    await asyncio.gather(*(one() for _ in range(n - 1)))
    open_s = time.monotonic() - t0
    print(f"bench: {len(links)} idle connections open; holding {args.hold} s", file=sys.stderr, flush=True)
    await asyncio.sleep(args.hold)
    held = sum(1 for link in links if link.transport is not None and not link.failure)
    await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - usage0.ru_utime - usage0.ru_stime
    elapsed = time.monotonic() - t0
    return {
        "mode": "idle",
        "uri": f"amqp://{target.host}:{target.port}/",
        "idle_connections": n,
        "attempted": attempted,
        "opened": len(links),
        "failed": len(failures),
        "first_failure": failures[0] if failures else "",
        "held": held,
        "open_s": round(open_s, 3),
        "hold_s": args.hold,
        "nofile": nofile,
        "duration_s": round(elapsed, 3),
        "cpu_s": round(cpu, 3),
        "cpu_cores": round(cpu / elapsed, 3),
    }
