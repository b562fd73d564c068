"""A failed fsync: nothing it covered is confirmed, it is never retried, the broker stops (541 to its
clients, exit status 1) rather than pretend, and what was confirmed before is intact after restart."""

from __future__ import annotations

from pathlib import Path

import pika
import pytest

from tests.conftest import BrokerProcess

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def test_failed_fsync_confirms_nothing_and_stops_the_broker(tmp_path: Path) -> None:
    # Let start-up and the first 40 data fsyncs through (journal records, group commits), then fail.
    node = BrokerProcess(tmp_path / "b", env={"LEVERET_FAULT_FAIL_FSYNC_AFTER": "40"})
    confirmed: list[int] = []
    try:
        conn = pika.BlockingConnection(pika.URLParameters(node.url))
        ch = conn.channel()
        ch.queue_declare("dq", durable=True)
        ch.confirm_delivery()
        with pytest.raises((pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError)) as info:
            for i in range(5000):
                ch.basic_publish("", "dq", str(i).encode(), PERSISTENT)  # blocks until confirmed
                confirmed.append(i)
        error = info.value
        assert isinstance(error, pika.exceptions.ConnectionClosedByBroker), repr(error)
        assert error.reply_code == 541
        assert node.proc.wait(10) == 1  # stopped, not serving on a broken disk
        assert "failed, stopping without confirming" in node.log()
        assert 0 < len(confirmed) < 5000
    finally:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()
    # Same data dir, healthy disk: every confirmed message is there, in order.
    node._env.pop("LEVERET_FAULT_FAIL_FSYNC_AFTER", None)
    node.restart()
    try:
        conn = pika.BlockingConnection(pika.URLParameters(node.url))
        ch = conn.channel()
        got = []
        while True:
            method, _props, body = ch.basic_get("dq", auto_ack=True)
            if method is None:
                break
            got.append(int(body))
        assert got[: len(confirmed)] == confirmed  # nothing confirmed was lost
        assert len(got) <= len(confirmed) + 1  # at most the one in flight when the disk failed
        conn.close()
    finally:
        node.stop()
