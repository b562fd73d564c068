"""The door's choice for a big read: a slice per loop turn when the first slice holds many messages
(small publishes), whole when it holds few (big ones). Fed with what the real parser makes of a
publisher's stream, where repeats come as one ``ContentBatch``: the choice must count its publishes."""

from __future__ import annotations

from leveret.amqp.events import ContentBatch
from leveret.server.amqp_door import READ_SLICE, worth_slicing
from tests.unit.test_publish_fast_path import _open_with_one_publish, publish


def first_slice_events(size: int) -> list:
    conn = _open_with_one_publish()
    stream = b"".join(publish(1, b"x" * size) for _ in range(4 * READ_SLICE // (size + 40)))
    return conn.receive(stream[:READ_SLICE])


def test_small_publishes_are_sliced_even_when_they_come_as_one_batch() -> None:
    events = first_slice_events(8)
    assert any(isinstance(e, ContentBatch) and len(e.bodies) > 100 for e in events)
    assert len(events) < 5  # a handful of events standing for hundreds of publishes
    assert worth_slicing(events)


def test_big_publishes_are_handled_whole() -> None:
    assert not worth_slicing(first_slice_events(1024))
