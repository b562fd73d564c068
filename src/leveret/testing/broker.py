"""A Leveret broker running in this process, on a background thread with its own event loop.

Why in-process rather than a ``leveret serve`` subprocess: start-up is the point of a test fixture.
Measured here, a subprocess takes about 0.2 s to accept connections (a fresh interpreter importing
the broker), the in-process broker about 5 ms once ``leveret.server`` is imported (about 0.1 s, paid
once per test session). In-process also lets the fixture see the broker's state, which is how it
removes what a test declared (see :meth:`LeveretBroker.cleanup`) without a management API. Clients
still talk to it over a real TCP socket, so pika, aio-pika or kombu code is exercised exactly as
against a separate broker.

What it costs, and how it is contained:

- the broker shares the GIL with the tests; a test that publishes and consumes through the broker
  is slower than against a separate process, never wrong;
- ``Server.start`` tunes process-wide settings for a dedicated broker process (``gc.freeze`` and a
  short thread switch interval); both are put back as they were once the broker has started;
- the memory watch reads the whole process's size, so transient messages page out to the data
  directory when the *test process* grows past a fifth of physical memory (the broker's default);
- ZeroMQ: the door is off (its three ports are 0), so the broker never binds the fixed 5555-5557 of
  a developer's broker; the test broker speaks AMQP only.

The broker listens on 127.0.0.1 on a port the kernel chooses (``amqp_port=0``), so there is no race
for a "free" port, and keeps its data in a directory the caller owns (a pytest temporary directory).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from leveret.server.runtime import Server

T = TypeVar("T")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class LeveretBroker:
    """A broker on a background thread; ``url`` is its AMQP URL (user guest, vhost ``/``)."""

    host = "127.0.0.1"

    def __init__(self, data_dir: Path, **settings: object) -> None:
        self.data_dir = Path(data_dir)
        self.settings = settings  # Config fields to override (limits, TLS, loopback_addresses, ...)
        self.port = 0
        self.startup_seconds = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._done: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/"

    @classmethod
    def start(cls, data_dir: Path, **settings: object) -> LeveretBroker:
        """Start a broker and return once its AMQP port accepts connections; ``settings`` override
        fields of its ``Config``."""
        began = time.perf_counter()
        broker = cls(data_dir, **settings)
        broker._start()
        broker.startup_seconds = time.perf_counter() - began
        return broker

    def _start(self) -> None:
        from leveret.server.config import Config
        from leveret.server.runtime import Server

        self.data_dir.mkdir(parents=True, exist_ok=True)
        settings: dict[str, object] = {
            "hosts": (self.host,),
            "amqp_port": 0,
            "data_dir": str(self.data_dir),
            "zmq_publish_port": 0,  # 0 turns each ZeroMQ socket off: the door binds nothing
            "zmq_subscribe_port": 0,
            "zmq_push_port": 0,
            "http_port": 0,  # the HTTP door off: 15672 may belong to a developer's broker
            **self.settings,
        }
        config = Config(**settings)  # type: ignore[arg-type]
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[Server] = concurrent.futures.Future()

        async def main() -> None:
            server = Server(config)
            done = asyncio.Event()
            switch, frozen = sys.getswitchinterval(), gc.get_freeze_count()
            try:
                await server.start()
            except BaseException as exc:
                started.set_exception(exc)
                return
            finally:
                sys.setswitchinterval(switch)
                if not frozen:
                    gc.unfreeze()
            self._done = done
            started.set_result(server)
            await done.wait()
            await server.stop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="leveret-broker", daemon=True)
        self._thread.start()
        self._server = started.result(START_TIMEOUT)
        self.port = self._server.port

    def call(self, fn: Callable[[Server], T]) -> T:
        """Run ``fn(server)`` on the broker's event loop (the only thread that may touch its state)."""
        loop, server = self._loop, self._server
        if loop is None or server is None:
            raise RuntimeError("the broker is not running")

        async def on_loop() -> T:
            return fn(server)

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(STOP_TIMEOUT)

    def cleanup(self, prefix: str) -> tuple[int, int]:
        """Delete every queue and exchange whose name starts with ``prefix`` (consumers still attached
        are cancelled, as by ``queue.delete``); returns (queues, exchanges) deleted."""
        if not prefix:
            raise ValueError("refusing to delete everything: empty prefix")

        def drop(server: Server) -> tuple[int, int]:
            queues = exchanges = 0
            for vhost in server.broker.vhosts.values():
                for queue in [q for name, q in vhost.queues.items() if name.startswith(prefix)]:
                    vhost.remove_queue(queue)
                    queues += 1
                for name in [n for n in vhost.exchanges if n.startswith(prefix)]:
                    vhost.delete_exchange(name)
                    exchanges += 1
            return queues, exchanges

        return self.call(drop)

    def stop(self) -> None:
        """Close the connections, stop the broker cleanly (its data directory is left as it is)."""
        loop, done, thread = self._loop, self._done, self._thread
        if loop is None or thread is None:
            return
        if done is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed: the broker is down
                loop.call_soon_threadsafe(done.set)
        thread.join(STOP_TIMEOUT)
        self._loop = self._server = self._thread = self._done = None
