"""Fuzzing the sans-I/O server connection: frame parser and state machine together, no sockets.

A case is a client's byte stream: a prefix of a valid handshake, then a random mix of well-formed
frames carrying any method of the protocol (random field values, on random channels, in any
connection or channel state), content headers and bodies, heartbeats, and mutated frames (a flipped
byte, a cut, a wrong frame end), delivered in random chunks. Whatever arrives, the machine must:

- turn it into events, never raise;
- report at most one connection failure, with a reply code of the spec, and act on nothing after it;
- buffer no more than one frame (``frame_max`` plus the frame head and end) between calls.

``make test`` runs a few hundred cases; ``tools/fuzz_protocol.py`` runs the same property for as many
cases as asked and reports the count.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leveret.amqp import methods as m
from leveret.amqp.codec import encode_method
from leveret.amqp.connection import ServerConnection
from leveret.amqp.constants import PROTOCOL_HEADER, ReplyCode
from leveret.amqp.events import ChannelFailed, ConnectionFailed, MethodReceived, ProtocolHeaderReceived
from leveret.amqp.frames import method_frame, raw_method_frame

HEAD = struct.Struct(">BHI")
FRAME_MAX = 4096  # small, so frame-size limits are reached often
CHANNEL_MAX = 8
METHODS = [
    cls
    for cls in vars(m).values()
    if isinstance(cls, type) and issubclass(cls, m.Method) and cls is not m.Method and hasattr(cls, "FIELDS")
]
HANDSHAKE = [
    PROTOCOL_HEADER,
    method_frame(0, m.ConnectionStartOk({"product": "fuzz"}, "PLAIN", b"\x00guest\x00guest", "en_US")),
    method_frame(0, m.ConnectionTuneOk(CHANNEL_MAX, FRAME_MAX, 0)),
    method_frame(0, m.ConnectionOpen("/")),
]

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_scalar = st.one_of(st.booleans(), st.integers(-(2**31), 2**31 - 1), _text, st.binary(max_size=8), st.none())
_table = st.recursive(
    st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), _scalar, max_size=3),
    lambda inner: st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, max_size=2),
    max_leaves=6,
)
_FIELD = {
    "bit": st.booleans(),
    "octet": st.integers(0, 255),
    "short": st.integers(0, 2**16 - 1),
    "long": st.integers(0, 2**32 - 1),
    "longlong": st.integers(0, 2**64 - 1),
    "shortstr": st.text("abcq.-_#*", max_size=10),
    "longstr": st.binary(max_size=16),
    "table": _table,
    "timestamp": st.integers(0, 2**32),
}


def _method(cls: type[m.Method]) -> st.SearchStrategy[m.Method]:
    fields = {name: _FIELD[kind] for name, kind in cls.FIELDS}
    return st.builds(cls, **fields)


_any_method = st.sampled_from(METHODS).flatmap(_method)
_channel = st.sampled_from([0, 1, 1, 1, 2, 3, CHANNEL_MAX + 1])


def _frame(ftype: int, channel: int, payload: bytes, end: bytes = b"\xce") -> bytes:
    return HEAD.pack(ftype, channel, len(payload)) + payload + end


def _mutate(data: bytes, how: int, where: int) -> bytes:
    if not data:
        return data
    i = where % len(data)
    if how == 0:  # flip a byte
        return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
    if how == 1:  # cut short
        return data[:i]
    return data[:-1] + b"\x00"  # wrong frame end


_frames = st.one_of(
    st.builds(method_frame, _channel, _any_method),
    st.builds(lambda ch: method_frame(ch, m.ChannelOpen()), st.sampled_from([1, 2, 3])),
    st.builds(
        lambda ch, key, size: (
            method_frame(ch, m.BasicPublish(0, "", key)) + _frame(2, ch, struct.pack(">HHQ", 60, 0, size) + b"\x00\x00")
        ),
        st.sampled_from([1, 2]),
        st.text("q", max_size=2),
        st.integers(0, 3 * FRAME_MAX),
    ),
    st.builds(lambda ch, data: _frame(3, ch, data), st.sampled_from([1, 2]), st.binary(max_size=64)),
    st.builds(lambda ch: _frame(8, ch, b""), st.sampled_from([0, 0, 1])),
    st.builds(raw_method_frame, _channel, st.binary(min_size=0, max_size=24)),
    st.builds(
        _mutate,
        st.builds(method_frame, _channel, _any_method),
        st.integers(0, 2),
        st.integers(0, 10_000),
    ),
    st.builds(lambda size: HEAD.pack(1, 1, size), st.sampled_from([FRAME_MAX, FRAME_MAX + 1, 2**31, 2**32 - 1])),
)

CODES = {int(code) for code in ReplyCode}


class _Session:
    """The machine plus the door's answers during the handshake (as ``AMQPConnection`` gives them)."""

    def __init__(self) -> None:
        self.conn = ServerConnection(FRAME_MAX, CHANNEL_MAX, 64 * 1024)
        self.failed = False
        self.events = 0

    def feed(self, data: bytes) -> None:
        events = self.conn.receive(data)
        for event in events:
            assert not self.failed, "an event after a connection failure"
            self.events += 1
            if isinstance(event, ConnectionFailed):
                assert int(event.error.code) in CODES
                self.failed = True
            elif isinstance(event, ChannelFailed):
                assert int(event.error.code) in CODES
                self.conn.close_channel(event.channel)
            elif isinstance(event, ProtocolHeaderReceived):
                self.conn.send(0, m.ConnectionStart())
            elif isinstance(event, MethodReceived) and event.channel == 0:
                self._answer(event.method)
        assert self.conn._buffered <= FRAME_MAX + 8, "more than one frame buffered"

    def _answer(self, method: m.Method) -> None:
        try:
            if isinstance(method, m.ConnectionStartOk):
                self.conn.send(0, m.ConnectionTune(CHANNEL_MAX, FRAME_MAX, 0))
            elif isinstance(method, m.ConnectionTuneOk):
                self.conn.tuned(FRAME_MAX, CHANNEL_MAX)
            elif isinstance(method, m.ConnectionOpen):
                self.conn.send(0, m.ConnectionOpenOk())
        except RuntimeError:
            pass  # the machine refuses to send in this state: the door closes instead


def run_case(handshake_steps: int, frames: list[bytes], cuts: list[int]) -> int:
    """Feed one case; returns the number of events it produced."""
    session = _Session()
    stream = b"".join(HANDSHAKE[:handshake_steps]) + b"".join(frames)
    points = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    for start, stop in zip(points, points[1:], strict=False):
        session.feed(stream[start:stop])
    return session.events


CASE = (st.integers(0, len(HANDSHAKE)), st.lists(_frames, max_size=10), st.lists(st.integers(0, 1 << 16), max_size=6))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(*CASE)
def test_any_stream_becomes_events_within_bounds(handshake_steps: int, frames: list[bytes], cuts: list[int]) -> None:
    run_case(handshake_steps, frames, cuts)


def test_every_method_class_round_trips_through_the_fuzzer_strategy() -> None:
    assert len(METHODS) >= 60  # the strategy covers the whole protocol
    assert all(encode_method(cls()) for cls in METHODS)
