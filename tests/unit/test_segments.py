"""The message log (store/segments.py) on real files in tmp dirs, plus ``leveret store check``."""

from __future__ import annotations

import errno
import os
import random
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from leveret.store import segments as seg_module
from leveret.store.records import JOURNAL_MAGIC, SEGMENT_MAGIC, encode_record, file_header
from leveret.store.segments import (
    CorruptRecordError,
    LogFailedError,
    RecordNotFoundError,
    SegmentLog,
    segment_name,
)


@pytest.fixture
def msgs(tmp_path: Path) -> Path:
    return tmp_path / "data" / "msgs"


def opened(directory: Path, segment_size: int = 64 * 1024 * 1024) -> SegmentLog:
    log = SegmentLog(str(directory), segment_size)
    log.open()
    return log


def files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def payload(i: int, size: int = 20) -> bytes:
    """Distinct, zero-free payloads (a zeroed byte must always change the data)."""
    return (f"m{i:06d}-".encode() * (size // 8 + 1))[:size]


def write_log(directory: Path, payloads: list[bytes], segment_size: int = 64 * 1024 * 1024) -> list[int]:
    log = opened(directory, segment_size)
    positions = [log.append(p) for p in payloads]
    log.close()
    return positions


def patch_fsync(monkeypatch: pytest.MonkeyPatch, fsync: Callable[[int], None]) -> None:
    """Data files are fsynced through ``store.faults.fsync`` (bound to os.fsync at import, or to the
    power-loss tests' recorder), directories through os.fsync: replace both."""
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(seg_module, "fsync", fsync)


def contents(directory: Path, segment_size: int = 64 * 1024 * 1024) -> tuple[list[tuple[int, bytes]], SegmentLog]:
    log = SegmentLog(str(directory), segment_size)
    log.open()
    return list(log.records()), log


# ---- writing and reading ----


def test_round_trip_and_layout(msgs: Path) -> None:
    log = opened(msgs)
    pos = [log.append(b"alpha"), log.append(b"beta" * 1000), log.append(b"gamma")]
    assert pos == [1 << 32 | 16, 1 << 32 | 29, 1 << 32 | (29 + 8 + 4000)]
    assert files(msgs) == ["00000000000000000001.seg"]
    assert os.path.getsize(msgs / segment_name(1)) == 16  # append does no I/O
    assert log.read(pos[1]) == b"beta" * 1000  # still buffered: read flushes first
    assert log.buffered_bytes == 0 and log.flushed_position == pos[2] + 13
    assert log.read(pos[0]) == b"alpha" and log.read(pos[2]) == b"gamma"
    log.close()
    log.close()  # idempotent
    raw = (msgs / segment_name(1)).read_bytes()
    assert raw == file_header(SEGMENT_MAGIC) + encode_record(b"alpha") + encode_record(b"beta" * 1000) + encode_record(
        b"gamma"
    )
    got, log = contents(msgs)
    assert got == [(pos[0], b"alpha"), (pos[1], b"beta" * 1000), (pos[2], b"gamma")]
    assert log.append(b"delta") == pos[2] + 13  # appending continues in the last segment
    assert log.read(pos[1]) == b"beta" * 1000
    log.close()


def test_misuse_is_refused(msgs: Path) -> None:
    log = SegmentLog(str(msgs))
    with pytest.raises(ValueError):
        log.append(b"not open yet")
    log.open()
    with pytest.raises(ValueError):
        log.append(b"")
    with pytest.raises(RecordNotFoundError):
        log.read(1 << 32 | 16)
    with pytest.raises(RecordNotFoundError):
        log.read(7 << 32 | 16)
    with pytest.raises(ValueError):
        SegmentLog(str(msgs), segment_size=10)
    log.close()


def test_a_record_bigger_than_a_segment(msgs: Path) -> None:
    log = opened(msgs, segment_size=100)
    assert log.append(b"x" * 500) == 1 << 32 | 16  # the empty first segment takes it
    assert log.append(b"y" * 500) == 2 << 32 | 16
    assert log.append(b"z") == 3 << 32 | 16
    log.close()
    assert [os.path.getsize(msgs / segment_name(n)) for n in (1, 2, 3)] == [524, 524, 25]


def test_many_records_across_rolls(msgs: Path) -> None:
    rng = random.Random(7)
    data = [payload(i, rng.randint(1, 300)) for i in range(2000)]
    data[500] = payload(500, 5000)  # bigger than a segment: alone in a segment of its own
    log = opened(msgs, segment_size=2048)
    positions = []
    for i, p in enumerate(data):
        positions.append(log.append(p))
        if i % 37 == 0:
            log.flush()
    log.close()
    assert positions == sorted(set(positions))  # strictly increasing
    big = positions[500] >> 32
    assert positions[499] >> 32 == big - 1 and positions[501] >> 32 == big + 1
    assert positions[500] & 0xFFFFFFFF == 16
    names = files(msgs)
    assert names == [segment_name(n) for n in range(1, len(names) + 1)]
    for name in names:
        size = os.path.getsize(msgs / name)
        assert size <= 2048 or name == segment_name(big)
    got, log = contents(msgs, segment_size=2048)
    assert got == list(zip(positions, data, strict=True))
    assert all(log.read(p) == d for p, d in zip(positions[::97], data[::97], strict=True))
    log.close()


def test_flush_is_one_write_per_segment(msgs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = opened(msgs, segment_size=1000)
    calls: list[int] = []
    real_writev, real_write = os.writev, os.write
    monkeypatch.setattr(os, "writev", lambda fd, bufs: calls.append(fd) or real_writev(fd, bufs))
    monkeypatch.setattr(os, "write", lambda fd, buf: calls.append(fd) or real_write(fd, buf))
    for i in range(100):
        log.append(payload(i))
    log.flush()  # 100 x 28 bytes: 3 segments touched (+ 2 headers written by the rolls)
    assert log.current_segment == 3
    assert len(calls) == 3 + 2
    calls.clear()
    start = log.current_segment
    for _ in range(500):
        log.append(b"x")
    log.flush()
    rolls = log.current_segment - start
    assert rolls > 2 and len(calls) == (rolls + 1) + rolls  # one write per segment + one per new header
    log.close()


def test_flush_joins_more_parts_than_one_writev_takes(msgs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = opened(msgs)
    calls: list[str] = []
    monkeypatch.setattr(os, "writev", lambda fd, bufs: calls.append("writev") or 0)
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, buf: calls.append("write") or real_write(fd, buf))
    positions = [log.append(payload(i)) for i in range(1500)]  # 3000 parts
    log.flush()
    assert calls == ["write"]
    assert log.read(positions[-1]) == payload(1499)
    log.close()


def test_roll_fsyncs_old_file_then_creates_new_then_fsyncs_directory(
    msgs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = opened(msgs, segment_size=100)
    events: list[tuple[str, str]] = []
    real_fsync, real_open = os.fsync, os.open

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def open_(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_CREAT:
            events.append(("create", os.path.abspath(path)))
        return real_open(path, flags, mode)

    patch_fsync(monkeypatch, fsync)
    monkeypatch.setattr(os, "open", open_)
    log.append(b"a" * 60)
    log.append(b"b" * 60)  # does not fit: segment 2
    assert events == []  # append decides the roll but does no I/O
    log.flush()
    first, second = (os.path.realpath(msgs / segment_name(n)) for n in (1, 2))
    assert events == [("fsync", first), ("create", second), ("fsync", second), ("fsync", os.path.realpath(msgs))]
    assert log.durable_position == 2 << 32 | 16  # the roll made everything before segment 2 durable
    log.close()


def test_read_verifies_the_crc(msgs: Path) -> None:
    log = opened(msgs)
    small, big = log.append(b"small one"), log.append(payload(1, 10_000))
    log.flush()
    path = msgs / segment_name(1)
    with open(path, "r+b") as f:
        for at in (small + 8 + 3, big + 8 + 9000):
            f.seek(at & 0xFFFFFFFF)
            f.write(b"!")
    with pytest.raises(CorruptRecordError, match="crc mismatch"):
        log.read(small)
    with pytest.raises(CorruptRecordError, match="crc mismatch"):
        log.read(big)
    log.close()


# ---- recovery ----


def test_empty_directory_is_created(msgs: Path) -> None:
    log = SegmentLog(str(msgs))
    report = log.open()
    assert (report.segments, report.records, report.bytes_truncated, report.quarantined) == (0, 0, 0, [])
    assert files(msgs) == [segment_name(1)]
    assert list(log.records()) == []
    log.close()


TAIL = [payload(1, 30), payload(2, 45), payload(3, 11), payload(4, 27)]


@pytest.mark.parametrize("pad", ["cut", "zeros"])
def test_torn_tail_at_every_byte_of_the_last_two_records(tmp_path: Path, pad: str) -> None:
    original = tmp_path / "original" / "msgs"
    positions = write_log(original, TAIL)
    raw = (original / segment_name(1)).read_bytes()
    ends = [p & 0xFFFFFFFF for p in positions] + [len(raw)]
    for cut in range(ends[2], len(raw)):
        keep = sum(1 for e in ends[1:] if e <= cut)
        msgs = tmp_path / f"cut{cut}" / "msgs"
        msgs.mkdir(parents=True)
        torn = raw[:cut] + (bytes(len(raw) - cut) if pad == "zeros" else b"")
        (msgs / segment_name(1)).write_bytes(torn)
        log = SegmentLog(str(msgs))
        report = log.open()
        assert report.bytes_truncated == len(torn) - ends[keep], cut
        assert report.records == keep and report.quarantined == [], cut
        assert list(log.records()) == list(zip(positions, TAIL, strict=False))[:keep], cut
        assert os.path.getsize(msgs / segment_name(1)) == ends[keep]
        new = log.append(b"after the crash")
        log.close()
        got, log = contents(msgs)
        assert got[-1] == (new, b"after the crash") and len(got) == keep + 1
        log.close()


def test_torn_record_with_zeroed_bytes_at_every_offset(tmp_path: Path) -> None:
    """The file size reached the disk but the last bytes did not: zeros from some offset on."""
    original = tmp_path / "original" / "msgs"
    positions = write_log(original, TAIL)
    raw = (original / segment_name(1)).read_bytes()
    starts = [p & 0xFFFFFFFF for p in positions]
    ends = [*starts[1:], len(raw)]
    for at in range(starts[2], len(raw)):
        keep = sum(1 for e in ends if e <= at)  # records wholly before the zeros
        msgs = tmp_path / f"z{at}" / "msgs"
        msgs.mkdir(parents=True)
        (msgs / segment_name(1)).write_bytes(raw[:at] + bytes(len(raw) - at))
        log = SegmentLog(str(msgs))
        report = log.open()
        assert report.records == keep and report.quarantined == [], at
        assert report.bytes_truncated == len(raw) - [*starts, len(raw)][keep], at
        assert [p for _, p in log.records()] == TAIL[:keep]
        log.close()


def test_torn_header_of_the_newest_segment(msgs: Path) -> None:
    positions = write_log(msgs, [payload(i, 40) for i in range(10)], segment_size=208)
    last = positions[-1] >> 32
    (msgs / segment_name(last + 1)).write_bytes(b"LVRTS")  # a crash during a roll
    log = SegmentLog(str(msgs), 208)
    report = log.open()
    assert report.bytes_truncated == 5 and report.quarantined == [] and report.records == 10
    assert (msgs / segment_name(last + 1)).read_bytes() == file_header(SEGMENT_MAGIC)
    assert log.append(b"next") == (last + 1) << 32 | 16
    log.close()


def corrupt(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_flipped_bit_in_a_sealed_segment(msgs: Path) -> None:
    data = [payload(i, 40) for i in range(12)]
    positions = write_log(msgs, data, segment_size=208)  # 4 records of 48 bytes per segment (16 + 4 * 48 = 208)
    assert {p >> 32 for p in positions} == {1, 2, 3}
    bad = positions[5]  # segment 2, second record
    corrupt(msgs / segment_name(2), (bad & 0xFFFFFFFF) + 8 + 10, 3)
    log = SegmentLog(str(msgs), 208)
    report = log.open()
    assert report.records == 11 and report.bytes_truncated == 0
    [q] = report.quarantined
    assert q.segment == 2 and "crc mismatch" in q.reason and str(bad & 0xFFFFFFFF) in q.reason
    quarantine = msgs.parent / "quarantine"
    assert q.path == str(quarantine / segment_name(2)) and files(quarantine) == [segment_name(2)]
    assert segment_name(2) not in files(msgs)
    expected = [(p, d) for p, d in zip(positions, data, strict=True) if p != bad]
    assert list(log.records()) == expected  # the records after the bad one are still there
    with pytest.raises(CorruptRecordError):
        log.read(bad)
    assert log.read(positions[6]) == data[6]  # intact records of the quarantined file stay readable
    assert "quarantined" in report.summary() and "segment" in str(report)
    log.close()
    # the next start finds no corruption left in msgs/, and the same records minus segment 2
    got, log = contents(msgs, 208)
    assert got == [(p, d) for p, d in expected if p >> 32 != 2]
    log.close()


def test_broken_framing_in_a_sealed_segment_stops_that_segment_only(msgs: Path) -> None:
    data = [payload(i, 40) for i in range(12)]
    positions = write_log(msgs, data, segment_size=208)
    corrupt(msgs / segment_name(2), (positions[5] & 0xFFFFFFFF) + 2, 5)  # the length field
    log = SegmentLog(str(msgs), 208)
    report = log.open()
    assert [q.segment for q in report.quarantined] == [2] and "unreadable" in report.quarantined[0].reason
    assert [d for _, d in log.records()] == data[:5] + data[8:]
    log.close()


def test_corruption_in_the_middle_of_the_last_segment_is_not_a_torn_tail(msgs: Path) -> None:
    data = [payload(i, 40) for i in range(6)]
    positions = write_log(msgs, data)
    corrupt(msgs / segment_name(1), (positions[2] & 0xFFFFFFFF) + 1, 2)  # length += 1024
    log = SegmentLog(str(msgs))
    report = log.open()
    assert report.bytes_truncated == 0 and [q.segment for q in report.quarantined] == [1]
    assert [d for _, d in log.records()] == data[:2]
    assert log.append(b"new") == 2 << 32 | 16  # writing goes on in a new segment
    log.close()
    assert (msgs.parent / "quarantine" / segment_name(1)).stat().st_size == positions[-1] - (1 << 32) + 48


@pytest.mark.parametrize(
    "header", [b"NOTLVRT\0\x01\0\0\0\0\0\0\0", file_header(SEGMENT_MAGIC, 2), file_header(JOURNAL_MAGIC)]
)
@pytest.mark.parametrize("which", [1, 2])
def test_wrong_magic_or_version_is_quarantined(msgs: Path, header: bytes, which: int) -> None:
    positions = write_log(msgs, [payload(i, 40) for i in range(8)], segment_size=208)
    assert positions[-1] >> 32 == 2
    path = msgs / segment_name(which)
    path.write_bytes(header + path.read_bytes()[16:])
    log = SegmentLog(str(msgs), 208)
    report = log.open()
    [q] = report.quarantined
    assert q.segment == which and ("magic" in q.reason or "version" in q.reason)
    assert report.records == 4 and all(p >> 32 != which for p, _ in log.records())
    assert (msgs.parent / "quarantine" / segment_name(which)).read_bytes()[:16] == header
    log.close()


def test_quarantine_never_overwrites(msgs: Path) -> None:
    (msgs.parent / "quarantine").mkdir(parents=True)
    (msgs.parent / "quarantine" / segment_name(1)).write_bytes(b"older evidence")
    msgs.mkdir()
    (msgs / segment_name(1)).write_bytes(b"garbage garbage garbage")
    log = SegmentLog(str(msgs))
    [q] = log.open().quarantined
    assert q.path.endswith(segment_name(1) + ".1")
    assert (msgs.parent / "quarantine" / segment_name(1)).read_bytes() == b"older evidence"
    log.close()


# ---- release ----


def test_release_deletes_in_order_and_never_the_current_segment(msgs: Path) -> None:
    positions = write_log(msgs, [payload(i, 40) for i in range(18)], segment_size=208)
    assert files(msgs) == [segment_name(n) for n in range(1, 6)]
    log = SegmentLog(str(msgs), 208)
    log.open()
    assert log.segments() == [1, 2, 3, 4, 5] and log.current_segment == 5
    log.release(3)
    log.release(3)
    assert files(msgs) == [segment_name(n) for n in range(1, 6)]  # 1 and 2 still there
    log.release(1)
    assert files(msgs) == [segment_name(n) for n in range(2, 6)]
    with pytest.raises(ValueError, match="being appended|still being appended"):
        log.release(5)
    log.release(2)
    assert files(msgs) == [segment_name(4), segment_name(5)] and log.segments() == [4, 5]
    log.release(2)  # already gone: nothing happens
    with pytest.raises(RecordNotFoundError):
        log.read(positions[0])
    log.release(4)
    assert files(msgs) == [segment_name(5)]
    log.close()


def test_release_of_a_segment_whose_roll_is_still_buffered(msgs: Path) -> None:
    log = opened(msgs, segment_size=100)
    log.append(b"a" * 60)
    log.flush()
    log.append(b"b" * 60)  # segment 2, buffered: segment 1 is still the file being written
    log.release(1)
    assert segment_name(1) in files(msgs)
    log.flush()  # the roll happens; now segment 1 can go
    assert files(msgs) == [segment_name(2)]
    log.close()


def test_open_releases_segments_without_records_and_quarantined_files_are_kept(msgs: Path) -> None:
    data = [payload(i, 40) for i in range(12)]
    write_log(msgs, data, segment_size=208)
    (msgs / segment_name(1)).write_bytes(file_header(SEGMENT_MAGIC))  # nothing left in it
    corrupt(msgs / segment_name(2), 0)  # bad magic: quarantined, no records
    log = SegmentLog(str(msgs), 208)
    report = log.open()
    assert report.records == 4 and [q.segment for q in report.quarantined] == [2]
    assert log.segments() == [3] and files(msgs) == [segment_name(3)]
    assert files(msgs.parent / "quarantine") == [segment_name(2)]
    log.close()


# ---- sync from a thread ----


class FsyncLedger:
    """Replaces os.fsync: remembers, per file, how many bytes an fsync covered (the size just before
    it started: later writes may not be covered), which is all a simulated power loss keeps. The
    disk is not really asked (this is the model of durability), but the fsync takes a little time
    without the GIL, as a real one does, so that the loop thread runs meanwhile."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.durable: dict[str, int] = {}
        self.lock = threading.Lock()
        self.calls = 0

        def fsync(fd: int) -> None:
            st = os.fstat(fd)
            time.sleep(0.0002)
            if stat.S_ISREG(st.st_mode):
                path = os.readlink(f"/proc/self/fd/{fd}")
                with self.lock:
                    self.calls += 1
                    self.durable[path] = max(self.durable.get(path, 0), st.st_size)

        patch_fsync(monkeypatch, fsync)

    def power_loss(self, directory: Path) -> None:
        """Drop every byte no fsync covered."""
        for name in os.listdir(directory):
            path = str(directory / name)
            os.truncate(path, self.durable.get(path, 0))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sync_from_a_thread_racing_appends_and_flushes(msgs: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rng = random.Random(seed)
    ledger = FsyncLedger(monkeypatch)
    log = opened(msgs, segment_size=4096)
    stop, kick = threading.Event(), threading.Event()
    violations: list[str] = []
    best = [0]

    claims: list[tuple[int, dict[str, int]]] = []  # (what sync returned, what fsyncs had covered then)

    def syncer() -> None:  # like the group committer: woken after flushes, syncs while the loop goes on
        while not stop.is_set():
            kick.wait()
            kick.clear()
            before = log.flushed_position
            durable = log.sync()
            with ledger.lock:
                claims.append((durable, dict(ledger.durable)))
            if durable < before:
                violations.append(f"sync returned {durable:#x} < flushed-before-call {before:#x}")
            best[0] = max(best[0], durable)

    thread = threading.Thread(target=syncer)
    thread.start()
    written: dict[int, bytes] = {}
    try:
        for i in range(3000):
            p = payload(i, rng.choice([5, 50, 500, 1500]))
            written[log.append(p)] = p
            if rng.random() < 0.3:
                log.flush()
                kick.set()
    finally:
        stop.set()
        kick.set()
        thread.join()
    assert not violations, violations[:3]
    assert log.current_segment > 5 and ledger.calls > 10  # there were rolls and syncs
    paths = {n: os.path.realpath(msgs / segment_name(n)) for n in range(1, log.current_segment + 1)}
    for durable, covered in claims:  # every record sync called durable was covered by an fsync
        for p, d in written.items():
            if p < durable:
                assert covered.get(paths[p >> 32], 0) >= (p & 0xFFFFFFFF) + 8 + len(d), (hex(durable), hex(p))
    reported = best[0]
    # power loss now: what sync reported durable must all be there, and nothing never written
    ledger.power_loss(msgs)
    got, reopened = contents(msgs, 4096)
    assert all(written[p] == d for p, d in got)
    assert {p: d for p, d in got if p < reported} == {p: d for p, d in written.items() if p < reported}
    assert reported > max(written) // 2  # the syncs kept up with a good part of the run
    reopened.close()


def test_durability_with_power_loss_between_syncs(msgs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = FsyncLedger(monkeypatch)
    log = opened(msgs, segment_size=3000)
    acked = {log.append(payload(i, 100)): payload(i, 100) for i in range(35)}
    log.flush()
    durable = log.sync()
    assert durable > max(acked)
    extra = [log.append(payload(100 + i, 100)) for i in range(3)]
    log.flush()  # written, never fsynced
    assert log.durable_position == durable <= min(extra)  # "durable" means: every record below it
    ledger.power_loss(msgs)
    got, log = contents(msgs, 1000)
    assert {p: d for p, d in got if p < durable} == acked
    assert len(got) < len(acked) + len(extra)  # the unsynced records of the last segment are gone
    log.close()


# ---- disk errors ----


def failing(err: int) -> Callable[..., int]:
    def fail(*args: object) -> int:
        raise OSError(err, os.strerror(err))

    return fail


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_write_error_propagates_and_nothing_more_is_reported_durable(
    msgs: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    log = opened(msgs)
    first = [log.append(payload(i)) for i in range(10)]
    log.flush()
    durable = log.sync()
    later = [log.append(payload(100 + i)) for i in range(5)]
    with monkeypatch.context() as m:
        m.setattr(os, "writev", failing(err))
        m.setattr(os, "write", failing(err))
        with pytest.raises(OSError) as info:
            log.flush()
    assert info.value.errno == err
    assert log.durable_position == durable and durable > max(first) and durable <= min(later)
    with pytest.raises(LogFailedError) as failed:
        log.sync()
    assert failed.value.errno == err
    log.append(b"more")
    with pytest.raises(LogFailedError):
        log.flush()
    log.close()  # no flush/fsync once failed; does not raise
    got, log = contents(msgs)
    assert [p for p, _ in got] == first
    log.close()


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_fsync_error_is_never_retried(msgs: Path, monkeypatch: pytest.MonkeyPatch, err: int) -> None:
    log = opened(msgs)
    log.append(b"one")
    log.flush()
    durable = log.sync()
    second = log.append(b"two")
    log.flush()
    calls: list[int] = []

    def fsync(fd: int) -> None:
        calls.append(fd)
        raise OSError(err, os.strerror(err))

    patch_fsync(monkeypatch, fsync)
    with pytest.raises(OSError) as info:
        log.sync()
    assert info.value.errno == err and len(calls) == 1
    monkeypatch.undo()
    with pytest.raises(LogFailedError):
        log.sync()  # the fsync that failed is not tried again, even though it would work now
    assert log.durable_position == durable <= second
    log.close()


def test_fsync_error_during_a_roll(msgs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = opened(msgs, segment_size=100)
    log.append(b"a" * 60)
    log.flush()
    durable = log.durable_position
    log.append(b"b" * 60)  # the flush must roll, and the roll's fsync fails
    patch_fsync(monkeypatch, failing(errno.EIO))
    with pytest.raises(OSError):
        log.flush()
    monkeypatch.undo()
    assert log.durable_position == durable
    assert files(msgs) == [segment_name(1)]  # the next segment was never created
    with pytest.raises(LogFailedError):
        log.sync()
    log.close()


# ---- leveret store check ----


def run_check(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leveret", "store", "check", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def snapshot(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield str(path), path.read_bytes()


def test_store_check_command(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    positions = write_log(data_dir / "msgs", [payload(i, 40) for i in range(12)], segment_size=208)
    (data_dir / "defs").mkdir()
    (data_dir / "defs" / "journal.log").write_bytes(file_header(JOURNAL_MAGIC) + encode_record(b'{"op": "x"}'))
    good = run_check(data_dir)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "13 records" in good.stdout and "no corruption" in good.stdout

    last = data_dir / "msgs" / segment_name(3)
    last.write_bytes(last.read_bytes()[:-5])  # a torn tail is not corruption
    torn = run_check(data_dir)
    assert torn.returncode == 0 and "torn tail of 43 bytes" in torn.stdout, torn.stdout

    corrupt(data_dir / "msgs" / segment_name(2), (positions[5] & 0xFFFFFFFF) + 20)
    before = list(snapshot(data_dir))
    bad = run_check(data_dir)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "CORRUPT" in bad.stdout and segment_name(2) in bad.stdout and "crc mismatch" in bad.stdout
    assert list(snapshot(data_dir)) == before  # the check changes nothing

    missing = run_check(tmp_path / "nowhere")
    assert missing.returncode == 2 and "no such directory" in missing.stdout


def test_store_check_lists_quarantined_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_log(data_dir / "msgs", [payload(1)])
    (data_dir / "quarantine").mkdir()
    (data_dir / "quarantine" / segment_name(9)).write_bytes(b"old")
    from leveret.store.check import check_data_dir

    report = check_data_dir(str(data_dir))
    assert report.status == 0 and report.quarantined == [str(data_dir / "quarantine" / segment_name(9))]
    assert "quarantined earlier" in str(report)


def test_module_constants() -> None:
    assert seg_module.segment_name(1) == "00000000000000000001.seg" and len(seg_module.segment_name(1)) == 24
