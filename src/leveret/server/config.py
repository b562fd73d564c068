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
    http_port: int = 15672  # management door: arrives with the management issue
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
