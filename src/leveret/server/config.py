"""The one frozen configuration object, built once at start (CLI flags > LEVERET_* env > defaults)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Config:
    hosts: tuple[str, ...] = ("127.0.0.1", "::1")
    amqp_port: int = 5672
    data_dir: str = "./data"
    http_port: int = 15672  # management door: API, web UI, /metrics (0 = off)
    http_max_body: int = 20_000_000  # bytes; larger request bodies get 413 (RabbitMQ's default)
    stats_interval: float = 5.0  # seconds between flow samples (rates, history, forecasts)
    stats_history_queues: int = 1000  # queues with 10 minutes of history (others: rates only)
    metrics_detail: bool = False  # /metrics with per-queue series by default (else ?detail=queues)
    zmq_publish_port: int = 5555  # ZeroMQ door (server.zmq_door); a port of 0 turns that socket off
    zmq_subscribe_port: int = 5556
    zmq_push_port: int = 5557
    zmq_exchange: str = "leveret.events"  # the durable topic exchange ZeroMQ messages are published into
    log_level: str = "INFO"
    frame_max: int = 131072
    channel_max: int = 2047
    heartbeat: int = 60
    max_message_size: int = 16 * 1024 * 1024
    handshake_timeout: float = 10.0
    write_buffer_high: int = 4 * 1024 * 1024
    flow_high: int = 50_000  # pause a publisher while a queue it feeds holds more ready messages
    flow_low: int = 25_000
    segment_size: int = 64 * 1024 * 1024  # message log segment files roll at this size
    memory_limit: int = 0  # bytes; 0 = 40% of physical memory. Transient messages page out above half of it
    journal_compact_after: int = 1000  # compact the definitions journal past this many dead records
    # Security and limits (issue 7; docs/architecture.md "Security").
    loopback_users: tuple[str, ...] = ("guest",)  # these users may log in only from a loopback address
    loopback_addresses: tuple[str, ...] = ()  # the peer addresses counted as loopback; empty: 127/8 and ::1
    max_connections: int = 0  # open AMQP connections, all vhosts together (0 = no limit)
    max_queues_per_vhost: int = 0  # for vhosts without a max-queues limit of their own (0 = no limit)
    amqps_port: int = 5671  # AMQP over TLS, opened when tls_cert and tls_key are set (0 = off)
    tls_cert: str = ""  # PEM certificate chain of the server
    tls_key: str = ""  # PEM private key
    tls_ca: str = ""  # PEM CA bundle that client certificates are verified against
    tls_verify_peer: bool = False  # ask clients for a certificate (verified against tls_ca)
    tls_fail_if_no_peer_cert: bool = False  # refuse clients without a valid certificate
    https_port: int = 0  # the management door over TLS with tls_cert/tls_key (RabbitMQ uses 15671); 0 = off
    memory_high_watermark: float = 0.4  # memory alarm at this fraction of RAM (or cgroup limit) if no memory_limit
    disk_free_limit: int = 50_000_000  # disk alarm when the data directory's file system has less free (bytes)
    alarm_interval: float = 0.25  # seconds between memory and disk checks
    consumer_timeout: int = 1_800_000  # ms an unacked delivery may wait (RabbitMQ's default); 0 = off


def _convert(name: str, raw: object) -> object:
    default = getattr(Config(), name)
    if isinstance(default, tuple):
        items = raw.split(",") if isinstance(raw, str) else list(raw)  # type: ignore[call-overload]
        return tuple(str(i).strip() for i in items if str(i).strip())
    if isinstance(default, bool):
        return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)  # type: ignore[call-overload]
    if isinstance(default, float):
        return float(raw)  # type: ignore[arg-type]
    return str(raw)


def build_config(flags: Mapping[str, object], environ: Mapping[str, str], config_file: str | None = None) -> Config:
    """Resolve every field: command-line flag > ``LEVERET_<FIELD>`` env var > TOML file > default.

    ``flags`` holds the fields given on the command line (None = not given). The TOML file uses the
    field names (``amqp_port = 5672``, ``hosts = ["127.0.0.1"]``), at top level or under ``[leveret]``.
    """
    from_file: dict[str, object] = {}
    if config_file:
        with open(config_file, "rb") as fh:
            loaded = tomllib.load(fh)
        from_file = dict(loaded.get("leveret", loaded))
    values: dict[str, object] = {}
    for f in fields(Config):
        env_value = environ.get("LEVERET_" + f.name.upper())
        if f.name == "hosts" and env_value is None:
            env_value = environ.get("LEVERET_HOST")
        for source in (flags.get(f.name), env_value, from_file.get(f.name)):
            if source is not None:
                values[f.name] = _convert(f.name, source)
                break
    unknown = set(from_file) - {f.name for f in fields(Config)}
    if unknown:
        raise ValueError(f"unknown settings in {config_file}: {', '.join(sorted(unknown))}")
    return Config(**values)  # type: ignore[arg-type]
