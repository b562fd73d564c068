"""Memory and disk alarms: publishers get ``connection.blocked`` and are no longer read, consumers keep
draining, ``connection.unblocked`` when the alarm clears. Thresholds are raised at run time (a disk
limit larger than any disk, a memory limit of one byte) so each alarm goes off when the test says."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest

from leveret.server.runtime import Server
from leveret.testing.broker import LeveretBroker


@pytest.fixture
def lb(tmp_path: Path) -> Iterator[LeveretBroker]:
    broker = LeveretBroker.start(tmp_path, alarm_interval=0.02)
    yield broker
    broker.stop()


def wait_for(condition: Callable[[], bool], conn: pika.BlockingConnection | None = None, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        if conn is not None:
            conn.process_data_events(time_limit=0.02)
        else:
            time.sleep(0.01)


def set_threshold(lb: LeveretBroker, name: str, value: int) -> None:
    def change(server: Server) -> None:
        assert server.alarms is not None
        setattr(server.alarms, name, value)

    lb.call(change)


@pytest.mark.parametrize(
    ("threshold", "alarm", "reason"),
    [("disk_free_limit", "disk", "low on disk"), ("memory_limit", "memory", "low on memory")],
)
def test_an_alarm_blocks_publishers_and_lets_consumers_drain(
    lb: LeveretBroker, threshold: str, alarm: str, reason: str
) -> None:
    publisher = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", lb.port))
    notices: list[str] = []
    publisher.add_on_connection_blocked_callback(lambda _c, frame: notices.append(frame.method.reason))
    publisher.add_on_connection_unblocked_callback(lambda _c, _f: notices.append("unblocked"))
    pub = publisher.channel()
    pub.queue_declare("work")
    pub.basic_publish("", "work", b"before")
    consumer = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", lb.port))
    con = consumer.channel()

    set_threshold(lb, threshold, 1 << 62 if alarm == "disk" else 1)
    wait_for(lambda: notices == [reason], publisher)
    assert lb.call(lambda s: set(s.broker.alarms)) == {alarm}
    for n in range(5):
        pub.basic_publish("", "work", b"during %d" % n)  # written to the socket, not read by the broker

    assert con.basic_get("work", auto_ack=True)[2] == b"before"  # consumers keep draining
    con.queue_declare("other")  # and a connection that does not publish is served as usual
    time.sleep(0.2)  # what a blocked publisher wrote stays unread
    assert con.queue_declare("work", passive=True).method.message_count == 0

    set_threshold(lb, threshold, 0 if alarm == "disk" else 1 << 62)
    wait_for(lambda: notices == [reason, "unblocked"], publisher)
    wait_for(lambda: con.queue_declare("work", passive=True).method.message_count == 5)
    assert lb.call(lambda s: set(s.broker.alarms)) == set()
    publisher.close()
    consumer.close()


def test_a_connection_blocked_before_its_first_publish(lb: LeveretBroker) -> None:
    set_threshold(lb, "disk_free_limit", 1 << 62)
    wait_for(lambda: lb.call(lambda s: bool(s.broker.alarms)))
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", lb.port))
    notices: list[str] = []
    conn.add_on_connection_blocked_callback(lambda _c, frame: notices.append(frame.method.reason))
    ch = conn.channel()
    ch.queue_declare("q")  # declaring is not publishing: served
    ch.basic_publish("", "q", b"first")  # taken, then the connection is blocked
    wait_for(lambda: notices == ["low on disk"], conn)
    set_threshold(lb, "disk_free_limit", 0)
    wait_for(lambda: len(notices) == 1 and ch.queue_declare("q", passive=True).method.message_count == 1, conn)
    conn.close()
