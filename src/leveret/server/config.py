"""The one frozen configuration object, built once at start (CLI flags > LEVERET_* env > defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Config:
    hosts: tuple[str, ...] = ("127.0.0.1", "::1")
    amqp_port: int = 5672
    data_dir: str = "./data"
    http_port: int = 15672  # management door: arrives with the management issue
    zmq_publish_port: int = 5555  # ZeroMQ door: arrives with the event-bus issue
    zmq_subscribe_port: int = 5556
    zmq_push_port: int = 5557
    log_level: str = "INFO"
    frame_max: int = 131072
    channel_max: int = 2047
    heartbeat: int = 60
    max_message_size: int = 16 * 1024 * 1024
    handshake_timeout: float = 10.0
    write_buffer_high: int = 4 * 1024 * 1024
    flow_high: int = 50_000  # pause a publisher while a queue it feeds holds more ready messages
    flow_low: int = 25_000
