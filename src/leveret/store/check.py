"""Offline verification of a data directory (``leveret store check --data-dir D``).

Reads every stored file without changing anything: the message log segments (``msgs/*.seg``) and the
definitions journal (``defs/journal.log``), each checked the way a start would check it (framing and
the CRC of every record; only the newest segment and the journal may have a torn tail, which the next
start truncates). Files already in ``quarantine/`` are listed. The exit status is 0 when nothing is
corrupt (a torn tail is not corruption), 1 when something is, 2 when the directory does not exist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .records import JOURNAL_MAGIC, SEGMENT_MAGIC, Damage, RecordScan
from .segments import QUARANTINE_DIR, list_segments, read_file

MSGS_DIR = "msgs"
JOURNAL_PATH = os.path.join("defs", "journal.log")


@dataclass(frozen=True, slots=True)
class FileCheck:
    path: str
    size: int
    records: int
    torn_bytes: int  # a torn tail the next start will truncate
    damage: tuple[Damage, ...]

    @property
    def corrupt(self) -> bool:
        return bool(self.damage)

    def __str__(self) -> str:
        state = "CORRUPT" if self.corrupt else "ok"
        text = f"{state:7} {self.path}: {self.records} records, {self.size} bytes"
        if self.torn_bytes:
            text += f", torn tail of {self.torn_bytes} bytes (truncated at next start)"
        return "\n".join([text, *(f"        {d}" for d in self.damage)])


@dataclass(slots=True)
class CheckReport:
    data_dir: str
    files: list[FileCheck] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)  # found in quarantine/ (earlier starts moved them)
    missing: bool = False

    @property
    def corrupt(self) -> bool:
        return any(f.corrupt for f in self.files)

    @property
    def status(self) -> int:
        """The process exit status: 0 fine, 1 corruption found, 2 no such directory."""
        return 2 if self.missing else 1 if self.corrupt else 0

    def __str__(self) -> str:
        if self.missing:
            return f"{self.data_dir}: no such directory"
        lines = [str(f) for f in self.files]
        lines += [f"quarantined earlier: {path}" for path in self.quarantined]
        bad = sum(f.corrupt for f in self.files)
        records = sum(f.records for f in self.files)
        verdict = f"{bad} corrupt file(s)" if bad else "no corruption"
        lines.append(f"{self.data_dir}: {len(self.files)} files, {records} records, {verdict}")
        return "\n".join(lines)


def check_file(path: str, magic: bytes, *, may_be_torn: bool) -> FileCheck:
    scan = RecordScan(read_file(path), magic, may_be_torn=may_be_torn).run()
    return FileCheck(path, scan.size, scan.records, scan.torn_bytes, tuple(scan.damage))


def check_data_dir(data_dir: str) -> CheckReport:
    report = CheckReport(data_dir)
    if not os.path.isdir(data_dir):
        report.missing = True
        return report
    segments = list_segments(os.path.join(data_dir, MSGS_DIR))
    for i, (_number, path) in enumerate(segments):
        report.files.append(check_file(path, SEGMENT_MAGIC, may_be_torn=i == len(segments) - 1))
    journal = os.path.join(data_dir, JOURNAL_PATH)
    if os.path.exists(journal):
        report.files.append(check_file(journal, JOURNAL_MAGIC, may_be_torn=True))
    quarantine = os.path.join(data_dir, QUARANTINE_DIR)
    if os.path.isdir(quarantine):
        report.quarantined = sorted(os.path.join(quarantine, name) for name in os.listdir(quarantine))
    return report
