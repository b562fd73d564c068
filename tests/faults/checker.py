"""The checker every fault test shares (RELIABILITY.md, "The checker every fault test shares").

Every published message carries a unique id, (publisher, sequence), and a checksum of its body; the
body is also derived from the id and the run's seed, so a delivered body can be compared byte for
byte with what was sent. The id is repeated in a header, so damaged properties show up too::

    body  = b"LVTF" | u16 publisher | u32 sequence | u32 payload length | payload | blake2b-16(all before)
    headers = {"lvt-id": "<publisher>:<sequence>"}

Publishers record each send as confirmed, nacked, returned (unroutable) or indeterminate (the
connection died first). Consumers record every delivery. After the faults, a quiet drain reads
what is left. Then (``Ledger.report()``):

- lost = confirmed but never delivered: must be 0;
- unexpected = delivered but never published: must be 0;
- corrupt = checksum or content mismatch: must be 0;
- duplicates and recovered-indeterminate are figures, not failures;
- and (promise 4) a message delivered again must come with redelivered=True, as must everything
  the drain reads after a kill.

The rest of the module is the machinery the fault tests share: aio-pika publishers and consumers
that reconnect after a crash, the drain, a power-cut simulation over the broker's data directory
(driven by the fsync log of ``leveret.store.faults``), a watcher that freezes the broker
(``SIGSTOP``) the moment a crash point is reached, and parsing of the broker's recovery log lines.
Every randomized run takes its seed from ``LEVERET_FAULT_SEED`` when set (to replay a failure) and
prints it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import os
import random
import re
import signal
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractIncomingMessage
from aiormq.exceptions import DeliveryError, PublishError

# A crash makes aiormq log every reset connection and refused reconnect at ERROR: expected here.
for _name in ("aiormq", "aio_pika"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)

SEED_ENV = "LEVERET_FAULT_SEED"
SYNC_LOG_ENV = "LEVERET_FAULT_SYNC_LOG"


def run_seed(default: int) -> int:
    """The seed of this run: ``LEVERET_FAULT_SEED`` if set, else ``default``; printed for replay."""
    seed = int(os.environ.get(SEED_ENV, default))
    print(f"fault seed: {seed} (replay with {SEED_ENV}={seed})")
    return seed


# ------------------------------------------------------------------------------- message ids

MAGIC = b"LVTF"
_HEAD = struct.Struct("<4sHII")  # magic, publisher, sequence, payload length
DIGEST = 16
ID_HEADER = "lvt-id"

MessageId = tuple[int, int]


class Outcome(enum.Enum):
    INDETERMINATE = "indeterminate"
    CONFIRMED = "confirmed"
    NACKED = "nacked"
    RETURNED = "returned"


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST).digest()


@dataclass
class Report:
    seed: int
    published: int
    confirmed: int
    nacked: int
    returned: int
    indeterminate: int
    deliveries: int
    lost: list[MessageId]
    unexpected: int
    corrupt: int
    duplicates: int  # deliveries beyond the first of each message
    recovered_indeterminate: int  # indeterminate sends that were delivered after all
    redelivered_first: int  # first deliveries flagged redelivered (expected after a crash)
    unflagged_repeats: int  # a message delivered again with redelivered=False: breaks promise 4
    examples: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"seed={self.seed} published={self.published} confirmed={self.confirmed} nacked={self.nacked} "
            f"returned={self.returned} indeterminate={self.indeterminate} deliveries={self.deliveries} "
            f"lost={len(self.lost)} unexpected={self.unexpected} corrupt={self.corrupt} "
            f"duplicates={self.duplicates} recovered_indeterminate={self.recovered_indeterminate} "
            f"redelivered_first={self.redelivered_first}"
        )

    def assert_ok(self, returned_allowed: bool = False) -> None:
        """The promises: nothing confirmed lost, nothing unexpected, nothing corrupt."""
        problems = []
        if self.lost:
            problems.append(f"{len(self.lost)} confirmed messages lost, e.g. {sorted(self.lost)[:10]}")
        if self.unexpected:
            problems.append(f"{self.unexpected} unexpected deliveries")
        if self.corrupt:
            problems.append(f"{self.corrupt} corrupt deliveries")
        if self.returned and not returned_allowed:
            problems.append(f"{self.returned} messages returned unroutable (bindings lost?)")
        if self.unflagged_repeats:
            problems.append(f"{self.unflagged_repeats} repeat deliveries with redelivered=False")
        if self.published and not self.confirmed:
            problems.append("nothing was confirmed: the test proved nothing")
        assert not problems, f"{self}\n" + "\n".join(problems + self.examples[:10])


class Ledger:
    """What was sent (and how each send ended) and what was delivered, for one run."""

    def __init__(self, seed: int, min_size: int = 16, max_size: int = 600) -> None:
        self.seed = seed
        self.min_size = min_size
        self.max_size = max_size
        self.outcomes: dict[MessageId, Outcome] = {}
        self.deliveries: Counter[MessageId] = Counter()
        self.redelivered_first = 0
        self.unflagged_repeats = 0
        self.unexpected = 0
        self.corrupt = 0
        self.examples: list[str] = []
        self._next_seq: Counter[int] = Counter()

    # ---- sending

    def expected_body(self, publisher: int, seq: int) -> bytes:
        h = hashlib.blake2b(f"{self.seed}/{publisher}/{seq}".encode(), digest_size=64).digest()
        size = self.min_size + int.from_bytes(h[:4], "little") % (self.max_size - self.min_size + 1)
        payload = (h * (size // len(h) + 1))[:size]
        head = _HEAD.pack(MAGIC, publisher, seq, size) + payload
        return head + _digest(head)

    def next_message(self, publisher: int) -> tuple[MessageId, bytes, dict[str, Any]]:
        """A new message of ``publisher``, recorded as sent (indeterminate until settled)."""
        seq = self._next_seq[publisher]
        self._next_seq[publisher] = seq + 1
        mid = (publisher, seq)
        self.outcomes[mid] = Outcome.INDETERMINATE
        return mid, self.expected_body(publisher, seq), {ID_HEADER: f"{publisher}:{seq}"}

    def settle(self, mid: MessageId, outcome: Outcome) -> None:
        self.outcomes[mid] = outcome

    # ---- receiving

    def delivered(self, body: bytes, headers: Mapping[str, Any] | None, redelivered: bool) -> MessageId | None:
        """Record one delivery; returns its id (None if unreadable)."""
        body = bytes(body)
        mid = self._identify(body)
        if mid is None:
            return None
        header = (headers or {}).get(ID_HEADER)
        if isinstance(header, bytes):
            header = header.decode("utf-8", "replace")
        if header != f"{mid[0]}:{mid[1]}":
            self._bad("corrupt", f"{mid}: header {ID_HEADER}={header!r}")
            return None
        if mid not in self.outcomes:
            self._bad("unexpected", f"{mid}: never published")
            return None
        if body != self.expected_body(*mid):
            self._bad("corrupt", f"{mid}: body differs from what was sent")
            return None
        if not self.deliveries[mid] and redelivered:
            self.redelivered_first += 1
        if self.deliveries[mid] and not redelivered:
            self.unflagged_repeats += 1
            if len(self.examples) < 50:
                self.examples.append(f"{mid}: delivered again with redelivered=False")
        self.deliveries[mid] += 1
        return mid

    def _identify(self, body: bytes) -> MessageId | None:
        if len(body) < _HEAD.size + DIGEST or body[:4] != MAGIC:
            self._bad("unexpected", f"not one of ours: {body[:32]!r}")
            return None
        _magic, publisher, seq, size = _HEAD.unpack_from(body)
        if len(body) != _HEAD.size + size + DIGEST or _digest(body[:-DIGEST]) != body[-DIGEST:]:
            self._bad("corrupt", f"({publisher}, {seq}): checksum mismatch ({len(body)} bytes)")
            return None
        return publisher, seq

    def _bad(self, kind: str, text: str) -> None:
        if kind == "corrupt":
            self.corrupt += 1
        else:
            self.unexpected += 1
        if len(self.examples) < 50:
            self.examples.append(f"{kind}: {text}")

    # ---- verdict

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes.values() if o is outcome)

    def report(self) -> Report:
        outcomes = self.outcomes
        lost = [mid for mid, o in outcomes.items() if o is Outcome.CONFIRMED and not self.deliveries[mid]]
        return Report(
            seed=self.seed,
            published=len(outcomes),
            confirmed=self.count(Outcome.CONFIRMED),
            nacked=self.count(Outcome.NACKED),
            returned=self.count(Outcome.RETURNED),
            indeterminate=self.count(Outcome.INDETERMINATE),
            deliveries=sum(self.deliveries.values()),
            lost=lost,
            unexpected=self.unexpected,
            corrupt=self.corrupt,
            duplicates=sum(n - 1 for n in self.deliveries.values() if n > 1),
            recovered_indeterminate=sum(
                1 for mid, o in outcomes.items() if o is Outcome.INDETERMINATE and self.deliveries[mid]
            ),
            redelivered_first=self.redelivered_first,
            unflagged_repeats=self.unflagged_repeats,
            examples=list(self.examples),
        )


# ----------------------------------------------------------------------------- AMQP clients

# What a broker crash looks like to an aio-pika client (the connection or channel is gone).
CLIENT_ERRORS: tuple[type[BaseException], ...] = (
    aio_pika.exceptions.AMQPError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    RuntimeError,
)


@dataclass(frozen=True)
class Target:
    """Where publishers send and consumers read: a durable queue, fed through ``exchange``
    (a durable direct exchange bound to the queue, or "" for the default exchange)."""

    url: str
    queue: str
    exchange: str = ""

    @property
    def routing_key(self) -> str:
        return self.queue

    async def declare(self) -> None:
        """Declare the queue, exchange and binding once, before the faults. Clients do not declare
        again after a crash: definitions lost by a restart then show up (returned messages, or a
        consumer that cannot find its queue) instead of being quietly re-created."""
        conn = await connect(self.url)
        try:
            channel = await conn.channel()
            queue = await channel.declare_queue(self.queue, durable=True)
            if self.exchange:
                ex = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.DIRECT, durable=True)
                await queue.bind(ex, self.routing_key)
        finally:
            await close_quietly(conn)

    async def exchange_of(self, channel: AbstractChannel) -> AbstractExchange:
        if not self.exchange:
            return channel.default_exchange
        return await channel.get_exchange(self.exchange, ensure=False)


async def connect(url: str, stop: asyncio.Event | None = None, timeout: float = 60.0) -> AbstractConnection:
    """Connect, retrying while the broker restarts (no event tells when it listens again)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await aio_pika.connect(url, timeout=5)
        except CLIENT_ERRORS:
            if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)


