"""The definitions journal: durable exchanges, queues and bindings, as a log of commands.

File (``<data-dir>/defs/journal.log``), little-endian, in the common record format (``records``):
a 16-byte header, ``b"LVRTDEF\\0" | u32 version (1) | u32 reserved (0)``, then records
``u32 payload length | u32 crc32c(payload) | payload``. A payload is one command: a JSON object in
UTF-8 (ASCII in practice: non-ASCII is escaped, so names that are not valid UTF-8 survive too).

Field tables hold values JSON cannot carry exactly, so every value goes through a tagged form: an int,
a bool, a string, null, a finite float and a list are themselves; anything else is a JSON object with
one key that names its type (so no object is ever ambiguous):
``{"$table": {...}}``, ``{"$bytes": "<base64>"}``, ``{"$decimal": "1.50"}``,
``{"$datetime": "<ISO 8601>"}``, ``{"$float": "nan" | "inf" | "-inf"}``. Tuples come back as lists.

Theory of operation:
- ``open()`` reads every command (``records.read_records`` tells a torn tail from corruption). A
  record cut short at the end of the file (the last write never completed) is truncated away and the
  bytes dropped are reported. Corruption (a bad record with intact records after it, a bad header) is
  never dropped silently: the file is kept in ``<data-dir>/quarantine``, every intact command that can
  still be located is returned (a record whose CRC fails but whose framing holds is stepped over),
  what was lost is reported, and a clean journal is rewritten from what was read.
- ``record()`` appends one command with one ``os.write`` and fsyncs before returning: definition
  changes are rare, and the reply to the client must not go out before the change is durable.
- ``compact()`` replaces the journal with the given commands: write ``journal.log.tmp``, fsync it,
  rename it over ``journal.log``, fsync the directory. A crash at any point leaves either the old or
  the new journal, both complete; a leftover ``.tmp`` is deleted by ``open()``.
- With ``attach(snapshot)``, ``record()`` compacts on its own once the journal holds more than
  ``compact_after`` records beyond the live definitions (``snapshot()`` lists those as commands).

Errors from ``os.write``/``os.fsync`` while recording propagate as ``OSError`` and the journal
refuses any further record (a failed fsync is never retried): the caller stops the broker.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from .faults import fsync
from .records import JOURNAL_MAGIC, HeaderState, encode_record, file_header, read_records

JOURNAL = "journal.log"
COMPACT_AFTER = 1000

Snapshot = Callable[[], Sequence[Mapping[str, Any]]]

log = logging.getLogger("leveret.store")


class JournalError(Exception):
    """The journal cannot be used (unknown format version, earlier write failure, not open)."""


# --------------------------------------------------------------------------------- JSON values


def encode_value(value: Any) -> Any:
    """A field-table value (or any command value) as JSON-ready data, exactly reversible."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, Mapping):
        return {"$table": {str(k): encode_value(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    raise TypeError(f"cannot journal a value of type {type(value).__name__}")


def _decode_table(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"not a table: {data!r}")
    return {k: decode_value(v) for k, v in data.items()}


_TAGS: dict[str, Callable[[Any], Any]] = {
    "$table": _decode_table,
    "$bytes": lambda s: base64.b64decode(s, validate=True),
    "$decimal": Decimal,
    "$datetime": datetime.fromisoformat,
    "$float": float,
}


def decode_value(data: Any) -> Any:
    if isinstance(data, list):
        return [decode_value(v) for v in data]
    if isinstance(data, dict):
        if len(data) != 1:
            raise ValueError(f"not a tagged value: {data!r}")
        ((tag, inner),) = data.items()
        decode = _TAGS.get(tag)
        if decode is None:
            raise ValueError(f"unknown value tag {tag!r}")
        return decode(inner)
    return data


def encode_command(command: Mapping[str, Any]) -> bytes:
    body = {str(k): encode_value(v) for k, v in command.items()}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("ascii")


def decode_command(payload: bytes) -> dict[str, Any]:
    data = json.loads(payload.decode("utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("op"), str):
        raise ValueError("a command is a JSON object with an 'op'")
    return {k: decode_value(v) for k, v in data.items()}


@dataclass
class JournalReport:
    """What ``open()`` found."""

    records: int = 0
    created: bool = False
    truncated_bytes: int = 0  # torn tail dropped
    damage: list[str] = field(default_factory=list)  # corrupt parts skipped (the file was quarantined)
    quarantined: str | None = None
    removed_tmp: bool = False  # a compaction that never finished was left behind

    def summary(self) -> str:
        parts = [f"{self.records} records"]
        if self.created:
            parts.append("new journal")
        if self.truncated_bytes:
            parts.append(f"torn tail of {self.truncated_bytes} bytes truncated")
        if self.damage:
            parts.append(f"damage: {'; '.join(self.damage)}")
        if self.quarantined:
            parts.append(f"damaged journal kept as {self.quarantined}")
        if self.removed_tmp:
            parts.append("unfinished compaction discarded")
        return ", ".join(parts)


# ------------------------------------------------------------------------------------- journal


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class DefinitionsJournal:
    def __init__(self, directory: str, compact_after: int = COMPACT_AFTER) -> None:
        self.directory = directory
        self.path = os.path.join(directory, JOURNAL)
        self.tmp_path = self.path + ".tmp"
        self.compact_after = compact_after
        self.record_count = 0  # records in the journal file
        self.compactions = 0
        self.report = JournalReport()
        self._fd: int | None = None
        self._failed: BaseException | None = None
        self._snapshot: Snapshot | None = None
        self._next_check = 0

    # ---------------------------------------------------------------------------------- open

    def open(self) -> list[dict[str, Any]]:
        """Read the journal (creating it if needed) and return its commands in order."""
        os.makedirs(self.directory, exist_ok=True)
        report = self.report = JournalReport()
        if os.path.exists(self.tmp_path):
            os.unlink(self.tmp_path)  # compaction crashed before its rename: journal.log is whole
            report.removed_tmp = True
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            report.created = True
            self._rewrite([])
            return []
        scan = read_records(data, JOURNAL_MAGIC)
        if scan.header is HeaderState.BAD_VERSION:
            raise JournalError(f"{self.path}: {scan.header_problem}; not touching it")
        commands: list[dict[str, Any]] = []
        for offset, payload in scan:
            try:
                commands.append(decode_command(bytes(payload)))
            except (ValueError, TypeError, ArithmeticError) as exc:  # decimal.InvalidOperation is one
                report.damage.append(f"undecodable command at offset {offset} ({exc})")  # CRC fine: never guess
        report.records = len(commands)
        report.damage[:0] = [str(d) for d in scan.damage]
        report.truncated_bytes = scan.torn_bytes
        if report.damage:
            report.quarantined = self._quarantine()
            self._rewrite([encode_command(c) for c in commands])
        elif scan.good_end == 0:
            report.created = True  # the journal was created but its header never reached the disk
            self._rewrite([])
        else:
            if scan.torn:
                os.truncate(self.path, scan.good_end)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            fsync(self._fd)  # makes the truncation durable
            self.record_count = len(commands)
        return commands

    def _quarantine(self) -> str:
        """Keep the damaged journal for the operator: ``<data-dir>/quarantine/journal-<time>.log``."""
        where = os.path.join(os.path.dirname(os.path.abspath(self.directory)), "quarantine")
        os.makedirs(where, exist_ok=True)
        target = os.path.join(where, f"journal-{time.time_ns()}.log")
        try:
            os.link(self.path, target)  # journal.log itself is then replaced atomically by _rewrite
        except OSError:  # no hard links here: a copy will do
            shutil.copyfile(self.path, target)
            with open(target, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(where)
        return target

    # -------------------------------------------------------------------------------- record

    def record(self, command: Mapping[str, Any]) -> None:
        """Append one command and fsync it."""
        fd = self._writable()
        data = encode_record(encode_command(command))
        try:
            _write_all(fd, data)
            fsync(fd)
        except OSError as exc:
            self._failed = exc
            raise
        self.record_count += 1
        if self._snapshot is not None and self.record_count >= self._next_check:
            try:
                self.maybe_compact()
            except OSError as exc:
                if self._failed is not None:
                    raise  # the rename or the directory fsync failed: nothing more is written
                # The old journal is intact and holds the command: try again later.
                log.warning("definitions journal compaction failed, journal left as is: %r", exc)
                self._next_check = self.record_count + self.compact_after

    def _writable(self) -> int:
        if self._failed is not None:
            raise JournalError(f"the definitions journal failed earlier: {self._failed!r}")
        if self._fd is None:
            raise JournalError("the definitions journal is not open")
        return self._fd

    # ---------------------------------------------------------------------------- compaction

    def attach(self, snapshot: Snapshot) -> None:
        """``snapshot()`` lists the live definitions as commands; compaction writes them."""
        self._snapshot = snapshot
        self._next_check = 0

    def maybe_compact(self) -> bool:
        """Compact if the journal holds more than ``compact_after`` records beyond the live ones."""
        if self._snapshot is None:
            return False
        live = list(self._snapshot())
        excess = self.record_count - len(live)
        if excess > self.compact_after:
            self.compact(live)
            return True
        # One record adds at most one to the excess unless it deletes many definitions at once; a
        # check costs O(definitions), so never check more often than every compact_after/4 records.
        self._next_check = self.record_count + max(self.compact_after - excess, self.compact_after // 4, 1)
        return False

    def compact(self, commands: Iterable[Mapping[str, Any]]) -> None:
        """Replace the journal with ``commands`` (tmp, fsync, rename, fsync the directory)."""
        self._writable()
        self._rewrite([encode_command(c) for c in commands])
        self.compactions += 1

    def _rewrite(self, payloads: list[bytes]) -> None:
        data = b"".join([file_header(JOURNAL_MAGIC), *map(encode_record, payloads)])
        fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            _write_all(fd, data)
            fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp_path)
            raise
        try:
            os.replace(self.tmp_path, self.path)
            _fsync_dir(self.directory)
        except OSError as exc:
            os.close(fd)
            self._failed = exc  # which file the name points to after a reboot is unknown: stop
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self.record_count = len(payloads)
        self._next_check = self.record_count + self.compact_after // 4

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
