"""The server side of one AMQP 0-9-1 connection, without I/O: bytes in, events out.

Theory of operation: ``receive(data)`` splits the byte stream into frames (``struct.unpack_from``
over the received bytes, no copies but the bodies), checks each frame against the connection
handshake table (``RECEIVE``), the channel tables (``leveret.amqp.channel``) and the negotiated
limits, and returns the events. Incomplete input is simply kept for the next call ("need more
bytes"); malformed input becomes a ``ConnectionFailed`` (hard, connection-scoped) or ``ChannelFailed``
(soft) event carrying the reply code, and after a hard error nothing more is parsed.

``send(channel, method)`` encodes a method and applies the server-side transitions (``SEND``). The
hot-path frames (``basic.deliver``, content) are encoded by ``leveret.amqp.frames`` directly.
"""

from __future__ import annotations

import struct
from enum import StrEnum

from . import methods as m
from .channel import ASSEMBLY, Assembly, ChannelMachine, ChannelState
from .codec import decode_method
from .constants import (
    DEFAULT_CHANNEL_MAX,
    DEFAULT_FRAME_MAX,
    FRAME_BODY,
    FRAME_END,
    FRAME_HEADER,
    FRAME_HEARTBEAT,
    FRAME_METHOD,
    FRAME_MIN_SIZE,
    PROTOCOL_HEADER,
    ReplyCode,
)
from .errors import ProtocolError, frame_error
from .events import (
    BadProtocolHeaderReceived,
    ChannelFailed,
    ConnectionFailed,
    ContentBatch,
    ContentReceived,
    Event,
    MethodReceived,
    ProtocolHeaderReceived,
)
from .frames import method_frame
from .properties import validate_properties

_FRAME_HEAD = struct.Struct(">BHI")
_HH = struct.Struct(">HH")
_HHQ = struct.Struct(">HHQ")
_ACK = struct.Struct(">QB")
_PUBLISH_ID = (60 << 16) | 40
_ACK_ID = (60 << 16) | 80
_II = struct.Struct(">I")
_HEADER_HEAD = struct.Struct(">BHIHHQ")  # frame head + class id, weight, body size
# Publishes repeat their exchange, routing key and properties: what was decoded or checked once is
# remembered (bounded; these are pure functions of the bytes, so one cache serves every connection).
_CACHE_SIZE = 1024
# Values are shared, never mutated: one method object and one ``wire`` (exchange + routing key bytes)
# per distinct method, one bytes object per distinct property list, so a backlog of messages that
# arrived alike holds one copy of each instead of one per message.
_PUBLISHES: dict[bytes, tuple[m.BasicPublish, bytes]] = {}
_VALID_PROPERTIES: dict[bytes, bytes] = {}


def _validated(properties: bytes) -> bytes | None:
    """The canonical copy of a well-formed property list, or None."""
    try:
        validate_properties(properties)
    except ProtocolError:
        return None
    if len(_VALID_PROPERTIES) >= _CACHE_SIZE:
        _VALID_PROPERTIES.clear()
    _VALID_PROPERTIES[properties] = properties
    return properties


DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024


class ConnectionState(StrEnum):
    AWAIT_HEADER = "await-header"
    HEADER_RECEIVED = "header-received"  # server sends connection.start
    AWAIT_START_OK = "await-start-ok"
    STARTED = "started"  # server checks credentials, sends tune (or secure, or close)
    AWAIT_SECURE_OK = "await-secure-ok"
    AWAIT_TUNE_OK = "await-tune-ok"
    AWAIT_OPEN = "await-open"
    OPENING = "opening"  # server checks the vhost, sends open-ok
    OPEN = "open"
    PEER_CLOSED = "peer-closed"  # the client sent connection.close; server answers close-ok
    CLOSING = "closing"  # the server sent connection.close and waits for close-ok
    CLOSED = "closed"


S = ConnectionState

