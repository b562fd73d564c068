"""Method and content-header codec: generic over each method's ``FIELDS`` table.

``decode_method(payload)`` takes a method frame's payload (class id, method id, arguments) and returns
the method object; ``encode_method(method)`` is its inverse. Consecutive ``bit`` fields share octets
(spec 4.2.5.2). Errors are ``ProtocolError``: an unknown class or method is 540 NOT_IMPLEMENTED,
malformed arguments 502 SYNTAX_ERROR.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from .constants import ReplyCode
from .errors import ProtocolError, syntax_error
from .methods import METHODS, Method
from .wire import (
    Buffer,
    read_long,
    read_longlong,
    read_longstr,
    read_octet,
    read_short,
    read_shortstr,
    read_table,
    write_longstr,
    write_shortstr,
    write_table,
)

_HH = struct.Struct(">HH")

_READERS: dict[str, Callable[[Buffer, int], tuple[Any, int]]] = {
    "octet": read_octet,
    "short": read_short,
    "long": read_long,
    "longlong": read_longlong,
    "timestamp": read_longlong,
    "shortstr": read_shortstr,
    "longstr": read_longstr,
    "table": read_table,
}


def decode_method(payload: Buffer) -> Method:
    if len(payload) < 4:
        raise syntax_error("method frame shorter than its class and method ids")
    class_id, method_id = _HH.unpack_from(payload, 0)
    cls = METHODS.get((class_id, method_id))
    if cls is None:
        raise ProtocolError(ReplyCode.NOT_IMPLEMENTED, f"unknown method {class_id}.{method_id}", class_id, method_id)
    try:
        args, end = _decode_fields(cls.FIELDS, payload, 4)
        if end != len(payload):  # RabbitMQ refuses these too ("cannot decode")
            raise syntax_error("method frame longer than its arguments")
    except ProtocolError as exc:
        exc.class_id, exc.method_id = class_id, method_id
        raise
    return cls(*args)


def _decode_fields(fields: tuple[tuple[str, str], ...], buf: Buffer, offset: int) -> tuple[list[Any], int]:
    args: list[Any] = []
    bit = 8
    bits = 0
    for _name, kind in fields:
        if kind == "bit":
            if bit == 8:
                bits, offset = read_octet(buf, offset)
                bit = 0
            args.append(bool(bits & (1 << bit)))
            bit += 1
            continue
        bit = 8
        value, offset = _READERS[kind](buf, offset)
        args.append(value)
    return args, offset


def encode_method(method: Method) -> bytes:
    out = bytearray(_HH.pack(method.CLASS_ID, method.METHOD_ID))
    bit = 8
    bits_at = 0
    for name, kind in method.FIELDS:
        value = getattr(method, name)
        if kind == "bit":
            if bit == 8:
                bits_at = len(out)
                out.append(0)
                bit = 0
            if value:
                out[bits_at] |= 1 << bit
            bit += 1
            continue
        bit = 8
        _write_value(out, kind, value)
    return bytes(out)


def _write_value(out: bytearray, kind: str, value: Any) -> None:
    if kind == "octet":
        out.append(value)
    elif kind == "short":
        out += value.to_bytes(2, "big")
    elif kind == "long":
        out += value.to_bytes(4, "big")
    elif kind in ("longlong", "timestamp"):
        out += value.to_bytes(8, "big")
    elif kind == "shortstr":
        write_shortstr(out, value)
    elif kind == "longstr":
        write_longstr(out, value)
    elif kind == "table":
        write_table(out, value)
    else:  # pragma: no cover - the method table only uses the kinds above
        raise ValueError(kind)
