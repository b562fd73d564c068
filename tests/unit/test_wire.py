"""AMQP primitives and field tables (leveret.amqp.wire): byte fixtures both ways, every value type
RabbitMQ accepts, malformed input (502 quickly, no RecursionError, no big allocation), round trips."""

from __future__ import annotations

import struct
import time
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leveret.amqp.constants import ReplyCode
from leveret.amqp.errors import ProtocolError
from leveret.amqp.wire import (
    MAX_TABLE_DEPTH,
    decode_table,
    encode_table,
    read_long,
    read_longlong,
    read_longstr,
    read_octet,
    read_short,
    read_shortstr,
    read_table,
    read_timestamp,
    write_longstr,
    write_shortstr,
)


def _table(body: bytes) -> bytes:
    """A field table: its 4-byte length, then ``body`` (the entries, written out by hand below)."""
    return struct.pack(">I", len(body)) + body


def _syntax_error(raw: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_table(raw)
    assert info.value.code is ReplyCode.SYNTAX_ERROR
    return info.value


# --------------------------------------------------------------------------------- primitives


def test_integers_are_big_endian_and_return_the_next_offset() -> None:
    buf = b"\xff\x01\x02\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01\x02"
    assert read_octet(buf, 0) == (255, 1)
    assert read_short(buf, 1) == (0x0102, 3)
    assert read_long(buf, 3) == (0x100, 7)
    assert read_longlong(buf, 7) == (0x0102, 15)


@pytest.mark.parametrize(
    ("reader", "raw"),
    [
        (read_octet, b""),
        (read_short, b"\x01"),
        (read_long, b"\x00\x00\x01"),
        (read_longlong, b"\x00" * 7),
        (read_shortstr, b""),
        (read_shortstr, b"\x05abcd"),
        (read_longstr, b"\x00\x00\x00"),
        (read_longstr, b"\x00\x00\x00\x05abcd"),
        (read_table, b"\x00\x00\x00\x05abcd"),
        (read_timestamp, b"\x00" * 7),
    ],
)
def test_truncated_values_are_syntax_errors(reader: Any, raw: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        reader(raw, 0)
    assert info.value.code is ReplyCode.SYNTAX_ERROR


def test_shortstr_and_longstr_bytes() -> None:
    out = bytearray()
    write_shortstr(out, "héllo")
    write_longstr(out, b"\x00\xff")
    write_longstr(out, "é")
    assert bytes(out) == b"\x06h\xc3\xa9llo" + b"\x00\x00\x00\x02\x00\xff" + b"\x00\x00\x00\x02\xc3\xa9"
    value, offset = read_shortstr(out, 0)
    assert (value, offset) == ("héllo", 7)
    assert read_longstr(out, offset) == (b"\x00\xff", 13)
    assert read_longstr(out, 13) == (b"\xc3\xa9", len(out))


def test_shortstr_of_255_bytes_fits_and_256_does_not() -> None:
    out = bytearray()
    write_shortstr(out, "x" * 255)
    assert out[0] == 255 and len(out) == 256
    with pytest.raises(ValueError, match="255"):
        write_shortstr(bytearray(), "x" * 256)
    with pytest.raises(ValueError, match="255"):
        write_shortstr(bytearray(), "é" * 128)  # 256 bytes of UTF-8 in 128 characters


def test_longstr_length_past_the_frame_is_refused_without_allocating_it() -> None:
    raw = b"\xff\xff\xff\xff" + b"abc"  # claims 4 GiB, the frame holds 3 bytes
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as info:
            read_longstr(raw, 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code is ReplyCode.SYNTAX_ERROR
    assert peak < 100_000


def test_shortstr_keeps_invalid_utf8_losslessly() -> None:
    value, _ = read_shortstr(b"\x02\xff\xfe", 0)
    out = bytearray()
    write_shortstr(out, value)
    assert bytes(out) == b"\x02\xff\xfe"


def test_timestamps_decode_to_utc_and_out_of_range_ones_stay_integers() -> None:
    assert read_timestamp(b"\x00\x00\x00\x00\x5e\x0b\xe1\x00", 0) == (datetime(2020, 1, 1, tzinfo=UTC), 8)
    millis = 1_700_000_000_000  # a publisher that sent milliseconds: RabbitMQ accepts it, so do we
    assert read_timestamp(struct.pack(">Q", millis), 0) == (millis, 8)
    assert read_timestamp(b"\xff" * 8, 0) == (2**64 - 1, 8)


# ---------------------------------------------------------------------- tables: both directions

TS_2020 = b"\x00\x00\x00\x00\x5e\x0b\xe1\x00"  # 1577836800 = 2020-01-01T00:00:00Z

# (table, bytes) with bytes -> table and table -> bytes both holding (the encoder's choice of tag).
TABLE_CASES: list[tuple[dict[str, Any], bytes]] = [
    ({}, b"\x00\x00\x00\x00"),
    ({"a": True}, b"\x00\x00\x00\x04\x01at\x01"),
    ({"a": False}, b"\x00\x00\x00\x04\x01at\x00"),
    ({"n": 1}, b"\x00\x00\x00\x07\x01nI\x00\x00\x00\x01"),
    ({"n": -1}, b"\x00\x00\x00\x07\x01nI\xff\xff\xff\xff"),
    ({"n": 2**31 - 1}, b"\x00\x00\x00\x07\x01nI\x7f\xff\xff\xff"),
    ({"n": -(2**31)}, b"\x00\x00\x00\x07\x01nI\x80\x00\x00\x00"),
    ({"n": 2**31}, b"\x00\x00\x00\x0b\x01nl\x00\x00\x00\x00\x80\x00\x00\x00"),
    ({"n": -(2**63)}, b"\x00\x00\x00\x0b\x01nl\x80\x00\x00\x00\x00\x00\x00\x00"),
    ({"s": "hé"}, b"\x00\x00\x00\x0a\x01sS\x00\x00\x00\x03h\xc3\xa9"),
    ({"x": b"\x00\xff"}, b"\x00\x00\x00\x09\x01xx\x00\x00\x00\x02\x00\xff"),
    ({"d": 1.5}, b"\x00\x00\x00\x0b\x01dd\x3f\xf8\x00\x00\x00\x00\x00\x00"),
    ({"D": Decimal("1.23")}, b"\x00\x00\x00\x08\x01DD\x02\x00\x00\x00\x7b"),
    ({"D": Decimal("-5")}, b"\x00\x00\x00\x08\x01DD\x00\xff\xff\xff\xfb"),
    ({"T": datetime(2020, 1, 1, tzinfo=UTC)}, b"\x00\x00\x00\x0b\x01TT" + TS_2020),
    ({"v": None}, b"\x00\x00\x00\x03\x01vV"),
    ({"F": {"k": None}}, b"\x00\x00\x00\x0a\x01FF\x00\x00\x00\x03\x01kV"),
    ({"A": [1, "x", None]}, b"\x00\x00\x00\x13\x01AA\x00\x00\x00\x0c" + b"I\x00\x00\x00\x01S\x00\x00\x00\x01xV"),
    ({"A": []}, b"\x00\x00\x00\x07\x01AA\x00\x00\x00\x00"),
    (
        {"a": 1, "b": "c"},  # order of entries is kept
        b"\x00\x00\x00\x0f" + b"\x01aI\x00\x00\x00\x01" + b"\x01bS\x00\x00\x00\x01c",
    ),
    (
        {"x-match": "all", "nested": {"deeper": [True, {"z": 2**40}]}},
        _table(
            b"\x07x-matchS\x00\x00\x00\x03all"
            + b"\x06nestedF"
            + _table(b"\x06deeperA" + _table(b"t\x01" + b"F" + _table(b"\x01zl\x00\x00\x01\x00\x00\x00\x00\x00")))
        ),
    ),
]


@pytest.mark.parametrize(("table", "raw"), TABLE_CASES)
def test_table_encodes_to_fixture(table: dict[str, Any], raw: bytes) -> None:
    assert encode_table(table) == raw


@pytest.mark.parametrize(("table", "raw"), TABLE_CASES)
def test_fixture_decodes_to_table(table: dict[str, Any], raw: bytes) -> None:
    decoded = decode_table(raw)
    assert decoded == table
    assert [type(v) for v in decoded.values()] == [type(v) for v in table.values()]


def test_none_encodes_as_an_empty_table() -> None:
    assert encode_table(None) == b"\x00\x00\x00\x00"


# Every value type RabbitMQ's parser accepts (rabbit_binary_parser), decoded from bytes; some
# are never produced by our encoder (it picks I/l for ints, d for floats).
VALUE_CASES: list[tuple[bytes, Any]] = [
    (b"t\x00", False),
    (b"t\x01", True),
    (b"t\x02", True),  # any non-zero octet is true
    (b"b\xff", -1),
    (b"b\x7f", 127),
    (b"B\xff", 255),
    (b"s\xff\xfe", -2),
    (b"s\x7f\xff", 32767),
    (b"u\xff\xfe", 65534),
    (b"I\xff\xff\xff\xfe", -2),
    (b"i\xff\xff\xff\xfe", 4294967294),
    (b"l\xff\xff\xff\xff\xff\xff\xff\xfe", -2),
    (b"l\x7f\xff\xff\xff\xff\xff\xff\xff", 2**63 - 1),
    (b"f\x3f\xc0\x00\x00", 1.5),
    (b"f\xc0\x20\x00\x00", -2.5),
    (b"d\x3f\xf8\x00\x00\x00\x00\x00\x00", 1.5),
    (b"D\x02\xff\xff\xff\x85", Decimal("-1.23")),
    (b"D\x00\x00\x00\x00\x07", Decimal(7)),
    (b"S\x00\x00\x00\x02hi", "hi"),
    (b"S\x00\x00\x00\x00", ""),
    (b"S\x00\x00\x00\x02\xff\xfe", b"\xff\xfe"),  # not UTF-8: kept as the bytes it was
    (b"x\x00\x00\x00\x02\x00\xff", b"\x00\xff"),
    (b"A\x00\x00\x00\x04b\x01t\x00", [1, False]),
    (b"T" + TS_2020, datetime(2020, 1, 1, tzinfo=UTC)),
    (b"F\x00\x00\x00\x07\x01kB\x01\x01jV", {"k": 1, "j": None}),
    (b"V", None),
]


@pytest.mark.parametrize(
    ("raw", "value"), VALUE_CASES, ids=[repr(r[:1]) + str(i) for i, (r, _) in enumerate(VALUE_CASES)]
)
def test_every_rabbitmq_field_type_decodes(raw: bytes, value: Any) -> None:
    decoded = decode_table(_table(b"\x03key" + raw))
    assert decoded == {"key": value}
    assert type(decoded["key"]) is type(value)


def test_decoded_values_of_every_type_reencode_to_equal_values() -> None:
    table = {f"k{i}": decode_table(_table(b"\x01v" + raw))["v"] for i, (raw, _) in enumerate(VALUE_CASES)}
    assert decode_table(encode_table(table)) == table


def test_a_table_is_read_at_an_offset_and_returns_the_next_one() -> None:
    buf = b"\xaa" + _table(b"\x01aV") + b"\xbb"
    assert read_table(buf, 1) == ({"a": None}, len(buf) - 1)


# ------------------------------------------------------------------------- encoder refusals


@pytest.mark.parametrize(
    "value",
    [2**63, -(2**63) - 1, Decimal("NaN"), Decimal("Infinity"), Decimal(2**31), Decimal("1e-256"), object(), {1, 2}],
    ids=["int-too-big", "int-too-small", "nan", "inf", "decimal-too-big", "decimal-too-precise", "object", "set"],
)
def test_values_a_table_cannot_hold_are_refused_on_encode(value: Any) -> None:
    with pytest.raises(ValueError):
        encode_table({"k": value})


def test_table_key_longer_than_255_bytes_is_refused_on_encode() -> None:
    with pytest.raises(ValueError, match="255"):
        encode_table({"k" * 256: 1})


# --------------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x00\x00",
        b"\x00\x00\x00\x01",  # length past the end
        _table(b"\x05ab"),  # key runs past the table
        _table(b"\x01k"),  # key without a value
        _table(b"\x01kI\x00\x00"),  # int32 cut short
        _table(b"\x01kl\x00\x00\x00\x00"),
        _table(b"\x01kd\x00"),
        _table(b"\x01kf\x00"),
        _table(b"\x01ks\x00"),
        _table(b"\x01kD\x02\x00"),
        _table(b"\x01kt"),
        _table(b"\x01kS\x00\x00\x00\x09abc"),  # longstr past the end of the frame
        _table(b"\x01kx\xff\xff\xff\xffabc"),
        _table(b"\x01kT\x00\x00\x00"),
        _table(b"\x01kA\x00\x00\x00\x09t\x01"),  # array past the end
        _table(b"\x01kA\x00\x00\x00\x01I"),  # array value past the array's end
        _table(b"\x01kF\x00\x00\x00\x01\x00\x00\x00"),  # nested table length wrong
    ],
)
def test_truncated_or_overlong_tables_are_502(raw: bytes) -> None:
    _syntax_error(raw)


def test_a_value_running_past_its_table_into_the_frame_is_502() -> None:
    # The table says 8 bytes, its longstr says 4: the string would eat the next field of the frame.
    raw = b"\x00\x00\x00\x08\x01kS\x00\x00\x00\x04" + b"abcd"
    with pytest.raises(ProtocolError) as info:
        read_table(raw, 0)
    assert info.value.code is ReplyCode.SYNTAX_ERROR


@pytest.mark.parametrize("tag", sorted(set(range(256)) - set(b"tbBsuIilfdDSxATFV")))
def test_unknown_field_tags_are_502(tag: int) -> None:
    error = _syntax_error(_table(b"\x01k" + bytes([tag]) + b"\x00\x00\x00\x00"))
    assert "type" in error.text


def _nested(depth: int, tag: bytes = b"F") -> bytes:
    """A table holding a table (or array) holding ... ``depth`` levels below the top one."""
    inner = b""
    for _ in range(depth):
        inner = b"\x01k" + tag + _table(inner) if tag == b"F" else b"A" + _table(inner)
    return _table(inner) if tag == b"F" else _table(b"\x01k" + inner)


def test_nesting_up_to_the_limit_decodes() -> None:
    table = decode_table(_nested(MAX_TABLE_DEPTH))
    for _ in range(MAX_TABLE_DEPTH):
        table = table["k"]
    assert table == {}


@pytest.mark.parametrize("tag", [b"F", b"A"])
def test_tables_nested_10000_deep_are_502_quickly_without_recursion_error(tag: bytes) -> None:
    raw = _nested(10_000, tag)
    started = time.perf_counter()
    error = _syntax_error(raw)
    assert time.perf_counter() - started < 0.5  # it takes microseconds; slack for a busy machine
    assert "deep" in error.text
    _syntax_error(_nested(MAX_TABLE_DEPTH + 1, tag))  # one level past the limit


def test_alternating_tables_and_arrays_nested_deep_are_502() -> None:
    deep = b""
    for _ in range(5_000):  # table -> array -> table -> ... 10,000 levels
        deep = b"\x01kA" + _table(b"F" + _table(deep))
    _syntax_error(_table(deep))


def test_a_million_entry_table_header_allocates_nothing_and_fails_fast() -> None:
    # A table (or array) that claims ~4 GiB / a million entries, with only a few bytes behind it.
    claims = [b"\xff\xff\xff\xff\x01kV", struct.pack(">I", 3_000_000) + b"\x01kV" * 10]
    tracemalloc.start()
    try:
        started = time.perf_counter()
        for raw in claims:
            _syntax_error(raw)
            _syntax_error(_table(b"\x01kA" + raw[:4] + b"V" * 10))
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 200_000


def test_a_real_table_of_many_entries_decodes_in_linear_time() -> None:
    # 40,000 entries is what fits a 128 KiB frame; it must decode in well under a frame's worth of time.
    body = b"".join(b"\x03" + i.to_bytes(3, "big") + b"V" for i in range(40_000))
    started = time.perf_counter()
    table = decode_table(_table(body))
    assert time.perf_counter() - started < 0.5
    assert len(table) == 40_000


# -------------------------------------------------------------------------------- round trips

_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_keys = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    _texts,
    st.binary(max_size=40),
    st.builds(
        lambda unscaled, scale: Decimal(unscaled).scaleb(-scale),
        st.integers(min_value=-(2**31), max_value=2**31 - 1),
        st.integers(min_value=0, max_value=30),
    ),
    st.integers(min_value=0, max_value=253402300799).map(lambda s: datetime.fromtimestamp(s, tz=UTC)),
)
field_values = st.recursive(
    _scalars,
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(_keys, children, max_size=5)),
    max_leaves=25,
)
field_tables = st.dictionaries(_keys, field_values, max_size=8)


@settings(max_examples=150, deadline=None)
@given(field_tables)
def test_tables_round_trip(table: dict[str, Any]) -> None:
    raw = encode_table(table)
    assert decode_table(raw) == table
    assert encode_table(decode_table(raw)) == raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_502_and_nothing_else(raw: bytes) -> None:
    try:
        read_table(raw, 0)
    except ProtocolError as exc:
        assert exc.code is ReplyCode.SYNTAX_ERROR


@settings(max_examples=80, deadline=None)
@given(field_tables, st.data())
def test_every_strict_prefix_of_a_table_is_502(table: dict[str, Any], data: st.DataObject) -> None:
    raw = encode_table(table)
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    _syntax_error(raw[:cut])
