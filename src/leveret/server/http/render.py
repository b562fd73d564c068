"""Broker objects as RabbitMQ's management API shows them (the keys tools read; rates from ``flow``)."""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
import json
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from leveret.core.queue import Queue

if TYPE_CHECKING:
    from leveret.core.broker import Broker, User
    from leveret.core.channel import Channel
    from leveret.core.consumer import Consumer
    from leveret.core.exchange import Binding, Exchange
    from leveret.core.session import Session
    from leveret.core.vhost import VirtualHost

    from .flow import FlowSampler

Json = dict[str, Any]
NODE = f"leveret@{socket.gethostname()}"


def jsonable(value: Any) -> Any:
    """A field-table value as JSON (bytes as text where they decode, timestamps as seconds)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode("ascii")
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    if isinstance(value, decimal.Decimal):
        return float(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def rate(value: float) -> Json:
    return {"rate": round(value, 2)}


# ------------------------------------------------------------------------------------ queues


def queue(q: Queue, flow: FlowSampler) -> Json:
    ready, unacked = q.message_count(), q.unacked
    pub, deliver, ack = flow.queue_rates(q)
    max_length = q.arguments.get("x-max-length")
    out: Json = {
        "name": q.name,
        "vhost": q.vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive,
        "arguments": jsonable(q.arguments),
        "type": q.queue_type,
        "node": NODE,
        "state": "running",
        "policy": getattr(q, "effective_policy", None),
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "message_bytes": getattr(q, "ready_bytes", 0),
        "consumers": len(q.consumers),
        "consumer_utilisation": flow.utilisation(q),
        "consumer_capacity": flow.utilisation(q) or 0,
        "exclusive_consumer_tag": q.exclusive_consumer.tag if q.exclusive_consumer is not None else None,
        "message_stats": {
            "publish": q.stats_published,
            "publish_details": rate(pub),
            "deliver_get": q.stats_delivered,
            "deliver_get_details": rate(deliver),
            "deliver": q.stats_delivered,
            "deliver_details": rate(deliver),
            "ack": q.stats_acked,
            "ack_details": rate(ack),
        },
        "leveret_forecast": flow_forecast(q, ready, pub, deliver, max_length),
    }
    return out


def flow_forecast(q: Queue, ready: int, pub: float, deliver: float, max_length: Any) -> Json:
    from .flow import forecast

    limit = max_length if isinstance(max_length, int) and not isinstance(max_length, bool) else None
    return forecast(ready, pub, deliver, limit).as_json()


# --------------------------------------------------------------------------------- exchanges


def exchange(vhost: str, ex: Exchange, flow: FlowSampler) -> Json:
    rin, rout = flow.exchange_rates(ex)
    return {
        "name": ex.name,
        "vhost": vhost,
        "type": ex.type,
        "durable": ex.durable,
        "auto_delete": ex.auto_delete,
        "internal": ex.internal,
        "arguments": jsonable(ex.arguments),
        "user_who_performed_action": "leveret",
        "policy": None,
        "message_stats": {
            "publish_in": getattr(ex, "stats_in", 0),
            "publish_in_details": rate(rin),
            "publish_out": getattr(ex, "stats_out", 0),
            "publish_out_details": rate(rout),
        },
    }


# ---------------------------------------------------------------------------------- bindings


def properties_key(routing_key: str, arguments: Mapping[str, Any]) -> str:
    """RabbitMQ's binding id in URLs: the routing key ("~" if empty), plus a hash of the arguments."""
    key = routing_key or "~"
    if not arguments:
        return key
    digest = hashlib.sha256(json.dumps(jsonable(arguments), sort_keys=True).encode()).digest()
    return f"{routing_key}~{base64.urlsafe_b64encode(digest[:9]).decode()}"


def binding(vhost: str, b: Binding) -> Json:
    dest = b.destination
    return {
        "source": b.source.name,
        "vhost": vhost,
        "destination": dest.name,
        "destination_type": "queue" if isinstance(dest, Queue) else "exchange",
        "routing_key": b.routing_key,
        "arguments": jsonable(b.arguments),
        "properties_key": properties_key(b.routing_key, b.arguments),
    }


def default_binding(vhost: str, q: Queue) -> Json:
    """The implicit binding of every queue to the default exchange (RabbitMQ lists it)."""
    return {
        "source": "",
        "vhost": vhost,
        "destination": q.name,
        "destination_type": "queue",
        "routing_key": q.name,
        "arguments": {},
        "properties_key": q.name,
    }


