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
from leveret.amqp.events import ChannelFailed, ConnectionFailed, ContentBatch, ContentReceived, Event, MethodReceived
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


def describe_all(event: Event) -> list[tuple[Any, ...]]:
    """A ``ContentBatch`` is the publishes it stands for, one content tuple each."""
    if isinstance(event, ContentBatch):
        return [
            ("content", event.channel, event.method, bytes(event.properties), bytes(b), event.wire)
            for b in event.bodies
        ]
    return [describe(event)]


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
        out += [d for e in conn.receive(piece) for d in describe_all(e)]
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
    # A publish repeating the one before up to its body (the repeat path) and every way to differ.
    "repeats": publish(1, b"aaa")
    + publish(1, b"bbb")
    + publish(1, b"ccc")
    + publish(1, b"dddd")
    + publish(1, b"eeee")
    + publish(2, b"ffff")
    + publish(1, b"gggg")
    + publish(1, b"hhhh", key="k")
    + publish(1, b"iiii", properties=PROPS)
    + publish(1, b"jjjj", properties=PROPS)
    + method_frame(1, m.BasicAck(1, False))
    + publish(1, b"kkkk", properties=PROPS),
    "repeat with a bad frame end": publish(1, b"abc") + publish(1, b"abd")[:-1] + b"\x00",
    "repeat split over two body frames": publish(1, b"abc")
    + method_frame(1, m.BasicPublish(0, "amq.direct", "q", False, False))
    + frame(2, 1, struct.pack(">HHQ", 60, 0, 3) + b"\x00\x00")
    + frame(3, 1, b"ab")
    + frame(3, 1, b"c"),
    "repeat too large for the channel after a too large one": publish(1, b"z" * 1001) + publish(1, b"z" * 1001),
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


def test_repeats_are_seen_as_themselves() -> None:
    events = [e for e in run(CASES["repeats"], byte_by_byte=False) if e[0] == "content"]
    assert [(e[1], e[2].routing_key, e[3], e[4]) for e in events] == [
        (1, "q", b"\x00\x00", b"aaa"),
        (1, "q", b"\x00\x00", b"bbb"),
        (1, "q", b"\x00\x00", b"ccc"),
        (1, "q", b"\x00\x00", b"dddd"),
        (1, "q", b"\x00\x00", b"eeee"),
        (2, "q", b"\x00\x00", b"ffff"),
        (1, "q", b"\x00\x00", b"gggg"),
        (1, "k", b"\x00\x00", b"hhhh"),
        (1, "q", PROPS, b"iiii"),
        (1, "q", PROPS, b"jjjj"),
        (1, "q", PROPS, b"kkkk"),
    ]


def _open_with_one_publish() -> ServerConnection:
    conn = ServerConnection(max_message_size=1000)
    answers = [m.ConnectionStart(), m.ConnectionTune(2047, 131072, 0), m.ConnectionOpenOk()]
    for piece, answer in zip(HANDSHAKE, answers, strict=True):
        conn.receive(piece)
        conn.send(0, answer)
    conn.receive(method_frame(1, m.ChannelOpen()))
    assert [type(e) for e in conn.receive(publish(1, b"one"))] == [ContentReceived]
    return conn


def test_a_channel_the_server_closed_takes_no_repeated_publish() -> None:
    """After the server's channel.close, spec 4.2.4: the client's publishes are discarded until its
    close-ok, including one that repeats the publish before the close byte for byte."""
    conn = _open_with_one_publish()
    conn.send(1, m.ChannelClose(406, "PRECONDITION_FAILED", 60, 40))
    assert conn.receive(publish(1, b"two") + publish(1, b"six")) == []  # neither alone nor as a batch
    assert conn.receive(method_frame(1, m.ChannelCloseOk())) == []
    conn.receive(method_frame(1, m.ChannelOpen()))
    assert [d[4] for e in conn.receive(publish(1, b"new")) for d in describe_all(e) if d[0] == "content"] == [b"new"]


def test_a_closing_connection_takes_no_repeated_publish() -> None:
    conn = _open_with_one_publish()
    conn.send(0, m.ConnectionClose(320, "CONNECTION_FORCED", 0, 0))
    assert not [e for e in conn.receive(publish(1, b"two")) if isinstance(e, (ContentReceived, ContentBatch))]


def test_a_forgotten_channel_takes_no_repeated_publish() -> None:
    conn = _open_with_one_publish()
    conn.close_channel(1)
    events = conn.receive(publish(1, b"two"))
    assert not [e for e in events if isinstance(e, (ContentReceived, ContentBatch))]


def test_repeats_in_a_row_come_as_one_batch() -> None:
    """Repeats in a row are one ``ContentBatch`` (the first of a run, parsed whole, stands alone);
    anything between them starts a new run."""
    conn = _open_with_one_publish()
    stream = publish(1, b"aaa") + publish(1, b"bbb") + publish(1, b"ccc")  # b"one" was three bytes too
    stream += method_frame(1, m.BasicAck(1, False)) + publish(1, b"ddd") + publish(1, b"eee") + publish(1, b"ffff")
    events = conn.receive(stream)
    kinds = [(type(e).__name__, len(e.bodies) if isinstance(e, ContentBatch) else 1) for e in events]
    assert [bytes(b) for b in events[0].bodies] == [b"aaa", b"bbb", b"ccc"]  # type: ignore[attr-defined]
    assert kinds == [
        ("ContentBatch", 3),  # repeats of the publish _open_with_one_publish sent
        ("MethodReceived", 1),
        ("ContentReceived", 1),
        ("ContentBatch", 1),
        ("ContentReceived", 1),  # another body size: not a repeat
    ]