async def close_quietly(conn: AbstractConnection | None) -> None:
    if conn is not None and not conn.is_closed:
        with contextlib.suppress(*CLIENT_ERRORS):
            await asyncio.wait_for(conn.close(), 5)


def _closed_event(conn: AbstractConnection) -> asyncio.Event:
    closed = asyncio.Event()
    conn.close_callbacks.add(lambda *_: closed.set())
    return closed


@dataclass
class ClientStats:
    connections: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class Publisher:
    """Publishes persistent messages with confirms, ``window`` at a time, until ``stop`` (or
    ``limit`` messages); reconnects after a crash. In-flight sends at a crash stay indeterminate."""

    def __init__(
        self,
        ledger: Ledger,
        publisher: int,
        target: Target,
        stop: asyncio.Event,
        window: int = 32,
        limit: int | None = None,
    ) -> None:
        self.ledger = ledger
        self.publisher = publisher
        self.target = target
        self.stop = stop
        self.window = window
        self.limit = limit
        self.sent = 0
        self.stats = ClientStats()

    def _done(self) -> bool:
        return self.stop.is_set() or (self.limit is not None and self.sent >= self.limit)

    async def run(self) -> None:
        while not self._done():
            conn = None
            inflight: set[asyncio.Task[None]] = set()
            try:
                conn = await connect(self.target.url, self.stop)
                self.stats.connections += 1
                channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
                exchange = await self.target.exchange_of(channel)
                slots = asyncio.Semaphore(self.window)
                while not self._done() and not conn.is_closed and not channel.is_closed:
                    await slots.acquire()
                    if conn.is_closed or channel.is_closed:
                        break
                    self.sent += 1
                    task = asyncio.create_task(self._publish(exchange, slots))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
            except CLIENT_ERRORS as exc:
                self.stats.errors[type(exc).__name__] += 1
            finally:
                if inflight:
                    await asyncio.gather(*inflight, return_exceptions=True)
                await close_quietly(conn)

    async def _publish(self, exchange: AbstractExchange, slots: asyncio.Semaphore) -> None:
        mid, body, headers = self.ledger.next_message(self.publisher)
        message = aio_pika.Message(body, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        try:
            await exchange.publish(message, self.target.routing_key, mandatory=True)
        except DeliveryError:
            self.ledger.settle(mid, Outcome.NACKED)
        except PublishError:
            self.ledger.settle(mid, Outcome.RETURNED)
        except (*CLIENT_ERRORS, asyncio.CancelledError):
            pass  # indeterminate: the broker may or may not have it
        else:
            self.ledger.settle(mid, Outcome.CONFIRMED)
        finally:
            slots.release()


class Consumer:
    """Consumes with manual acks (prefetch ``prefetch``), recording every delivery, until ``stop``;
    reconnects after a crash."""

    def __init__(self, ledger: Ledger, target: Target, stop: asyncio.Event, prefetch: int = 200) -> None:
        self.ledger = ledger
        self.target = target
        self.stop = stop
        self.prefetch = prefetch
        self.received = 0
        self.stats = ClientStats()

    async def run(self) -> None:
        while not self.stop.is_set():
            conn = None
            try:
                conn = await connect(self.target.url, self.stop)
                self.stats.connections += 1
                closed = _closed_event(conn)
                channel = await conn.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=self.prefetch)
                queue = await channel.get_queue(self.target.queue, ensure=False)
                await queue.consume(self._on_message)
                await _first(self.stop.wait(), closed.wait())
            except CLIENT_ERRORS as exc:
                self.stats.errors[type(exc).__name__] += 1
            finally:
                await close_quietly(conn)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.ledger.delivered(message.body, message.headers, bool(message.redelivered))
        self.received += 1
        with contextlib.suppress(*CLIENT_ERRORS):
            await message.ack()


