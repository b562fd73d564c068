"""Bad input over raw sockets: each malformed header, frame or method gets the right AMQP reply code
(RabbitMQ's, or the spec's where RabbitMQ has none), the broker's memory stays bounded, a frozen
heartbeat peer is dropped and its messages requeued, and a well-behaved pika connection carries on.

The raw client does the handshake by hand with ``leveret.amqp``'s codec, then writes the bad bytes.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from leveret.amqp import methods as m
from leveret.amqp.codec import decode_method, encode_method
from leveret.amqp.constants import FRAME_END, FRAME_HEARTBEAT, FRAME_METHOD, PROTOCOL_HEADER, ReplyCode
from leveret.amqp.frames import method_frame, raw_method_frame
from tests.conftest import BrokerProcess

HEAD = struct.Struct(">BHI")


class PeerClosedError(Exception):
    """The broker closed the socket (``data`` is what was unread)."""


class RawClient:
    """An AMQP client written with the codec only: handshake by hand, then whatever bytes we like."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = bytearray()
        self.tune = m.ConnectionTune()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def method(self, channel: int, method: m.Method) -> None:
        self.send(method_frame(channel, method))

    def _fill(self, size: int) -> None:
        while len(self.buf) < size:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise PeerClosedError(bytes(self.buf))
            self.buf += chunk

    def read_exactly(self, size: int) -> bytes:
        self._fill(size)
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out

    def read_frame(self) -> tuple[int, int, bytes]:
        self._fill(7)
        ftype, channel, size = HEAD.unpack_from(self.buf, 0)
        self._fill(7 + size + 1)
        assert self.buf[7 + size] == FRAME_END
        payload = bytes(self.buf[7 : 7 + size])
        del self.buf[: 7 + size + 1]
        return ftype, channel, payload

    def read_method(self) -> tuple[int, m.Method]:
        """The next method (heartbeats skipped, content frames too: the callers count methods)."""
        while True:
            ftype, channel, payload = self.read_frame()
            if ftype == FRAME_METHOD:
                return channel, decode_method(payload)
            assert ftype != FRAME_HEARTBEAT or channel == 0

    def expect(self, cls: type[m.Method], channel: int = 0) -> m.Method:
        got_channel, method = self.read_method()
        assert (got_channel, type(method)) == (channel, cls), method
        return method

    def start(self, client_properties: dict[str, object] | None = None) -> None:
        self.send(PROTOCOL_HEADER)
        self.expect(m.ConnectionStart)
        props = client_properties if client_properties is not None else {"product": "raw test client"}
        self.method(0, m.ConnectionStartOk(props, "PLAIN", b"\x00guest\x00guest", "en_US"))

    def handshake(self, heartbeat: int = 0) -> None:
        self.start()
        tune = self.expect(m.ConnectionTune)
        assert isinstance(tune, m.ConnectionTune)
        self.tune = tune
        self.method(0, m.ConnectionTuneOk(tune.channel_max, tune.frame_max, heartbeat))
        self.method(0, m.ConnectionOpen("/"))
        self.expect(m.ConnectionOpenOk)

    def open_channel(self, channel: int = 1) -> None:
        self.method(channel, m.ChannelOpen())
        self.expect(m.ChannelOpenOk, channel)

    def expect_connection_close(self) -> m.ConnectionClose:
        while True:
            channel, method = self.read_method()
            if isinstance(method, m.ConnectionClose):
                assert channel == 0
                return method

    def closed_within(self, seconds: float) -> float | None:
        """Seconds until the broker closes the socket (reading whatever it sends), or None."""
        started = time.monotonic()
        self.sock.settimeout(0.05)
        while time.monotonic() - started < seconds:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return time.monotonic() - started
        return None


def frame(ftype: int, channel: int, payload: bytes, end: bytes = b"\xce") -> bytes:
    return HEAD.pack(ftype, channel, len(payload)) + payload + end


def header(channel: int, body_size: int, properties: bytes = b"\x00\x00") -> bytes:
    return frame(2, channel, struct.pack(">HHQ", 60, 0, body_size) + properties)


def body(channel: int, data: bytes) -> bytes:
    return frame(3, channel, data)


PUBLISH = method_frame(1, m.BasicPublish(0, "", "nowhere"))


def queue_declare_with(table: bytes) -> bytes:
    """queue.declare on channel 1 whose arguments are ``table`` (length prefix included)."""
    return raw_method_frame(1, b"\x00\x32\x00\x0a" + b"\x00\x00" + b"\x01q" + b"\x00" + table)


def nested_tables(depth: int) -> bytes:
    inner = b""
    for _ in range(depth):
        inner = b"\x01kF" + struct.pack(">I", len(inner)) + inner
    return struct.pack(">I", len(inner)) + inner


