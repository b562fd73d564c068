"""Content-header properties (leveret.amqp.properties): all 14 fields as byte fixtures both ways, the
fast ``peek_delivery_mode``, validation of malformed lists, round trips and interop with pika."""

from __future__ import annotations

import struct
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

import pika.spec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leveret.amqp.constants import ReplyCode
from leveret.amqp.errors import ProtocolError
from leveret.amqp.properties import (
    EMPTY_PROPERTIES,
    PERSISTENT_PROPERTIES,
    BasicProperties,
    decode_properties,
    encode_properties,
    peek_delivery_mode,
    validate_properties,
)

from .test_wire import field_tables

ALL = BasicProperties(
    content_type="text/plain",
    content_encoding="gzip",
    headers={"a": 1},
    delivery_mode=2,
    priority=5,
    correlation_id="c1",
    reply_to="rq",
    expiration="60000",
    message_id="m1",
    timestamp=datetime(2020, 1, 1, tzinfo=UTC),
    type="t",
    user_id="guest",
    app_id="app",
    cluster_id="cl",
)
ALL_RAW = (
    b"\xff\xfc"  # flags: bits 15..2, one per property, in the spec's order
    + b"\x0atext/plain"
    + b"\x04gzip"
    + b"\x00\x00\x00\x07\x01aI\x00\x00\x00\x01"
    + b"\x02"
    + b"\x05"
    + b"\x02c1"
    + b"\x02rq"
    + b"\x0560000"
    + b"\x02m1"
    + b"\x00\x00\x00\x00\x5e\x0b\xe1\x00"
    + b"\x01t"
    + b"\x05guest"
    + b"\x03app"
    + b"\x02cl"
)

# One property alone: its flag bit and its encoding.
SINGLE: list[tuple[str, Any, bytes]] = [
    ("content_type", "application/json", b"\x80\x00\x10application/json"),
    ("content_encoding", "utf-8", b"\x40\x00\x05utf-8"),
    ("headers", {"x": "y"}, b"\x20\x00\x00\x00\x00\x08\x01xS\x00\x00\x00\x01y"),
    ("headers", {}, b"\x20\x00\x00\x00\x00\x00"),
    ("delivery_mode", 1, b"\x10\x00\x01"),
    ("priority", 9, b"\x08\x00\x09"),
    ("correlation_id", "abc", b"\x04\x00\x03abc"),
    ("reply_to", "amq.rabbitmq.reply-to", b"\x02\x00\x15amq.rabbitmq.reply-to"),
    ("expiration", "0", b"\x01\x00\x010"),
    ("message_id", "", b"\x00\x80\x00"),
    ("timestamp", datetime(2020, 1, 1, tzinfo=UTC), b"\x00\x40\x00\x00\x00\x00\x5e\x0b\xe1\x00"),
    ("type", "order.created", b"\x00\x20\x0dorder.created"),
    ("user_id", "guest", b"\x00\x10\x05guest"),
    ("app_id", "ü", b"\x00\x08\x02\xc3\xbc"),
    ("cluster_id", "c", b"\x00\x04\x01c"),
]


def test_all_fourteen_properties_encode_to_fixture() -> None:
    assert encode_properties(ALL) == ALL_RAW


def test_fixture_decodes_to_all_fourteen_properties() -> None:
    assert decode_properties(ALL_RAW) == ALL
    assert decode_properties(memoryview(ALL_RAW)) == ALL


@pytest.mark.parametrize(("name", "value", "raw"), SINGLE, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(SINGLE)])
def test_single_property_both_ways(name: str, value: Any, raw: bytes) -> None:
    props = BasicProperties(**{name: value})
    assert encode_properties(props) == raw
    assert decode_properties(raw) == props


def test_the_single_cases_cover_every_property() -> None:
    assert {name for name, _, _ in SINGLE} == {f.name for f in fields(BasicProperties)}
    flags = [struct.unpack(">H", raw[:2])[0] for _, _, raw in SINGLE]
    assert sorted(set(flags), reverse=True) == [1 << bit for bit in range(15, 1, -1)]


def test_no_properties_is_two_zero_octets() -> None:
    assert encode_properties(BasicProperties()) == b"\x00\x00" == EMPTY_PROPERTIES
    assert decode_properties(b"\x00\x00") == BasicProperties()
    assert PERSISTENT_PROPERTIES == b"\x10\x00\x02"


def test_a_millisecond_timestamp_is_kept_as_its_integer() -> None:
    raw = b"\x00\x40" + struct.pack(">Q", 1_700_000_000_000)
    props = decode_properties(raw)
    assert props.timestamp == 1_700_000_000_000
    assert encode_properties(props) == raw


# ------------------------------------------------------------------------- peek_delivery_mode

PEEK_CASES = [
    (b"\x00\x00", 0),
    (b"\x10\x00\x02", 2),  # the fast path: nothing before delivery-mode
    (b"\x10\x00\x01", 1),
    (b"\x18\x00\x02\x05", 2),  # priority comes after
    (b"\x08\x00\x05", 0),
    (b"\x90\x00\x04text\x02", 2),  # content-type before it: the slow path
    (b"\x80\x00\x04text", 0),
    (b"\x30\x00\x00\x00\x00\x03\x01aV\x02", 2),  # headers before it
    (b"\x50\x00\x04gzip\x01", 1),
    (ALL_RAW, 2),
]


@pytest.mark.parametrize(("raw", "mode"), PEEK_CASES)
def test_peek_delivery_mode(raw: bytes, mode: int) -> None:
    assert peek_delivery_mode(raw) == mode
    assert (decode_properties(raw).delivery_mode or 0) == mode


