"""Content-header properties of class ``basic`` (spec 4.2.6.1, 1.8.2).

The broker passes properties through as the raw bytes the publisher sent (flags + property list);
this module decodes them only where something needs a field (headers exchange, TTL, priority, DLX)
and encodes them for messages the broker itself makes. ``peek_delivery_mode`` reads the one flag the
hot path needs without decoding the rest.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from .errors import syntax_error
from .wire import (
    Buffer,
    FieldTable,
    read_octet,
    read_shortstr,
    read_table,
    read_timestamp,
    write_shortstr,
    write_table,
)

_H = struct.Struct(">H")
_Q = struct.Struct(">Q")


@dataclass(slots=True)
class BasicProperties:
    content_type: str | None = None
    content_encoding: str | None = None
    headers: FieldTable | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: datetime | int | None = None  # int: seconds out of datetime's range, kept as sent
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None


# (name, kind, flag bit); flag bits count from bit 15 down (spec 4.2.6.1).
_PROPS: tuple[tuple[str, str, int], ...] = tuple(
    (f.name, kind, 1 << (15 - i))
    for i, (f, kind) in enumerate(
        zip(
            fields(BasicProperties),
            (
                "shortstr",
                "shortstr",
                "table",
                "octet",
                "octet",
                "shortstr",
                "shortstr",
                "shortstr",
                "shortstr",
                "timestamp",
                "shortstr",
                "shortstr",
                "shortstr",
                "shortstr",
            ),
            strict=True,
        )
    )
)
_DELIVERY_MODE_FLAG = 1 << 12
_PRIORITY_FLAG = 1 << 11
_BEFORE_DELIVERY_MODE = (1 << 15) | (1 << 14) | (1 << 13)


def decode_properties(raw: Buffer) -> BasicProperties:
    """Decode ``flags + property list`` (the content header after class, weight and body size)."""
    if len(raw) < 2:
        raise syntax_error("content header without property flags")
    flags = _H.unpack_from(raw, 0)[0]
    offset = 2
    if flags & 1:
        raise syntax_error("property flag continuation is not used by class basic")
    props = BasicProperties()
    for name, kind, flag in _PROPS:
        if not flags & flag:
            continue
        value: Any
        if kind == "shortstr":
            value, offset = read_shortstr(raw, offset)
        elif kind == "octet":
            value, offset = read_octet(raw, offset)
        elif kind == "table":
            value, offset = read_table(raw, offset)
        else:
            value, offset = read_timestamp(raw, offset)
        setattr(props, name, value)
    return props


def encode_properties(props: BasicProperties) -> bytes:
    out = bytearray(b"\x00\x00")
    flags = 0
    for name, kind, flag in _PROPS:
        value = getattr(props, name)
        if value is None:
            continue
        flags |= flag
        if kind == "shortstr":
            write_shortstr(out, value)
        elif kind == "octet":
            out.append(value)
        elif kind == "table":
            write_table(out, value)
        else:
            out += _Q.pack(value if isinstance(value, int) else int(value.timestamp()))
    _H.pack_into(out, 0, flags)
    return bytes(out)


def validate_properties(raw: Buffer) -> None:
    """Raise 502 if ``raw`` is not a well-formed property list. Checked once, on receipt, so that
    nothing downstream (``peek_delivery_mode``, the headers exchange, consumers) meets a malformed
    one; only a headers table is decoded, everything else is stepped over by its length."""
    if len(raw) < 2:
        raise syntax_error("content header without property flags")
    flags = _H.unpack_from(raw, 0)[0]
    if not flags:
        return
    if flags & 1:
        raise syntax_error("property flag continuation is not used by class basic")
    offset = 2
    end = len(raw)
    for _name, kind, flag in _PROPS:
        if not flags & flag:
            continue
        if kind == "shortstr":
            offset += 1 + raw[offset] if offset < end else 1
        elif kind == "octet":
            offset += 1
        elif kind == "timestamp":
            offset += 8
        else:
            _, offset = read_table(raw, offset)
        if offset > end:
            raise syntax_error("property list runs past the end of the content header")


def peek_delivery_mode(raw: Buffer) -> int:
    """Return the delivery mode (0 when absent) without decoding the other properties."""
    flags = _H.unpack_from(raw, 0)[0]
    if not flags & _DELIVERY_MODE_FLAG:
        return 0
    if not flags & _BEFORE_DELIVERY_MODE:
        return raw[2]
    props = decode_properties(raw)
    return props.delivery_mode or 0


_PEEKED = (1 << 11) | (1 << 9) | (1 << 8)  # priority, reply-to, expiration


class WireProperties:
    """The core's view of raw property bytes (``leveret.core.message.PropertiesCodec``)."""

    __slots__ = ()

    def peek(self, properties: bytes) -> tuple[str | None, int | None, str | None] | None:
        if not ((properties[0] << 8) | properties[1]) & _PEEKED:
            return None
        props = decode_properties(properties)
        return props.expiration, props.priority, props.reply_to

    def decode(self, properties: bytes) -> dict[str, Any]:
        props = decode_properties(properties)
        return {name: value for name, _, _ in _PROPS if (value := getattr(props, name)) is not None}

    def encode(self, fields: Mapping[str, Any]) -> bytes:
        return encode_properties(BasicProperties(**fields))


WIRE_PROPERTIES = WireProperties()
EMPTY_PROPERTIES = b"\x00\x00"
PERSISTENT_PROPERTIES = encode_properties(BasicProperties(delivery_mode=2))
