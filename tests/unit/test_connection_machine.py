"""The sans-I/O ServerConnection driven with bytes alone: handshake, content assembly over any chunking,
and every malformed or out-of-order input mapped to its reply code (RabbitMQ's where it has one)."""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leveret.amqp import methods as m
from leveret.amqp.channel import Assembly, ChannelState
from leveret.amqp.connection import ConnectionState, ServerConnection
from leveret.amqp.constants import FRAME_MIN_SIZE, PROTOCOL_HEADER, ReplyCode
from leveret.amqp.events import (
    BadProtocolHeaderReceived,
    ChannelFailed,
    ConnectionFailed,
    ContentReceived,
    Event,
    MethodReceived,
    ProtocolHeaderReceived,
)
from leveret.amqp.frames import content_frames, encode_shortstr, method_frame, raw_method_frame
from leveret.amqp.properties import BasicProperties, encode_properties

HEAD = struct.Struct(">BHI")
SERVER_FRAME_MAX = 131072
START_OK = method_frame(0, m.ConnectionStartOk({"product": "test"}, "PLAIN", b"\x00guest\x00guest", "en_US"))


def frame(ftype: int, channel: int, payload: bytes, end: bytes = b"\xce") -> bytes:
    return HEAD.pack(ftype, channel, len(payload)) + payload + end


def header(channel: int, body_size: int, properties: bytes = b"\x00\x00", class_id: int = 60) -> bytes:
    return frame(2, channel, struct.pack(">HHQ", class_id, 0, body_size) + properties)


def body(channel: int, chunk: bytes) -> bytes:
    return frame(3, channel, chunk)


def publish(
    channel: int,
    data: bytes,
    exchange: str = "",
    key: str = "q",
    properties: bytes = b"\x00\x00",
    frame_max: int = SERVER_FRAME_MAX,
) -> bytes:
    out = method_frame(channel, m.BasicPublish(0, exchange, key, False, False))
    return out + b"".join(content_frames(channel, properties, data, frame_max))


def tune_ok_and_open(channel_max: int = 2047, frame_max: int = SERVER_FRAME_MAX, heartbeat: int = 60) -> bytes:
    return method_frame(0, m.ConnectionTuneOk(channel_max, frame_max, heartbeat)) + method_frame(
        0, m.ConnectionOpen("/")
    )


def describe(event: Event) -> tuple[Any, ...]:
    """Events as comparable tuples."""
    if isinstance(event, MethodReceived):
        return ("method", event.channel, event.method)
    if isinstance(event, ContentReceived):
        return ("content", event.channel, event.method, event.properties, event.body, event.wire)
    if isinstance(event, ConnectionFailed):
        return ("connection-failed", event.error.code, event.error.class_id, event.error.method_id)
    if isinstance(event, ChannelFailed):
        return ("channel-failed", event.channel, event.error.code, event.error.class_id, event.error.method_id)
    if isinstance(event, BadProtocolHeaderReceived):
        return ("bad-header", event.data)
    assert isinstance(event, ProtocolHeaderReceived)
    return ("header",)


class Driver:
    """A ServerConnection plus what the broker's door answers during the handshake."""

    def __init__(self, **limits: int) -> None:
        self.conn = ServerConnection(**limits)
        self.events: list[tuple[Any, ...]] = []

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        events = self.conn.receive(data)
        for event in events:
            self._answer(event)
        described = [describe(e) for e in events]
        self.events += described
        return described

    def feed_pieces(self, data: bytes, size: int) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for start in range(0, len(data), size):
            out += self.feed(data[start : start + size])
        return out

    def _answer(self, event: Event) -> None:
        if isinstance(event, ProtocolHeaderReceived):
            self.conn.send(0, m.ConnectionStart())
        elif isinstance(event, MethodReceived) and event.channel == 0:
            if isinstance(event.method, m.ConnectionStartOk):
                self.conn.send(0, m.ConnectionTune(2047, SERVER_FRAME_MAX, 60))
            elif isinstance(event.method, m.ConnectionOpen):
                self.conn.send(0, m.ConnectionOpenOk())

    def failure(self) -> tuple[Any, ...]:
        failures = [e for e in self.events if e[0] in ("connection-failed", "channel-failed")]
        assert len(failures) == 1, self.events
        return failures[0]


def opened(channels: tuple[int, ...] = (1,), **limits: int) -> Driver:
    driver = Driver(**limits)
    driver.feed(PROTOCOL_HEADER)
    driver.feed(START_OK)
    driver.feed(tune_ok_and_open())
    for channel in channels:
        driver.feed(method_frame(channel, m.ChannelOpen()))
    assert driver.conn.state is ConnectionState.OPEN
    driver.events.clear()
    return driver


