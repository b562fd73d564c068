"""The composition root: builds the broker from the config, opens the doors, handles signals."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal

from leveret.core.broker import Broker

from .amqp_door import AMQPConnection
from .config import Config

log = logging.getLogger("leveret")


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.broker = Broker()
        self.connections: set[AMQPConnection] = set()
        self._servers: list[asyncio.Server] = []
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        hosts = list(cfg.hosts)
        bound = []
        for host in hosts:
            try:
                srv = await loop.create_server(
                    lambda: AMQPConnection(self.broker, cfg, self.connections),
                    host,
                    cfg.amqp_port,
                    reuse_address=True,
                    backlog=1024,
                )
            except OSError as exc:
                if len(hosts) > 1 and host == "::1":
                    log.warning("not listening on %s: %s", host, exc)
                    continue
                raise
            self._servers.append(srv)
            bound.append(host)
        log.info("AMQP 0-9-1 listening on %s port %d", ", ".join(bound), self.port)
        gc.collect()
        gc.freeze()  # the start-up objects never die; keep the collector off them

    @property
    def port(self) -> int:
        for srv in self._servers:
            for sock in srv.sockets:
                return int(sock.getsockname()[1])
        return self.config.amqp_port

    async def stop(self) -> None:
        for srv in self._servers:
            srv.close()
        for conn in list(self.connections):
            conn.shutdown()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 2)
        self.stopped.set()

    async def run_forever(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
        await self.stop()


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def serve(config: Config) -> None:
    fast = install_uvloop()
    log.info("Leveret starting (event loop: %s)", "uvloop" if fast else "asyncio")
    asyncio.run(Server(config).run_forever())
