"""The `leveret` command: flags, environment variables, clean shutdown, server properties."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pika

from tests.conftest import BrokerProcess, free_port, wait_for_port


def test_help_names_every_flag_and_says_which_doors_wait() -> None:
    out = subprocess.run([sys.executable, "-m", "leveret", "serve", "--help"], capture_output=True, text=True).stdout
    flat = " ".join(out.split())
    for flag in (
        "--host",
        "--amqp-port",
        "--data-dir",
        "--http-port",
        "--zmq-publish-port",
        "--zmq-subscribe-port",
        "--zmq-push-port",
        "--log-level",
    ):
        assert flag in flat
    assert "management HTTP port: API, web UI, /metrics (15672; 0 = off)" in flat
    assert "XSUB for zmq.PUB publishers (5555; 0 = off)" in flat


def test_env_vars_configure_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = dict(
        os.environ,
        LEVERET_AMQP_PORT=str(port),
        LEVERET_HOST="127.0.0.1",
        LEVERET_DATA_DIR=str(tmp_path / "d"),
        LEVERET_LOG_LEVEL="DEBUG",
        # the ZeroMQ door off: its default ports may be taken by a broker running beside the tests
        LEVERET_ZMQ_PUBLISH_PORT="0",
        LEVERET_ZMQ_SUBSCRIBE_PORT="0",
        LEVERET_ZMQ_PUSH_PORT="0",
        LEVERET_HTTP_PORT="0",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "leveret", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port, proc)
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        assert conn.is_open
        assert (tmp_path / "d").is_dir()
        props = conn._impl.server_properties  # what connection.start carried
        caps = props["capabilities"]
        for cap in (
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "per_consumer_qos",
            "authentication_failure_close",
        ):
            assert caps[cap] is True, cap
        assert props["product"] == "Leveret"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 5
        out = proc.stdout.read().decode() if proc.stdout else ""
        assert "shutting down" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigint_stops_cleanly(tmp_path: Path) -> None:
    node = BrokerProcess(tmp_path / "b")
    try:
        node.proc.send_signal(signal.SIGINT)
        assert node.proc.wait(10) == 0
    finally:
        node.stop()


def test_server_heartbeats_keep_an_idle_client_alive(fresh_broker: BrokerProcess) -> None:
    params = pika.ConnectionParameters("127.0.0.1", fresh_broker.port, heartbeat=1)
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    deadline = time.monotonic() + 3.5  # over 3 heartbeat intervals, with the client only listening
    while time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.2)
    ch.queue_declare("", exclusive=True)
    assert conn.is_open
    conn.close()


def test_flags_beat_env_which_beats_the_toml_file(tmp_path: Path) -> None:
    from leveret.server.config import Config, build_config

    toml = tmp_path / "leveret.toml"
    toml.write_text('amqp_port = 1111\nheartbeat = 5\nhosts = ["10.0.0.1"]\ndata_dir = "/from/file"\n')
    env = {"LEVERET_AMQP_PORT": "2222", "LEVERET_HEARTBEAT": "7"}
    cfg = build_config({"amqp_port": 3333}, env, str(toml))
    assert cfg.amqp_port == 3333  # flag
    assert cfg.heartbeat == 7  # env over file
    assert cfg.hosts == ("10.0.0.1",)  # file
    assert cfg.data_dir == "/from/file"
    assert cfg.frame_max == Config().frame_max  # default
    assert build_config({}, {"LEVERET_HOST": "127.0.0.1, ::1"}).hosts == ("127.0.0.1", "::1")
    bad = tmp_path / "bad.toml"
    bad.write_text("amqp_prot = 1\n")
    import pytest

    with pytest.raises(ValueError, match="amqp_prot"):
        build_config({}, {}, str(bad))


def test_shutdown_tells_clients_connection_forced(tmp_path: Path) -> None:
    node = BrokerProcess(tmp_path / "b")
    proc = node.proc
    port = node.port
    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        proc.send_signal(signal.SIGTERM)
        import pytest

        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            while True:
                conn.process_data_events(time_limit=0.2)
        assert info.value.reply_code == 320
        assert proc.wait(10) == 0
    finally:
        node.stop()