# ---------------------------------------------------------------------------------- handshake


def test_handshake_events_and_states() -> None:
    driver = Driver()
    assert driver.feed(PROTOCOL_HEADER) == [("header",)]
    assert driver.conn.state is ConnectionState.AWAIT_START_OK
    [(kind, channel, start_ok)] = driver.feed(START_OK)
    assert (kind, channel) == ("method", 0)
    assert start_ok == m.ConnectionStartOk({"product": "test"}, "PLAIN", b"\x00guest\x00guest", "en_US")
    assert driver.conn.state is ConnectionState.AWAIT_TUNE_OK
    assert driver.feed(tune_ok_and_open(channel_max=100, frame_max=8192)) == [
        ("method", 0, m.ConnectionTuneOk(100, 8192, 60)),
        ("method", 0, m.ConnectionOpen("/")),
    ]
    assert driver.conn.state is ConnectionState.OPEN
    assert (driver.conn.frame_max, driver.conn.channel_max) == (8192, 100)  # applied as tune-ok was parsed
    assert driver.feed(method_frame(1, m.ChannelOpen())) == [("method", 1, m.ChannelOpen())]
    assert 1 in driver.conn.channels


def test_the_protocol_header_may_arrive_byte_by_byte() -> None:
    driver = Driver()
    for octet in PROTOCOL_HEADER[:-1]:
        assert driver.feed(bytes([octet])) == []
    assert driver.feed(PROTOCOL_HEADER[-1:]) == [("header",)]


def test_channel_open_pipelined_behind_connection_open_is_accepted() -> None:
    # RabbitMQ handles this; clients may pipeline channel.open without waiting for open-ok.
    driver = Driver()
    driver.feed(PROTOCOL_HEADER)
    driver.feed(START_OK)
    events = driver.feed(tune_ok_and_open() + method_frame(1, m.ChannelOpen()) + publish(1, b"hi"))
    assert [e[0] for e in events] == ["method", "method", "method", "content"]
    assert events[2] == ("method", 1, m.ChannelOpen())


# --------------------------------------------------------------------------- content assembly


def test_publish_becomes_one_content_event() -> None:
    driver = opened()
    props = encode_properties(BasicProperties(content_type="text/plain", delivery_mode=2))
    events = driver.feed(publish(1, b"hello", exchange="amq.topic", key="a.b", properties=props))
    assert events == [
        (
            "content",
            1,
            m.BasicPublish(0, "amq.topic", "a.b", False, False),
            props,
            b"hello",
            encode_shortstr("amq.topic") + encode_shortstr("a.b"),
        )
    ]
    assert driver.conn.channels[1].assembly is Assembly.IDLE


def test_mandatory_and_immediate_bits_reach_the_event() -> None:
    driver = opened()
    frame_ = method_frame(1, m.BasicPublish(0, "x", "k", True, True)) + header(1, 0)
    [(_, _, method, *_)] = driver.feed(frame_)
    assert method == m.BasicPublish(0, "x", "k", True, True)


def test_body_spanning_several_body_frames_is_joined() -> None:
    driver = opened()
    data = bytes(range(256)) * 100
    stream = publish(1, data, frame_max=4096)
    assert stream.count(b"\xce\x03\x00\x01") == 7  # 25,600 bytes in 4,088-byte frames
    [event] = driver.feed(stream)
    assert event[4] == data


def test_body_frames_may_be_empty() -> None:
    driver = opened()
    stream = method_frame(1, m.BasicPublish(0, "", "q")) + header(1, 3) + body(1, b"") + body(1, b"ab") + body(1, b"")
    assert driver.feed(stream) == []
    [event] = driver.feed(body(1, b"c"))
    assert event[4] == b"abc"


def test_zero_length_body_completes_at_the_header() -> None:
    driver = opened()
    events = driver.feed(method_frame(1, m.BasicPublish(0, "", "q")) + header(1, 0))
    assert [(e[0], e[4]) for e in events] == [("content", b"")]
    # ... and a body frame after it is a frame without a method: 505, as RabbitMQ
    assert driver.feed(body(1, b"")) == [("connection-failed", ReplyCode.UNEXPECTED_FRAME, 0, 0)]


