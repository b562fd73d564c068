"""The message log: append-only segment files of framed records (see ``records.py`` for the format).

Theory of operation
-------------------
Segments live in one directory, named ``<20-digit number>.seg`` so they sort, each starting with the
``LVRTSEG`` file header. A record's **position** is ``segment << 32 | offset of its header in the
segment``; positions grow in log order, so "every record before D is durable" is one comparison.

Writing happens in three steps, so the event loop never waits for the disk:

- ``append`` (loop) frames a record into a buffer and returns its position; it decides rolls, since a
  position names its segment: a record that would push a segment past ``segment_size`` starts the
  next one (a record bigger than ``segment_size`` sits alone in a segment of its own);
- ``flush`` (loop) writes the buffer with one ``os.writev``/``os.write`` per segment touched; a roll
  fsyncs the old file, creates the next one with its header, fsyncs it and the directory;
- ``sync`` (a worker thread) fsyncs the file being written and returns the durable position. The
  lock guards only what the two threads share (the write fd, the flushed and durable positions, the
  failure); the fsync itself runs outside the lock on a ``dup`` of the fd, so a roll that closes the
  fd meanwhile cannot pull it away (and a roll fsyncs the old file itself).

A failed write or fsync is never retried (after a failed fsync the kernel may have dropped the dirty
pages and a second fsync would report success): the log is marked failed and every later ``flush``
and ``sync`` raises. The caller stops the broker.

Sealed segments were fsynced whole before the next one was created, so only the last segment can have
a torn tail. ``open`` truncates that tail (reporting the bytes dropped); any other damage is
corruption: the segment is moved to ``../quarantine/`` (reads of its intact records keep working
from there), reported, and its damaged records are never returned.

Segments are deleted only in order: ``release(n)`` marks ``n`` free and deletes the longest prefix
of released segments, so an ACKS record in a later segment never outlives the data it refers to
being gone, nor the other way round. A quarantined segment is forgotten, never deleted.

``append``, ``flush``, ``read``, ``release``, ``records`` and ``close`` belong to one thread (the
event loop); only ``sync`` and ``durable_position`` may be called from another.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from .crc import crc32c
from .faults import fsync
from .records import (
    FILE_HEADER_SIZE,
    MAX_RECORD,
    RECORD_HEADER_SIZE,
    SEGMENT_MAGIC,
    CorruptRecordError,
    RecordScan,
    file_header,
    parse_record_header,
    record_header,
)

SEGMENT_SUFFIX = ".seg"
SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
QUARANTINE_DIR = "quarantine"
OFFSET_MASK = 0xFFFFFFFF
MAX_SEGMENT_SIZE = 1 << 31
_IOV_MAX = 1024
_READ_AHEAD = 4096  # a first pread this big gets most records in one call
_READ_FDS = 32  # read descriptors kept open (least recently used ones are closed)


def segment_name(number: int) -> str:
    return f"{number:020d}{SEGMENT_SUFFIX}"


def position(segment: int, offset: int) -> int:
    return segment << 32 | offset


def list_segments(directory: str) -> list[tuple[int, str]]:
    """(number, path) of the segment files in ``directory``, in log order; other names are ignored."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), os.path.join(directory, n)) for n in names if (m := SEGMENT_NAME.match(n))]
    return sorted(found)


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RecordNotFoundError(LookupError):
    """No record at that position (never written, or its segment was released)."""


class LogFailedError(OSError):
    """An earlier write or fsync failed; the log accepts nothing more (fsync is never retried)."""


@dataclass(frozen=True, slots=True)
class QuarantinedSegment:
    segment: int
    path: str  # where the file is now
    reason: str


@dataclass(slots=True)
class RecoveryReport:
    """What ``SegmentLog.open`` found and did."""

    segments: int = 0  # segment files found
    records: int = 0  # intact records (all of them are yielded by ``records()``)
    bytes_truncated: int = 0  # torn tail dropped from the last segment
    quarantined: list[QuarantinedSegment] = field(default_factory=list)
    elapsed: float = 0.0  # seconds

    def summary(self) -> str:
        """One line (with the reason of each quarantine)."""
        text = (
            f"{self.segments} segments, {self.records} records, {self.bytes_truncated} torn-tail bytes truncated, "
            f"{len(self.quarantined)} segments quarantined, scanned in {self.elapsed:.3f} s"
        )
        return "; ".join([text, *(f"quarantined {q.path}: {q.reason}" for q in self.quarantined)])

    def __str__(self) -> str:
        return self.summary()


