"""The framing shared by every stored file: message log segments and the definitions journal.

Format (little-endian, version 1)::

    file header  magic (8 bytes) | u32 format version = 1 | u32 reserved = 0        16 bytes
    record       u32 payload length | u32 crc32c(payload) | payload                8 + length bytes

``magic`` is ``b"LVRTSEG\\0"`` for message segments and ``b"LVRTDEF\\0"`` for the journal. A payload
is 1 to ``MAX_RECORD`` bytes: an empty payload is refused so that zeros (what a crash leaves when the
file size reached the disk but the data did not) never parse as a record, and the cap keeps a
damaged length from making a reader allocate gigabytes.

Theory of operation: writers only append. A crash can tear the end of the file being appended to: an
incomplete header or record, a final record whose bytes are partly missing (CRC fails), or zeros
after the last record. Anything else that fails is corruption. ``read_records`` walks a file held in
memory and tells the outcomes apart, the caller saying whether this file may have a torn tail (only
the newest file of a log may):

- clean end: the last record ends exactly at the end of the file;
- torn tail: framing stops at ``good_end`` and no intact record follows anywhere after it; the caller
  truncates the file there and reports ``torn_bytes``;
- corruption (``damage``): a record whose CRC fails but whose framing is intact (the next record
  starts right after it and verifies) is skipped and the walk goes on; a break in the framing with
  intact records somewhere after it (or in a file that cannot be torn) ends the walk, since nothing
  after it can be located safely. Damaged bytes are never yielded.
"""

from __future__ import annotations

import enum
import functools
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .crc import crc32c

SEGMENT_MAGIC = b"LVRTSEG\0"
JOURNAL_MAGIC = b"LVRTDEF\0"
FORMAT_VERSION = 1
FILE_HEADER_SIZE = 16
RECORD_HEADER_SIZE = 8
MAX_RECORD = 64 * 1024 * 1024 + 64 * 1024

_FILE_HEADER = struct.Struct("<8sII")
_RECORD_HEADER = struct.Struct("<II")

Bytes = bytes | bytearray | memoryview


class CorruptRecordError(Exception):
    """A stored record failed verification; its bytes are never returned."""

    def __init__(self, offset: int, reason: str, path: str = "") -> None:
        where = f" of {path}" if path else ""
        super().__init__(f"corrupt record at offset {offset}{where}: {reason}")
        self.offset = offset
        self.reason = reason
        self.path = path


def file_header(magic: bytes, version: int = FORMAT_VERSION) -> bytes:
    """The 16 bytes every stored file starts with."""
    if len(magic) != 8:
        raise ValueError(f"magic must be 8 bytes, got {magic!r}")
    return _FILE_HEADER.pack(magic, version, 0)


def record_header(payload: Bytes) -> bytes:
    """The 8-byte length+CRC prefix of ``payload`` (for writev without copying the payload)."""
    length = len(payload)
    if not 0 < length <= MAX_RECORD:
        raise ValueError(f"record payload must be 1..{MAX_RECORD} bytes, got {length}")
    return _RECORD_HEADER.pack(length, crc32c(payload))


def encode_record(payload: Bytes) -> bytes:
    """One framed record: header and payload."""
    return record_header(payload) + payload


class HeaderState(enum.Enum):
    OK = "ok"
    INCOMPLETE = "incomplete"  # a prefix of the expected header, then zeros or the end of the file
    BAD_MAGIC = "bad magic"
    BAD_VERSION = "unknown version"


def check_file_header(data: Bytes, magic: bytes) -> tuple[HeaderState, str]:
    """Classify the first 16 bytes of ``data``; the string explains a problem ("" when OK)."""
    head = bytes(data[:FILE_HEADER_SIZE])
    expected = file_header(magic)
    if head == expected:
        return HeaderState.OK, ""
    if expected.startswith(head.rstrip(b"\0")):
        return HeaderState.INCOMPLETE, f"incomplete file header ({len(head)} of {FILE_HEADER_SIZE} bytes)"
    if head[:8] != magic[: len(head[:8])]:
        return HeaderState.BAD_MAGIC, f"wrong magic {head[:8]!r} (expected {magic!r})"
    version, reserved = struct.unpack_from("<II", head.ljust(FILE_HEADER_SIZE, b"\0"), 8)
    return HeaderState.BAD_VERSION, f"unknown format version {version} (reserved field {reserved})"


def parse_record_header(data: Bytes, offset: int = 0) -> tuple[int, int]:
    """(length, crc) of the record header at ``offset``; raises CorruptRecordError on a bad length."""
    if len(data) - offset < RECORD_HEADER_SIZE:
        raise CorruptRecordError(offset, "incomplete record header")
    length, crc = _RECORD_HEADER.unpack_from(data, offset)
    if not 0 < length <= MAX_RECORD:
        raise CorruptRecordError(offset, f"bad record length {length}")
    return length, crc


