"""Primitive AMQP 0-9-1 types and field tables, decoded from a buffer and an offset.

Theory of operation: every ``read_*`` takes ``(buf, offset)`` and returns ``(value, new_offset)``; it
never copies more than the value itself and raises ``ProtocolError(SYNTAX_ERROR)`` when the value
runs past the end of ``buf`` (a frame payload, so "past the end" is malformed, not "need more").
Writers append to a ``bytearray``.

Field-table value tags are the ones RabbitMQ accepts (its errata to the 0-9-1 spec):
``t`` bool, ``b``/``B`` int8/uint8, ``s``/``u`` int16/uint16, ``I``/``i`` int32/uint32, ``l`` int64,
``f`` float, ``d`` double, ``D`` decimal, ``S`` long string, ``x`` byte array, ``A`` array,
``T`` timestamp, ``F`` nested table, ``V`` void.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .errors import syntax_error

Buffer = bytes | bytearray | memoryview
FieldTable = dict[str, Any]

MAX_TABLE_DEPTH = 64

_B = struct.Struct(">B")
_H = struct.Struct(">H")
_I = struct.Struct(">I")
_Q = struct.Struct(">Q")
_b = struct.Struct(">b")
_h = struct.Struct(">h")
_i = struct.Struct(">i")
_q = struct.Struct(">q")
_f = struct.Struct(">f")
_d = struct.Struct(">d")


def _need(buf: Buffer, offset: int, size: int) -> None:
    if offset + size > len(buf):
        raise syntax_error("value runs past the end of the frame")


def read_octet(buf: Buffer, offset: int) -> tuple[int, int]:
    _need(buf, offset, 1)
    return buf[offset], offset + 1


def read_short(buf: Buffer, offset: int) -> tuple[int, int]:
    _need(buf, offset, 2)
    return _H.unpack_from(buf, offset)[0], offset + 2


def read_long(buf: Buffer, offset: int) -> tuple[int, int]:
    _need(buf, offset, 4)
    return _I.unpack_from(buf, offset)[0], offset + 4


def read_longlong(buf: Buffer, offset: int) -> tuple[int, int]:
    _need(buf, offset, 8)
    return _Q.unpack_from(buf, offset)[0], offset + 8


def read_shortstr(buf: Buffer, offset: int) -> tuple[str, int]:
    _need(buf, offset, 1)
    size = buf[offset]
    end = offset + 1 + size
    if end > len(buf):
        raise syntax_error("short string runs past the end of the frame")
    return bytes(buf[offset + 1 : end]).decode("utf-8", "surrogateescape"), end


def read_longstr(buf: Buffer, offset: int) -> tuple[bytes, int]:
    _need(buf, offset, 4)
    size = _I.unpack_from(buf, offset)[0]
    end = offset + 4 + size
    if end > len(buf):
        raise syntax_error("long string runs past the end of the frame")
    return bytes(buf[offset + 4 : end]), end


def read_timestamp(buf: Buffer, offset: int) -> tuple[datetime | int, int]:
    """A UTC ``datetime``, or the raw count of seconds when no ``datetime`` can hold it (a publisher
    that put milliseconds there: RabbitMQ takes any 64-bit value, so must we)."""
    value, offset = read_longlong(buf, offset)
    try:
        return datetime.fromtimestamp(value, tz=UTC), offset
    except (OverflowError, OSError, ValueError):
        return value, offset


def read_table(buf: Buffer, offset: int, depth: int = 0) -> tuple[FieldTable, int]:
    if depth > MAX_TABLE_DEPTH:
        raise syntax_error("field table nested too deeply")
    _need(buf, offset, 4)
    size = _I.unpack_from(buf, offset)[0]
    offset += 4
    end = offset + size
    if end > len(buf):
        raise syntax_error("field table runs past the end of the frame")
    table: FieldTable = {}
    while offset < end:
        key, offset = read_shortstr(buf, offset)
        value, offset = _read_field_value(buf, offset, end, depth)
        table[key] = value
    if offset != end:
        raise syntax_error("field table length does not match its contents")
    return table, end


def _read_array(buf: Buffer, offset: int, depth: int) -> tuple[list[Any], int]:
    if depth > MAX_TABLE_DEPTH:
        raise syntax_error("field array nested too deeply")
    _need(buf, offset, 4)
    size = _I.unpack_from(buf, offset)[0]
    offset += 4
    end = offset + size
    if end > len(buf):
        raise syntax_error("field array runs past the end of the frame")
    items: list[Any] = []
    while offset < end:
        value, offset = _read_field_value(buf, offset, end, depth)
        items.append(value)
    if offset != end:
        raise syntax_error("field array length does not match its contents")
    return items, end


def _read_fixed(buf: Buffer, offset: int, end: int, st: struct.Struct) -> tuple[Any, int]:
    if offset + st.size > end:
        raise syntax_error("field value runs past the end of its table")
    return st.unpack_from(buf, offset)[0], offset + st.size


_FIXED: dict[int, struct.Struct] = {
    ord("b"): _b,
    ord("B"): _B,
    ord("s"): _h,
    ord("u"): _H,
    ord("I"): _i,
    ord("i"): _I,
    ord("l"): _q,
    ord("f"): _f,
    ord("d"): _d,
}


def _read_field_value(buf: Buffer, offset: int, end: int, depth: int) -> tuple[Any, int]:
    if offset >= end:
        raise syntax_error("field value missing its type tag")
    tag = buf[offset]
    offset += 1
    st = _FIXED.get(tag)
    if st is not None:
        return _read_fixed(buf, offset, end, st)
    if tag == 0x53:  # 'S'
        raw, offset = read_longstr(buf, offset)
        try:
            return raw.decode("utf-8"), offset
        except UnicodeDecodeError:
            return raw, offset
    if tag == 0x74:  # 't'
        value, offset = _read_fixed(buf, offset, end, _B)
        return bool(value), offset
    if tag == 0x46:  # 'F'
        return read_table(buf, offset, depth + 1)
    if tag == 0x41:  # 'A'
        return _read_array(buf, offset, depth + 1)
    if tag == 0x54:  # 'T'
        return read_timestamp(buf, offset)
    if tag == 0x78:  # 'x'
        return read_longstr(buf, offset)
    if tag == 0x44:  # 'D'
        scale, offset = _read_fixed(buf, offset, end, _B)
        unscaled, offset = _read_fixed(buf, offset, end, _i)
        return Decimal(unscaled).scaleb(-scale), offset
    if tag == 0x56:  # 'V'
        return None, offset
    raise syntax_error(f"unknown field table value type {chr(tag)!r}")


# ----------------------------------------------------------------------------------------- writers


def write_shortstr(out: bytearray, value: str | bytes) -> None:
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if len(raw) > 255:
        raise ValueError("short string longer than 255 bytes")
    out.append(len(raw))
    out += raw


def write_longstr(out: bytearray, value: str | bytes) -> None:
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    out += _I.pack(len(raw))
    out += raw


def write_table(out: bytearray, table: Mapping[str, Any] | None) -> None:
    start = len(out)
    out += b"\x00\x00\x00\x00"
    if table:
        for key, value in table.items():
            write_shortstr(out, key)
            _write_field_value(out, value)
    _I.pack_into(out, start, len(out) - start - 4)


def _write_array(out: bytearray, items: Sequence[Any]) -> None:
    start = len(out)
    out += b"\x00\x00\x00\x00"
    for value in items:
        _write_field_value(out, value)
    _I.pack_into(out, start, len(out) - start - 4)


def _write_field_value(out: bytearray, value: Any) -> None:
    if isinstance(value, bool):
        out += b"t\x01" if value else b"t\x00"
    elif isinstance(value, int):
        if -(2**31) <= value < 2**31:
            out += b"I" + _i.pack(value)
        elif -(2**63) <= value < 2**63:
            out += b"l" + _q.pack(value)
        else:
            raise ValueError(f"integer {value} does not fit a field table")
    elif isinstance(value, str):
        out += b"S"
        write_longstr(out, value)
    elif isinstance(value, bytes | bytearray | memoryview):
        out += b"x"
        write_longstr(out, bytes(value))
    elif isinstance(value, float):
        out += b"d" + _d.pack(value)
    elif isinstance(value, Mapping):
        out += b"F"
        write_table(out, value)
    elif isinstance(value, list | tuple):
        out += b"A"
        _write_array(out, value)
    elif isinstance(value, datetime):
        out += b"T" + _Q.pack(int(value.timestamp()))
    elif isinstance(value, Decimal):
        _write_decimal(out, value)
    elif value is None:
        out += b"V"
    else:
        raise ValueError(f"cannot encode {type(value).__name__} in a field table")


def _write_decimal(out: bytearray, value: Decimal) -> None:
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise ValueError("cannot encode a non-finite decimal")
    unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    scale = -exponent
    if scale < 0:
        unscaled *= 10**-scale
        scale = 0
    if scale > 255 or not -(2**31) <= unscaled < 2**31:
        raise ValueError("decimal does not fit an AMQP decimal")
    out += b"D" + _B.pack(scale) + _i.pack(unscaled)


def encode_table(table: Mapping[str, Any] | None) -> bytes:
    out = bytearray()
    write_table(out, table)
    return bytes(out)


def decode_table(raw: Buffer) -> FieldTable:
    table, _ = read_table(raw, 0)
    return table
