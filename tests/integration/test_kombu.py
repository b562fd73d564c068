"""kombu (Celery's transport, on py-amqp) against Leveret: both login mechanisms, ack and requeue."""

from __future__ import annotations

import pytest
from kombu import Connection, Exchange, Queue


@pytest.mark.parametrize("mechanism", ["AMQPLAIN", "PLAIN"])
def test_kombu_publish_consume_ack(amqp_port: int, unique: str, mechanism: str) -> None:
    with Connection(f"amqp://guest:guest@127.0.0.1:{amqp_port}//", login_method=mechanism) as conn:
        queue = Queue(unique, Exchange(unique + "-ex", "direct"), routing_key="k")
        with conn.Producer() as producer:
            for i in range(3):
                producer.publish({"n": i}, exchange=queue.exchange, routing_key="k", declare=[queue], serializer="json")
        got: list[dict[str, int]] = []
        with conn.Consumer(queue, callbacks=[lambda body, msg: (got.append(body), msg.ack())]):
            while len(got) < 3:
                conn.drain_events(timeout=5)
        assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert queue(conn.default_channel).queue_declare(passive=True).message_count == 0


def test_kombu_requeue_redelivers(amqp_port: int, unique: str) -> None:
    with Connection(f"amqp://guest:guest@127.0.0.1:{amqp_port}//") as conn:
        queue = Queue(unique, Exchange(unique + "-ex", "direct"), routing_key="k")
        with conn.Producer() as producer:
            producer.publish("once", exchange=queue.exchange, routing_key="k", declare=[queue])
        seen: list[bool] = []

        def handle(body: str, msg: object) -> None:
            seen.append(msg.delivery_info["redelivered"])  # type: ignore[attr-defined]
            if len(seen) == 1:
                msg.requeue()  # type: ignore[attr-defined]
            else:
                msg.ack()  # type: ignore[attr-defined]

        with conn.Consumer(queue, callbacks=[handle]):
            while len(seen) < 2:
                conn.drain_events(timeout=5)
        assert seen == [False, True]


def test_kombu_wrong_password_is_refused(amqp_port: int) -> None:
    with Connection(f"amqp://guest:nope@127.0.0.1:{amqp_port}//", connect_timeout=5) as conn:
        with pytest.raises(Exception, match="ACCESS_REFUSED|403"):
            conn.connect()