def bindings_of(vh: VirtualHost) -> list[Json]:
    out = [default_binding(vh.name, q) for q in vh.queues.values()]
    for ex in vh.exchanges.values():
        out += [binding(vh.name, b) for b in ex.bindings.values()]
    return out


# ------------------------------------------------------------------------ connections, channels


def connection_name(conn: Any) -> str:
    return f"{_peer(conn)} -> {_local(conn)}"


def _peer(conn: Any) -> str:
    return str(getattr(conn, "peer", "?"))


def _local(conn: Any) -> str:
    transport = getattr(conn, "transport", None)
    sock = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sock, tuple) and len(sock) >= 2:
        host = sock[0]
        return f"[{host}]:{sock[1]}" if ":" in host else f"{host}:{sock[1]}"
    return "?"


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    return host, int(port) if port.isdigit() else 0


def connection(conn: Any) -> Json:
    session: Session | None = conn.session
    peer_host, peer_port = _split(_peer(conn))
    host, port = _split(_local(conn))
    client = jsonable(getattr(conn, "client_properties", {}) or {})
    tls = getattr(conn, "tls", False)
    return {
        "name": connection_name(conn),
        "node": NODE,
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "state": "running" if session is not None else "starting",
        "user": session.user.name if session is not None else "",
        "vhost": session.vhost.name if session is not None else "",
        "channels": len(getattr(conn, "channels", {})),
        "channel_max": getattr(conn.config, "channel_max", 0),
        "frame_max": getattr(conn, "frame_max", 0),
        "timeout": getattr(conn, "heartbeat", 0),
        "peer_host": peer_host,
        "peer_port": peer_port,
        "host": host,
        "port": port,
        "ssl": bool(tls),
        "auth_mechanism": getattr(conn, "mechanism", "PLAIN"),
        "client_properties": client,
        "connected_at": getattr(conn, "connected_at", None),
    }


def channel_name(conn: Any, number: int) -> str:
    return f"{connection_name(conn)} ({number})"


def channel(conn: Any, ch: Channel) -> Json:
    session = ch.session
    peer_host, peer_port = _split(_peer(conn))
    return {
        "name": channel_name(conn, ch.number),
        "number": ch.number,
        "node": NODE,
        "user": session.user.name,
        "vhost": session.vhost.name,
        "state": "running",
        "connection_details": {"name": connection_name(conn), "peer_host": peer_host, "peer_port": peer_port},
        "prefetch_count": ch.consumer_prefetch,
        "global_prefetch_count": ch.prefetch_count,
        "consumer_count": len(ch.consumers),
        "messages_unacknowledged": len(ch.unacked),
        "confirm": ch.confirm,
        "transactional": ch.tx is not None,
    }


def consumer(conn: Any, c: Consumer) -> Json:
    q = c.queue
    return {
        "consumer_tag": c.tag,
        "queue": {"name": q.name, "vhost": q.vhost},
        "channel_details": {
            "name": channel_name(conn, c.channel.number),
            "number": c.channel.number,
            "connection_name": connection_name(conn),
            "user": c.channel.session.user.name,
        },
        "ack_required": not c.no_ack,
        "exclusive": c.exclusive,
        "prefetch_count": c.prefetch,
        "arguments": jsonable(c.arguments),
        "active": True,
        "activity_status": "up",
    }


# ------------------------------------------------------------------------- users and vhosts


def user(u: User) -> Json:
    return {
        "name": u.name,
        "password_hash": getattr(u, "password_hash", ""),
        "hashing_algorithm": getattr(u, "hashing_algorithm", "rabbit_password_hashing_sha256"),
        "tags": list(u.tags),
        "limits": {},
    }


def vhost(vh: VirtualHost) -> Json:
    ready = sum(q.message_count() for q in vh.queues.values())
    unacked = sum(q.unacked for q in vh.queues.values())
    description = getattr(vh, "description", "")
    tags = list(getattr(vh, "tags", ()))
    return {
        "name": vh.name,
        "description": description,
        "tags": tags,
        "metadata": {"description": description, "tags": tags},
        "default_queue_type": "classic",
        "tracing": False,
        "cluster_state": {NODE: "running"},
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    }


def permission(user_name: str, vhost_name: str, perm: Any) -> Json:
    return {
        "user": user_name,
        "vhost": vhost_name,
        "configure": perm.configure,
        "write": perm.write,
        "read": perm.read,
    }


def sessions_of(broker: Broker) -> list[Session]:
    return list(broker.sessions)