def test_interleaved_channels_assemble_independently() -> None:
    driver = opened(channels=(1, 2))
    stream = (
        method_frame(1, m.BasicPublish(0, "", "one"))
        + method_frame(2, m.BasicPublish(0, "", "two"))
        + header(2, 2)
        + header(1, 1)
        + body(1, b"1")
        + body(2, b"2")
        + body(2, b"2")
    )
    events = driver.feed(stream)
    assert [(e[1], e[2].routing_key, e[4]) for e in events] == [(1, "one", b"1"), (2, "two", b"22")]


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 8, 13, 100])
def test_a_stream_fed_in_pieces_gives_the_same_events(piece: int) -> None:
    stream = publish(1, b"x" * 300, frame_max=4096) + method_frame(1, m.BasicAck(7, True)) + publish(1, b"")
    whole = opened().feed(stream)
    assert opened().feed_pieces(stream, piece) == whole
    assert len(whole) == 3


def test_an_incomplete_frame_is_not_an_error_and_keeps_its_state() -> None:
    driver = opened()
    frame_ = method_frame(1, m.QueueDeclare(0, "q"))
    assert driver.feed(frame_[:-1]) == []  # everything but the frame-end octet
    assert driver.conn.state is ConnectionState.OPEN
    assert driver.feed(frame_[-1:]) == [("method", 1, m.QueueDeclare(0, "q"))]


def test_feeding_a_big_frame_in_small_pieces_is_linear() -> None:
    # A 4 MiB frame in 64-byte pieces: 65,536 calls. Re-joining the pending bytes on every call
    # would copy ~137 GB; the pieces are joined once, when the frame is whole.
    size = 4 * 1024 * 1024
    driver = Driver(frame_max=size)
    driver.feed(PROTOCOL_HEADER)
    driver.feed(START_OK)
    driver.feed(tune_ok_and_open(frame_max=size) + method_frame(1, m.ChannelOpen()))
    stream = publish(1, b"z" * (size - 8), frame_max=size)
    started = time.perf_counter()
    events = driver.feed_pieces(stream, 64)
    assert time.perf_counter() - started < 3  # about 0.05 s
    assert [len(e[4]) for e in events if e[0] == "content"] == [size - 8]


def test_ack_fast_path_agrees_with_the_generic_decoder() -> None:
    driver = opened()
    assert driver.feed(method_frame(1, m.BasicAck(2**64 - 1, True)) + method_frame(1, m.BasicAck(0, False))) == [
        ("method", 1, m.BasicAck(2**64 - 1, True)),
        ("method", 1, m.BasicAck(0, False)),
    ]


def test_heartbeats_on_channel_zero_are_silent() -> None:
    driver = opened()
    assert driver.feed(frame(8, 0, b"") * 3) == []


# ------------------------------------------------------------------ random splits (Hypothesis)

SESSION = b"".join(
    [
        method_frame(1, m.QueueDeclare(0, "q", durable=True, arguments={"x-queue-type": "classic"})),
        publish(
            1, b"a" * 5000, properties=encode_properties(BasicProperties(headers={"h": [1, "two"]})), frame_max=4096
        ),
        method_frame(2, m.ChannelOpen()),
        publish(2, b"", exchange="amq.direct", key="k"),
        frame(8, 0, b""),
        publish(1, b"b" * 4088, frame_max=4096),
        method_frame(2, m.BasicAck(1, False)),
        method_frame(1, m.ChannelClose(200, "bye", 0, 0)),
        method_frame(0, m.ConnectionClose(200, "bye", 0, 0)),
    ]
)


def _reference_events() -> list[tuple[Any, ...]]:
    driver = opened()
    driver.feed(SESSION)
    return driver.events


REFERENCE = _reference_events()


def test_the_reference_session_is_what_it_should_be() -> None:
    assert [e[0] for e in REFERENCE] == [
        "method",
        "content",
        "method",
        "content",
        "content",
        "method",
        "method",
        "method",
    ]
    assert REFERENCE[-1] == ("method", 0, m.ConnectionClose(200, "bye", 0, 0))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, len(SESSION)), max_size=40))
