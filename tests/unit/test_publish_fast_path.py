"""ServerConnection's whole-publish fast path agrees with the frame-by-frame path, errors included.

A stream fed at once takes the fast path for every publish whose three frames are all in one buffer;
the same stream fed one byte at a time never can. Both must give the same events."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from leveret.amqp import methods as m
from leveret.amqp.connection import ConnectionState, ServerConnection
from leveret.amqp.constants import PROTOCOL_HEADER
from leveret.amqp.events import ChannelFailed, ConnectionFailed, ContentReceived, Event, MethodReceived
from leveret.amqp.frames import content_frames, method_frame
from leveret.amqp.properties import BasicProperties, encode_properties

HEAD = struct.Struct(">BHI")
HANDSHAKE = [  # each piece is fed after the server's answer to the one before
    PROTOCOL_HEADER,
    method_frame(0, m.ConnectionStartOk({}, "PLAIN", b"\x00guest\x00guest", "en_US")),
    method_frame(0, m.ConnectionTuneOk(2047, 131072, 0)) + method_frame(0, m.ConnectionOpen("/")),
]


def publish(
    channel: int, body: bytes, key: str = "q", properties: bytes = b"\x00\x00", mandatory: bool = False
) -> bytes:
    out = method_frame(channel, m.BasicPublish(0, "amq.direct", key, mandatory, False))
    return out + b"".join(content_frames(channel, properties, body, 131072))


def frame(ftype: int, channel: int, payload: bytes, end: bytes = b"\xce") -> bytes:
    return HEAD.pack(ftype, channel, len(payload)) + payload + end


def describe(event: Event) -> tuple[Any, ...]:
    if isinstance(event, ContentReceived):
        return ("content", event.channel, event.method, bytes(event.properties), bytes(event.body), event.wire)
    if isinstance(event, MethodReceived):
        return ("method", event.channel, event.method)
    if isinstance(event, ChannelFailed):
        return ("channel-failed", event.channel, event.error.code)
    if isinstance(event, ConnectionFailed):
        return ("connection-failed", event.error.code, event.error.class_id, event.error.method_id)
    return (type(event).__name__,)


def run(stream: bytes, byte_by_byte: bool) -> list[tuple[Any, ...]]:
    conn = ServerConnection(max_message_size=1000)
    out: list[tuple[Any, ...]] = []
    pieces = [stream[i : i + 1] for i in range(len(stream))] if byte_by_byte else [stream]
    answers = [m.ConnectionStart(), m.ConnectionTune(2047, 131072, 0), m.ConnectionOpenOk()]
    for piece, answer in zip(HANDSHAKE, answers, strict=True):
        conn.receive(piece)
        conn.send(0, answer)
    assert conn.state is ConnectionState.OPEN
    for piece in [method_frame(1, m.ChannelOpen()), method_frame(2, m.ChannelOpen()), *pieces]:
        out += [describe(e) for e in conn.receive(piece)]
    return out


PROPS = encode_properties(BasicProperties(content_type="text/plain", delivery_mode=2, headers={"a": 1}))
BAD_PROPS = b"\x20\x00\x00\x00\x00\x09"  # headers flag, table length running past the end
CASES = {
    "plain": publish(1, b"hello") + publish(1, b"again") + publish(2, b"x" * 200, key="k", mandatory=True),
    "properties": publish(1, b"p", properties=PROPS) + publish(1, b"p2", properties=PROPS),
    "empty body": publish(1, b"") + publish(1, b"after"),
    "ack between": publish(1, b"a") + method_frame(1, m.BasicAck(1, False)) + publish(1, b"b"),
    "too large": publish(1, b"z" * 1001) + publish(1, b"ignored: the channel is closing"),
    "bad properties": publish(1, b"p", properties=BAD_PROPS),
    "body on another channel": method_frame(1, m.BasicPublish(0, "", "q", False, False))
    + frame(2, 1, struct.pack(">HHQ", 60, 0, 3) + b"\x00\x00")
    + frame(3, 2, b"abc"),
    "bad body frame end": publish(1, b"abc")[:-1] + b"\x00",
    "body longer than declared": method_frame(1, m.BasicPublish(0, "", "q", False, False))
    + frame(2, 1, struct.pack(">HHQ", 60, 0, 2) + b"\x00\x00")
    + frame(3, 1, b"abc"),
    "header of another class": method_frame(1, m.BasicPublish(0, "", "q", False, False))
    + frame(2, 1, struct.pack(">HHQ", 50, 0, 3) + b"\x00\x00")
    + frame(3, 1, b"abc"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_whole_and_byte_by_byte_give_the_same_events(name: str) -> None:
    whole = run(CASES[name], byte_by_byte=False)
    assert whole == run(CASES[name], byte_by_byte=True)
    assert len(whole) > 2  # more than the two channel.open events


def test_the_plain_case_is_what_it_should_be() -> None:
    events = [e for e in run(CASES["plain"], byte_by_byte=False) if e[0] == "content"]
    assert [(e[1], e[2].routing_key, e[2].mandatory, e[4]) for e in events] == [
        (1, "q", False, b"hello"),
        (1, "q", False, b"again"),
        (2, "k", True, b"x" * 200),
    ]
    assert events[0][5] == b"\x0aamq.direct\x01q"