# Methods the client may send on channel 0, by state -> next state.
RECEIVE: dict[tuple[ConnectionState, type[m.Method]], ConnectionState] = {
    (S.AWAIT_START_OK, m.ConnectionStartOk): S.STARTED,
    (S.AWAIT_SECURE_OK, m.ConnectionSecureOk): S.STARTED,
    (S.AWAIT_TUNE_OK, m.ConnectionTuneOk): S.AWAIT_OPEN,
    (S.AWAIT_OPEN, m.ConnectionOpen): S.OPENING,
    (S.OPEN, m.ConnectionUpdateSecret): S.OPEN,
    (S.CLOSING, m.ConnectionCloseOk): S.CLOSED,
    (S.CLOSING, m.ConnectionClose): S.CLOSING,
}
for _state in (S.AWAIT_TUNE_OK, S.AWAIT_OPEN, S.OPENING, S.OPEN):
    RECEIVE[(_state, m.ConnectionClose)] = S.PEER_CLOSED

# Methods the server may send on channel 0, by state -> next state.
SEND: dict[tuple[ConnectionState, type[m.Method]], ConnectionState] = {
    (S.HEADER_RECEIVED, m.ConnectionStart): S.AWAIT_START_OK,
    (S.STARTED, m.ConnectionSecure): S.AWAIT_SECURE_OK,
    (S.STARTED, m.ConnectionTune): S.AWAIT_TUNE_OK,
    (S.OPENING, m.ConnectionOpenOk): S.OPEN,
    (S.OPEN, m.ConnectionUpdateSecretOk): S.OPEN,
    (S.OPEN, m.ConnectionBlocked): S.OPEN,
    (S.OPEN, m.ConnectionUnblocked): S.OPEN,
    (S.PEER_CLOSED, m.ConnectionCloseOk): S.CLOSED,
    (S.CLOSING, m.ConnectionCloseOk): S.CLOSING,
}
for _state in ConnectionState:
    if _state not in (S.AWAIT_HEADER, S.CLOSED):
        SEND[(_state, m.ConnectionClose)] = S.CLOSING