def tls_client_hello() -> bytes:
    """The first flight of a real TLS handshake, as a TLS client would send it to our plain port."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def bystander(broker: BrokerProcess) -> Iterator[BlockingChannel]:
    """A well-behaved pika connection, open while the bad clients do their worst."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    yield conn.channel()
    conn.close()


def still_works(ch: BlockingChannel) -> None:
    queue = ch.queue_declare("", exclusive=True).method.queue
    for n in range(3):
        ch.basic_publish("", queue, b"ok %d" % n)
    got = [ch.basic_get(queue, auto_ack=True)[2] for _ in range(3)]
    assert got == [b"ok 0", b"ok 1", b"ok 2"]
    ch.queue_delete(queue)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# ----------------------------------------------------------------------------- protocol header


@pytest.mark.parametrize(
    "data",
    [
        b"AMQP\x00\x00\x09\x00",
        b"AMQP\x01\x01\x08\x00",
        b"AMQP\x03\x01\x00\x00",
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "tls-client-hello",
        b"\x00\x00\x00\x00\x00\x00\x00\x00",
    ],
    ids=["amqp-0-9-0", "amqp-0-8", "amqp-1-0-sasl", "http-get", "tls-client-hello", "zeros"],
)
def test_wrong_protocol_header_gets_ours_and_a_close(
    broker: BrokerProcess, bystander: BlockingChannel, data: bytes | str
) -> None:
    raw = RawClient(broker.port)
    try:
        raw.send(tls_client_hello() if data == "tls-client-hello" else data)  # type: ignore[arg-type]
        assert raw.read_exactly(8) == PROTOCOL_HEADER
        assert raw.closed_within(2.0) is not None
    finally:
        raw.close()
    still_works(bystander)


# ---------------------------------------------------------------------- bad frames after open

# (id, bytes sent on an open connection with channel 1 open, code, class id, method id)
BAD_FRAMES: list[tuple[str, bytes, int, int, int]] = [
    # payloads of up to frame_max (not frame_max - 8) pass, as in RabbitMQ: one byte more fails
    ("frame-over-frame-max", HEAD.pack(1, 1, 131073) + b"x" * 100, ReplyCode.FRAME_ERROR, 0, 0),
    ("length-2^32-1", HEAD.pack(3, 1, 2**32 - 1), ReplyCode.FRAME_ERROR, 0, 0),
    ("bad-frame-end", method_frame(1, m.BasicQos(0, 1, False))[:-1] + b"\x00", ReplyCode.FRAME_ERROR, 0, 0),
    ("unknown-frame-type", frame(7, 1, b""), ReplyCode.FRAME_ERROR, 0, 0),
    ("heartbeat-on-channel-1", frame(8, 1, b""), ReplyCode.FRAME_ERROR, 0, 0),  # spec 4.2.7; RabbitMQ: 505
    ("heartbeat-with-payload", frame(8, 0, b"abc"), ReplyCode.FRAME_ERROR, 0, 0),
    ("header-too-short", PUBLISH + frame(2, 1, b"\x00\x3c\x00"), ReplyCode.FRAME_ERROR, 0, 0),
    ("body-beyond-declared-size", PUBLISH + header(1, 3) + body(1, b"abcd"), ReplyCode.FRAME_ERROR, 0, 0),
    ("method-on-unopened-channel", method_frame(5, m.BasicQos(0, 1, False)), ReplyCode.CHANNEL_ERROR, 60, 10),
    ("second-channel-open", method_frame(1, m.ChannelOpen()), ReplyCode.CHANNEL_ERROR, 20, 10),
    ("tune-ok-after-open", method_frame(0, m.ConnectionTuneOk(0, 131072, 0)), ReplyCode.CHANNEL_ERROR, 10, 31),
    ("basic-method-on-channel-0", method_frame(0, m.BasicQos(0, 1, False)), ReplyCode.CHANNEL_ERROR, 60, 10),
    ("channel-over-channel-max", method_frame(2048, m.ChannelOpen()), ReplyCode.NOT_ALLOWED, 0, 0),
    ("header-without-method", header(1, 3), ReplyCode.UNEXPECTED_FRAME, 0, 0),
    ("body-without-method", body(1, b"abc"), ReplyCode.UNEXPECTED_FRAME, 0, 0),
    ("header-on-unopened-channel", header(4, 3), ReplyCode.UNEXPECTED_FRAME, 0, 0),
    (
        "method-between-body-frames",
        PUBLISH + header(1, 6) + body(1, b"abc") + method_frame(1, m.BasicQos(0, 1, False)),
        ReplyCode.UNEXPECTED_FRAME,
        60,
        40,
    ),
    ("table-unknown-tag", queue_declare_with(b"\x00\x00\x00\x06\x01kZabc"), ReplyCode.SYNTAX_ERROR, 50, 10),
    ("table-nested-10000-deep", queue_declare_with(nested_tables(10_000)), ReplyCode.SYNTAX_ERROR, 50, 10),
    ("table-million-entries-claimed", queue_declare_with(b"\xff\xff\xff\xf0\x01kV"), ReplyCode.SYNTAX_ERROR, 50, 10),
    (
        "longstr-past-frame",
        queue_declare_with(b"\x00\x00\x00\x07\x01kx\x00\x01\x00\x00"),
        ReplyCode.SYNTAX_ERROR,
        50,
        10,
    ),
    ("method-truncated", raw_method_frame(1, b"\x00\x32\x00\x0a\x00"), ReplyCode.SYNTAX_ERROR, 50, 10),
    (
        "method-with-trailing-bytes",
        raw_method_frame(1, encode_method(m.BasicQos()) + b"zz"),
        ReplyCode.SYNTAX_ERROR,
        60,
        10,
    ),
    ("properties-truncated", PUBLISH + header(1, 0, b"\x10\x00"), ReplyCode.SYNTAX_ERROR, 60, 40),
    (
        "properties-bad-headers",
        PUBLISH + header(1, 0, b"\x20\x00\x00\x00\x00\x05\x01kZab"),
        ReplyCode.SYNTAX_ERROR,
        60,
        40,
    ),
    (
        "client-sends-basic-deliver",
        method_frame(1, m.BasicDeliver("t", 1)) + header(1, 0),
        ReplyCode.COMMAND_INVALID,
        60,
        60,
    ),
    ("client-sends-open-ok", method_frame(1, m.ChannelOpenOk()), ReplyCode.COMMAND_INVALID, 20, 11),
    ("unknown-method", raw_method_frame(1, b"\x00\x3c\x00\x63"), ReplyCode.NOT_IMPLEMENTED, 60, 99),
]