async def _first(*aws: Any) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


async def drain(ledger: Ledger, target: Target, timeout: float = 60.0, after_crash: bool = True) -> int:
    """The quiet drain: read every message left in the queue (nothing else may be connected);
    returns how many. Fails if the queue does not end up empty, or, ``after_crash`` (the broker
    was killed since anything was last delivered), if a message comes with redelivered=False:
    after an unclean restart every recovered message is redelivered (promise 4)."""
    conn = await connect(target.url)
    try:
        channel = await conn.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=2000)
        queue = await channel.declare_queue(target.queue, passive=True)
        assert queue.declaration_result is not None
        expected = queue.declaration_result.message_count
        got = 0
        unflagged: list[MessageId | None] = []
        done = asyncio.Event()

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal got
            mid = ledger.delivered(message.body, message.headers, bool(message.redelivered))
            if after_crash and not message.redelivered:
                unflagged.append(mid)
            got += 1
            if got >= expected:
                done.set()

        if expected:
            tag = await queue.consume(on_message, no_ack=True)
            try:
                await asyncio.wait_for(done.wait(), timeout)
            finally:
                await queue.cancel(tag)
        left = await channel.declare_queue(target.queue, passive=True)
        assert left.declaration_result is not None
        assert left.declaration_result.message_count == 0, "the queue still holds messages after the drain"
        assert await queue.get(no_ack=True, fail=False) is None
        assert not unflagged, f"recovered after a crash but redelivered=False: {unflagged[:10]} ({len(unflagged)})"
        return got
    finally:
        await close_quietly(conn)


