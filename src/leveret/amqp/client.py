"""The client side of one AMQP 0-9-1 connection, without I/O: bytes in, events out.

Theory of operation: the mirror of ``ServerConnection``. ``initiate()`` returns the protocol header;
``receive(data)`` splits the server's byte stream into frames and returns events. The handshake
answers itself (``connection.start`` -> ``start-ok``, ``tune`` -> ``tune-ok`` + ``open``; a
``connection.close`` or ``channel.close`` from the server -> its ``close-ok``): those replies are queued
and the I/O layer takes them with ``data_to_send()`` after each ``receive``.

A content-carrying method (``basic.deliver``, ``get-ok``, ``return``) is parsed only once the whole
message (method, header and body frames) is in the buffer, so there is no assembly state to keep;
incomplete input is kept as a list of chunks and joined only when enough bytes have arrived (a large
message costs linear time, not quadratic). ``basic.deliver`` and ``basic.ack`` have hand-written fast
paths (``struct.unpack_from`` over the buffer, the body sliced out once): this is the client of
``leveret bench``, which must never be the bottleneck of what it measures.

Malformed input from the server becomes a ``ConnectionFailed`` event; a ``connection.close`` with the
error's code is queued for the server and nothing more is parsed.
"""

from __future__ import annotations

import struct
from enum import StrEnum
from typing import Any

from . import methods as m
from .codec import decode_method
from .constants import (
    DEFAULT_CHANNEL_MAX,
    DEFAULT_FRAME_MAX,
    FRAME_BODY,
    FRAME_END,
    FRAME_END_BYTE,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    PROTOCOL_HEADER,
    ReplyCode,
)
from .errors import ProtocolError, frame_error
from .events import ConnectionFailed, Event, MethodReceived
from .frames import FRAME_HEAD, HEARTBEAT_FRAME, content_frames, method_frame

_II = struct.Struct(">I")
_HHQ = struct.Struct(">HHQ")
_QB = struct.Struct(">QB")
_DELIVER_ID = (60 << 16) | 60
_ACK_ID = (60 << 16) | 80
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024


class ClientState(StrEnum):
    AWAIT_START = "await-start"  # header sent, waiting for connection.start
    AWAIT_TUNE = "await-tune"
    AWAIT_OPEN_OK = "await-open-ok"
    OPEN = "open"
    CLOSING = "closing"  # the client sent connection.close and waits for close-ok
    CLOSED = "closed"


C = ClientState

# connection-class methods the server may send, by state -> next state.
RECEIVE: dict[tuple[ClientState, type[m.Method]], ClientState] = {
    (C.AWAIT_START, m.ConnectionStart): C.AWAIT_TUNE,
    (C.AWAIT_TUNE, m.ConnectionTune): C.AWAIT_OPEN_OK,
    (C.AWAIT_OPEN_OK, m.ConnectionOpenOk): C.OPEN,
    (C.OPEN, m.ConnectionBlocked): C.OPEN,
    (C.OPEN, m.ConnectionUnblocked): C.OPEN,
    (C.OPEN, m.ConnectionUpdateSecretOk): C.OPEN,
    (C.CLOSING, m.ConnectionCloseOk): C.CLOSED,
    (C.CLOSING, m.ConnectionClose): C.CLOSED,
}
for _state in (C.AWAIT_START, C.AWAIT_TUNE, C.AWAIT_OPEN_OK, C.OPEN):
    RECEIVE[(_state, m.ConnectionClose)] = C.CLOSED


# ------------------------------------------------------------------------------------- events


class ConnectionOpened(Event):
    """``connection.open-ok`` arrived: channels may be opened."""

    __slots__ = ("frame_max", "heartbeat", "server_properties")

    def __init__(self, frame_max: int, heartbeat: int, server_properties: dict[str, Any]) -> None:
        self.frame_max = frame_max
        self.heartbeat = heartbeat
        self.server_properties = server_properties


class ConnectionClosed(Event):
    """The server closed the connection (``reply_code`` != 200 is an error) or confirmed our close."""

    __slots__ = ("class_id", "method_id", "reply_code", "reply_text")

    def __init__(self, reply_code: int, reply_text: str, class_id: int = 0, method_id: int = 0) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id


