"""The sans-I/O client connection, driven with bytes the server side's encoders produce."""

from __future__ import annotations

from leveret.amqp import methods as m
from leveret.amqp.client import (
    ChannelClosed,
    ClientConnection,
    ClientState,
    ConnectionClosed,
    ConnectionOpened,
    ContentMethodReceived,
    DeliveryReceived,
)
from leveret.amqp.codec import decode_method
from leveret.amqp.constants import PROTOCOL_HEADER, ReplyCode
from leveret.amqp.events import ConnectionFailed, MethodReceived
from leveret.amqp.frames import DeliverTemplate, content_frames, encode_shortstr, method_frame


def _methods(data: bytes) -> list[tuple[int, m.Method]]:
    out, offset = [], 0
    while offset < len(data):
        size = int.from_bytes(data[offset + 3 : offset + 7], "big")
        channel = int.from_bytes(data[offset + 1 : offset + 3], "big")
        assert data[offset] == 1 and data[offset + 7 + size] == 0xCE
        out.append((channel, decode_method(data[offset + 7 : offset + 7 + size])))
        offset += 8 + size
    return out


def _open(conn: ClientConnection, frame_max: int = 131072) -> None:
    assert conn.initiate() == PROTOCOL_HEADER
    assert conn.receive(method_frame(0, m.ConnectionStart(0, 9, {"product": "x"}, b"AMQPLAIN PLAIN", b"en_US"))) == []
    ((ch, start_ok),) = _methods(conn.data_to_send())
    assert isinstance(start_ok, m.ConnectionStartOk)
    assert start_ok.mechanism == "PLAIN" and start_ok.response == b"\x00guest\x00guest"
    assert conn.receive(method_frame(0, m.ConnectionTune(2047, frame_max, 60))) == []
    tune_ok, open_ = (meth for _, meth in _methods(conn.data_to_send()))
    assert tune_ok == m.ConnectionTuneOk(2047, min(frame_max, 131072), 0)
    assert isinstance(open_, m.ConnectionOpen) and open_.virtual_host == "/"
    events = conn.receive(method_frame(0, m.ConnectionOpenOk()))
    assert len(events) == 1 and isinstance(events[0], ConnectionOpened)
    assert conn.state is ClientState.OPEN


def _delivery(tag: int, body: bytes, frame_max: int = 131072) -> bytes:
    wire = encode_shortstr("") + encode_shortstr("q")
    return b"".join(DeliverTemplate(1, "ctag").frames(tag, tag % 2 == 0, wire, b"\x10\x00\x02", body, frame_max))


def test_handshake_then_methods_on_a_channel() -> None:
    conn = ClientConnection()
    _open(conn)
    events = conn.receive(method_frame(1, m.ChannelOpenOk()) + method_frame(1, m.BasicQosOk()))
    assert [type(e.method) for e in events if isinstance(e, MethodReceived)] == [m.ChannelOpenOk, m.BasicQosOk]


def test_deliveries_split_at_every_byte_arrive_whole_and_in_order() -> None:
    stream = _delivery(1, b"a" * 16) + _delivery(2, b"") + _delivery(3, b"xyz")
    for cut in range(1, len(stream)):
        conn = ClientConnection()
        _open(conn)
        events = conn.receive(stream[:cut]) + conn.receive(stream[cut:])
        assert [(e.delivery_tag, e.body, e.redelivered) for e in events if isinstance(e, DeliveryReceived)] == [
            (1, b"a" * 16, False),
            (2, b"", True),
            (3, b"xyz", False),
        ], cut
        first = events[0]
        assert isinstance(first, DeliveryReceived)
        assert (first.channel, first.consumer_tag, first.properties) == (1, "ctag", b"\x10\x00\x02")
        assert first.wire == b"\x00\x01q"