def decode_record(data: Bytes, offset: int = 0) -> memoryview:
    """The verified payload of the record at ``offset`` in ``data`` (which must hold all of it)."""
    length, crc = parse_record_header(data, offset)
    start = offset + RECORD_HEADER_SIZE
    payload = memoryview(data)[start : start + length]
    if len(payload) != length:
        raise CorruptRecordError(offset, f"record of {length} bytes is cut short at {len(payload)}")
    if crc32c(payload) != crc:
        raise CorruptRecordError(offset, "crc mismatch")
    return payload


@dataclass(frozen=True, slots=True)
class Damage:
    """Corrupt bytes ``[offset, offset + length)`` of a file, never yielded."""

    offset: int
    length: int
    reason: str

    def __str__(self) -> str:
        return f"{self.reason} at offset {self.offset} ({self.length} bytes)"


class RecordScan:
    """The records of one file held in memory. Iterate to get ``(offset, payload)`` of every intact
    record (payloads are views into the data: copy what you keep); afterwards ``records``,
    ``damage``, ``torn``, ``good_end`` and ``torn_bytes`` describe the file. ``run()`` walks without
    yielding. Iterating again walks again."""

    def __init__(self, data: Bytes, magic: bytes, *, may_be_torn: bool = True) -> None:
        self.data = memoryview(data).cast("B")
        self.size = len(self.data)
        self.may_be_torn = may_be_torn
        self.header, self.header_problem = check_file_header(self.data, magic)
        self.records = 0
        self.damage: list[Damage] = []
        self.torn = False
        self.good_end = self.size
        self.finished = False

    @property
    def torn_bytes(self) -> int:
        """Bytes after ``good_end`` that a torn tail leaves (0 unless ``torn``)."""
        return self.size - self.good_end if self.torn else 0

    @property
    def corrupt(self) -> bool:
        return bool(self.damage)

    def run(self) -> RecordScan:
        for _ in self:
            pass
        return self

    def __iter__(self) -> Iterator[tuple[int, memoryview]]:
        self.records, self.damage, self.torn, self.finished = 0, [], False, False
        if self.header is HeaderState.OK:
            yield from self._walk()
        else:
            self._bad_header()
        self.finished = True

    def _bad_header(self) -> None:
        self.good_end = 0
        whole_file_zero = _all_zero(self.data, FILE_HEADER_SIZE, self.size)
        if self.header is HeaderState.INCOMPLETE and self.may_be_torn and whole_file_zero:
            self.torn = True  # created but its header never reached the disk: nothing to lose
        else:
            self.damage.append(Damage(0, self.size, self.header_problem))

    def _walk(self) -> Iterator[tuple[int, memoryview]]:
        data, size = self.data, self.size
        off = FILE_HEADER_SIZE
        unpack = _RECORD_HEADER.unpack_from
        while off < size:
            if size - off >= RECORD_HEADER_SIZE:  # the fast path: an intact record
                length, crc = unpack(data, off)
                end = off + RECORD_HEADER_SIZE + length
                if 0 < length <= MAX_RECORD and end <= size:
                    payload = data[off + RECORD_HEADER_SIZE : end]
                    if crc32c(payload) == crc:
                        self.records += 1
                        yield off, payload
                        off = end
                        continue
            problem, length = _problem_at(data, off, size)
            if length:  # a CRC mismatch with a plausible length: step over it if the next one verifies
                end = off + RECORD_HEADER_SIZE + length
                if end < size and not _problem_at(data, end, size)[0]:
                    self.damage.append(Damage(off, end - off, "crc mismatch (framing intact, record skipped)"))
                    off = end
                    continue
            self._framing_lost(off, problem)
            return
        self.good_end = off

    def _framing_lost(self, off: int, problem: str) -> None:
        self.good_end = off
        if not self.may_be_torn:
            what = "in a file that cannot have a torn tail"
        else:
            found = _records_after_break(self.data, off, self.size)
            if found is False:
                self.torn = True
                return
            what = "intact records follow" if found else "intact records may follow (search gave up)"
        self.damage.append(Damage(off, self.size - off, f"{problem}, {what}; the rest is unreadable"))


def read_records(source: Bytes | BinaryIO, magic: bytes, *, may_be_torn: bool = True) -> RecordScan:
    """Scan a whole file (bytes or a binary file object, read to its end) for records."""
    data = source if isinstance(source, bytes | bytearray | memoryview) else source.read()
    return RecordScan(data, magic, may_be_torn=may_be_torn)