def test_any_split_of_a_valid_stream_gives_identical_events(cuts: list[int]) -> None:
    driver = opened()
    points = [0, *sorted(cuts), len(SESSION)]
    for start, stop in zip(points, points[1:], strict=False):
        driver.feed(SESSION[start:stop])
    assert driver.events == REFERENCE
    assert driver.conn.state is ConnectionState.PEER_CLOSED


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 8 + len(START_OK)), max_size=6), st.lists(st.integers(0, 200), max_size=10))
def test_any_split_of_the_handshake_gives_identical_events(first: list[int], second: list[int]) -> None:
    # The client writes in turns (header, start-ok, then the rest), each turn split anywhere.
    turn1 = PROTOCOL_HEADER
    turn3 = tune_ok_and_open() + method_frame(1, m.ChannelOpen()) + publish(1, b"hello")
    reference = Driver()
    for turn in (turn1, START_OK, turn3):
        reference.feed(turn)
    driver = Driver()
    for turn, cuts in ((turn1, first), (START_OK, first), (turn3, second)):
        points = [0, *sorted(c for c in cuts if c <= len(turn)), len(turn)]
        for start, stop in zip(points, points[1:], strict=False):
            driver.feed(turn[start:stop])
    assert driver.events == reference.events
    assert [e[0] for e in reference.events] == ["header", "method", "method", "method", "method", "content"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_after_the_handshake_becomes_events_never_exceptions(garbage: bytes) -> None:
    driver = opened()
    driver.feed(garbage)
    failures = [e for e in driver.events if e[0] == "connection-failed"]
    assert len(failures) <= 1
    if failures:
        assert driver.events[-1] is failures[0]  # nothing is parsed after a hard error


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["header", "start-ok", "tune-ok"]), st.binary(max_size=100))
def test_garbage_during_the_handshake_becomes_events_never_exceptions(stage: str, garbage: bytes) -> None:
    driver = Driver()
    driver.feed(PROTOCOL_HEADER)
    if stage != "header":
        driver.feed(START_OK)
    if stage == "tune-ok":
        driver.feed(method_frame(0, m.ConnectionTuneOk(0, SERVER_FRAME_MAX, 0)))
    driver.feed(garbage)
    assert sum(e[0] == "connection-failed" for e in driver.events) <= 1


_frames = st.builds(
    frame,
    st.sampled_from([1, 2, 3, 8, 4]),
    st.sampled_from([0, 1, 2, 3]),
    st.one_of(
        st.binary(max_size=30),
        st.sampled_from([b"\x00\x3c\x00\x28\x00\x00\x00\x01q\x00", b"\x00\x14\x00\x0a\x00"]),  # publish, channel.open
        st.builds(lambda size: struct.pack(">HHQ", 60, 0, size) + b"\x00\x00", st.integers(0, 20)),
    ),
    st.sampled_from([b"\xce", b"\xce", b"\xce", b"\x00"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_frames, max_size=12))
def test_random_frames_become_events_never_exceptions(frames: list[bytes]) -> None:
    driver = opened()
    for data in frames:
        driver.feed(data)
    codes = {e[1] for e in driver.events if e[0] == "connection-failed"}
    assert codes <= {
        ReplyCode.FRAME_ERROR,
        ReplyCode.SYNTAX_ERROR,
        ReplyCode.COMMAND_INVALID,
        ReplyCode.CHANNEL_ERROR,
        ReplyCode.UNEXPECTED_FRAME,
        ReplyCode.NOT_ALLOWED,
        ReplyCode.NOT_IMPLEMENTED,
    }


# ------------------------------------------------------------------------------- bad headers


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        bytes.fromhex("16030100c4010000c00303") + b"\x00" * 40,  # a TLS ClientHello
        b"AMQP\x00\x00\x09\x00",  # 0-9-0
        b"AMQP\x01\x01\x00\x0a",  # 0-10
        b"AMQP\x01\x01\x08\x00",  # 0-8
        b"AMQP\x03\x01\x00\x00",  # AMQP 1.0 SASL
        b"\x00" * 8,
        b"X",  # one wrong byte is enough
        b"AMQX",
    ],
)
def test_bad_protocol_header(data: bytes) -> None:
    driver = Driver()
    [event] = driver.feed(data)
    assert event[0] == "bad-header"
    assert driver.conn.state is ConnectionState.CLOSED
    assert driver.feed(PROTOCOL_HEADER) == []  # nothing more is read


def test_a_good_header_prefix_then_a_bad_byte() -> None:
    driver = Driver()
    assert driver.feed(b"AMQ") == []
    assert driver.feed(b"X") == [("bad-header", b"AMQX")]


# ----------------------------------------------------------------------------- frame errors


def test_frame_over_frame_max_is_501_from_its_head_alone() -> None:
    driver = opened()
    # Only the 7-byte head: the size is refused before any of the payload is waited for or buffered.
    assert driver.feed(HEAD.pack(1, 1, SERVER_FRAME_MAX + 1)) == [("connection-failed", ReplyCode.FRAME_ERROR, 0, 0)]


