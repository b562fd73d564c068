"""Frame encoding and the pre-encoded templates of the hot path.

A frame is ``type(1) channel(2) size(4) payload(size) 0xCE`` (spec 2.3.5). Content is a method frame,
a header frame (class id, weight 0, body size, properties) and body frames of at most
``frame_max - 8`` bytes each (spec 4.2.6).
"""

from __future__ import annotations

import struct

from .codec import encode_method
from .constants import FRAME_BODY, FRAME_END_BYTE, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD
from .methods import Method

Chunk = bytes | memoryview

FRAME_HEAD = struct.Struct(">BHI")
_HEADER_HEAD = struct.Struct(">BHIHHQ")  # frame head + class, weight, body size
_BODY_HEAD = struct.Struct(">BHI")
_DELIVER_TAIL = struct.Struct(">QB")
# After a deliver's exchange and routing key: its frame end, then the header frame's head (type 2,
# channel, size) with class, weight and body size; then, after the properties, the frame end and the
# body frame's head.
_DELIVER_MIDDLE = struct.Struct(">BBHIHHQ")
_END_AND_BODY_HEAD = struct.Struct(">BBHI")
HEARTBEAT_FRAME = FRAME_HEAD.pack(FRAME_HEARTBEAT, 0, 0) + FRAME_END_BYTE


def method_frame(channel: int, method: Method) -> bytes:
    payload = encode_method(method)
    return FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END_BYTE


def raw_method_frame(channel: int, payload: bytes) -> bytes:
    return FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END_BYTE


def content_frames(channel: int, properties: bytes, body: bytes, frame_max: int) -> list[Chunk]:
    """Header frame and body frames for a message whose method frame has just been written."""
    out: list[Chunk] = [
        _HEADER_HEAD.pack(2, channel, 12 + len(properties), 60, 0, len(body)),
        properties,
        FRAME_END_BYTE,
    ]
    if not body:
        return out
    chunk = frame_max - FRAME_OVERHEAD
    if len(body) <= chunk:
        out += (_BODY_HEAD.pack(FRAME_BODY, channel, len(body)), body, FRAME_END_BYTE)
        return out
    view = memoryview(body)
    for start in range(0, len(body), chunk):
        part = view[start : start + chunk]
        out += (_BODY_HEAD.pack(FRAME_BODY, channel, len(part)), part, FRAME_END_BYTE)
    return out


def _shortstr(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")
    return bytes((len(raw),)) + raw


class DeliverTemplate:
    """Pre-encoded ``basic.deliver`` for one consumer: only tag, flags, exchange and key vary."""

    __slots__ = ("_channel", "_heads", "_prefix")

    def __init__(self, channel: int, consumer_tag: str) -> None:
        self._channel = channel
        self._prefix = b"\x00\x3c\x00\x3c" + _shortstr(consumer_tag)  # class 60, method 60
        self._heads: dict[int, bytes] = {}  # len(wire) -> method frame head + prefix

    def encode(
        self,
        delivery_tag: int,
        redelivered: bool,
        wire: bytes,
        properties: bytes,
        body: bytes,
        frame_max: int,
    ) -> bytes:
        """The whole delivery (method, header and body frames) as one bytes object: eight pieces
        joined once here instead of eleven chunks joined at flush time (about 1 us less per delivery
        of a small message). Bodies that need several frames take ``frames``."""
        size = len(body)
        if not size or size > frame_max - FRAME_OVERHEAD:
            return b"".join(self.frames(delivery_tag, redelivered, wire, properties, body, frame_max))
        n = len(wire)
        head = self._heads.get(n)
        if head is None:
            head = self._heads[n] = (
                FRAME_HEAD.pack(FRAME_METHOD, self._channel, len(self._prefix) + 9 + n) + self._prefix
            )
        channel = self._channel
        return b"".join(
            (
                head,
                _DELIVER_TAIL.pack(delivery_tag, redelivered),
                wire,
                _DELIVER_MIDDLE.pack(0xCE, 2, channel, 12 + len(properties), 60, 0, size),
                properties,
                _END_AND_BODY_HEAD.pack(0xCE, FRAME_BODY, channel, size),
                body,
                FRAME_END_BYTE,
            )
        )

    def frames(
        self,
        delivery_tag: int,
        redelivered: bool,
        wire: bytes,
        properties: bytes,
        body: bytes,
        frame_max: int,
    ) -> list[Chunk]:
        """``wire`` is exchange and routing key, already encoded as two short strings."""
        prefix = self._prefix
        head = FRAME_HEAD.pack(FRAME_METHOD, self._channel, len(prefix) + 9 + len(wire))
        tail = _DELIVER_TAIL.pack(delivery_tag, redelivered)
        out: list[Chunk] = [head, prefix, tail, wire, FRAME_END_BYTE]
        out += content_frames(self._channel, properties, body, frame_max)
        return out


def encode_shortstr(value: str) -> bytes:
    """A short string as it goes on the wire (length octet + UTF-8 bytes)."""
    return _shortstr(value)


def get_ok_frame(channel: int, delivery_tag: int, redelivered: bool, wire: bytes, message_count: int) -> bytes:
    """``basic.get-ok``; ``wire`` is exchange and routing key as two encoded short strings."""
    payload = (
        b"\x00\x3c\x00\x47" + _DELIVER_TAIL.pack(delivery_tag, redelivered) + wire + message_count.to_bytes(4, "big")
    )
    return raw_method_frame(channel, payload)


__all__ = [
    "FRAME_HEAD",
    "HEARTBEAT_FRAME",
    "DeliverTemplate",
    "content_frames",
    "encode_shortstr",
    "get_ok_frame",
    "method_frame",
    "raw_method_frame",
]
