"""Method codec and frame encoding (leveret.amqp.codec, .frames): one table of (method, bytes) cases
checked both ways, malformed method payloads, and Hypothesis round trips over every method class."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leveret.amqp import methods as m
from leveret.amqp.codec import decode_method, encode_method
from leveret.amqp.constants import ReplyCode
from leveret.amqp.errors import ProtocolError
from leveret.amqp.frames import (
    HEARTBEAT_FRAME,
    DeliverTemplate,
    content_frames,
    encode_shortstr,
    get_ok_frame,
    method_frame,
)
from leveret.amqp.methods import METHODS

from .test_wire import field_tables

# (method, payload of its method frame), written out by hand from the spec (4.2.5, 1.2-1.8).
CASES: list[tuple[m.Method, bytes]] = [
    # queue.declare: five bits in one octet, bit 0 first (passive)
    (
        m.QueueDeclare(0, "q", passive=True, durable=False, exclusive=True, auto_delete=False, nowait=True),
        b"\x00\x32\x00\x0a" + b"\x00\x00" + b"\x01q" + b"\x15" + b"\x00\x00\x00\x00",
    ),
    (
        m.QueueDeclare(0, "q", True, True, True, True, True),
        b"\x00\x32\x00\x0a\x00\x00\x01q\x1f\x00\x00\x00\x00",
    ),
    (
        m.QueueDeclare(0, "orders", False, True, False, True, False, {"x-max-priority": 10}),
        b"\x00\x32\x00\x0a\x00\x00\x06orders\x0a" + b"\x00\x00\x00\x14\x0ex-max-priorityI\x00\x00\x00\x0a",
    ),
    (m.QueueDeclareOk("q", 3, 1), b"\x00\x32\x00\x0b\x01q\x00\x00\x00\x03\x00\x00\x00\x01"),
    # basic.nack: a longlong then two bits (multiple = bit 0, requeue = bit 1)
    (m.BasicNack(5, True, False), b"\x00\x3c\x00\x78\x00\x00\x00\x00\x00\x00\x00\x05\x01"),
    (m.BasicNack(5, False, True), b"\x00\x3c\x00\x78\x00\x00\x00\x00\x00\x00\x00\x05\x02"),
    (m.BasicNack(2**64 - 1, True, True), b"\x00\x3c\x00\x78" + b"\xff" * 8 + b"\x03"),
    (m.BasicNack(0, False, False), b"\x00\x3c\x00\x78" + b"\x00" * 8 + b"\x00"),
    (m.BasicAck(1, False), b"\x00\x3c\x00\x50\x00\x00\x00\x00\x00\x00\x00\x01\x00"),
    (m.BasicReject(9, True), b"\x00\x3c\x00\x5a\x00\x00\x00\x00\x00\x00\x00\x09\x01"),
    (m.BasicQos(0, 10, True), b"\x00\x3c\x00\x0a\x00\x00\x00\x00\x00\x0a\x01"),
    (
        m.BasicPublish(0, "amq.direct", "rk", mandatory=True, immediate=False),
        b"\x00\x3c\x00\x28\x00\x00\x0aamq.direct\x02rk\x01",
    ),
    (m.BasicPublish(0, "", "", False, True), b"\x00\x3c\x00\x28\x00\x00\x00\x00\x02"),
    # a bit between short strings: basic.deliver's redelivered
    (
        m.BasicDeliver("ctag", 1, True, "ex", "rk"),
        b"\x00\x3c\x00\x3c\x04ctag\x00\x00\x00\x00\x00\x00\x00\x01\x01\x02ex\x02rk",
    ),
    (
        m.BasicGetOk(7, False, "", "q", 2),
        b"\x00\x3c\x00\x47\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x01q\x00\x00\x00\x02",
    ),
    (m.BasicGetEmpty(), b"\x00\x3c\x00\x48\x00"),
    (
        m.BasicConsume(0, "q", "", no_local=False, no_ack=True, exclusive=False, nowait=False),
        b"\x00\x3c\x00\x14\x00\x00\x01q\x00\x02\x00\x00\x00\x00",
    ),
    (m.BasicReturn(312, "NO_ROUTE", "ex", "k"), b"\x00\x3c\x00\x32\x01\x38\x08NO_ROUTE\x02ex\x01k"),
    # long strings and tables
    (
        m.ConnectionStartOk({"product": "x"}, "PLAIN", b"\x00guest\x00guest", "en_US"),
        b"\x00\x0a\x00\x0b"
        + b"\x00\x00\x00\x0e\x07productS\x00\x00\x00\x01x"
        + b"\x05PLAIN"
        + b"\x00\x00\x00\x0c\x00guest\x00guest"
        + b"\x05en_US",
    ),
    (
        m.ConnectionStart(0, 9, {}, b"PLAIN AMQPLAIN", b"en_US"),
        b"\x00\x0a\x00\x0a\x00\x09\x00\x00\x00\x00\x00\x00\x00\x0ePLAIN AMQPLAIN\x00\x00\x00\x05en_US",
    ),
    (m.ConnectionTune(2047, 131072, 60), b"\x00\x0a\x00\x1e\x07\xff\x00\x02\x00\x00\x00\x3c"),
    (m.ConnectionTuneOk(0, 4096, 0), b"\x00\x0a\x00\x1f\x00\x00\x00\x00\x10\x00\x00\x00"),
    (m.ConnectionOpen("/", "", False), b"\x00\x0a\x00\x28\x01/\x00\x00"),
    (m.ConnectionOpenOk(), b"\x00\x0a\x00\x29\x00"),
    (m.ConnectionClose(320, "bye", 0, 0), b"\x00\x0a\x00\x32\x01\x40\x03bye\x00\x00\x00\x00"),
    (m.ConnectionCloseOk(), b"\x00\x0a\x00\x33"),
    (m.ConnectionBlocked("low on memory"), b"\x00\x0a\x00\x3c\x0dlow on memory"),
    (m.ConnectionUpdateSecret(b"tok", "r"), b"\x00\x0a\x00\x46\x00\x00\x00\x03tok\x01r"),
    (m.ChannelOpen(), b"\x00\x14\x00\x0a\x00"),
    (m.ChannelOpenOk(), b"\x00\x14\x00\x0b\x00\x00\x00\x00"),
    (m.ChannelFlow(True), b"\x00\x14\x00\x14\x01"),
    (m.ChannelFlowOk(False), b"\x00\x14\x00\x15\x00"),
    (m.ChannelClose(404, "NOT_FOUND", 50, 10), b"\x00\x14\x00\x28\x01\x94\x09NOT_FOUND\x00\x32\x00\x0a"),
    # access.request: bits 1..4 set (passive, active, write, read)
    (m.AccessRequest("/data", False, True, True, True, True), b"\x00\x1e\x00\x0a\x05/data\x1e"),
    (
        m.ExchangeDeclare(0, "ex", "topic", False, True, False, True, False, {"alternate-exchange": "ae"}),
        b"\x00\x28\x00\x0a\x00\x00\x02ex\x05topic\x0a" + b"\x00\x00\x00\x1a\x12alternate-exchangeS\x00\x00\x00\x02ae",
    ),
    (m.ExchangeBind(0, "d", "s", "k", True), b"\x00\x28\x00\x1e\x00\x00\x01d\x01s\x01k\x01\x00\x00\x00\x00"),
    (m.ExchangeUnbindOk(), b"\x00\x28\x00\x33"),  # 51, not 41: RabbitMQ's id
    (m.QueueDelete(0, "q", True, False, True), b"\x00\x32\x00\x28\x00\x00\x01q\x05"),
    (m.QueueUnbind(0, "q", "e", "k"), b"\x00\x32\x00\x32\x00\x00\x01q\x01e\x01k\x00\x00\x00\x00"),
    (m.ConfirmSelect(True), b"\x00\x55\x00\x0a\x01"),
    (m.TxSelect(), b"\x00\x5a\x00\x0a"),
    (m.TxRollbackOk(), b"\x00\x5a\x00\x1f"),
]
IDS = [f"{method.NAME}-{i}" for i, (method, _) in enumerate(CASES)]


@pytest.mark.parametrize(("method", "payload"), CASES, ids=IDS)
def test_method_encodes_to_fixture(method: m.Method, payload: bytes) -> None:
    assert encode_method(method) == payload


@pytest.mark.parametrize(("method", "payload"), CASES, ids=IDS)
def test_fixture_decodes_to_method(method: m.Method, payload: bytes) -> None:
    assert decode_method(payload) == method
    assert decode_method(memoryview(payload)) == method
    assert decode_method(bytearray(payload)) == method


@pytest.mark.parametrize(("method", "payload"), CASES, ids=IDS)
def test_every_strict_prefix_of_a_fixture_is_502(method: m.Method, payload: bytes) -> None:
    for cut in range(len(payload)):
        with pytest.raises(ProtocolError) as info:
            decode_method(payload[:cut])
        assert info.value.code is ReplyCode.SYNTAX_ERROR
        if cut >= 4:  # the error names the method, for connection.close's class and method ids
            assert (info.value.class_id, info.value.method_id) == (method.CLASS_ID, method.METHOD_ID)


@pytest.mark.parametrize(("method", "payload"), CASES[:6], ids=IDS[:6])
def test_bytes_after_the_last_argument_are_502(method: m.Method, payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_method(payload + b"\x00")
    assert info.value.code is ReplyCode.SYNTAX_ERROR
    assert (info.value.class_id, info.value.method_id) == (method.CLASS_ID, method.METHOD_ID)


@pytest.mark.parametrize("payload", [b"\x00\x3c\x00\x63", b"\x00\x63\x00\x0a", b"\xff\xff\xff\xff\x00"])
def test_unknown_methods_are_540_naming_the_ids(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_method(payload)
    assert info.value.code is ReplyCode.NOT_IMPLEMENTED
    assert (info.value.class_id, info.value.method_id) == (payload[0] << 8 | payload[1], payload[2] << 8 | payload[3])


def test_a_malformed_table_argument_is_502_naming_the_method() -> None:
    payload = b"\x00\x32\x00\x0a\x00\x00\x01q\x00" + b"\x00\x00\x00\x06\x01kZabc"
    with pytest.raises(ProtocolError) as info:
        decode_method(payload)
    assert info.value.code is ReplyCode.SYNTAX_ERROR
    assert (info.value.class_id, info.value.method_id) == (50, 10)
    assert "'Z'" in info.value.text


@pytest.mark.parametrize(
    "method",
    [
        m.QueueDeclare(0, "q" * 256),
        m.BasicPublish(0, "", "é" * 128),
        m.ConnectionStartOk({}, "PLAIN", b"", "x" * 300),
    ],
    ids=["queue-name", "routing-key-utf8", "locale"],
)
def test_shortstr_over_255_bytes_is_refused_on_encode(method: m.Method) -> None:
    with pytest.raises(ValueError, match="255"):
        encode_method(method)


@pytest.mark.parametrize(
    "method",
    [m.ChannelClose(70000, "", 0, 0), m.BasicQos(2**32, 0, False), m.BasicAck(-1), m.ConnectionStart(256)],
    ids=["short", "long", "longlong", "octet"],
)
def test_integers_out_of_range_are_refused_on_encode(method: m.Method) -> None:
    with pytest.raises((ValueError, OverflowError)):
        encode_method(method)


def test_method_table_ids_and_names_are_consistent() -> None:
    for (class_id, method_id), cls in METHODS.items():
        assert (class_id, method_id) == (cls.CLASS_ID, cls.METHOD_ID)
        assert m.BY_NAME[cls.NAME] is cls
        for response in cls.RESPONSES:
            assert response in m.BY_NAME
        assert bool(cls.RESPONSES) == cls.SYNCHRONOUS
    content = {cls.NAME for cls in METHODS.values() if cls.HAS_CONTENT}
    assert content == {"basic.publish", "basic.return", "basic.deliver", "basic.get-ok"}
    assert len(METHODS) == 66


# --------------------------------------------------------------------------------- round trips

_shortstrs = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
KIND: dict[str, st.SearchStrategy[Any]] = {
    "octet": st.integers(0, 2**8 - 1),
    "short": st.integers(0, 2**16 - 1),
    "long": st.integers(0, 2**32 - 1),
    "longlong": st.integers(0, 2**64 - 1),
    "timestamp": st.integers(0, 2**64 - 1),
    "bit": st.booleans(),
    "shortstr": _shortstrs,
    "longstr": st.binary(max_size=100),
    "table": field_tables,
}


def _method_strategy(cls: type[m.Method]) -> st.SearchStrategy[m.Method]:
    return st.tuples(*(KIND[kind] for _, kind in cls.FIELDS)).map(lambda args: cls(*args))


methods = st.sampled_from(sorted(METHODS.values(), key=lambda c: c.NAME)).flatmap(_method_strategy)


@settings(max_examples=400, deadline=None)
@given(methods)
def test_every_method_round_trips(method: m.Method) -> None:
    payload = encode_method(method)
    assert decode_method(payload) == method
    assert encode_method(decode_method(payload)) == payload


@pytest.mark.parametrize("cls", sorted(METHODS.values(), key=lambda c: c.NAME), ids=lambda c: c.NAME)
def test_every_method_class_round_trips_with_its_defaults(cls: type[m.Method]) -> None:
    method = cls()
    assert decode_method(encode_method(method)) == method


@settings(max_examples=200, deadline=None)
@given(methods, st.data())
def test_every_strict_prefix_and_any_extension_of_a_method_is_502(method: m.Method, data: st.DataObject) -> None:
    payload = encode_method(method)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(ProtocolError) as info:
        decode_method(payload[:cut])
    assert info.value.code is ReplyCode.SYNTAX_ERROR
    extra = data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(ProtocolError) as info:
        decode_method(payload + extra)
    assert info.value.code is ReplyCode.SYNTAX_ERROR


def _with_ids(ids: tuple[int, int]) -> st.SearchStrategy[bytes]:
    head = ids[0].to_bytes(2, "big") + ids[1].to_bytes(2, "big")
    return st.binary(max_size=40).map(lambda rest: head + rest)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(METHODS)).flatmap(_with_ids))
def test_arbitrary_arguments_decode_or_raise_502_and_nothing_else(payload: bytes) -> None:
    try:
        method = decode_method(payload)
    except ProtocolError as exc:
        assert exc.code is ReplyCode.SYNTAX_ERROR
    else:  # unused bits of a bit octet make encodings differ; the decoded method is stable
        assert decode_method(encode_method(method)) == method


# -------------------------------------------------------------------------------------- frames


def test_method_frame_bytes() -> None:
    frame = method_frame(1, m.BasicQos(0, 10, False))
    assert frame == b"\x01\x00\x01\x00\x00\x00\x0b" + b"\x00\x3c\x00\x0a\x00\x00\x00\x00\x00\x0a\x00" + b"\xce"


def test_heartbeat_frame_bytes() -> None:
    assert HEARTBEAT_FRAME == b"\x08\x00\x00\x00\x00\x00\x00\xce"


def test_content_frames_split_the_body_at_frame_max() -> None:
    frames = b"".join(content_frames(3, b"\x10\x00\x02", b"a" * 10, frame_max=12))
    header = b"\x02\x00\x03\x00\x00\x00\x0f" + b"\x00\x3c\x00\x00" + b"\x00" * 7 + b"\x0a" + b"\x10\x00\x02" + b"\xce"
    bodies = b"\x03\x00\x03\x00\x00\x00\x04aaaa\xce" * 2 + b"\x03\x00\x03\x00\x00\x00\x02aa\xce"
    assert frames == header + bodies


def test_content_frames_of_an_empty_body_are_just_the_header() -> None:
    frames = b"".join(content_frames(1, b"\x00\x00", b"", frame_max=4096))
    assert frames == b"\x02\x00\x01\x00\x00\x00\x0e\x00\x3c\x00\x00" + b"\x00" * 8 + b"\x00\x00\xce"


def test_content_frames_body_exactly_one_frame() -> None:
    frames = b"".join(content_frames(1, b"\x00\x00", b"x" * 4088, frame_max=4096))
    assert frames.count(b"\x03\x00\x01\x00\x00\x0f\xf8") == 1
    assert frames.endswith(b"x" * 4088 + b"\xce")


@settings(max_examples=200, deadline=None)
@given(
    channel=st.integers(1, 65535),
    tag=_shortstrs.filter(lambda s: len(s.encode()) <= 255),
    delivery_tag=st.integers(0, 2**64 - 1),
    redelivered=st.booleans(),
    exchange=_shortstrs,
    routing_key=_shortstrs,
    body=st.binary(max_size=50),
)
def test_deliver_template_matches_the_generic_encoding(
    channel: int, tag: str, delivery_tag: int, redelivered: bool, exchange: str, routing_key: str, body: bytes
) -> None:
    wire = encode_shortstr(exchange) + encode_shortstr(routing_key)
    fast = b"".join(DeliverTemplate(channel, tag).frames(delivery_tag, redelivered, wire, b"\x00\x00", body, 4096))
    generic = method_frame(channel, m.BasicDeliver(tag, delivery_tag, redelivered, exchange, routing_key))
    generic += b"".join(content_frames(channel, b"\x00\x00", body, 4096))
    assert fast == generic
    # The one-piece encoding (the door's path), with bodies around one frame's capacity too.
    template = DeliverTemplate(channel, tag)
    assert template.encode(delivery_tag, redelivered, wire, b"\x00\x00", body, 4096) == generic
    for size in (4087, 4088, 4089, 9000):
        big = bytes(size)
        whole = method_frame(channel, m.BasicDeliver(tag, delivery_tag, redelivered, exchange, routing_key))
        whole += b"".join(content_frames(channel, b"\x10\x00\x02", big, 4096))
        assert template.encode(delivery_tag, redelivered, wire, b"\x10\x00\x02", big, 4096) == whole


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 65535), st.integers(0, 2**64 - 1), st.booleans(), _shortstrs, _shortstrs, st.integers(0, 2**32 - 1)
)
def test_get_ok_frame_matches_the_generic_encoding(
    channel: int, tag: int, redelivered: bool, exchange: str, key: str, count: int
) -> None:
    wire = encode_shortstr(exchange) + encode_shortstr(key)
    assert get_ok_frame(channel, tag, redelivered, wire, count) == method_frame(
        channel, m.BasicGetOk(tag, redelivered, exchange, key, count)
    )