class ChannelClosed(Event):
    """The server closed one channel; its ``close-ok`` is already queued."""

    __slots__ = ("channel", "class_id", "method_id", "reply_code", "reply_text")

    def __init__(self, channel: int, reply_code: int, reply_text: str, class_id: int, method_id: int) -> None:
        self.channel = channel
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id


class DeliveryReceived(Event):
    """A whole ``basic.deliver``. ``wire`` is exchange and routing key as two raw short strings;
    ``properties`` the raw flags + property list (``leveret.amqp.properties`` decodes them)."""

    __slots__ = ("body", "channel", "consumer_tag", "delivery_tag", "properties", "redelivered", "wire")

    def __init__(
        self,
        channel: int,
        consumer_tag: str,
        delivery_tag: int,
        redelivered: bool,
        wire: bytes,
        properties: bytes,
        body: bytes,
    ) -> None:
        self.channel = channel
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.wire = wire
        self.properties = properties
        self.body = body


class ContentMethodReceived(Event):
    """Another content-carrying method: ``basic.get-ok`` or ``basic.return``, with its message."""

    __slots__ = ("body", "channel", "method", "properties")

    def __init__(self, channel: int, method: m.Method, properties: bytes, body: bytes) -> None:
        self.channel = channel
        self.method = method
        self.properties = properties
        self.body = body


# --------------------------------------------------------------------------------- connection