@pytest.mark.parametrize("payload", [SERVER_FRAME_MAX - 8, SERVER_FRAME_MAX])
def test_frames_of_frame_max_are_fine_and_so_are_8_bytes_more(payload: int) -> None:
    # frame_max counts the 8 bytes of framing (spec 4.2.3); RabbitMQ takes 8 bytes more for clients
    # that forget them (FRAME_SIZE_FUDGE), and so do we.
    driver = opened()
    stream = method_frame(1, m.BasicPublish(0, "", "q")) + header(1, payload) + body(1, b"y" * payload)
    assert [e[0] for e in driver.feed(stream)] == ["content"]


def test_a_2_to_the_32_minus_1_length_is_501() -> None:
    driver = opened()
    assert driver.feed(HEAD.pack(3, 1, 2**32 - 1)) == [("connection-failed", ReplyCode.FRAME_ERROR, 0, 0)]


def test_before_tune_ok_frames_are_limited_to_frame_min_size() -> None:
    driver = Driver()
    driver.feed(PROTOCOL_HEADER)
    fits = method_frame(0, m.ConnectionStartOk({"p": "x" * (FRAME_MIN_SIZE - 40)}, "PLAIN", b"\x00a\x00b", "en_US"))
    assert len(fits) - 8 <= FRAME_MIN_SIZE
    fitting = Driver()
    fitting.feed(PROTOCOL_HEADER)
    assert [e[0] for e in fitting.feed(fits)] == ["method"]
    big = method_frame(0, m.ConnectionStartOk({"pad": "x" * FRAME_MIN_SIZE}, "PLAIN", b"\x00a\x00b", "en_US"))
    assert driver.feed(big[:7]) == [("connection-failed", ReplyCode.FRAME_ERROR, 0, 0)]


def test_after_tune_ok_the_negotiated_frame_max_applies() -> None:
    driver = Driver()
    driver.feed(PROTOCOL_HEADER)
    driver.feed(START_OK)
    driver.feed(tune_ok_and_open(frame_max=8192) + method_frame(1, m.ChannelOpen()))
    ok = method_frame(1, m.BasicPublish(0, "", "q")) + header(1, 8184) + body(1, b"b" * 8184)
    assert [e[0] for e in driver.feed(ok)] == ["content"]
    assert driver.feed(HEAD.pack(3, 1, 8193)) == [("connection-failed", ReplyCode.FRAME_ERROR, 0, 0)]


def test_bad_frame_end_is_501() -> None:
    driver = opened()
    events = driver.feed(method_frame(1, m.BasicQos(0, 1, False))[:-1] + b"\x00")
    assert events == [("connection-failed", ReplyCode.FRAME_ERROR, 0, 0)]


def test_unknown_frame_type_is_501() -> None:
    assert opened().feed(frame(4, 0, b"")) == [("connection-failed", ReplyCode.FRAME_ERROR, 0, 0)]


def test_heartbeat_on_a_channel_other_than_zero_is_501() -> None:
    # spec 4.2.7 says 501; RabbitMQ answers 505
    assert opened().feed(frame(8, 1, b"")) == [("connection-failed", ReplyCode.FRAME_ERROR, 0, 0)]


def test_heartbeat_with_a_payload_is_501() -> None:
    assert opened().feed(frame(8, 0, b"abc")) == [("connection-failed", ReplyCode.FRAME_ERROR, 0, 0)]


def test_after_a_frame_error_nothing_more_is_parsed_even_after_the_close() -> None:
    driver = opened()
    events = driver.feed(frame(1, 1, b"\x00\x3c\x00\x0a", end=b"X") + method_frame(1, m.BasicQos(0, 1, False)))
    assert events == [("connection-failed", ReplyCode.FRAME_ERROR, 0, 0)]
    driver.conn.send(0, m.ConnectionClose(501, "FRAME_ERROR", 0, 0))
    assert driver.feed(method_frame(0, m.ConnectionCloseOk())) == []  # framing is lost for good


# ------------------------------------------------------------------------------ channel errors


def test_method_on_an_unopened_channel_is_504_naming_the_method() -> None:
    assert opened().feed(method_frame(5, m.BasicQos(0, 1, False))) == [
        ("connection-failed", ReplyCode.CHANNEL_ERROR, 60, 10)
    ]


def test_channel_above_channel_max_is_530() -> None:
    events = opened().feed(method_frame(2048, m.ChannelOpen()))
    assert events == [("connection-failed", ReplyCode.NOT_ALLOWED, 0, 0)]


