"""The composition root: builds the broker from the config, opens the doors, handles signals."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import signal
import sys
import time

from leveret.amqp.properties import WIRE_PROPERTIES
from leveret.core.broker import Broker
from leveret.store.journal import DefinitionsJournal
from leveret.store.message_store import MessageStore

from .alarms import AlarmWatch
from .amqp_door import AMQPConnection
from .config import Config
from .definitions import restore_definitions, stop_recording
from .durability import GroupCommitter
from .http import HttpDoor
from .memory import MemoryWatch, total_memory
from .tls import enabled as tls_enabled
from .tls import server_context
from .zmq_door import ZmqDoor

log = logging.getLogger("leveret")
TICK = 0.02  # s between runs of the broker's timers (message TTL is honoured to about this)


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.broker = Broker()
        self.connections: set[AMQPConnection] = set()
        self._servers: list[asyncio.Server] = []
        self.stopped = asyncio.Event()
        self.store: MessageStore | None = None
        self.committer: GroupCommitter | None = None
        self.memory: MemoryWatch | None = None
        self.alarms: AlarmWatch | None = None  # memory and disk alarms (Broker.alarms)
        self._tls_servers: list[asyncio.Server] = []
        self.journal: DefinitionsJournal | None = None
        self.zmq: ZmqDoor | None = None
        self.http: HttpDoor | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self._next_timeout_check = 0.0
        self.exit_code = 0
        self._stop = asyncio.Event()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        self.journal = restore_definitions(self.broker, cfg.data_dir, self._fatal, cfg.journal_compact_after)
        self._open_message_store()  # after the definitions: it restores messages into durable queues
        hosts = list(cfg.hosts)
        bound = []
        for host in hosts:
            try:
                srv = await loop.create_server(
                    lambda: AMQPConnection(self.broker, cfg, self.connections, self.committer),
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
        if tls_enabled(cfg):
            await self._listen_tls(bound)
        self.zmq = ZmqDoor(self.broker, cfg, self.committer)
        self.zmq.start()
        self.http = HttpDoor(self)
        await self.http.start()
        if self.memory is not None:
            self.memory.start()
        self.broker.consumer_timeout = cfg.consumer_timeout
        self._ticker = loop.call_later(TICK, self._tick)
        gc.collect()
        gc.freeze()  # the start-up objects never die; keep the collector off them
        # The fsync thread needs the GIL back to report; the default 5 ms switch interval would add
        # up to 5 ms to every group commit while the loop is busy.
        sys.setswitchinterval(0.0005)

    def _open_message_store(self) -> None:
        started = time.monotonic()
        marker = os.path.join(self.config.data_dir, "clean-shutdown")
        clean = os.path.exists(marker)
        if clean:
            os.unlink(marker)
        store = MessageStore(os.path.join(self.config.data_dir, "msgs"), self.config.segment_size)
        durable = {q.uid: q for vh in self.broker.vhosts.values() for q in vh.queues.values() if q.durable}
        report, held = store.open(durable)
        restored = 0
        for vh in self.broker.vhosts.values():
            vh.store = store
            for q in vh.queues.values():
                q.store = store
        for uid, positions in held.items():
            durable[uid].restore(positions, WIRE_PROPERTIES)  # loads messages only for priorities and TTLs
            restored += len(positions)
        self.store = store
        self.broker.store = store  # for vhosts added at run time
        self.committer = GroupCommitter(store, self._fatal)
        cfg = self.config
        limit = cfg.memory_limit or int(total_memory() * cfg.memory_high_watermark)
        self.memory = MemoryWatch(store, limit, cfg.alarm_interval)
        self.alarms = AlarmWatch(self.broker, self.connections, cfg.data_dir, limit, cfg.disk_free_limit)
        self.memory.on_sample = self.alarms.sample
        log.info(
            "message store: %s stop; %d messages recovered into %d queues in %.3f s (%s)",
            "clean" if clean else "UNCLEAN",
            restored,
            len(held),
            time.monotonic() - started,
            report.summary(),
        )

    def _fatal(self, exc: BaseException) -> None:
        """The store failed: stop serving rather than pretend (nothing it covered is confirmed)."""
        self.exit_code = 1
        for conn in list(self.connections):
            conn.shutdown(internal_error=True)
        self._stop.set()

    async def _listen_tls(self, hosts: list[str]) -> None:
        """The AMQPS listener, on the hosts the plain one listens on."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        context = server_context(cfg)
        for host in hosts:
            srv = await loop.create_server(
                lambda: AMQPConnection(self.broker, cfg, self.connections, self.committer),
                host,
                self.amqps_port if self._tls_servers else cfg.amqps_port,  # port 0: the same one everywhere
                reuse_address=True,
                backlog=1024,
                ssl=context,
                ssl_handshake_timeout=cfg.handshake_timeout,
            )
            self._tls_servers.append(srv)
            self._servers.append(srv)
        log.info("AMQP 0-9-1 over TLS listening on %s port %d", ", ".join(hosts), self.amqps_port)

    @property
    def amqps_port(self) -> int:
        for srv in self._tls_servers:
            for sock in srv.sockets:
                return int(sock.getsockname()[1])
        return self.config.amqps_port

    @property
    def port(self) -> int:
        for srv in self._servers:
            for sock in srv.sockets:
                return int(sock.getsockname()[1])
        return self.config.amqp_port

    def _tick(self) -> None:
        """Queue timers (TTL, queue expiry) every TICK; consumer timeouts once a second."""
        loop = asyncio.get_running_loop()
        try:
            self.broker.tick()
            now = loop.time()
            if now >= self._next_timeout_check:
                self._next_timeout_check = now + 1.0
                self.broker.check_consumer_timeouts()
            if self.committer is not None:
                self.committer.poke()  # dead-lettered persistent messages go to disk like any publish
        except Exception:  # a timer must never stop ticking
            log.exception("timer tick failed")
        self._ticker = loop.call_later(TICK, self._tick)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self.memory is not None:
            self.memory.stop()
        if self.zmq is not None:
            self.zmq.stop()
        if self.http is not None:
            await self.http.stop()
        for srv in self._servers:
            srv.close()
        for conn in list(self.connections):
            conn.shutdown()
        await _connections_gone(self.connections, 2.0)
        stop_recording(self.broker, self.journal)  # after the sessions closed (see stop_recording)
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 2)
        if self.committer is not None and not self.committer.failed:
            self.committer.close()
            _write_marker(os.path.join(self.config.data_dir, "clean-shutdown"))
        self.stopped.set()

    async def run_forever(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self._stop.set)
        await self._stop.wait()
        log.info("shutting down")
        await self.stop()


async def _connections_gone(connections: set[AMQPConnection], timeout: float) -> None:
    """Let closed connections' sessions end (``connection_lost`` runs on a later loop turn)."""
    deadline = time.monotonic() + timeout
    while connections and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def _write_marker(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"clean\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def raise_file_limit() -> int:
    """Lift the soft limit on open files to the hard one: every connection is a descriptor, and the
    usual soft default (1,024) would cap the broker near a thousand clients. Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, want, exc)
        return soft
    return want


def serve(config: Config) -> int:
    fast = install_uvloop()
    files = raise_file_limit()
    log.info("Leveret starting (event loop: %s; open-file limit %d)", "uvloop" if fast else "asyncio", files)
    server = Server(config)
    asyncio.run(server.run_forever())
    return server.exit_code
