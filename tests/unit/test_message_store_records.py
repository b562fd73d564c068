"""The message store's record payloads: PUBLISH, PUBLISH_AT (with the enqueue time), PAGED, ACKS."""

from __future__ import annotations

import pytest

from leveret.store.message_store import (
    PAGED,
    PUBLISH,
    PUBLISH_AT,
    decode_acks,
    decode_publish,
    encode_acks,
    encode_publish_head,
    publish_time,
    publish_uids,
)


@pytest.mark.parametrize("at", [0.0, 1_790_000_000.25])
def test_publish_round_trip_with_and_without_an_enqueue_time(at: float) -> None:
    payload = encode_publish_head([7, 9], "ex", "rk.é", b"\x00\x00", PUBLISH, at) + b"body"
    assert payload[0] == (PUBLISH_AT if at else PUBLISH)
    assert publish_uids(payload) == (7, 9)
    assert decode_publish(payload) == ([7, 9], "ex", "rk.é", b"\x00\x00", b"body")
    assert publish_time(payload) == at


def test_paged_records_never_carry_a_time() -> None:
    payload = encode_publish_head([], "", "q", b"\x00\x00", PAGED, 123.0) + b"x"
    assert payload[0] == PAGED and publish_time(payload) == 0.0
    assert decode_publish(payload)[4] == b"x"


def test_acks_round_trip_and_refuse_a_publish() -> None:
    assert decode_acks(encode_acks(3, [1, 2 << 32])) == (3, (1, 2 << 32))
    with pytest.raises(ValueError):
        decode_acks(encode_publish_head([1], "", "q", b"\x00\x00") + b"x")