def test_the_negotiated_channel_max_applies_and_is_inclusive() -> None:
    driver = Driver()
    driver.feed(PROTOCOL_HEADER)
    driver.feed(START_OK)
    driver.feed(tune_ok_and_open(channel_max=10))
    assert driver.feed(method_frame(10, m.ChannelOpen())) == [("method", 10, m.ChannelOpen())]
    assert driver.feed(method_frame(11, m.ChannelOpen())) == [("connection-failed", ReplyCode.NOT_ALLOWED, 0, 0)]


def test_second_channel_open_is_504() -> None:
    assert opened().feed(method_frame(1, m.ChannelOpen())) == [("connection-failed", ReplyCode.CHANNEL_ERROR, 20, 10)]


@pytest.mark.parametrize(
    "stream",
    [header(1, 3), body(1, b"abc")],
    ids=["header", "body"],
)
def test_content_frame_without_a_method_is_505(stream: bytes) -> None:
    assert opened().feed(stream) == [("connection-failed", ReplyCode.UNEXPECTED_FRAME, 0, 0)]


@pytest.mark.parametrize("channel", [0, 4])
def test_content_frame_on_an_unopened_channel_is_505(channel: int) -> None:
    # RabbitMQ: 505 "expected method frame, got non method frame instead"
    assert opened().feed(header(channel, 0)) == [("connection-failed", ReplyCode.UNEXPECTED_FRAME, 0, 0)]


def test_body_frame_where_a_header_is_due_is_505() -> None:
    stream = method_frame(1, m.BasicPublish(0, "", "q")) + body(1, b"abc")
    assert opened().feed(stream) == [("connection-failed", ReplyCode.UNEXPECTED_FRAME, 0, 0)]


def test_method_between_body_frames_is_505() -> None:
    stream = method_frame(1, m.BasicPublish(0, "", "q")) + header(1, 6) + body(1, b"abc")
    stream += method_frame(1, m.BasicQos(0, 1, False))
    assert opened().feed(stream) == [("connection-failed", ReplyCode.UNEXPECTED_FRAME, 60, 40)]


def test_method_between_method_and_header_is_505() -> None:
    stream = method_frame(1, m.BasicPublish(0, "", "q")) + method_frame(1, m.BasicPublish(0, "", "q"))
    assert opened().feed(stream) == [("connection-failed", ReplyCode.UNEXPECTED_FRAME, 60, 40)]


def test_body_frames_beyond_the_declared_size_are_501() -> None:
    stream = method_frame(1, m.BasicPublish(0, "", "q")) + header(1, 3) + body(1, b"ab") + body(1, b"cd")
    assert opened().feed(stream) == [("connection-failed", ReplyCode.FRAME_ERROR, 0, 0)]


def test_header_frame_too_short_is_501_and_for_another_class_505() -> None:
    pub = method_frame(1, m.BasicPublish(0, "", "q"))
    assert opened().feed(pub + frame(2, 1, b"\x00\x3c\x00")) == [("connection-failed", ReplyCode.FRAME_ERROR, 0, 0)]
    assert opened().feed(pub + header(1, 0, class_id=50)) == [("connection-failed", ReplyCode.UNEXPECTED_FRAME, 60, 40)]


@pytest.mark.parametrize(
    "properties",
    [b"\x10\x00", b"\x80\x00\x09abc", b"\x20\x00\x00\x00\x00\x05\x01kZab", b"\x00\x01"],
    ids=["delivery-mode-missing", "shortstr-past-end", "bad-header-tag", "flag-continuation"],
)
def test_malformed_properties_are_502_on_receipt(properties: bytes) -> None:
    stream = method_frame(1, m.BasicPublish(0, "", "q")) + header(1, 0, properties)
    assert opened().feed(stream) == [("connection-failed", ReplyCode.SYNTAX_ERROR, 60, 40)]


def test_body_size_over_max_message_size_fails_only_the_channel() -> None:
    driver = opened(channels=(1, 2), max_message_size=1000)
    stream = method_frame(1, m.BasicPublish(0, "", "q")) + header(1, 1001)
    assert driver.feed(stream) == [("channel-failed", 1, ReplyCode.PRECONDITION_FAILED, 60, 40)]
    # the body that follows is dropped, not buffered; other channels carry on
    assert driver.feed(body(1, b"x" * 1001) + publish(2, b"fine")) == [
        ("content", 2, m.BasicPublish(0, "", "q"), b"\x00\x00", b"fine", b"\x00\x01q")
    ]
    assert driver.conn.channels[1].state is ChannelState.CLOSING
    driver.conn.send(1, m.ChannelClose(406, "PRECONDITION_FAILED", 60, 40))
    assert driver.feed(method_frame(1, m.ChannelCloseOk())) == []
    assert 1 not in driver.conn.channels
    assert driver.feed(method_frame(1, m.ChannelOpen())) == [("method", 1, m.ChannelOpen())]