# --------------------------------------------------------------------------------- malformed


@pytest.mark.parametrize("cut", range(len(ALL_RAW)))
def test_every_strict_prefix_of_the_full_list_is_502(cut: int) -> None:
    raw = ALL_RAW[:cut]
    for check in (decode_properties, validate_properties):
        with pytest.raises(ProtocolError) as info:
            check(raw)
        assert info.value.code is ReplyCode.SYNTAX_ERROR


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x01",  # flag continuation: class basic has 14 properties, one flag word
        b"\x10\x01\x02",
        b"\x10\x00",  # delivery mode flagged, not there
        b"\x80\x00\x05abc",  # short string past the end
        b"\x20\x00\x00\x00\x00\x05\x01kZab",  # headers with an unknown tag
        b"\x20\x00\xff\xff\xff\xff",  # headers claiming 4 GiB
        b"\x00\x40\x00\x00\x00",  # timestamp cut short
    ],
)
def test_malformed_property_lists_are_502(raw: bytes) -> None:
    for check in (decode_properties, validate_properties):
        with pytest.raises(ProtocolError) as info:
            check(raw)
        assert info.value.code is ReplyCode.SYNTAX_ERROR


def test_headers_nested_10000_deep_are_502() -> None:
    inner = b""
    for _ in range(10_000):
        inner = b"\x01kF" + struct.pack(">I", len(inner)) + inner
    raw = b"\x20\x00" + struct.pack(">I", len(inner)) + inner
    with pytest.raises(ProtocolError) as info:
        validate_properties(raw)
    assert info.value.code is ReplyCode.SYNTAX_ERROR


def test_well_formed_lists_validate() -> None:
    for raw in [ALL_RAW, b"\x00\x00", *(raw for _, _, raw in SINGLE), *(raw for raw, _ in PEEK_CASES)]:
        validate_properties(raw)


def test_shortstr_property_over_255_bytes_is_refused_on_encode() -> None:
    with pytest.raises(ValueError, match="255"):
        encode_properties(BasicProperties(message_id="m" * 256))


# -------------------------------------------------------------------------------- round trips

_strs = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


def _maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | values


properties = st.builds(
    BasicProperties,
    content_type=_maybe(_strs),
    content_encoding=_maybe(_strs),
    headers=_maybe(field_tables),
    delivery_mode=_maybe(st.integers(0, 255)),
    priority=_maybe(st.integers(0, 255)),
    correlation_id=_maybe(_strs),
    reply_to=_maybe(_strs),
    expiration=_maybe(_strs),
    message_id=_maybe(_strs),
    timestamp=_maybe(
        st.one_of(
            st.integers(0, 253402300799).map(lambda s: datetime.fromtimestamp(s, tz=UTC)),
            st.integers(253402300800, 2**64 - 1),
        )
    ),
    type=_maybe(_strs),
    user_id=_maybe(_strs),
    app_id=_maybe(_strs),
    cluster_id=_maybe(_strs),
)


@settings(max_examples=200, deadline=None)
@given(properties)
def test_properties_round_trip(props: BasicProperties) -> None:
    raw = encode_properties(props)
    validate_properties(raw)
    assert decode_properties(raw) == props
    assert peek_delivery_mode(raw) == (props.delivery_mode or 0)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=60))
def test_validate_and_decode_agree_on_arbitrary_bytes(raw: bytes) -> None:
    try:
        decoded = decode_properties(raw)
    except ProtocolError as exc:
        assert exc.code is ReplyCode.SYNTAX_ERROR
        with pytest.raises(ProtocolError):
            validate_properties(raw)
    else:
        validate_properties(raw)
        assert peek_delivery_mode(raw) == (decoded.delivery_mode or 0)


# ------------------------------------------------------------------------------ pika interop

_pika_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), _strs),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_strs, children, max_size=4)),
    max_leaves=12,
)
_pika_props = st.fixed_dictionaries(
    {},
    optional={
        "content_type": _strs,
        "content_encoding": _strs,
        "headers": st.dictionaries(_strs, _pika_values, max_size=5),
        "delivery_mode": st.integers(1, 2),
        "priority": st.integers(0, 255),
        "correlation_id": _strs,
        "reply_to": _strs,
        "expiration": _strs,
        "message_id": _strs,
        "timestamp": st.integers(0, 253402300799),
        "type": _strs,
        "user_id": _strs,
        "app_id": _strs,
        "cluster_id": _strs,
    },
)


def _ours(kwargs: dict[str, Any]) -> BasicProperties:
    if "timestamp" in kwargs:
        kwargs = {**kwargs, "timestamp": datetime.fromtimestamp(kwargs["timestamp"], tz=UTC)}
    return BasicProperties(**kwargs)


@settings(max_examples=200, deadline=None)
@given(_pika_props)
def test_we_decode_what_pika_encodes(kwargs: dict[str, Any]) -> None:
    raw = b"".join(pika.spec.BasicProperties(**kwargs).encode())
    validate_properties(raw)
    assert decode_properties(raw) == _ours(kwargs)
    assert peek_delivery_mode(raw) == kwargs.get("delivery_mode", 0)


@settings(max_examples=200, deadline=None)
@given(_pika_props)
def test_pika_decodes_what_we_encode(kwargs: dict[str, Any]) -> None:
    decoded = pika.spec.BasicProperties()
    decoded.decode(encode_properties(_ours(kwargs)))
    for name in (f.name for f in fields(BasicProperties)):
        assert getattr(decoded, name) == kwargs.get(name), name