class ClientConnection:
    """Protocol state of one connection to a broker, as seen by the client."""

    def __init__(
        self,
        username: str = "guest",
        password: str = "guest",
        virtual_host: str = "/",
        frame_max: int = DEFAULT_FRAME_MAX,
        channel_max: int = DEFAULT_CHANNEL_MAX,
        heartbeat: int = 0,
        client_properties: dict[str, Any] | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.state = ClientState.AWAIT_START
        self.username = username
        self.password = password
        self.virtual_host = virtual_host
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = heartbeat
        self.max_message_size = max_message_size
        self.client_properties = client_properties or {
            "product": "leveret-client",
            "capabilities": {"publisher_confirms": True, "basic.nack": True, "consumer_cancel_notify": True},
        }
        self.server_properties: dict[str, Any] = {}
        self._out: list[bytes] = []
        self._parts: list[bytes] = []  # incomplete input
        self._have = 0  # bytes in _parts
        self._need = 0  # bytes needed before parsing again
        self._tags: dict[bytes, str] = {}  # raw consumer tag -> decoded (deliveries repeat a few tags)

    # ---------------------------------------------------------------------------------- sending

    def initiate(self) -> bytes:
        return PROTOCOL_HEADER

    def data_to_send(self) -> bytes:
        """Bytes the connection itself queued (handshake and close replies) since the last call."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def send(self, channel: int, method: m.Method) -> bytes:
        if channel == 0 and isinstance(method, m.ConnectionClose):
            self.state = C.CLOSING
        return method_frame(channel, method)

    def publish(
        self,
        channel: int,
        exchange: str,
        routing_key: str,
        properties: bytes,
        body: bytes,
        mandatory: bool = False,
    ) -> bytes:
        """Method, header and body frames of one ``basic.publish`` (``properties`` pre-encoded)."""
        head = method_frame(channel, m.BasicPublish(0, exchange, routing_key, mandatory, False))
        return head + b"".join(content_frames(channel, properties, body, self.frame_max))

    def ack(self, channel: int, delivery_tag: int, multiple: bool = False) -> bytes:
        payload = b"\x00\x3c\x00\x50" + _QB.pack(delivery_tag, multiple)
        return FRAME_HEAD.pack(FRAME_METHOD, channel, 13) + payload + FRAME_END_BYTE

    def heartbeat_frame(self) -> bytes:
        return HEARTBEAT_FRAME

    # -------------------------------------------------------------------------------- receiving

    def receive(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        if self.state is C.CLOSED:
            return events
        if self._parts:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._need:
                return events
            data = b"".join(self._parts)
            self._parts = []
        try:
            offset = self._receive_frames(data, events)
        except ProtocolError as exc:
            self._fail(exc, events)
            return events
        if offset < len(data):
            rest = data[offset:]
            self._parts = [rest]
            self._have = len(rest)
            self._need -= offset
        return events

    def _fail(self, exc: ProtocolError, events: list[Event]) -> None:
        """Tell the server why (unless we are closing already) and parse nothing more."""
        self._parts = []
        if self.state is not C.CLOSING:
            self._out.append(method_frame(0, m.ConnectionClose(exc.code, exc.text, exc.class_id, exc.method_id)))
        self.state = C.CLOSED
        events.append(ConnectionFailed(exc))

    def _receive_frames(self, data: bytes, events: list[Event]) -> int:
        """Parse whole frames (whole messages for content methods) from ``data``; returns the offset
        of the first byte not consumed and sets ``_need`` to the bytes needed to get further."""
        end = len(data)
        offset = 0
        unpack_head = FRAME_HEAD.unpack_from
        unpack_id = _II.unpack_from
        max_payload = self.frame_max - 8
        while True:
            if end - offset < 7:
                self._need = offset + 7
                break
            ftype, channel, size = unpack_head(data, offset)
            if size > max_payload:
                raise frame_error(f"frame size {size} exceeds frame_max {self.frame_max}")
            stop = offset + 7 + size
            if stop >= end:
                self._need = stop + 1
                break
            if data[stop] != FRAME_END:
                raise frame_error("frame end octet is not 0xCE")
            if ftype == FRAME_METHOD:
                if size >= 4 and unpack_id(data, offset + 7)[0] == _DELIVER_ID:
                    nxt = self._deliver(data, channel, offset + 7, stop + 1, events)
                else:
                    nxt = self._method(data, channel, offset + 7, stop, events)
                if nxt < 0:  # the rest of a content message has not arrived yet
                    self._need = -nxt
                    break
                offset = nxt
            elif ftype == FRAME_HEARTBEAT:
                offset = stop + 1
            elif ftype in (FRAME_HEADER, FRAME_BODY):
                raise ProtocolError(ReplyCode.UNEXPECTED_FRAME, f"content frame without a method on channel {channel}")
            else:
                raise frame_error(f"unknown frame type {ftype}")
            if self.state is C.CLOSED:
                break
        return offset

    def _content(self, data: bytes, channel: int, offset: int) -> tuple[bytes, bytes, int]:
        """Properties, body and the offset after the last body frame of the message whose header
        frame starts at ``offset``; the offset is ``-needed`` when the message is incomplete."""
        end = len(data)
        if end - offset < 7 + 14 + 1:
            return b"", b"", -(offset + 22)
        ftype, ch, size = FRAME_HEAD.unpack_from(data, offset)
        if ftype != FRAME_HEADER or ch != channel or size < 14:
            raise ProtocolError(ReplyCode.UNEXPECTED_FRAME, f"expected a content header on channel {channel}")
        stop = offset + 7 + size
        if stop >= end:
            return b"", b"", -(stop + 1)
        if data[stop] != FRAME_END:
            raise frame_error("frame end octet is not 0xCE")
        body_size = _HHQ.unpack_from(data, offset + 7)[2]
        if body_size > self.max_message_size:
            raise frame_error(f"message body of {body_size} bytes exceeds the client's limit")
        properties = data[offset + 19 : stop]
        offset = stop + 1
        if body_size == 0:
            return properties, b"", offset
        parts: list[bytes] = []
        got = 0
        while got < body_size:
            if end - offset < 8:
                return b"", b"", -(offset + 8 + body_size - got)
            ftype, ch, size = FRAME_HEAD.unpack_from(data, offset)
            stop = offset + 7 + size
            if stop >= end:
                return b"", b"", -(stop + 1 + body_size - got - size)
            if ftype != FRAME_BODY or ch != channel or data[stop] != FRAME_END:
                raise ProtocolError(ReplyCode.UNEXPECTED_FRAME, f"expected a body frame on channel {channel}")
            parts.append(data[offset + 7 : stop])
            got += size
            offset = stop + 1
        if got != body_size:
            raise frame_error(f"body frames exceed the declared size {body_size}")
        return properties, parts[0] if len(parts) == 1 else b"".join(parts), offset

    def _deliver(self, data: bytes, channel: int, start: int, after: int, events: list[Event]) -> int:
        """Fast path for ``basic.deliver`` whose method payload starts at ``start``."""
        try:
            n = data[start + 4]
            o = start + 5 + n
            raw_tag = data[start + 5 : o]
            delivery_tag, redelivered = _QB.unpack_from(data, o)
            o += 9
            o += 1 + data[o]
            o += 1 + data[o]
        except (IndexError, struct.error):
            raise ProtocolError(ReplyCode.SYNTAX_ERROR, "malformed basic.deliver", 60, 60) from None
        if o != after - 1:
            raise ProtocolError(ReplyCode.SYNTAX_ERROR, "malformed basic.deliver", 60, 60)
        properties, body, nxt = self._content(data, channel, after)
        if nxt < 0:
            return nxt
        tag = self._tags.get(raw_tag)
        if tag is None:
            tag = self._tags[raw_tag] = raw_tag.decode("utf-8", "surrogateescape")
        wire = data[start + 14 + n : o]
        events.append(DeliveryReceived(channel, tag, delivery_tag, bool(redelivered), wire, properties, body))
        return nxt

    def _method(self, data: bytes, channel: int, start: int, stop: int, events: list[Event]) -> int:
        if stop - start == 13 and _II.unpack_from(data, start)[0] == _ACK_ID:
            tag, bits = _QB.unpack_from(data, start + 4)
            method: m.Method = m.BasicAck(tag, bool(bits & 1))
        else:
            method = decode_method(memoryview(data)[start:stop])
        if method.HAS_CONTENT:
            properties, body, nxt = self._content(data, channel, stop + 1)
            if nxt >= 0:
                events.append(ContentMethodReceived(channel, method, properties, body))
            return nxt
        if channel == 0:
            self._connection_method(method, events)
        elif isinstance(method, m.ChannelClose):
            self._out.append(method_frame(channel, m.ChannelCloseOk()))
            events.append(
                ChannelClosed(channel, method.reply_code, method.reply_text, method.class_id, method.method_id)
            )
        else:
            events.append(MethodReceived(channel, method))
        return stop + 1

    # ----------------------------------------------------------------------------- handshake

    def _connection_method(self, method: m.Method, events: list[Event]) -> None:
        nxt = RECEIVE.get((self.state, type(method)))
        if nxt is None:
            if self.state is C.CLOSING:
                return  # spec 4.2.4: after sending close, everything but close/close-ok is discarded
            raise ProtocolError(
                ReplyCode.COMMAND_INVALID,
                f"{method.NAME} not expected in state {self.state}",
                method.CLASS_ID,
                method.METHOD_ID,
            )
        self.state = nxt
        if isinstance(method, m.ConnectionStart):
            self._start(method)
        elif isinstance(method, m.ConnectionTune):
            self._tune(method)
        elif isinstance(method, m.ConnectionOpenOk):
            events.append(ConnectionOpened(self.frame_max, self.heartbeat, self.server_properties))
        elif isinstance(method, m.ConnectionClose):
            if nxt is C.CLOSED:
                self._out.append(method_frame(0, m.ConnectionCloseOk()))
            events.append(ConnectionClosed(method.reply_code, method.reply_text, method.class_id, method.method_id))
        elif isinstance(method, m.ConnectionCloseOk):
            events.append(ConnectionClosed(ReplyCode.REPLY_SUCCESS, "closed"))
        else:
            events.append(MethodReceived(0, method))

    def _start(self, method: m.ConnectionStart) -> None:
        self.server_properties = method.server_properties
        if b"PLAIN" not in method.mechanisms.split():
            raise ProtocolError(ReplyCode.NOT_IMPLEMENTED, "the server does not offer PLAIN authentication")
        response = b"\x00" + self.username.encode() + b"\x00" + self.password.encode()
        self._out.append(method_frame(0, m.ConnectionStartOk(self.client_properties, "PLAIN", response, "en_US")))

    def _tune(self, method: m.ConnectionTune) -> None:
        self.frame_max = _negotiate(self.frame_max, method.frame_max)
        self.channel_max = _negotiate(self.channel_max, method.channel_max)
        self.heartbeat = _negotiate(self.heartbeat, method.heartbeat) if self.heartbeat else 0
        self._out.append(method_frame(0, m.ConnectionTuneOk(self.channel_max, self.frame_max, self.heartbeat)))
        self._out.append(method_frame(0, m.ConnectionOpen(self.virtual_host, "", False)))


def _negotiate(ours: int, theirs: int) -> int:
    """The lower of two limits where 0 means "no limit" (spec 1.4.2.6)."""
    if not ours or not theirs:
        return ours or theirs
    return min(ours, theirs)


__all__ = [
    "ChannelClosed",
    "ClientConnection",
    "ClientState",
    "ConnectionClosed",
    "ConnectionOpened",
    "ContentMethodReceived",
    "DeliveryReceived",
]