def test_body_size_of_exactly_max_message_size_is_fine() -> None:
    driver = opened(max_message_size=1000)
    assert [e[0] for e in driver.feed(publish(1, b"m" * 1000))] == ["content"]


@pytest.mark.parametrize(
    "method",
    [m.BasicDeliver("t", 1, False, "", "q"), m.BasicGetOk(1, False, "", "q", 0), m.BasicReturn(312, "", "", "")],
    ids=lambda method: method.NAME,
)
def test_content_methods_only_servers_send_are_503(method: m.Method) -> None:
    # RabbitMQ: 503 "unimplemented method"; before this check they crashed the assembler
    stream = method_frame(1, method) + header(1, 0)
    assert opened().feed(stream) == [
        ("connection-failed", ReplyCode.COMMAND_INVALID, method.CLASS_ID, method.METHOD_ID)
    ]


@pytest.mark.parametrize(
    "cls",
    [cls for cls in m.METHODS.values() if not cls.FROM_CLIENT]
    + [m.ConnectionStartOk, m.ConnectionOpen, m.ChannelCloseOk],
    ids=lambda cls: cls.NAME,
)
def test_methods_a_client_may_not_send_on_a_channel_are_503(cls: type[m.Method]) -> None:
    assert opened().feed(method_frame(1, cls())) == [
        ("connection-failed", ReplyCode.COMMAND_INVALID, cls.CLASS_ID, cls.METHOD_ID)
    ]


def test_malformed_method_arguments_are_502_and_unknown_methods_540() -> None:
    assert opened().feed(raw_method_frame(1, b"\x00\x32\x00\x0a\x00")) == [
        ("connection-failed", ReplyCode.SYNTAX_ERROR, 50, 10)
    ]
    assert opened().feed(raw_method_frame(1, b"\x00\x3c\x00\x28\x00\x00\x05ab")) == [
        ("connection-failed", ReplyCode.SYNTAX_ERROR, 60, 40)
    ]
    assert opened().feed(raw_method_frame(1, b"\x00\x3c\x00\x28\x00\x00\x00\x00\x00\x00")) == [
        ("connection-failed", ReplyCode.SYNTAX_ERROR, 60, 40)  # a byte after publish's bits
    ]
    assert opened().feed(raw_method_frame(1, b"\x00\x3c\x00\x63")) == [
        ("connection-failed", ReplyCode.NOT_IMPLEMENTED, 60, 99)
    ]


# -------------------------------------------------------------------------- handshake order


@pytest.mark.parametrize(
    ("turns", "code", "ids"),
    [
        ([method_frame(0, m.ConnectionOpen("/"))], ReplyCode.CHANNEL_ERROR, (10, 40)),
        ([START_OK, START_OK], ReplyCode.CHANNEL_ERROR, (10, 11)),
        ([START_OK, method_frame(0, m.ConnectionOpen("/"))], ReplyCode.CHANNEL_ERROR, (10, 40)),
        ([START_OK, tune_ok_and_open(), method_frame(0, m.ConnectionTuneOk())], ReplyCode.CHANNEL_ERROR, (10, 31)),
        ([START_OK, tune_ok_and_open(), method_frame(0, m.ConnectionOpen())], ReplyCode.CHANNEL_ERROR, (10, 40)),
        ([START_OK, tune_ok_and_open(), method_frame(0, m.ChannelOpen())], ReplyCode.CHANNEL_ERROR, (20, 10)),
        ([START_OK, tune_ok_and_open(), method_frame(0, m.BasicQos())], ReplyCode.CHANNEL_ERROR, (60, 10)),
        ([method_frame(1, m.ChannelOpen())], ReplyCode.UNEXPECTED_FRAME, (0, 0)),
        (
            [START_OK, method_frame(0, m.ConnectionTuneOk()), method_frame(1, m.ChannelOpen())],
            ReplyCode.UNEXPECTED_FRAME,
            (0, 0),
        ),
    ],
    ids=[
        "open-before-start-ok",
        "start-ok-twice",
        "open-before-tune-ok",
        "tune-ok-after-open",
        "open-twice",
        "channel-method-on-channel-0",
        "basic-method-on-channel-0",
        "channel-open-before-start-ok",
        "channel-open-before-connection-open",
    ],
)
def test_connection_methods_out_of_order(turns: list[bytes], code: ReplyCode, ids: tuple[int, int]) -> None:
    # RabbitMQ: 504 "unexpected method in connection state ..." (and 505 for channel frames before open)
    driver = Driver()
    driver.feed(PROTOCOL_HEADER)
    for turn in turns:
        driver.feed(turn)
    assert driver.failure() == ("connection-failed", code, *ids)


