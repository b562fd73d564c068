"""The definitions journal on disk (``store.journal``): value encoding, round trips, torn tails at every
offset, corruption in the middle (quarantined, never silently dropped), compaction and its crash
points, write failures. Tmp-dir tests with hand-crafted files; no broker."""

from __future__ import annotations

import errno
import math
import os
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from leveret.store import journal as journal_mod
from leveret.store.journal import (
    DefinitionsJournal,
    JournalError,
    decode_command,
    decode_value,
    encode_command,
    encode_value,
)
from leveret.store.records import FILE_HEADER_SIZE, JOURNAL_MAGIC, RECORD_HEADER_SIZE, encode_record, file_header


class Crash(BaseException):
    """A simulated power cut: nothing after the call that raises it runs."""


def command(i: int, **extra: Any) -> dict[str, Any]:
    return {"op": "declare_queue", "vhost": "/", "name": f"q{i}", "uid": i, "durable": True, **extra}


def opened(path: Path, **kwargs: Any) -> tuple[DefinitionsJournal, list[dict[str, Any]]]:
    j = DefinitionsJournal(str(path), **kwargs)
    commands = j.open()
    return j, commands


def write_journal(path: Path, commands: list[dict[str, Any]]) -> bytes:
    j, _ = opened(path)
    for c in commands:
        j.record(c)
    j.close()
    return (path / "journal.log").read_bytes()


def record_offsets(data: bytes) -> list[int]:
    offsets, pos = [], FILE_HEADER_SIZE
    while pos < len(data):
        offsets.append(pos)
        pos += RECORD_HEADER_SIZE + int.from_bytes(data[pos : pos + 4], "little")
    return offsets


# ------------------------------------------------------------------------------------ values

AWKWARD_ARGUMENTS: dict[str, Any] = {
    "x-match": "all",
    "bytes": b"\x00\xffbin",
    "decimal": Decimal("1.50"),
    "big-decimal": Decimal("-12345.678900"),
    "exp-decimal": Decimal("1E+3"),
    "when": datetime(2024, 5, 1, 12, 30, 5, tzinfo=UTC),
    "when-offset": datetime(2024, 5, 1, 12, 30, 5, 123456, tzinfo=timezone(timedelta(hours=-5))),
    "nested": {"inner": {"deeper": [1, b"x", {"k": None}]}, "flag": False},
    "list": [1, "two", 3.5, [Decimal("0.1"), None], {"t": True}],
    "looks-tagged": {"$bytes": "not really"},
    "long": 2**62,
    "negative": -(2**40),
    "float": 0.1,
    "inf": float("inf"),
    "ninf": float("-inf"),
    "void": None,
    "unicode": "héllo ✓",
    "surrogate": "bad\udcffname",
    "empty-table": {},
    "empty-list": [],
}


def test_awkward_field_values_round_trip_exactly() -> None:
    back = decode_value(encode_value(AWKWARD_ARGUMENTS))
    assert back == AWKWARD_ARGUMENTS
    for key in ("decimal", "big-decimal", "exp-decimal"):  # Decimal("1.5") == Decimal("1.50"): compare digits
        assert back[key].as_tuple() == AWKWARD_ARGUMENTS[key].as_tuple()
    assert back["when-offset"].utcoffset() == timedelta(hours=-5)
    assert type(back["bytes"]) is bytes and type(back["long"]) is int and type(back["float"]) is float
    assert type(back["nested"]["flag"]) is bool


def test_nan_round_trips_and_json_stays_strict() -> None:
    raw = encode_command({"op": "x", "arguments": {"n": float("nan")}})
    assert b"NaN" not in raw  # the tagged form, not Python's non-standard JSON
    assert math.isnan(decode_command(raw)["arguments"]["n"])


def test_tuples_come_back_as_lists_and_unknown_types_are_refused() -> None:
    assert decode_value(encode_value((1, 2))) == [1, 2]
    with pytest.raises(TypeError):
        encode_value(object())
    with pytest.raises(ValueError):
        decode_value({"$nope": 1})
    with pytest.raises(ValueError):
        decode_value({"a": 1, "b": 2})


def test_command_payload_is_ascii_json() -> None:
    raw = encode_command({"op": "declare_queue", "name": "ü\udcff"})
    raw.decode("ascii")
    assert decode_command(raw)["name"] == "ü\udcff"


# ------------------------------------------------------------------------------ round trips


def test_new_journal_then_round_trip(tmp_path: Path) -> None:
    j, commands = opened(tmp_path)
    assert commands == [] and j.report.created
    expected = [command(i, arguments=AWKWARD_ARGUMENTS) for i in range(5)]
    for c in expected:
        j.record(c)
    j.close()
    assert (tmp_path / "journal.log").read_bytes().startswith(file_header(JOURNAL_MAGIC))
    j2, back = opened(tmp_path)
    assert back == expected and j2.record_count == 5
    assert j2.report.summary() == "5 records"
    j2.record(command(9))
    j2.close()
    assert opened(tmp_path)[1] == [*expected, command(9)]


