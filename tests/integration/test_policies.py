"""Policies set over the management API change what existing queues do, as in RabbitMQ, and survive
a restart (they are journaled)."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path

import pika

from tests.conftest import BrokerProcess


def put_policy(broker: BrokerProcess, name: str, body: dict[str, object]) -> int:
    request = urllib.request.Request(
        f"{broker.http_url}/api/policies/%2F/{name}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={
            "content-type": "application/json",
            "authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def depth(ch: pika.adapters.blocking_connection.BlockingChannel, queue: str) -> int:
    return int(ch.queue_declare(queue, passive=True).method.message_count)


def test_policy_limits_and_dead_letters_existing_queues_and_survives_restart(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", http=True)
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
        ch = conn.channel()
        ch.queue_declare("jobs.a", durable=True)
        ch.queue_declare("parked", durable=True)
        for i in range(5):
            ch.basic_publish("", "jobs.a", b"%d" % i, pika.BasicProperties(delivery_mode=2))
        assert depth(ch, "jobs.a") == 5
        definition = {"max-length": 2, "dead-letter-exchange": "", "dead-letter-routing-key": "parked"}
        assert put_policy(broker, "cap", {"pattern": r"^jobs\.", "definition": definition, "apply-to": "queues"}) in (
            201,
            204,
        )
        assert depth(ch, "jobs.a") == 2  # trimmed at once, from the head, into the dead-letter queue
        assert depth(ch, "parked") == 3
        conn.close()
        broker.restart()
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))
        ch = conn.channel()
        for i in range(5, 8):
            ch.basic_publish("", "jobs.a", b"%d" % i, pika.BasicProperties(delivery_mode=2))
        assert depth(ch, "jobs.a") == 2  # the policy came back with the definitions
        got = []
        while (item := ch.basic_get("jobs.a", auto_ack=True))[0] is not None:
            got.append(item[2])
        assert got == [b"6", b"7"]
        deadline = time.monotonic() + 5
        while depth(ch, "parked") != 6:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        conn.close()
    finally:
        broker.stop()