# ----------------------------------------------------------------------------- after errors


def test_after_a_hard_error_input_waits_until_the_close_is_sent_then_reads_close_ok() -> None:
    driver = opened()
    events = driver.feed(method_frame(5, m.BasicQos()) + method_frame(1, m.QueueDeclare(0, "after")))
    assert events == [("connection-failed", ReplyCode.CHANNEL_ERROR, 60, 10)]  # the declare is not parsed
    assert driver.feed(method_frame(1, m.QueueDeclare(0, "later"))) == []
    driver.conn.send(0, m.ConnectionClose(504, "CHANNEL_ERROR", 60, 10))
    assert driver.conn.state is ConnectionState.CLOSING
    assert driver.feed(method_frame(1, m.QueueDeclare(0, "dropped")) + method_frame(0, m.ConnectionCloseOk())) == [
        ("method", 0, m.ConnectionCloseOk())
    ]
    assert driver.conn.state is ConnectionState.CLOSED


def test_events_before_an_error_in_the_same_chunk_are_kept() -> None:
    driver = opened()
    events = driver.feed(method_frame(1, m.BasicQos(0, 5, False)) + frame(8, 1, b""))
    assert events == [("method", 1, m.BasicQos(0, 5, False)), ("connection-failed", ReplyCode.FRAME_ERROR, 0, 0)]


def test_a_closing_channel_drops_everything_but_close_and_close_ok() -> None:
    driver = opened()
    driver.conn.send(1, m.ChannelClose(404, "NOT_FOUND", 50, 10))
    stream = publish(1, b"dropped") + method_frame(1, m.BasicQos()) + method_frame(1, m.ChannelClose())
    assert driver.feed(stream) == [("method", 1, m.ChannelClose())]
    assert driver.feed(method_frame(1, m.ChannelCloseOk())) == []
    assert 1 not in driver.conn.channels


def test_server_closing_mid_content_drops_the_rest_of_the_message() -> None:
    driver = opened()
    driver.feed(method_frame(1, m.BasicPublish(0, "", "q")) + header(1, 10) + body(1, b"12345"))
    driver.conn.send(1, m.ChannelClose(406, "PRECONDITION_FAILED", 0, 0))
    assert driver.feed(body(1, b"67890") + method_frame(1, m.ChannelCloseOk())) == []
    assert driver.feed(method_frame(1, m.ChannelOpen()) + publish(1, b"new")) == [
        ("method", 1, m.ChannelOpen()),
        ("content", 1, m.BasicPublish(0, "", "q"), b"\x00\x00", b"new", b"\x00\x01q"),
    ]


def test_client_channel_close_frees_the_number() -> None:
    driver = opened()
    assert driver.feed(method_frame(1, m.ChannelClose(200, "", 0, 0))) == [("method", 1, m.ChannelClose(200, "", 0, 0))]
    assert 1 not in driver.conn.channels
    assert driver.feed(method_frame(1, m.ChannelOpen())) == [("method", 1, m.ChannelOpen())]


def test_client_connection_close() -> None:
    driver = opened()
    assert driver.feed(method_frame(0, m.ConnectionClose(200, "bye", 0, 0))) == [
        ("method", 0, m.ConnectionClose(200, "bye", 0, 0))
    ]
    assert driver.conn.state is ConnectionState.PEER_CLOSED
    assert driver.feed(method_frame(1, m.BasicQos())) == []  # ignored after the client's close
    driver.conn.send(0, m.ConnectionCloseOk())
    assert driver.conn.state is ConnectionState.CLOSED
    assert driver.feed(method_frame(1, m.BasicQos())) == []


def test_server_close_crossing_the_clients_close() -> None:
    driver = opened()
    driver.conn.send(0, m.ConnectionClose(320, "CONNECTION_FORCED", 0, 0))
    assert driver.feed(method_frame(0, m.ConnectionClose(200, "", 0, 0))) == [
        ("method", 0, m.ConnectionClose(200, "", 0, 0))
    ]
    assert driver.conn.state is ConnectionState.CLOSING


def test_the_server_cannot_send_handshake_methods_out_of_order() -> None:
    conn = ServerConnection()
    with pytest.raises(RuntimeError):
        conn.send(0, m.ConnectionTune())
    with pytest.raises(RuntimeError):
        conn.send(0, m.ConnectionClose())  # not before the protocol header