# ------------------------------------------------------------------------------ broker side


@dataclass
class Recovery:
    clean: bool
    messages: int
    seconds: float
    line: str


_RECOVERY = re.compile(r"message store: (\w+) stop; (\d+) messages recovered into \d+ queues in ([\d.]+) s")


def recoveries(log_text: str) -> list[Recovery]:
    """The broker's "message store: ... recovered ... in X s" lines, one per start."""
    out = []
    for line in log_text.splitlines():
        m = _RECOVERY.search(line)
        if m:
            out.append(Recovery(m.group(1) == "clean", int(m.group(2)), float(m.group(3)), line.strip()))
    return out


def recovery_problems(log_text: str) -> list[str]:
    """Log lines that show damage a crash must never cause: quarantined segments, a damaged
    journal, an exception."""
    bad = []
    for line in log_text.splitlines():
        if (
            re.search(r"\b[1-9]\d* segments quarantined", line)
            or "journal damaged" in line
            or "Traceback" in line
            or "could not replay" in line
        ):
            bad.append(line.strip())
    return bad


class Freezer(threading.Thread):
    """Watches for a crash point (``reached()`` polled every ~0.2 ms) and freezes the broker with
    SIGSTOP the moment it is reached, so the files stay as they were at that instant."""

    def __init__(self, pid: int, reached: Callable[[], bool], timeout: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.reached = reached
        self.timeout = timeout
        self.frozen = threading.Event()
        self._cancel = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._cancel.is_set() and time.monotonic() < deadline:
            try:
                hit = self.reached()
            except OSError:  # a file vanished under us: look again
                hit = False
            if hit:
                os.kill(self.pid, signal.SIGSTOP)
                self.frozen.set()
                return
            time.sleep(0.0002)

    def cancel(self) -> None:
        self._cancel.set()
        self.join()


def segment_count_changed(msgs_dir: Path) -> Callable[[], bool]:
    """A crash point: a segment was created or deleted since now (a roll, or a release)."""
    before = set(os.listdir(msgs_dir)) if msgs_dir.exists() else set()

    def reached() -> bool:
        now = {n for n in os.listdir(msgs_dir) if n.endswith(".seg")}
        return bool(now - before)

    return reached


def journal_rewritten(defs_dir: Path) -> Callable[[], bool]:
    """A crash point: a compaction started (the .tmp exists) or finished (the journal's inode changed)."""
    journal = defs_dir / "journal.log"
    before = journal.stat().st_ino

    def reached() -> bool:
        if (defs_dir / "journal.log.tmp").exists():
            return True
        return journal.stat().st_ino != before

    return reached


def fsync_logged(sync_log: Path) -> Callable[[], bool]:
    """A crash point: an fsync has just returned (its line is in the log; the confirms it allows
    may not be sent yet)."""
    before = sync_log.stat().st_size if sync_log.exists() else 0

    def reached() -> bool:
        return sync_log.exists() and sync_log.stat().st_size > before

    return reached


def unsynced_bytes(data_dir: Path, sync_log: Path) -> int:
    """Bytes in the data files beyond what the fsync log says is durable."""
    synced = _synced_sizes(sync_log)
    total = 0
    for path in _data_files(data_dir):
        st = path.stat()
        total += max(0, st.st_size - _last_synced(synced, path, st.st_ino, 0))
    return total


# ------------------------------------------------------------------------------ power cuts


@dataclass
class PowerCut:
    """What a simulated power cut did to the data directory."""

    files: int = 0
    deleted: list[str] = field(default_factory=list)  # never fsynced
    torn: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (synced, kept, size)
    zero_filled: list[str] = field(default_factory=list)
    dropped_bytes: int = 0

    def __str__(self) -> str:
        torn = ", ".join(f"{n}: synced {s} kept {k} of {z}" for n, (s, k, z) in self.torn.items())
        return (
            f"power cut over {self.files} files: dropped {self.dropped_bytes} unsynced bytes; "
            f"deleted never-synced {self.deleted}; torn [{torn}]; zero-filled {self.zero_filled}"
        )


def _synced_sizes(sync_log: Path) -> dict[int, list[tuple[str, int]]]:
    """inode -> [(path, size)] in log order."""
    out: dict[int, list[tuple[str, int]]] = {}
    if not sync_log.exists():
        return out
    for line in sync_log.read_text(errors="surrogateescape").splitlines():
        path, size, ino = line.rsplit(" ", 2)
        out.setdefault(int(ino), []).append((path, int(size)))
    return out


def _last_synced(synced: dict[int, list[tuple[str, int]]], path: Path, ino: int, default: int) -> int:
    """The size ``path`` had at its last fsync. Matched by inode, and by name (a compaction's
    journal.log.tmp becomes journal.log by rename), so a reused inode never counts."""
    for logged, size in reversed(synced.get(ino, [])):
        name = os.path.basename(logged)
        if name in (path.name, path.name + ".tmp"):
            return size
    return default


def _data_files(data_dir: Path) -> list[Path]:
    files = []
    for sub in ("msgs", "defs"):
        d = data_dir / sub
        if d.exists():
            files += sorted(p for p in d.iterdir() if p.is_file())
    return files


def power_cut(
    data_dir: Path, sync_log: Path, rng: random.Random, zero_fill: float = 0.25, drop_some: bool = False
) -> PowerCut:
    """Make the data directory look as a power cut would leave it. Call with the broker dead (or
    frozen by SIGSTOP: a frozen process writes nothing). Every data file goes back to its last
    fsynced size plus a random prefix of the bytes written after it (the last write torn at a
    random offset); with probability ``zero_fill`` the lost part reads as zeros instead (the size
    reached the disk, the data did not). Files never fsynced are deleted. Afterwards the fsync log
    says the files are durable as they now are (they are what the disk holds after the reboot).
    With ``drop_some``, at least one unsynced byte of every file is lost (the crash point "after
    the write, before the fsync")."""
    synced = _synced_sizes(sync_log)
    cut = PowerCut()
    survivors = []
    for path in _data_files(data_dir):
        cut.files += 1
        st = path.stat()
        last = _last_synced(synced, path, st.st_ino, -1)
        if last < 0:
            path.unlink()
            cut.deleted.append(path.name)
            cut.dropped_bytes += st.st_size
            continue
        if st.st_size > last:
            kept = last + rng.randint(0, st.st_size - last - (1 if drop_some else 0))
            with open(path, "r+b") as fh:
                fh.truncate(kept)
                if kept < st.st_size and rng.random() < zero_fill:
                    zeros = rng.randint(1, st.st_size - kept)
                    fh.seek(kept)
                    fh.write(bytes(zeros))
                    cut.zero_filled.append(path.name)
            cut.torn[path.name] = (last, kept, st.st_size)
            cut.dropped_bytes += st.st_size - kept
        survivors.append(path)
    lines = [f"{p} {p.stat().st_size} {p.stat().st_ino}\n" for p in survivors]
    sync_log.write_text("".join(lines))
    return cut