def test_a_message_over_several_body_frames_fed_in_small_chunks() -> None:
    conn = ClientConnection()
    _open(conn, frame_max=4096)
    body = bytes(range(256)) * 50  # 12800 bytes: four body frames of at most 4088
    stream = _delivery(7, body, 4096)
    events = []
    for i in range(0, len(stream), 1000):
        events += conn.receive(stream[i : i + 1000])
    assert [(e.delivery_tag, e.body) for e in events if isinstance(e, DeliveryReceived)] == [(7, body)]


def test_basic_return_and_acks() -> None:
    conn = ClientConnection()
    _open(conn)
    ret = method_frame(1, m.BasicReturn(312, "NO_ROUTE", "", "nowhere"))
    ret += b"".join(content_frames(1, b"\x00\x00", b"body", 131072))
    ack = method_frame(1, m.BasicAck(5, True))
    events = conn.receive(ret + ack)
    assert isinstance(events[0], ContentMethodReceived) and events[0].body == b"body"
    assert isinstance(events[0].method, m.BasicReturn) and events[0].method.routing_key == "nowhere"
    assert isinstance(events[1], MethodReceived) and events[1].method == m.BasicAck(5, True)


def test_server_closes_a_channel_and_the_connection() -> None:
    conn = ClientConnection()
    _open(conn)
    events = conn.receive(method_frame(1, m.ChannelClose(404, "NOT_FOUND - no queue 'q'", 50, 10)))
    assert isinstance(events[0], ChannelClosed) and (events[0].channel, events[0].reply_code) == (1, 404)
    assert _methods(conn.data_to_send()) == [(1, m.ChannelCloseOk())]
    events = conn.receive(method_frame(0, m.ConnectionClose(320, "CONNECTION_FORCED", 0, 0)))
    assert isinstance(events[0], ConnectionClosed) and events[0].reply_code == 320
    assert _methods(conn.data_to_send()) == [(0, m.ConnectionCloseOk())]
    assert conn.state is ClientState.CLOSED


def test_client_close_then_close_ok() -> None:
    conn = ClientConnection()
    _open(conn)
    conn.send(0, m.ConnectionClose(200, "bye", 0, 0))
    assert conn.receive(_delivery(1, b"late")) != []  # deliveries in flight still arrive
    events = conn.receive(method_frame(0, m.ConnectionCloseOk()))
    assert isinstance(events[0], ConnectionClosed) and events[0].reply_code == 200
    assert conn.state is ClientState.CLOSED


def test_malformed_input_fails_the_connection_and_tells_the_server() -> None:
    conn = ClientConnection()
    _open(conn)
    bad = bytearray(method_frame(1, m.BasicQosOk()))
    bad[-1] = 0x00
    events = conn.receive(bytes(bad))
    assert len(events) == 1 and isinstance(events[0], ConnectionFailed)
    assert events[0].error.code is ReplyCode.FRAME_ERROR
    ((_, close),) = _methods(conn.data_to_send())
    assert isinstance(close, m.ConnectionClose) and close.reply_code == ReplyCode.FRAME_ERROR
    assert conn.receive(method_frame(1, m.BasicQosOk())) == []  # nothing more is parsed


def test_a_body_frame_without_its_method_is_unexpected() -> None:
    conn = ClientConnection()
    _open(conn)
    events = conn.receive(b"".join(content_frames(1, b"\x00\x00", b"x", 131072)))
    assert isinstance(events[0], ConnectionFailed) and events[0].error.code is ReplyCode.UNEXPECTED_FRAME


def test_publish_and_ack_frames_decode() -> None:
    conn = ClientConnection()
    _open(conn)
    data = conn.publish(1, "ex", "rk", b"\x00\x00", b"hello")
    size = int.from_bytes(data[3:7], "big")
    assert decode_method(data[7 : 7 + size]) == m.BasicPublish(0, "ex", "rk", False, False)
    assert data.endswith(b"\x03\x00\x01\x00\x00\x00\x05hello\xce")
    assert _methods(conn.ack(1, 99, True)) == [(1, m.BasicAck(99, True))]