@dataclass(slots=True)
class _Segment:
    number: int
    path: str
    last: bool = False  # was the newest file at open (may legitimately have had a torn tail)
    quarantined: bool = False
    records: int = 0  # intact records found at open


@dataclass(slots=True)
class _Chunk:
    """Buffered records bound for one segment."""

    segment: int
    parts: list[bytes] = field(default_factory=list)
    size: int = 0


class SegmentLog:
    def __init__(self, directory: str, segment_size: int = 64 * 1024 * 1024) -> None:
        if not FILE_HEADER_SIZE + RECORD_HEADER_SIZE < segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment_size must be in ({FILE_HEADER_SIZE + RECORD_HEADER_SIZE}, {MAX_SEGMENT_SIZE}]")
        self.directory = os.path.abspath(directory)
        self.quarantine_dir = os.path.join(os.path.dirname(self.directory), QUARANTINE_DIR)
        self.segment_size = segment_size
        self._segments: dict[int, _Segment] = {}  # live segments, ascending (insertion order)
        self._released: set[int] = set()  # released, waiting for every earlier segment to go
        self._read_fds: OrderedDict[int, int] = OrderedDict()
        # loop-thread state: where append puts the next record, and what is not yet written
        self._seg = 0
        self._off = 0
        self._pending: list[_Chunk] = []
        self._pending_size = 0
        self._fd_off = 0  # size of the file being written
        # shared with sync() (guarded by _lock)
        self._lock = threading.Lock()
        self._fd = -1
        self._fd_seg = 0
        self._flushed = 0
        self._durable = 0
        self._failed: OSError | None = None

    # ---- recovery ----

    def open(self) -> RecoveryReport:
        """Scan the existing segments (CRC-checking every record), repair a torn tail of the last
        one, quarantine corrupt ones, and get ready to append."""
        if self._fd >= 0:
            raise RuntimeError("segment log already open")
        started = time.perf_counter()
        os.makedirs(self.directory, exist_ok=True)
        found = list_segments(self.directory)
        report = RecoveryReport(segments=len(found))
        for i, (number, path) in enumerate(found):
            self._segments[number] = self._recover(number, path, i == len(found) - 1, report)
        last = self._segments.get(found[-1][0]) if found else None
        if last is not None and not last.quarantined:
            self._resume(last)
        else:
            self._start(found[-1][0] + 1 if found else 1)
        self._seg, self._off = self._fd_seg, self._fd_off
        for seg in list(self._segments.values()):
            if seg.records == 0 and seg.number != self._fd_seg:
                self._released.add(seg.number)  # nothing in it: nobody will ever release it
        self._delete_releasable()
        report.elapsed = time.perf_counter() - started
        return report

    def _recover(self, number: int, path: str, last: bool, report: RecoveryReport) -> _Segment:
        scan = RecordScan(read_file(path), SEGMENT_MAGIC, may_be_torn=last).run()
        seg = _Segment(number, path, last=last, records=scan.records)
        report.records += scan.records
        report.bytes_truncated += scan.torn_bytes
        if scan.corrupt:
            seg.path, seg.quarantined = self._quarantine(path), True
            reason = "; ".join(str(d) for d in scan.damage)
            if scan.torn:
                reason += f"; torn tail of {scan.torn_bytes} bytes after offset {scan.good_end}"
            report.quarantined.append(QuarantinedSegment(number, seg.path, reason))
        elif scan.torn:
            _truncate(path, scan.good_end)
        return seg

    def _quarantine(self, path: str) -> str:
        os.makedirs(self.quarantine_dir, exist_ok=True)
        base = os.path.join(self.quarantine_dir, os.path.basename(path))
        dest, n = base, 0
        while os.path.exists(dest):
            n += 1
            dest = f"{base}.{n}"
        os.rename(path, dest)
        fsync_dir(self.quarantine_dir)
        fsync_dir(self.directory)
        return dest

    def _resume(self, seg: _Segment) -> None:
        fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        size = os.fstat(fd).st_size
        fsync(fd)  # what a killed process left in the page cache is on disk from here on
        self._set_file(fd, seg.number, size)

    def _start(self, number: int) -> None:
        fd = self._create(number)
        self._segments[number] = _Segment(number, os.path.join(self.directory, segment_name(number)))
        self._set_file(fd, number, FILE_HEADER_SIZE)

    def _set_file(self, fd: int, number: int, size: int) -> None:
        """Make ``fd`` (segment ``number``, ``size`` bytes, all durable) the file being written."""
        self._fd_off = size
        with self._lock:
            self._fd, self._fd_seg = fd, number
            self._flushed = self._durable = position(number, size)

    def _create(self, number: int) -> int:
        """A new segment file holding just its header, fsynced along with the directory entry."""
        path = os.path.join(self.directory, segment_name(number))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, [file_header(SEGMENT_MAGIC)], FILE_HEADER_SIZE)
            fsync(fd)
            fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def records(self) -> Iterator[tuple[int, bytes]]:
        """(position, payload) of every intact record, in log order (damaged ones are skipped)."""
        self.flush()
        for seg in list(self._segments.values()):
            scan = RecordScan(read_file(seg.path), SEGMENT_MAGIC, may_be_torn=seg.last)
            base = seg.number << 32
            for offset, payload in scan:
                yield base | offset, bytes(payload)

    # ---- writing ----

    def append(self, payload: bytes) -> int:
        """Buffer one record (no I/O) and return its position. ``payload`` must stay unchanged until
        flushed (it is written from the caller's object, not copied)."""
        if self._fd < 0:
            raise ValueError("segment log is not open")
        header = record_header(payload)  # validates the length
        size = RECORD_HEADER_SIZE + len(payload)
        if self._off > FILE_HEADER_SIZE and self._off + size > self.segment_size:
            self._seg += 1
            self._off = FILE_HEADER_SIZE
        pos = self._seg << 32 | self._off
        self._off += size
        pending = self._pending
        if not pending or pending[-1].segment != self._seg:
            pending.append(_Chunk(self._seg))
        chunk = pending[-1]
        chunk.parts += (header, payload)
        chunk.size += size
        self._pending_size += size
        return pos

    def flush(self) -> None:
        """Write the buffered records, rolling to new segments where ``append`` decided to."""
        if not self._pending:
            return
        self._check_usable()
        pending, self._pending, self._pending_size = self._pending, [], 0
        rolled = False
        for chunk in pending:
            if chunk.segment != self._fd_seg:
                self._roll(chunk.segment)
                rolled = True
            try:
                _write_all(self._fd, chunk.parts, chunk.size)
            except OSError as exc:
                self._fail(exc)
                raise
            self._fd_off += chunk.size
            with self._lock:
                self._flushed = position(self._fd_seg, self._fd_off)
        if rolled and self._released:
            self._delete_releasable()  # segments released before their roll was written

    def _roll(self, number: int) -> None:
        old = self._fd
        try:
            fsync(old)  # everything in the old segment is durable before the next one exists
            fd = self._create(number)
        except OSError as exc:
            self._fail(exc)
            raise
        self._segments[number] = _Segment(number, os.path.join(self.directory, segment_name(number)))
        self._set_file(fd, number, FILE_HEADER_SIZE)
        os.close(old)

    def sync(self) -> int:
        """fsync what has been flushed; return the position before which every record is durable.
        Safe to call from a worker thread while the loop appends and flushes."""
        with self._lock:
            self._check_usable()
            if self._durable >= self._flushed:
                return self._durable
            fd, target = os.dup(self._fd), self._flushed
        try:
            fsync(fd)
        except OSError as exc:
            self._fail(exc)
            raise
        finally:
            os.close(fd)
        with self._lock:
            self._durable = max(self._durable, target)
            return self._durable

    @property
    def durable_position(self) -> int:
        """Every record whose position is below this is on disk (any thread)."""
        with self._lock:
            return self._durable

    @property
    def flushed_position(self) -> int:
        """Every record whose position is below this has been written to its file."""
        return self._flushed

    @property
    def buffered_bytes(self) -> int:
        """Bytes appended but not yet flushed."""
        return self._pending_size

    @property
    def current_segment(self) -> int:
        """The segment ``append`` writes into (it cannot be released)."""
        return self._seg

    @property
    def current_size(self) -> int:
        """Bytes appended to the current segment so far (header included)."""
        return self._off

    def roll_soon(self) -> None:
        """Make the next ``append`` start a new segment, so the current one can be released and
        deleted (used when nothing in the log is live any more: disk use goes back near zero)."""
        if self._off > FILE_HEADER_SIZE:
            self._seg += 1
            self._off = FILE_HEADER_SIZE

    def segments(self) -> list[int]:
        """Numbers of the segments not yet deleted (or forgotten, if quarantined), ascending."""
        return list(self._segments)

    def _fail(self, exc: OSError) -> None:
        with self._lock:
            if self._failed is None:
                self._failed = exc

    def _check_usable(self) -> None:
        if self._failed is not None:
            err = self._failed.errno or errno.EIO
            raise LogFailedError(err, f"segment log failed earlier ({self._failed}); nothing more is written")
        if self._fd < 0:
            raise ValueError("segment log is not open")

    # ---- reading ----

    def read(self, pos: int) -> bytes:
        """The payload of the record at ``pos``, CRC-verified (raises CorruptRecordError, never
        returns damaged bytes). Flushes first if the record is still only buffered."""
        if pos >= self._flushed and self._pending:
            self.flush()
        number, offset = pos >> 32, pos & OFFSET_MASK
        seg = self._segments.get(number)
        if seg is None or offset < FILE_HEADER_SIZE or pos >= self._flushed:
            raise RecordNotFoundError(f"no record at position {pos:#x} (segment {number}, offset {offset})")
        fd = self._read_fd(seg)
        head = os.pread(fd, _READ_AHEAD, offset)
        try:
            length, crc = parse_record_header(head)
        except CorruptRecordError as exc:
            raise CorruptRecordError(offset, exc.reason, seg.path) from None
        payload = head[RECORD_HEADER_SIZE : RECORD_HEADER_SIZE + length]
        if len(payload) < length:  # a big record: read the payload in one go rather than gluing
            payload = os.pread(fd, length, offset + RECORD_HEADER_SIZE)
        if len(payload) != length:
            raise CorruptRecordError(offset, f"record of {length} bytes is cut short", seg.path)
        if crc32c(payload) != crc:
            raise CorruptRecordError(offset, "crc mismatch", seg.path)
        return payload

    def _read_fd(self, seg: _Segment) -> int:
        fd = self._read_fds.get(seg.number)
        if fd is not None:
            self._read_fds.move_to_end(seg.number)
            return fd
        fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        self._read_fds[seg.number] = fd
        if len(self._read_fds) > _READ_FDS:
            os.close(self._read_fds.popitem(last=False)[1])
        return fd

    # ---- deleting ----

    def release(self, segment: int) -> None:
        """``segment`` holds no live data: delete it once every earlier segment is deleted (and its
        buffered records, if any, are written). Releasing ``current_segment`` (or a later one) is a
        ValueError: records appended later may land in it; release it again once
        ``current_segment`` has moved past it. Releasing an unknown segment does nothing."""
        if segment >= self._seg:
            raise ValueError(
                f"segment {segment} is still being appended to (current_segment {self._seg}); "
                "release it once current_segment has moved past it"
            )
        if segment in self._segments:
            self._released.add(segment)
            self._delete_releasable()

    def _delete_releasable(self) -> None:
        deleted = False
        while self._segments:
            number = next(iter(self._segments))
            if number not in self._released or number >= self._fd_seg:
                break
            seg = self._segments[number]
            fd = self._read_fds.pop(number, None)
            if fd is not None:
                os.close(fd)
            if not seg.quarantined:  # quarantined files stay for the operator
                os.unlink(seg.path)
                deleted = True
            del self._segments[number]
            self._released.discard(number)
        if deleted:
            fsync_dir(self.directory)

    def close(self) -> None:
        """Flush and fsync (unless the log failed), then close every file. Idempotent."""
        if self._fd < 0:
            return
        try:
            if self._failed is None:
                self.flush()
                self.sync()
        finally:
            with self._lock:
                fd, self._fd = self._fd, -1
            os.close(fd)
            while self._read_fds:
                os.close(self._read_fds.popitem()[1])


def _write_all(fd: int, parts: list[bytes], size: int) -> None:
    """Write ``parts`` (``size`` bytes in all) with as few calls as the kernel allows."""
    if len(parts) <= _IOV_MAX:
        written = os.writev(fd, parts)
    else:
        data = b"".join(parts)
        parts = [data]
        written = os.write(fd, data)
    if written == size:
        return
    rest = memoryview(b"".join(parts))[written:]
    while rest:
        n = os.write(fd, rest)
        if n <= 0:
            raise OSError(errno.EIO, "write made no progress")
        rest = rest[n:]


def _truncate(path: str, good_end: int) -> None:
    """Cut a torn tail at ``good_end`` (a header-less file gets a fresh header) and make it durable."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        if good_end < FILE_HEADER_SIZE:
            os.ftruncate(fd, 0)
            _write_all(fd, [file_header(SEGMENT_MAGIC)], FILE_HEADER_SIZE)
        else:
            os.ftruncate(fd, good_end)
        fsync(fd)
    finally:
        os.close(fd)


__all__ = [
    "MAX_RECORD",
    "CorruptRecordError",
    "LogFailedError",
    "QuarantinedSegment",
    "RecordNotFoundError",
    "RecoveryReport",
    "SegmentLog",
]
