"""Persistent messages of durable queues, on the segmented log (``segments.SegmentLog``).

Record payloads (little-endian; the framing, length + CRC32C, is ``records``'s):

- ``PUBLISH``: ``u8 1 | u16 nqueues | nqueues x u32 queue uid | u8 exlen | exchange | u8 rklen |
  routing key | u32 props_len | properties | body``. Written once per message, however many durable
  queues it reached. The message's id is its log position.
- ``ACKS``: ``u8 2 | u32 queue uid | n x u64 position``: that queue no longer holds those messages
  (acked, rejected, purged). Written lazily, in batches, always after the records they refer to.
- ``PUBLISH_AT``: as ``PUBLISH`` with type 4 and an ``f64`` enqueue time (Unix seconds) after the
  queue uids: a message bound for a queue with a TTL, or with its own expiration, so that its
  deadline survives a restart.
- ``PAGED``: as ``PUBLISH`` with type 3 and no queue uids: a transient message written out under
  memory pressure so its queue can drop the body from RAM. Never fsynced for its own sake, never
  recovered (recovery skips the type).

Each segment has a live count (queue references to its messages not yet acked); a segment whose
count drops to zero is released to the log, which deletes it once all earlier segments are gone, so
an ``ACKS`` record is never lost before the ``PUBLISH`` it cancels.

This module imports nothing from the core: messages and queues are duck-typed (``StoredMessage``,
``StoringQueue``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Protocol

from .segments import RecoveryReport, SegmentLog

PUBLISH = 1
ACKS = 2
PAGED = 3
PUBLISH_AT = 4
ROLL_WHEN_DRAINED = 1024 * 1024  # a drained log starts a new segment once the current one is this big
_PUB_HEAD = struct.Struct("<BH")
_U32 = struct.Struct("<I")
_ACK_HEAD = struct.Struct("<BI")
_F64 = struct.Struct("<d")
HEAD_CACHE_SIZE = 1024  # distinct (queues, exchange, routing key, properties) record heads kept
HEAD_CACHE_BYTES = 512  # ... if no longer than this (big header tables are encoded each time)


class StoredMessage(Protocol):
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes | None
    location: int
    enqueued_at: float


class StoringQueue(Protocol):
    uid: int


def encode_publish_head(
    uids: Sequence[int],
    exchange: str,
    routing_key: str,
    properties: bytes,
    kind: int = PUBLISH,
    enqueued_at: float = 0.0,
) -> bytes:
    """A PUBLISH (PUBLISH_AT, PAGED) payload up to its body, which follows it to the end."""
    ex = exchange.encode("utf-8", "surrogateescape")
    rk = routing_key.encode("utf-8", "surrogateescape")
    if enqueued_at and kind == PUBLISH:
        kind = PUBLISH_AT
    head = _PUB_HEAD.pack(kind, len(uids)) + struct.pack(f"<{len(uids)}I", *uids)
    if kind == PUBLISH_AT:
        head += _F64.pack(enqueued_at)
    return b"".join((head, bytes((len(ex),)), ex, bytes((len(rk),)), rk, _U32.pack(len(properties)), properties))


def publish_uids(payload: bytes) -> tuple[int, ...]:
    """Only the queue uids of a PUBLISH payload (recovery needs nothing else; skips copying the body)."""
    return struct.unpack_from(f"<{_PUB_HEAD.unpack_from(payload, 0)[1]}I", payload, 3)


def decode_publish(payload: bytes) -> tuple[list[int], str, str, bytes, bytes]:
    """(queue uids, exchange, routing key, properties, body) of a PUBLISH payload."""
    kind, n = _PUB_HEAD.unpack_from(payload, 0)
    if kind not in (PUBLISH, PAGED, PUBLISH_AT):
        raise ValueError(f"record type {kind} is not PUBLISH, PUBLISH_AT or PAGED")
    o = 3
    uids = list(struct.unpack_from(f"<{n}I", payload, o))
    o += 4 * n
    if kind == PUBLISH_AT:
        o += 8
    exlen = payload[o]
    exchange = payload[o + 1 : o + 1 + exlen].decode("utf-8", "surrogateescape")
    o += 1 + exlen
    rklen = payload[o]
    routing_key = payload[o + 1 : o + 1 + rklen].decode("utf-8", "surrogateescape")
    o += 1 + rklen
    plen = _U32.unpack_from(payload, o)[0]
    o += 4
    properties = payload[o : o + plen]
    return uids, exchange, routing_key, properties, payload[o + plen :]


def publish_time(payload: bytes) -> float:
    """The enqueue time of a PUBLISH_AT payload; 0.0 for the other kinds."""
    kind, n = _PUB_HEAD.unpack_from(payload, 0)
    return float(_F64.unpack_from(payload, 3 + 4 * n)[0]) if kind == PUBLISH_AT else 0.0


def encode_acks(uid: int, positions: Sequence[int]) -> bytes:
    return _ACK_HEAD.pack(ACKS, uid) + struct.pack(f"<{len(positions)}Q", *positions)


def decode_acks(payload: bytes) -> tuple[int, tuple[int, ...]]:
    kind, uid = _ACK_HEAD.unpack_from(payload, 0)
    if kind != ACKS or (len(payload) - 5) % 8:
        raise ValueError("malformed ACKS record")
    return uid, struct.unpack_from(f"<{(len(payload) - 5) // 8}Q", payload, 5)


class MessageStore:
    def __init__(self, directory: str, segment_size: int = 64 * 1024 * 1024) -> None:
        self.log = SegmentLog(directory, segment_size)
        self._live: dict[int, int] = {}  # segment -> queue references not yet acked
        self._pending_acks: dict[int, list[int]] = {}  # queue uid -> positions
        self._empty: set[int] = set()  # segments with nothing live, not yet released to the log
        self.appended = 0  # records appended since start (for the committer: anything new?)
        self.paging = False  # set by the broker's memory monitor: transient messages page out
        self.recovered_timed: set[int] = set()  # positions of PUBLISH_AT records found by open()
        self._heads: dict[tuple[int, tuple[int, ...], str, str, bytes], bytes] = {}  # see _append

    # ---------------------------------------------------------------------------- recovery

    def open(self, live_uids: Iterable[int]) -> tuple[RecoveryReport, dict[int, list[int]]]:
        """Scan the log: for each live queue uid, the positions of the messages it still holds, in
        log order. Messages of queues that no longer exist are released."""
        report = self.log.open()
        wanted = set(live_uids)
        held: dict[int, dict[int, None]] = {uid: {} for uid in wanted}
        for position, payload in self.log.records():
            kind = payload[0] if payload else 0
            if kind in (PUBLISH, PUBLISH_AT):
                if kind == PUBLISH_AT:
                    self.recovered_timed.add(position)
                for uid in publish_uids(payload):
                    queue = held.get(uid)
                    if queue is not None:
                        queue[position] = None
            elif kind == ACKS:
                uid, acked = decode_acks(payload)
                queue = held.get(uid)
                if queue is not None:
                    for p in acked:
                        queue.pop(p, None)
        result: dict[int, list[int]] = {}
        for uid, positions in held.items():
            if positions:
                result[uid] = list(positions)
                for p in positions:
                    seg = p >> 32
                    self._live[seg] = self._live.get(seg, 0) + 1
        self._empty.update(seg for seg in self.log.segments() if not self._live.get(seg))
        self._release_empty()
        return report, result

    # ------------------------------------------------------------------------ the core port

    def publish(self, message: StoredMessage, queues: Sequence[StoringQueue]) -> None:
        uids = (queues[0].uid,) if len(queues) == 1 else tuple([q.uid for q in queues])
        self._append(message, uids, len(queues), PUBLISH)

    def page(self, message: StoredMessage, queues: Sequence[StoringQueue]) -> None:
        self._append(message, (), len(queues), PAGED)

    def _append(self, message: StoredMessage, uids: tuple[int, ...], references: int, kind: int) -> None:
        """Write the message's record; ``references`` queues now hold it (the segment's live count)."""
        body = message.body
        assert body is not None
        key = (kind, uids, message.exchange, message.routing_key, message.properties)
        head = None if message.enqueued_at else self._heads.get(key)  # PUBLISH_AT: a time of its own
        if head is None:
            head = encode_publish_head(
                uids, message.exchange, message.routing_key, message.properties, kind, message.enqueued_at
            )
            if not message.enqueued_at and len(head) <= HEAD_CACHE_BYTES:  # it repeats from message to message
                if len(self._heads) >= HEAD_CACHE_SIZE:
                    self._heads.clear()
                self._heads[key] = head
        position = self.log.append(head + body)
        message.location = position
        seg = position >> 32
        self._live[seg] = self._live.get(seg, 0) + references
        if self._empty:
            self._empty.discard(seg)
        self.appended += 1

    def ack(self, queue: StoringQueue, message: StoredMessage) -> None:
        pending = self._pending_acks.get(queue.uid)
        if pending is None:
            pending = self._pending_acks[queue.uid] = []
        pending.append(message.location)
        self.appended += 1
        self._unref(message.location)

    def forget(self, queue: StoringQueue, message: StoredMessage) -> None:
        self._unref(message.location)

    def load(self, message: StoredMessage) -> None:
        payload = self.log.read(message.location)
        _uids, message.exchange, message.routing_key, message.properties, message.body = decode_publish(payload)
        at = publish_time(payload)
        if at:
            message.enqueued_at = at

    # ------------------------------------------------------------------------ group commit

    def flush(self) -> None:
        """Write the pending ACKS records and every buffered record to the OS (on the loop thread)."""
        if self._pending_acks:
            for uid, positions in self._pending_acks.items():
                for start in range(0, len(positions), 100_000):
                    self.log.append(encode_acks(uid, positions[start : start + 100_000]))
                    self.appended += 1
            self._pending_acks = {}
        self.log.flush()
        if self._empty:
            self._release_empty()

    def sync(self) -> int:
        """fsync what was flushed (called from a worker thread); returns the durable position."""
        return self.log.sync()

    def close(self) -> None:
        self.flush()
        self.log.sync()
        self.log.close()

    def _unref(self, position: int) -> None:
        seg = position >> 32
        left = self._live.get(seg, 0) - 1
        if left > 0:
            self._live[seg] = left
            return
        self._live.pop(seg, None)
        self._empty.add(seg)
        if not self._live and self.log.current_size > ROLL_WHEN_DRAINED:
            self.log.roll_soon()  # nothing live anywhere: let the current segment go too
        self._release_empty()

    def _release_empty(self) -> None:
        """Hand segments with nothing live to the log (it deletes them in order); the segment being
        appended to waits until the log has moved past it."""
        current = self.log.current_segment
        for seg in sorted(self._empty):
            if seg >= current:
                break
            self._empty.discard(seg)
            self.log.release(seg)