@pytest.mark.parametrize(
    ("data", "code", "class_id", "method_id"), [c[1:] for c in BAD_FRAMES], ids=[c[0] for c in BAD_FRAMES]
)
def test_bad_frame_gets_its_reply_code(
    broker: BrokerProcess, bystander: BlockingChannel, data: bytes, code: int, class_id: int, method_id: int
) -> None:
    raw = RawClient(broker.port)
    try:
        raw.handshake()
        raw.open_channel(1)
        raw.send(data)
        close = raw.expect_connection_close()
        assert (close.reply_code, close.class_id, close.method_id) == (code, class_id, method_id), close
        assert close.reply_text.startswith(ReplyCode(code).name + " - ")
        if code not in (ReplyCode.FRAME_ERROR, ReplyCode.SYNTAX_ERROR):
            raw.method(0, m.ConnectionCloseOk())  # the stream is still framed: say goodbye properly
        assert raw.closed_within(2.0) is not None
    finally:
        raw.close()
    still_works(bystander)


def test_frame_over_frame_min_size_before_tune_is_501(broker: BrokerProcess) -> None:
    raw = RawClient(broker.port)
    try:
        raw.start(client_properties={"padding": "x" * 5000})  # before tune-ok frames are limited to 4096
        close = raw.expect_connection_close()
        assert close.reply_code == ReplyCode.FRAME_ERROR
        assert raw.closed_within(2.0) is not None
    finally:
        raw.close()


def test_body_over_max_message_size_closes_only_the_channel(broker: BrokerProcess) -> None:
    raw = RawClient(broker.port)
    try:
        raw.handshake()
        raw.open_channel(1)
        raw.open_channel(2)
        raw.send(PUBLISH + header(1, 200 * 1024 * 1024))  # refused at the header, before any body arrives
        channel, close = raw.read_method()
        assert channel == 1 and isinstance(close, m.ChannelClose)
        assert (close.reply_code, close.class_id, close.method_id) == (ReplyCode.PRECONDITION_FAILED, 60, 40)
        assert close.reply_text.startswith("PRECONDITION_FAILED - message size 209715200 is larger than")
        raw.method(1, m.ChannelCloseOk())
        raw.method(2, m.QueueDeclare(0, "", exclusive=True))
        assert raw.expect(m.QueueDeclareOk, 2)
        raw.open_channel(1)  # the number is free again
    finally:
        raw.close()