class ServerConnection:
    """Protocol state of one client connection, as seen by the broker."""

    def __init__(
        self,
        frame_max: int = DEFAULT_FRAME_MAX,
        channel_max: int = DEFAULT_CHANNEL_MAX,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        self.state = ConnectionState.AWAIT_HEADER
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.max_message_size = max_message_size
        self.channels: dict[int, ChannelMachine] = {}
        self._pending: list[bytes] = []  # an incomplete frame (or protocol header), as it arrived
        self._buffered = 0  # bytes in _pending
        self._needed = 0  # bytes the incomplete frame needs in all: until then nothing is joined
        # After a hard error nothing is parsed until the server's connection.close is out (the events
        # before the error are still answered), and never again after a frame error: framing is lost.
        self._halted = False
        self._desynced = False
        # The last whole publish, for the next one that repeats it byte for byte up to its body (same
        # channel, exchange, routing key, properties, body size: the usual stream of a publisher):
        # (method frame + header frame + body frame head, body size, channel, method, properties, wire)
        self._repeat: tuple[bytes, int, int, m.BasicPublish, bytes, bytes] | None = None
        self._frame_limit = FRAME_MIN_SIZE  # spec 4.2.3/connection.tune: frame-min-size until tune-ok

    # ------------------------------------------------------------------------------ negotiation

    def tuned(self, frame_max: int, channel_max: int) -> None:
        """Apply the limits the client chose in ``connection.tune-ok`` (0 means "no limit"): a client
        can only lower ours. The machine calls this itself when it parses tune-ok, so the frames
        right behind it are checked against the negotiated limits."""
        if frame_max:
            self.frame_max = max(FRAME_MIN_SIZE, min(frame_max, self.frame_max))
        if channel_max:
            self.channel_max = min(channel_max, self.channel_max)
        self._frame_limit = self.frame_max

    # ---------------------------------------------------------------------------------- sending

    def send(self, channel: int, method: m.Method) -> bytes:
        if channel == 0:
            self._repeat = None  # the connection's state may change: publishes take the long way
            key = (self.state, type(method))
            nxt = SEND.get(key)
            if nxt is None:
                raise RuntimeError(f"server cannot send {method.NAME} in state {self.state}")
            self.state = nxt
            if nxt is S.CLOSING:
                self._halted = self._desynced  # read the peer's close-ok, if the stream still has frames
        elif isinstance(method, m.ChannelClose):
            ch = self.channels.get(channel)
            if ch is not None:
                ch.state = ChannelState.CLOSING
                ch.reset_content()
                self._repeat = None
        return method_frame(channel, method)

    def close_channel(self, channel: int) -> None:
        """Forget a channel (after close-ok went either way)."""
        self.channels.pop(channel, None)
        self._repeat = None

    # -------------------------------------------------------------------------------- receiving

    def receive(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        if self.state is S.CLOSED or self._halted:
            return events
        if self._pending:
            self._pending.append(data)
            self._buffered += len(data)
            if self._buffered < self._needed:
                return events  # a frame arriving in many small pieces costs linear time, not quadratic
            data = b"".join(self._pending)
            self._pending = []
        offset = 0
        if self.state is S.AWAIT_HEADER:
            offset = self._receive_header(data, events)
            if self.state is S.AWAIT_HEADER:
                return events
        try:
            offset = self._receive_frames(data, offset, events)
        except ProtocolError as exc:
            self._halted = True
            self._desynced = exc.code is ReplyCode.FRAME_ERROR
            events.append(ConnectionFailed(exc))
            return events
        if offset < len(data):
            rest = data[offset:]
            self._pending = [rest]
            self._buffered = len(rest)
            # a frame is head(7) + payload + end(1); before its head is in, the head is what is needed
            self._needed = 8 + _II.unpack_from(rest, 3)[0] if len(rest) >= 7 else 7
        return events

    def _receive_header(self, data: bytes, events: list[Event]) -> int:
        if len(data) < len(PROTOCOL_HEADER):
            if PROTOCOL_HEADER.startswith(data):
                self._pending = [data]  # _needed stays 0: every byte of a header is checked at once
            else:
                self.state = S.CLOSED
                events.append(BadProtocolHeaderReceived(data))
            return len(data)
        if data[:8] != PROTOCOL_HEADER:
            self.state = S.CLOSED
            events.append(BadProtocolHeaderReceived(data[:8]))
            return len(data)
        self.state = S.HEADER_RECEIVED
        events.append(ProtocolHeaderReceived())
        return 8

    def _receive_frames(self, data: bytes, offset: int, events: list[Event]) -> int:
        end = len(data)
        view = memoryview(data)
        repeat = self._repeat
        batch: ContentBatch | None = None  # the repeats in a row so far, the last event while there is one
        while end - offset >= 7:
            if repeat is not None:
                prefix = repeat[0]
                if data.startswith(prefix, offset):
                    body = offset + len(prefix)
                    after = body + repeat[1] + 1
                    if after <= end and data[after - 1] == FRAME_END:
                        if batch is None:
                            batch = ContentBatch(repeat[2], repeat[3], repeat[4], repeat[5])
                            events.append(batch)
                        batch.bodies.append(data[body : after - 1])
                        offset = after
                        continue
                # Anything else goes frame by frame; it may change the channel's state (a close, a
                # content split over frames), so the repeat is only trusted again after a whole publish.
                repeat = self._repeat = None
            batch = None
            ftype, channel, size = _FRAME_HEAD.unpack_from(data, offset)
            # Checked before a byte of the payload is buffered. Like RabbitMQ (its FRAME_SIZE_FUDGE, for
            # clients that forget the 8 bytes of framing) we take payloads of up to frame_max itself.
            if size > self._frame_limit:
                raise frame_error(f"frame payload of {size} bytes exceeds frame_max {self._frame_limit}")
            stop = offset + 7 + size
            if stop >= end:
                break  # need more bytes (the frame-end octet too)
            if data[stop] != FRAME_END:
                raise frame_error("frame end octet is not 0xCE")
            start = offset + 7
            offset = stop + 1
            if ftype == FRAME_METHOD:
                if channel and self.state is S.OPEN:
                    after = self._whole_publish(data, start, stop, channel, events)
                    if after:
                        offset = after
                        repeat = self._repeat
                        continue
                self._method_frame(channel, view[start:stop], events)
            elif ftype == FRAME_HEADER:
                self._header_frame(channel, view[start:stop], events)
            elif ftype == FRAME_BODY:
                self._body_frame(channel, data[start:stop], events)
            elif ftype == FRAME_HEARTBEAT:
                if channel != 0:  # spec 4.2.7: 501, where RabbitMQ says 505
                    raise frame_error("heartbeat frame on a channel other than 0")
                if size:
                    raise frame_error("heartbeat frame with a payload")
            else:
                raise frame_error(f"unknown frame type {ftype}")
            if self.state is S.CLOSED:
                break
        return offset

    def _whole_publish(self, data: bytes, start: int, stop: int, channel: int, events: list[Event]) -> int:
        """The hot path: a ``basic.publish`` (payload ``data[start:stop]``) whose header frame and
        single body frame are already in ``data`` becomes one event without a round through the
        channel's assembly states; returns the offset after the body frame. Anything else (another
        method, a message not all here or in several body frames, an empty body, a limit hit, a
        malformed frame, a channel not plainly open) returns 0 and goes frame by frame, where the
        errors are raised. Frame by frame, a publish cost ~3.9 us to parse; whole, ~1.3 us."""
        if stop - start < 4 or _II.unpack_from(data, start)[0] != _PUBLISH_ID:
            return 0
        ch = self.channels.get(channel)
        if ch is None or ch.state is not ChannelState.OPEN or ch.assembly is not Assembly.IDLE:
            return 0
        head = stop + 1
        end = len(data)
        if end - head < 22:
            return 0
        htype, hchannel, hsize, class_id, _weight, body_size = _HEADER_HEAD.unpack_from(data, head)
        body = head + 8 + hsize  # the body frame's head
        limit = self._frame_limit
        if htype != FRAME_HEADER or hchannel != channel or class_id != 60 or not 14 <= hsize <= limit:
            return 0
        if not 0 < body_size <= min(limit, self.max_message_size) or end - body < 8 + body_size:
            return 0
        btype, bchannel, bsize = _FRAME_HEAD.unpack_from(data, body)
        after: int = body + 8 + bsize
        if btype != FRAME_BODY or bchannel != channel or bsize != body_size:
            return 0
        if data[body - 1] != FRAME_END or data[after - 1] != FRAME_END:
            return 0
        properties = data[head + 19 : body - 1]
        canonical = _VALID_PROPERTIES.get(properties) or _validated(properties)
        if canonical is None:
            return 0
        raw = data[start + 4 : stop]  # ticket, exchange, routing key, bits: the same for many publishes
        known = _PUBLISHES.get(raw)
        if known is None:
            try:
                method = _decode_publish(memoryview(data)[start:stop])
            except ProtocolError:
                return 0
            method.ticket = 0
            if len(_PUBLISHES) >= _CACHE_SIZE:
                _PUBLISHES.clear()
            known = _PUBLISHES[raw] = (method, raw[2:-1])
        events.append(ContentReceived(channel, known[0], canonical, data[body + 7 : after - 1], known[1]))
        self._repeat = (data[start - 7 : body + 7], body_size, channel, known[0], canonical, known[1])
        return after

    # ------------------------------------------------------------------------------ frame kinds

    def _method_frame(self, channel: int, payload: memoryview, events: list[Event]) -> None:
        if channel == 0:
            self._connection_method(payload, events)
            return
        ch = self._channel_for(channel, payload, events)
        if ch is None:
            return
        if not ASSEMBLY.get((ch.assembly, FRAME_METHOD)):
            raise ProtocolError(ReplyCode.UNEXPECTED_FRAME, f"method frame on channel {channel} mid-content", 60, 40)
        if len(payload) >= 4 and _II.unpack_from(payload, 0)[0] == _PUBLISH_ID:
            method: m.Method = _decode_publish(payload)
            ch.wire = bytes(payload[6:-1])
        elif len(payload) == 13 and _II.unpack_from(payload, 0)[0] == _ACK_ID:
            tag, bits = _ACK.unpack_from(payload, 4)
            method = m.BasicAck(tag, bool(bits & 1))
        else:
            method = decode_method(payload)
        if ch.state is ChannelState.CLOSING:
            if isinstance(method, m.ChannelCloseOk):
                self.channels.pop(channel, None)
            elif isinstance(method, m.ChannelClose):
                events.append(MethodReceived(channel, method))
            return  # spec 4.2.4: everything else is discarded while closing
        # Methods only servers send, connection methods off channel 0 and a close-ok nobody asked
        # for (the closing case is above): RabbitMQ's code and text.
        if not method.FROM_CLIENT or method.CLASS_ID == 10 or type(method) is m.ChannelCloseOk:
            raise ProtocolError(
                ReplyCode.COMMAND_INVALID, f"unimplemented method {method.NAME}", method.CLASS_ID, method.METHOD_ID
            )
        if method.HAS_CONTENT:
            ch.assembly = Assembly.AWAIT_HEADER
            ch.method = method
            return
        if isinstance(method, m.ChannelClose):
            self.channels.pop(channel, None)
        elif isinstance(method, m.ChannelOpen):
            raise ProtocolError(ReplyCode.CHANNEL_ERROR, f"second 'channel.open' seen on channel {channel}", 20, 10)
        events.append(MethodReceived(channel, method))

    def _channel_for(self, channel: int, payload: memoryview, events: list[Event]) -> ChannelMachine | None:
        """The channel a frame is for; opens it on ``channel.open`` (and then returns None)."""
        if self.state is not S.OPEN and self.state is not S.OPENING:
            if self.state is S.CLOSING or self.state is S.PEER_CLOSED:
                return None
            raise ProtocolError(ReplyCode.UNEXPECTED_FRAME, f"channel {channel} frame before connection.open")
        ch = self.channels.get(channel)
        if ch is not None:
            return ch
        if channel > self.channel_max:
            raise ProtocolError(ReplyCode.NOT_ALLOWED, f"channel {channel} exceeds channel_max {self.channel_max}")
        method = decode_method(payload)
        if not isinstance(method, m.ChannelOpen):
            raise ProtocolError(
                ReplyCode.CHANNEL_ERROR,
                f"expected 'channel.open' on channel {channel}",
                method.CLASS_ID,
                method.METHOD_ID,
            )
        self.channels[channel] = ChannelMachine()
        events.append(MethodReceived(channel, method))
        return None

    def _connection_method(self, payload: memoryview, events: list[Event]) -> None:
        method = decode_method(payload)
        nxt = RECEIVE.get((self.state, type(method)))
        if nxt is None:
            if self.state in (S.CLOSING, S.PEER_CLOSED):
                return
            raise ProtocolError(  # RabbitMQ's code and text (rabbit_reader, handle_method0)
                ReplyCode.CHANNEL_ERROR,
                f"unexpected method {method.NAME} in connection state {self.state}",
                method.CLASS_ID,
                method.METHOD_ID,
            )
        self.state = nxt
        if type(method) is m.ConnectionTuneOk:
            self.tuned(method.frame_max, method.channel_max)
        events.append(MethodReceived(0, method))

    def _header_frame(self, channel: int, payload: memoryview, events: list[Event]) -> None:
        ch = self._content_channel(channel, FRAME_HEADER)
        if ch is None:
            return
        if len(payload) < 14:
            raise frame_error("content header frame too short")
        class_id, _weight, body_size = _HHQ.unpack_from(payload, 0)
        if class_id != 60:
            raise ProtocolError(ReplyCode.UNEXPECTED_FRAME, f"content header for class {class_id}", 60, 40)
        properties = payload[12:]
        try:
            validate_properties(properties)
        except ProtocolError as exc:
            exc.class_id, exc.method_id = 60, 40
            raise
        ch.properties = bytes(properties)
        if body_size > self.max_message_size:
            ch.reset_content()
            events.append(
                ChannelFailed(
                    channel,
                    ProtocolError(
                        ReplyCode.PRECONDITION_FAILED,
                        f"message size {body_size} is larger than configured max size {self.max_message_size}",
                        60,
                        40,
                    ),
                )
            )
            ch.state = ChannelState.CLOSING
            return
        ch.body_size = body_size
        if body_size == 0:
            self._content_done(channel, ch, b"", events)
        else:
            ch.assembly = Assembly.AWAIT_BODY

    def _body_frame(self, channel: int, chunk: bytes, events: list[Event]) -> None:
        ch = self._content_channel(channel, FRAME_BODY)
        if ch is None:
            return
        received = ch.body_received + len(chunk)
        if received > ch.body_size:
            raise frame_error(f"body frames exceed the declared size {ch.body_size}")
        if received == ch.body_size and not ch.body_parts:
            self._content_done(channel, ch, chunk, events)
            return
        ch.body_parts.append(chunk)
        ch.body_received = received
        if received == ch.body_size:
            self._content_done(channel, ch, b"".join(ch.body_parts), events)

    def _content_channel(self, channel: int, ftype: int) -> ChannelMachine | None:
        ch = self.channels.get(channel)
        if ch is None:
            if self.state is S.CLOSING or self.state is S.PEER_CLOSED:
                return None
            # RabbitMQ: 505 "expected method frame, got non method frame instead"
            raise ProtocolError(ReplyCode.UNEXPECTED_FRAME, f"content frame on unopened channel {channel}")
        if ch.state is ChannelState.CLOSING:
            return None
        if not ASSEMBLY.get((ch.assembly, ftype)):
            raise ProtocolError(ReplyCode.UNEXPECTED_FRAME, f"unexpected content frame on channel {channel}")
        return ch

    def _content_done(self, channel: int, ch: ChannelMachine, body: bytes, events: list[Event]) -> None:
        method = ch.method
        assert isinstance(method, m.BasicPublish)
        events.append(ContentReceived(channel, method, ch.properties, body, ch.wire))
        ch.assembly = Assembly.IDLE
        ch.method = None
        ch.body_parts = []
        ch.body_received = 0


def _decode_publish(payload: memoryview) -> m.BasicPublish:
    """Fast path for basic.publish: ticket, exchange, routing key, mandatory/immediate bits."""
    try:
        n = payload[6]
        exchange = bytes(payload[7 : 7 + n]).decode("utf-8", "surrogateescape")
        o = 7 + n
        k = payload[o]
        routing_key = bytes(payload[o + 1 : o + 1 + k]).decode("utf-8", "surrogateescape")
        bits = payload[o + 1 + k]
    except IndexError:
        raise ProtocolError(ReplyCode.SYNTAX_ERROR, "malformed basic.publish", 60, 40) from None
    if o + 2 + k != len(payload):
        raise ProtocolError(ReplyCode.SYNTAX_ERROR, "malformed basic.publish", 60, 40)
    return m.BasicPublish(0, exchange, routing_key, bool(bits & 1), bool(bits & 2))
