"""A client that connects and stalls (slowloris) is closed by the handshake timeout, and a
well-behaved client is served meanwhile."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from tests.conftest import BrokerProcess


@pytest.fixture
def quick_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path / "b", env={"LEVERET_HANDSHAKE_TIMEOUT": "1"})
    yield proc
    proc.stop()


def _closed_after(sock: socket.socket, limit: float) -> float:
    started = time.monotonic()
    sock.settimeout(limit)
    while True:
        data = sock.recv(4096)
        if not data:
            return time.monotonic() - started


@pytest.mark.parametrize("opening", [b"", b"AMQP\x00\x00\x09\x01", b"AMQP\x00"])
def test_stalled_handshake_is_closed(quick_broker: BrokerProcess, opening: bytes) -> None:
    sock = socket.create_connection(("127.0.0.1", quick_broker.port))
    try:
        sock.sendall(opening)
        good = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", quick_broker.port))
        assert good.channel().queue_declare("", exclusive=True).method.queue
        elapsed = _closed_after(sock, 5.0)
        assert elapsed < 3.0
        assert good.is_open
        good.close()
    finally:
        sock.close()
    assert "handshake timeout" in quick_broker.log()
