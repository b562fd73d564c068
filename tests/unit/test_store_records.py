"""The shared record framing (store/records.py) and CRC (store/crc.py), on hand-crafted bytes."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leveret.store import crc as crc_module
from leveret.store.records import (
    FILE_HEADER_SIZE,
    JOURNAL_MAGIC,
    MAX_RECORD,
    SEGMENT_MAGIC,
    CorruptRecordError,
    HeaderState,
    RecordScan,
    check_file_header,
    decode_record,
    encode_record,
    file_header,
    read_records,
    record_header,
)

payloads = st.lists(st.binary(min_size=1, max_size=300), max_size=20)


def make_file(records: list[bytes], magic: bytes = SEGMENT_MAGIC) -> bytes:
    return file_header(magic) + b"".join(encode_record(p) for p in records)


def boundaries(records: list[bytes]) -> list[int]:
    """Offset of each record, then the end of the file."""
    out = [FILE_HEADER_SIZE]
    for p in records:
        out.append(out[-1] + 8 + len(p))
    return out


def scan(data: bytes | bytearray, may_be_torn: bool = True) -> tuple[list[tuple[int, bytes]], RecordScan]:
    s = read_records(data, SEGMENT_MAGIC, may_be_torn=may_be_torn)
    return [(off, bytes(p)) for off, p in s], s


# ---- crc ----


def test_crc32c_check_values() -> None:
    assert crc_module.crc32c(b"123456789") == 0xE3069283
    assert crc_module.crc32c_python(b"123456789") == 0xE3069283
    assert crc_module.crc32c(b"") == 0
    assert crc_module.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4 test vector
    assert crc_module.crc32c_python(b"\xff" * 32) == 0x62A8AB43
    assert crc_module.ACCELERATED  # the package is installed here; the fallback is tested below


@given(st.binary(max_size=2000))
def test_python_fallback_matches_the_package(data: bytes) -> None:
    assert crc_module.crc32c_python(data) == crc_module.crc32c(data)


# ---- encoding ----


def test_file_header_layout() -> None:
    assert file_header(SEGMENT_MAGIC) == b"LVRTSEG\0" + b"\x01\0\0\0" + b"\0\0\0\0"
    assert file_header(JOURNAL_MAGIC) == b"LVRTDEF\0\x01\0\0\0\0\0\0\0"
    with pytest.raises(ValueError):
        file_header(b"SHORT")


def test_record_layout() -> None:
    rec = encode_record(b"hello")
    assert rec == struct.pack("<II", 5, 0x9A71BB4C) + b"hello"
    assert record_header(memoryview(b"hello")) == rec[:8]


def test_empty_and_oversized_payloads_are_refused() -> None:
    with pytest.raises(ValueError):
        encode_record(b"")
    too_big = memoryview(bytearray(MAX_RECORD + 1))
    with pytest.raises(ValueError):
        record_header(too_big)
    assert len(record_header(too_big[:-1])) == 8


def test_decode_record() -> None:
    data = b"xx" + encode_record(b"payload")
    assert bytes(decode_record(data, 2)) == b"payload"
    bad = bytearray(data)
    bad[-1] ^= 1
    with pytest.raises(CorruptRecordError, match="crc mismatch"):
        decode_record(bad, 2)
    with pytest.raises(CorruptRecordError, match="cut short"):
        decode_record(data[:-1], 2)
    with pytest.raises(CorruptRecordError, match="bad record length 0"):
        decode_record(bytes(16))


# ---- file header ----


def test_check_file_header() -> None:
    good = file_header(SEGMENT_MAGIC)
    assert check_file_header(good, SEGMENT_MAGIC)[0] is HeaderState.OK
    for n in range(FILE_HEADER_SIZE):
        assert check_file_header(good[:n], SEGMENT_MAGIC)[0] is HeaderState.INCOMPLETE, n
        if n < 9:  # from 9 bytes on, padding with zeros completes the header
            assert check_file_header(good[:n].ljust(16, b"\0"), SEGMENT_MAGIC)[0] is HeaderState.INCOMPLETE, n
    assert check_file_header(good, JOURNAL_MAGIC)[0] is HeaderState.BAD_MAGIC
    assert check_file_header(b"GARBAGE", SEGMENT_MAGIC)[0] is HeaderState.BAD_MAGIC
    state, why = check_file_header(file_header(SEGMENT_MAGIC, version=2), SEGMENT_MAGIC)
    assert state is HeaderState.BAD_VERSION and "version 2" in why
    assert check_file_header(good[:12] + b"\1\0\0\0", SEGMENT_MAGIC)[0] is HeaderState.BAD_VERSION


@pytest.mark.parametrize("may_be_torn", [True, False])
@pytest.mark.parametrize("header", [file_header(JOURNAL_MAGIC), file_header(SEGMENT_MAGIC, 9), b"NOTASEG\0" + bytes(8)])
def test_bad_header_is_never_parsed(header: bytes, may_be_torn: bool) -> None:
    data = header + encode_record(b"would parse fine")
    got, s = scan(data, may_be_torn)
    assert got == []
    assert s.corrupt and not s.torn


# ---- walking ----


@given(payloads)
def test_round_trip(records: list[bytes]) -> None:
    data = make_file(records)
    got, s = scan(data)
    assert got == list(zip(boundaries(records), records, strict=False))
    assert not s.corrupt and not s.torn and s.good_end == len(data) and s.records == len(records)


def test_reads_a_file_object_and_journal_magic() -> None:
    data = make_file([b'{"op": "declare_queue"}'], JOURNAL_MAGIC)
    s = read_records(io.BytesIO(data), JOURNAL_MAGIC)
    assert [bytes(p) for _, p in s] == [b'{"op": "declare_queue"}']
    assert s.finished


RECS = [b"first record", b"\x01" * 40, b"third", b"the last one \xff\xfe"]


def test_torn_at_every_byte_of_the_last_two_records() -> None:
    data = make_file(RECS)
    bounds = boundaries(RECS)
    for cut in range(bounds[-3], len(data)):
        keep = sum(1 for b in bounds[1:] if b <= cut)  # records that end at or before the cut
        for tail in (data[:cut], data[:cut] + bytes(len(data) - cut), data[:cut] + bytes(3)):
            got, s = scan(tail)
            assert [p for _, p in got] == RECS[:keep], cut
            assert s.torn == (len(tail) != bounds[keep]), cut
            assert s.good_end == bounds[keep] and s.torn_bytes == len(tail) - bounds[keep], cut
            assert not s.corrupt, (cut, s.damage)


def test_incomplete_or_zeroed_header_is_torn_only_when_allowed() -> None:
    for data in (b"", b"LVRT", bytes(16), bytes(100), file_header(SEGMENT_MAGIC)[:8] + bytes(50)):
        _, s = scan(data)
        assert s.torn and s.good_end == 0 and s.torn_bytes == len(data)
        _, s = scan(data, may_be_torn=False)
        assert s.corrupt and not s.torn
    _, s = scan(bytes(16) + encode_record(b"x"))  # a zeroed header with records after it: damage
    assert s.corrupt


def flip(data: bytes, offset: int, bit: int = 0) -> bytearray:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return out


@pytest.mark.parametrize("may_be_torn", [True, False])
def test_flipped_payload_bit_skips_only_that_record(may_be_torn: bool) -> None:
    data = make_file(RECS)
    bounds = boundaries(RECS)
    got, s = scan(flip(data, bounds[1] + 8 + 5), may_be_torn)
    assert [p for _, p in got] == [RECS[0], *RECS[2:]]
    assert s.corrupt and not s.torn and s.good_end == len(data)
    assert s.damage[0].offset == bounds[1] and "crc mismatch" in s.damage[0].reason


@pytest.mark.parametrize("field", [0, 4])
def test_flipped_header_bit_of_a_middle_record(field: int) -> None:
    data = make_file(RECS)
    bounds = boundaries(RECS)
    for bit in range(8):
        for may_be_torn in (True, False):
            got, s = scan(flip(data, bounds[1] + field, bit), may_be_torn)
            assert RECS[1] not in [p for _, p in got]
            assert [p for _, p in got][:1] == [RECS[0]]
            assert s.corrupt and not s.torn, (field, bit, may_be_torn)
            if field == 4:  # a damaged CRC field leaves the framing intact: the rest still comes
                assert [p for _, p in got] == [RECS[0], *RECS[2:]]


def test_flipped_length_of_the_final_record_is_damage_not_a_tear() -> None:
    """The final record claims 64 bytes more than the file holds, which looks like a tear; but with
    that one bit flipped back its CRC verifies, so it is reported as damage (never yielded)."""
    data = make_file(RECS)
    bounds = boundaries(RECS)
    for may_be_torn in (True, False):
        got, s = scan(flip(data, bounds[3], 6), may_be_torn)
        assert [p for _, p in got] == RECS[:3] and s.corrupt and not s.torn


def test_flipped_length_in_the_middle_of_the_last_file_is_corruption() -> None:
    """A length made too long swallows the records after it: a tear would drop them silently."""
    data = make_file(RECS)
    bounds = boundaries(RECS)
    got, s = scan(flip(data, bounds[1], 7))  # claims 128 more bytes: past the end of the file
    assert [p for _, p in got] == RECS[:1] and s.corrupt and not s.torn
    got, s = scan(flip(data, bounds[1] + 1, 2))  # claims 1 KiB more
    assert [p for _, p in got] == RECS[:1] and s.corrupt and not s.torn


def test_flipped_final_record_is_torn_in_the_last_file_and_corrupt_in_a_sealed_one() -> None:
    data = make_file(RECS)
    bounds = boundaries(RECS)
    bad = flip(data, len(data) - 1)
    got, s = scan(bad)
    assert [p for _, p in got] == RECS[:3] and s.torn and s.torn_bytes == len(data) - bounds[3]
    got, s = scan(bad, may_be_torn=False)
    assert [p for _, p in got] == RECS[:3] and s.corrupt and s.damage[0].offset == bounds[3]


def test_zeros_in_the_middle_of_the_last_file_with_records_after_is_corruption() -> None:
    data = bytearray(make_file(RECS))
    bounds = boundaries(RECS)
    data[bounds[1] : bounds[2]] = bytes(bounds[2] - bounds[1])  # a lost page, later ones written
    got, s = scan(data)
    assert [p for _, p in got] == [RECS[0]]
    assert s.corrupt and not s.torn and "intact records follow" in s.damage[0].reason


def test_trailing_zeros_in_a_sealed_file_are_reported() -> None:
    got, s = scan(make_file(RECS) + bytes(10), may_be_torn=False)
    assert [p for _, p in got] == RECS and s.corrupt


@settings(max_examples=200)
@given(payloads.filter(bool), st.data())
def test_damage_never_yields_bad_bytes(records: list[bytes], data: st.DataObject) -> None:
    """Any single flipped bit: every yielded record is one that was written, at its offset."""
    raw = make_file(records)
    written = dict(zip(boundaries(records), records, strict=False))
    offset = data.draw(st.integers(FILE_HEADER_SIZE, len(raw) - 1))
    for may_be_torn in (True, False):
        got, s = scan(flip(raw, offset, data.draw(st.integers(0, 7))), may_be_torn)
        assert all(written.get(off) == p for off, p in got)
        assert s.corrupt or s.torn