def test_memory_stays_bounded_by_the_limits(broker: BrokerProcess) -> None:
    # Each of these claims gigabytes; none of it may be allocated.
    claims = [
        HEAD.pack(3, 1, 2**32 - 1),
        HEAD.pack(1, 1, 2**31),
        queue_declare_with(b"\xff\xff\xff\xf0\x01kV"),
        PUBLISH + header(1, 2**63),
    ]
    before = rss_kib(broker.proc.pid)
    for _ in range(5):
        for data in claims:
            raw = RawClient(broker.port)
            try:
                raw.handshake()
                raw.open_channel(1)
                raw.send(data)
                raw.read_method()  # connection.close or channel.close
            finally:
                raw.close()
    assert rss_kib(broker.proc.pid) - before < 30_000


def test_a_burst_of_bad_clients_costs_a_good_one_nothing(broker: BrokerProcess) -> None:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    codes: list[int] = []
    errors: list[BaseException] = []

    def bad_client(data: bytes) -> None:
        try:
            raw = RawClient(broker.port)
            try:
                raw.handshake()
                raw.open_channel(1)
                raw.send(data)
                codes.append(raw.expect_connection_close().reply_code)
            finally:
                raw.close()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=bad_client, args=(case[1],)) for case in BAD_FRAMES * 2]
    for t in threads:
        t.start()
    for n in range(200):
        ch.basic_publish("", queue, str(n).encode())
    got = [ch.basic_get(queue, auto_ack=True)[2] for _ in range(200)]
    for t in threads:
        t.join(10)
    assert not errors, errors
    assert sorted(codes) == sorted(case[2] for case in BAD_FRAMES * 2)
    assert got == [str(n).encode() for n in range(200)]
    conn.close()


def test_channel_open_pipelined_behind_connection_open_works(broker: BrokerProcess) -> None:
    # Not bad input: RabbitMQ serves a client that writes tune-ok, open, channel.open and a method at once.
    raw = RawClient(broker.port)
    try:
        raw.start()
        tune = raw.expect(m.ConnectionTune)
        assert isinstance(tune, m.ConnectionTune)
        raw.send(
            method_frame(0, m.ConnectionTuneOk(tune.channel_max, tune.frame_max, 0))
            + method_frame(0, m.ConnectionOpen("/"))
            + method_frame(1, m.ChannelOpen())
            + method_frame(1, m.QueueDeclare(0, "", exclusive=True))
        )
        raw.expect(m.ConnectionOpenOk)
        raw.expect(m.ChannelOpenOk, 1)
        raw.expect(m.QueueDeclareOk, 1)
    finally:
        raw.close()


# ----------------------------------------------------------------------------------- heartbeats


def test_a_frozen_heartbeat_peer_is_closed_within_two_timeouts_and_its_messages_requeued(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "broker", "--heartbeat", "1")
    try:
        # heartbeat=0: this connection idles in pika while the raw client is watched
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port, heartbeat=0))
        ch = conn.channel()
        ch.queue_declare("held", durable=False)
        for n in range(3):
            ch.basic_publish("", "held", b"m%d" % n)

        raw = RawClient(broker.port)
        try:
            raw.handshake(heartbeat=1)
            assert raw.tune.heartbeat == 1
            raw.open_channel(1)
            raw.method(1, m.BasicConsume(0, "held", "frozen"))
            raw.expect(m.BasicConsumeOk, 1)
            tags = [raw.expect(m.BasicDeliver, 1) for _ in range(3)]
            assert [t.delivery_tag for t in tags if isinstance(t, m.BasicDeliver)] == [1, 2, 3]
            # From here on the raw client only reads (the broker's heartbeats), never writes.
            silent_for = raw.closed_within(6.0)
        finally:
            raw.close()
        assert silent_for is not None, "the broker kept a silent peer"
        # 2 x 1 s, checked every half interval: 2.0-2.5 s after the last byte in (measured: 2.46 s)
        assert 1.0 <= silent_for <= 3.2, silent_for

        redelivered = []
        for _ in range(3):
            method, _props, data = ch.basic_get("held", auto_ack=True)
            assert method is not None, "unacked messages were not requeued"
            redelivered.append((data, method.redelivered))
        assert redelivered == [(b"m0", True), (b"m1", True), (b"m2", True)]
        conn.close()
    finally:
        broker.stop()


def test_a_client_that_sends_only_heartbeats_is_kept(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "broker", "--heartbeat", "1")
    try:
        raw = RawClient(broker.port)
        try:
            raw.handshake(heartbeat=1)
            deadline = time.monotonic() + 2.6  # longer than the 2 s a silent peer gets
            while time.monotonic() < deadline:
                raw.send(frame(8, 0, b""))
                time.sleep(0.3)  # the client's heartbeat interval: this is the behaviour under test
            raw.open_channel(1)  # still open
        finally:
            raw.close()
    finally:
        broker.stop()