def _problem_at(data: memoryview, off: int, size: int) -> tuple[str, int]:
    """("", length) for an intact record at ``off``; else the problem, and the length when only the
    CRC failed (0 otherwise)."""
    if size - off < RECORD_HEADER_SIZE:
        return f"incomplete record header ({size - off} bytes)", 0
    length, crc = _RECORD_HEADER.unpack_from(data, off)
    if not 0 < length <= MAX_RECORD:
        return f"bad record length {length}", 0
    end = off + RECORD_HEADER_SIZE + length
    if end > size:
        return f"record of {length} bytes runs past the end of the file", 0
    if crc32c(data[off + RECORD_HEADER_SIZE : end]) != crc:
        return "crc mismatch", length
    return "", length


_ZEROS = bytes(1 << 16)


def _all_zero(data: memoryview, start: int, end: int) -> bool:
    for pos in range(start, end, len(_ZEROS)):
        chunk = data[pos : min(end, pos + len(_ZEROS))]
        if chunk != _ZEROS[: len(chunk)]:
            return False
    return True


_RESYNC_CRC_BUDGET = 256 * 1024 * 1024  # bytes of CRC a resync may spend before giving up


@functools.cache
def _candidate_pattern(high: int) -> re.Pattern[bytes]:
    """Offsets whose u32 LE is in 1 .. (high << 24 | 0xFFFFFF): the top byte <= high, not all zero."""
    top = re.escape(bytes([high]))
    alternatives = [rb"(?:[^\x00]..|.[^\x00].|..[^\x00])[\x00-" + top + rb"]"]
    if high:
        alternatives.append(rb"...[\x01-" + top + rb"]")
    return re.compile(rb"(?=" + rb"|".join(alternatives) + rb")", re.DOTALL)


def _records_after_break(data: memoryview, off: int, size: int) -> bool | None:
    """Could intact records follow a break in the framing at ``off`` (so it is corruption, not a
    torn tail)? None when the search gave up (nor can it be ruled out)."""
    if size - off < RECORD_HEADER_SIZE or _all_zero(data, off, size):
        return False  # an incomplete header, or zeros to the end: the usual crash leftovers
    length, crc = _RECORD_HEADER.unpack_from(data, off)
    end = off + RECORD_HEADER_SIZE + length
    if 0 < length <= MAX_RECORD and (end >= size or _all_zero(data, end, size)):
        # A torn record: its header claims the rest of the file. Intact records can only lie
        # inside that extent if the length itself is damaged, i.e. (one bit flipped) if another
        # length makes the record or the one after it verify. Scanning the payload instead would
        # cost time proportional to its size squared, for a case that is nearly always a tear.
        return _length_flip_explains(data, off, length, crc, size)
    return _intact_record_after(data, off + 1, size)


def _length_flip_explains(data: memoryview, off: int, length: int, crc: int, size: int) -> bool:
    for bit in range(32):
        other = length ^ (1 << bit)
        end = off + RECORD_HEADER_SIZE + other
        if not 0 < other <= MAX_RECORD or end > size:
            continue
        if crc32c(data[off + RECORD_HEADER_SIZE : end]) == crc or (end < size and not _problem_at(data, end, size)[0]):
            return True
    return False


def _intact_record_after(data: memoryview, start: int, size: int) -> bool | None:
    """Whether an intact record starts at some byte offset >= ``start`` (None: the search gave up,
    so one cannot be ruled out). Candidates are found by a regular expression (C speed): a length of
    1 .. (bytes left); the next two headers must look plausible too before the CRC is computed, and
    the CRC work is capped, because damaged data could otherwise make this quadratic."""
    limit = min(MAX_RECORD, size - start - RECORD_HEADER_SIZE)
    if limit < 1:
        return False
    budget = _RESYNC_CRC_BUDGET
    pattern = _candidate_pattern(min(limit >> 24, 255))
    for match in pattern.finditer(data, start, size - RECORD_HEADER_SIZE + 3):
        off = match.start()
        length = _RECORD_HEADER.unpack_from(data, off)[0]
        end = off + RECORD_HEADER_SIZE + length
        if end > size or not _plausible_header(data, end, size, 2):
            continue
        budget -= length
        if budget < 0:
            return None
        if not _problem_at(data, off, size)[0]:
            return True
    return False


def _plausible_header(data: memoryview, off: int, size: int, hops: int) -> bool:
    """Could a record header (or the end of a torn file) start at ``off``? Checked ``hops`` deep."""
    if size - off < RECORD_HEADER_SIZE:
        return True  # the end of the file, or a torn header
    length = _RECORD_HEADER.unpack_from(data, off)[0]
    if length == 0:
        return True  # zeros: a torn tail (its own check is the caller's business)
    if length > MAX_RECORD:
        return False
    end = off + RECORD_HEADER_SIZE + length
    return end > size or hops <= 1 or _plausible_header(data, end, size, hops - 1)