def test_record_before_open_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JournalError):
        DefinitionsJournal(str(tmp_path)).record(command(1))


# -------------------------------------------------------------------------------- torn tails


def test_torn_tail_at_every_offset_of_the_last_record(tmp_path: Path) -> None:
    expected = [command(i, arguments={"k": b"v" * i}) for i in range(4)]
    data = write_journal(tmp_path / "src", expected)
    last = record_offsets(data)[-1]
    for cut in range(last, len(data)):
        for filler in (b"", b"\0" * 37):  # cut short, or the size reached the disk but not the data
            d = tmp_path / f"cut{cut}-{len(filler)}"
            d.mkdir()
            (d / "journal.log").write_bytes(data[:cut] + filler)
            j, commands = opened(d)
            assert commands == expected[:-1], cut
            assert j.report.truncated_bytes == cut - last + len(filler)
            assert not j.report.damage and j.report.quarantined is None
            assert (d / "journal.log").stat().st_size == last  # truncated, so appends follow good data
            j.record(command(99))
            j.close()
            assert opened(d)[1] == [*expected[:-1], command(99)]
    assert not (tmp_path / "quarantine").exists()


def test_torn_file_header_means_an_empty_journal(tmp_path: Path) -> None:
    for size in range(FILE_HEADER_SIZE):
        d = tmp_path / f"h{size}"
        d.mkdir()
        (d / "journal.log").write_bytes(file_header(JOURNAL_MAGIC)[:size])
        j, commands = opened(d)
        assert commands == [] and j.report.created and not j.report.damage
        j.record(command(1))
        j.close()
        assert opened(d)[1] == [command(1)]


# ------------------------------------------------------------------------------- corruption


def test_corrupt_middle_record_is_skipped_reported_and_quarantined(tmp_path: Path) -> None:
    expected = [command(i) for i in range(5)]
    data = bytearray(write_journal(tmp_path, expected))
    bad = record_offsets(bytes(data))[2]
    data[bad + RECORD_HEADER_SIZE + 5] ^= 0x01  # one bit in the payload of the third record
    (tmp_path / "journal.log").write_bytes(data)
    j, commands = opened(tmp_path)
    assert commands == expected[:2] + expected[3:]  # the good records after it are kept
    assert j.report.damage and "crc mismatch" in j.report.damage[0]
    quarantined = Path(j.report.quarantined or "")
    assert quarantined.parent == tmp_path.parent / "quarantine"
    assert quarantined.read_bytes() == data  # the damaged file is kept whole for the operator
    j.record(command(7))
    j.close()
    j2, again = opened(tmp_path)  # the rewritten journal is clean
    assert again == [*commands, command(7)] and not j2.report.damage


def test_corrupt_length_in_the_middle_keeps_what_it_can_and_reports_the_rest(tmp_path: Path) -> None:
    expected = [command(i) for i in range(5)]
    data = bytearray(write_journal(tmp_path, expected))
    bad = record_offsets(bytes(data))[1]
    data[bad + 3] ^= 0x40  # the length now runs far past the end: the framing is lost
    (tmp_path / "journal.log").write_bytes(data)
    j, commands = opened(tmp_path)
    assert commands == expected[:1]
    assert j.report.damage and "intact records follow" in j.report.damage[0]  # not mistaken for a torn tail
    assert Path(j.report.quarantined or "").read_bytes() == data


def test_crc_valid_record_that_is_not_a_command_is_damage(tmp_path: Path) -> None:
    good = encode_record(encode_command(command(1)))
    junk = encode_record(b"\xff not json")
    (tmp_path / "journal.log").write_bytes(file_header(JOURNAL_MAGIC) + good + junk + good)
    j, commands = opened(tmp_path)
    assert commands == [command(1), command(1)]
    assert j.report.damage and "undecodable" in j.report.damage[0] and j.report.quarantined


def test_wrong_magic_is_quarantined_and_unknown_version_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "journal.log").write_bytes(b"NOTMAGIC" + bytes(8) + encode_record(b"{}"))
    j, commands = opened(tmp_path / "a")
    assert commands == [] and j.report.quarantined and j.report.damage
    future = file_header(JOURNAL_MAGIC, version=2) + encode_record(encode_command(command(1)))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "journal.log").write_bytes(future)
    with pytest.raises(JournalError):
        DefinitionsJournal(str(tmp_path / "b")).open()
    assert (tmp_path / "b" / "journal.log").read_bytes() == future  # left for a newer broker


# ------------------------------------------------------------------------------- compaction


def test_compact_replaces_the_journal(tmp_path: Path) -> None:
    j, _ = opened(tmp_path)
    for i in range(10):
        j.record(command(i))
    j.compact([command(3), command(4)])
    assert j.record_count == 2 and not (tmp_path / "journal.log.tmp").exists()
    j.record(command(5))
    j.close()
    assert opened(tmp_path)[1] == [command(3), command(4), command(5)]


def test_compaction_is_triggered_by_records_beyond_the_live_definitions(tmp_path: Path) -> None:
    live = [command(0)]
    j, _ = opened(tmp_path, compact_after=20)
    j.attach(lambda: live)
    for i in range(200):
        j.record({"op": "delete_queue", "name": f"q{i}"})  # churn: nothing stays live
    assert j.compactions >= 5  # bounded file: never more than ~compact_after records past the live ones
    assert j.record_count <= 1 + 20 + 5
    j.close()
    assert len(opened(tmp_path)[1]) == j.record_count


def test_compaction_waits_while_the_journal_holds_mostly_live_definitions(tmp_path: Path) -> None:
    live: list[dict[str, Any]] = []
    calls = []

    def snapshot() -> list[dict[str, Any]]:
        calls.append(1)
        return live

    j, _ = opened(tmp_path, compact_after=20)
    j.attach(snapshot)
    for i in range(300):
        live.append(command(i))
        j.record(command(i))
    assert j.compactions == 0 and j.record_count == 300
    assert len(calls) <= 300 // 5 + 1  # the O(definitions) snapshot is not taken on every record


def test_crash_after_tmp_written_before_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = [command(i) for i in range(4)]
    j, _ = opened(tmp_path)
    for c in old:
        j.record(c)

    def crash(*args: Any) -> None:
        raise Crash

    monkeypatch.setattr(journal_mod.os, "replace", crash)
    with pytest.raises(Crash):
        j.compact([command(2)])
    monkeypatch.undo()
    assert (tmp_path / "journal.log.tmp").exists()
    j2, commands = opened(tmp_path)
    assert commands == old and j2.report.removed_tmp
    assert not (tmp_path / "journal.log.tmp").exists()


def test_crash_while_writing_tmp(tmp_path: Path) -> None:
    old = [command(i) for i in range(3)]
    write_journal(tmp_path, old)
    (tmp_path / "journal.log.tmp").write_bytes(file_header(JOURNAL_MAGIC) + b"\x10\x00")  # torn
    j, commands = opened(tmp_path)
    assert commands == old and j.report.removed_tmp


def test_crash_after_rename_before_directory_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = [command(i) for i in range(4)]
    j, _ = opened(tmp_path)
    for c in old:
        j.record(c)
    before = (tmp_path / "journal.log").read_bytes()

    def crash(path: str) -> None:
        raise Crash

    monkeypatch.setattr(journal_mod, "_fsync_dir", crash)
    with pytest.raises(Crash):
        j.compact([command(2), command(3)])
    monkeypatch.undo()
    # The rename may or may not survive a power cut: either file is a complete journal.
    assert opened(tmp_path)[1] == [command(2), command(3)]
    (tmp_path / "journal.log").write_bytes(before)  # the rename lost
    assert opened(tmp_path)[1] == old


def test_failed_directory_fsync_after_rename_stops_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j, _ = opened(tmp_path)
    j.record(command(1))

    def fail(path: str) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(journal_mod, "_fsync_dir", fail)
    with pytest.raises(OSError):
        j.compact([command(1)])
    monkeypatch.undo()
    with pytest.raises(JournalError):
        j.record(command(2))


def test_failed_tmp_write_during_auto_compaction_keeps_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j, _ = opened(tmp_path, compact_after=3)
    j.attach(list)
    real_open = os.open

    def no_tmp(path: str, flags: int, mode: int = 0o777) -> int:
        if path.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, mode)

    monkeypatch.setattr(journal_mod.os, "open", no_tmp)
    for i in range(6):
        j.record(command(i))  # compaction fails underneath; every record still lands
    monkeypatch.undo()
    j.close()
    assert opened(tmp_path)[1] == [command(i) for i in range(6)]


# ---------------------------------------------------------------------------- write failures


def test_failed_fsync_is_never_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j, _ = opened(tmp_path)
    j.record(command(1))

    def fail(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(journal_mod, "fsync", fail)
    with pytest.raises(OSError):
        j.record(command(2))
    monkeypatch.undo()
    with pytest.raises(JournalError):
        j.record(command(3))


def test_broker_side_journal_failure_stops_the_broker_and_refuses_the_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leveret.core.broker import Broker
    from leveret.core.errors import BrokerError, ErrorKind
    from leveret.server.definitions import restore_definitions

    fatal: list[BaseException] = []
    broker = Broker()
    journal = restore_definitions(broker, str(tmp_path), fatal.append)
    vh = broker.vhosts["/"]
    vh.declare_queue(None, "kept", durable=True)

    def fail(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(journal_mod, "fsync", fail)
    with pytest.raises(BrokerError) as info:
        vh.declare_exchange("lost", "direct", durable=True)
    assert info.value.kind is ErrorKind.INTERNAL  # the client gets 541, never declare-ok
    assert len(fatal) == 1 and isinstance(fatal[0], OSError)
    monkeypatch.undo()
    with pytest.raises(BrokerError):
        vh.declare_exchange("also-lost", "direct", durable=True)  # never retried
    journal.close()
    again = Broker()
    restore_definitions(again, str(tmp_path), fatal.append)
    assert "kept" in again.vhosts["/"].queues
