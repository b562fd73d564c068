"""Management API: overview, exchanges, queues, bindings, connections, channels, consumers, health."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from leveret import __version__
from leveret.core.exchange import EXCHANGE_TYPES
from leveret.core.queue import Queue

from . import auth, render
from .errors import HttpError, bad_request, not_found
from .listing import listing
from .router import API, Call

if TYPE_CHECKING:
    from leveret.core.channel import Channel
    from leveret.core.exchange import Exchange
    from leveret.core.vhost import VirtualHost

Json = dict[str, Any]
RABBITMQ_VERSION = "3.10.8"  # the management API version this one follows (tools gate features on it)


def flag(body: Json, key: str, default: bool) -> bool:
    """Booleans as JSON or as the strings rabbitmqadmin sends ("true"/"false")."""
    value = body.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise bad_request(f"{key} must be a boolean")


def arguments(body: Json) -> Json:
    args = body.get("arguments") or {}
    if not isinstance(args, dict):
        raise bad_request("arguments must be a JSON object")
    return args


def vhosts_of(call: Call) -> list[VirtualHost]:
    """The vhost named in the path, or every vhost the user may see."""
    if "vhost" in call.params:
        return [auth.vhost(call.broker, call.user, call.params["vhost"])]
    return auth.visible_vhosts(call.broker, call.user)


# ------------------------------------------------------------------------------------ overview


@API.add("GET", "/api/overview")
async def overview(call: Call) -> Json:
    door = call.door
    flow = door.flow
    vhosts = auth.visible_vhosts(call.broker, call.user)
    queues = [q for vh in vhosts for q in vh.queues.values()]
    ready = sum(q.message_count() for q in queues)
    unacked = sum(q.unacked for q in queues)
    pub, deliver, ack = flow.total_rates()
    conns = list(_connections(call))
    channels = sum(len(getattr(c, "channels", {})) for c in conns)
    out: Json = {
        "management_version": RABBITMQ_VERSION,
        "rabbitmq_version": RABBITMQ_VERSION,
        "product_name": "Leveret",
        "product_version": __version__,
        "erlang_version": f"Python {platform.python_version()}",
        "cluster_name": render.NODE,
        "node": render.NODE,
        "rates_mode": "basic",
        "disable_stats": False,
        "statistics_interval_seconds": door.config.stats_interval,
        "exchange_types": [{"name": t, "description": f"AMQP {t} exchange", "enabled": True} for t in EXCHANGE_TYPES],
        "message_stats": {
            "publish": flow.totals.last(0),
            "publish_details": render.rate(pub),
            "deliver_get": flow.sums.get("delivered", 0),
            "deliver_get_details": render.rate(deliver),
            "ack": flow.sums.get("acked", 0),
            "ack_details": render.rate(ack),
        },
        "queue_totals": {
            "messages": ready + unacked,
            "messages_ready": ready,
            "messages_unacknowledged": unacked,
        },
        "object_totals": {
            "connections": len(conns),
            "channels": channels,
            "consumers": sum(len(q.consumers) for q in queues),
            "exchanges": sum(len(vh.exchanges) for vh in vhosts),
            "queues": len(queues),
        },
        "listeners": _listeners(call),
        "uptime_seconds": round(_uptime(door), 1),
        # h(t): events handled per second by the events runtime's handler groups (their reports, on /)
        "handler_rate": door.handlers.total_rate() if any(vh.name == "/" for vh in vhosts) else 0.0,
    }
    if call.query.get("flow") == "true":
        out["leveret_flow"] = {"times": flow.history_times(), **flow.totals_history()}
    return out


def _uptime(door: Any) -> float:
    return float(time.time() - door.started_at)


def _listeners(call: Call) -> list[Json]:
    cfg = call.door.config
    server = call.door.server
    out = []
    for host in cfg.hosts:
        out.append({"node": render.NODE, "protocol": "amqp", "ip_address": host, "port": server.port})
        out.append({"node": render.NODE, "protocol": "http", "ip_address": host, "port": cfg.http_port})
    return out


@API.add("GET", "/api/cluster-name")
async def cluster_name(call: Call) -> Json:
    return {"name": render.NODE}


@API.add("GET", "/api/extensions")
async def extensions(call: Call) -> list[Json]:
    return []


@API.add("GET", "/api/nodes")
async def nodes(call: Call) -> list[Json]:
    return [_node(call)]


@API.add("GET", "/api/nodes/{node}")
async def node(call: Call) -> Json:
    if call.params["node"] != render.NODE:
        raise not_found()
    return _node(call)


def _node(call: Call) -> Json:
    return {
        "name": render.NODE,
        "type": "disc",
        "running": True,
        "mem_used": _rss(),
        "mem_limit": call.door.config.memory_limit,
        "mem_alarm": "memory" in getattr(call.broker, "alarms", ()),
        "disk_free_alarm": "disk" in getattr(call.broker, "alarms", ()),
        "uptime": int(_uptime(call.door) * 1000),
        "processors": os.cpu_count() or 1,
    }


def _rss() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@API.add("GET", "/api/whoami")
async def whoami(call: Call) -> Json:
    return {"name": call.user.name, "tags": list(call.user.tags)}


# -------------------------------------------------------------------------------------- health


@API.add("GET", "/api/health/checks/alarms")
async def health_alarms(call: Call) -> Any:
    return _alarms(call)


@API.add("GET", "/api/health/checks/local-alarms")
async def health_local_alarms(call: Call) -> Any:
    return _alarms(call)


def _alarms(call: Call) -> Any:
    alarms = sorted(getattr(call.broker, "alarms", ()))
    if not alarms:
        return {"status": "ok"}
    call.status = 503
    return {
        "status": "failed",
        "reason": "resource alarm(s) in effect",
        "alarms": [{"node": render.NODE, "resource": a} for a in alarms],
    }


@API.add("GET", "/api/health/checks/virtual-hosts")
async def health_vhosts(call: Call) -> Json:
    return {"status": "ok"}


@API.add("GET", "/api/aliveness-test/{vhost}")
async def aliveness(call: Call) -> Json:
    """Declare a queue, publish to it, get the message back (RabbitMQ's aliveness test)."""
    from .api_messages import publish_message, take_messages

    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    vh.declare_queue(None, "aliveness-test")
    await publish_message(call.door, vh, call.user, "", "aliveness-test", b"test_message", {})
    got = take_messages(call.door, vh, call.user, "aliveness-test", 1, "ack_requeue_false")
    if not got or got[0]["payload"] != "test_message":
        call.status = 503
        return {"status": "failed", "reason": "message did not come back"}
    return {"status": "ok"}


# ----------------------------------------------------------------------------------- exchanges


@API.add("GET", "/api/exchanges")
@API.add("GET", "/api/exchanges/{vhost}")
async def list_exchanges(call: Call) -> Any:
    flow = call.door.flow
    items = [(vh.name, ex) for vh in vhosts_of(call) for ex in vh.exchanges.values()]
    return listing(items, call.query, lambda i: render.exchange(i[0], i[1], flow), lambda i: i[1].name)


def _exchange(call: Call) -> tuple[VirtualHost, Exchange]:
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    name = _default_name(call.params["name"])
    ex = vh.exchanges.get(name)
    if ex is None:
        raise not_found()
    return vh, ex


def _default_name(name: str) -> str:
    return "" if name == "amq.default" else name  # RabbitMQ's name for the default exchange in URLs


@API.add("GET", "/api/exchanges/{vhost}/{name}")
async def get_exchange(call: Call) -> Json:
    vh, ex = _exchange(call)
    return render.exchange(vh.name, ex, call.door.flow)


@API.add("PUT", "/api/exchanges/{vhost}/{name}")
async def put_exchange(call: Call) -> None:
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    name = call.params["name"]
    body = await call.json()
    auth.check(call.broker, call.user, vh.name, "configure", name, "exchange")
    existed = name in vh.exchanges
    vh.declare_exchange(
        name,
        str(body.get("type", "direct")),
        durable=flag(body, "durable", True),
        auto_delete=flag(body, "auto_delete", False),
        internal=flag(body, "internal", False),
        arguments=arguments(body),
    )
    call.status = 204 if existed else 201


@API.add("DELETE", "/api/exchanges/{vhost}/{name}")
async def delete_exchange(call: Call) -> None:
    vh, ex = _exchange(call)
    auth.check(call.broker, call.user, vh.name, "configure", ex.name, "exchange")
    vh.delete_exchange(ex.name, if_unused=call.query.get("if-unused") == "true")


@API.add("GET", "/api/exchanges/{vhost}/{name}/bindings/source")
async def exchange_bindings_source(call: Call) -> Any:
    vh, ex = _exchange(call)
    if ex.name == "":
        items = [render.default_binding(vh.name, q) for q in vh.queues.values()]
    else:
        items = [render.binding(vh.name, b) for b in ex.bindings.values()]
    return listing(items, call.query, lambda j: j, lambda j: j["destination"])


@API.add("GET", "/api/exchanges/{vhost}/{name}/bindings/destination")
async def exchange_bindings_destination(call: Call) -> Any:
    vh, ex = _exchange(call)
    items = [render.binding(vh.name, b) for other in vh.exchanges.values() for b in other.bindings_to(ex)]
    return listing(items, call.query, lambda j: j, lambda j: j["source"])


# -------------------------------------------------------------------------------------- queues


@API.add("GET", "/api/queues")
@API.add("GET", "/api/queues/{vhost}")
async def list_queues(call: Call) -> Any:
    flow = call.door.flow
    items = [q for vh in vhosts_of(call) for q in vh.queues.values()]
    return listing(items, call.query, lambda q: render.queue(q, flow), lambda q: q.name)


def _queue(call: Call) -> tuple[VirtualHost, Queue]:
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    q = vh.queues.get(call.params["name"])
    if q is None:
        raise not_found()
    return vh, q


@API.add("GET", "/api/queues/{vhost}/{name}")
async def get_queue(call: Call) -> Json:
    _, q = _queue(call)
    flow = call.door.flow
    out = render.queue(q, flow)
    conns = _conn_by_session(call)
    out["consumer_details"] = [
        render.consumer(conns.get(id(c.channel.session)), c) for c in q.consumers if id(c.channel.session) in conns
    ]
    out["incoming"] = []
    out["deliveries"] = []
    if call.query.get("flow") == "true":
        flow.watch(q)
        history = flow.queue_history(q)
        times = flow.history_times()
        if history is not None:
            n = len(history["ready"])
            out["leveret_flow"] = {"times": times[len(times) - n :], **history}
    return out


@API.add("PUT", "/api/queues/{vhost}/{name}")
async def put_queue(call: Call) -> None:
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    name = call.params["name"]
    body = await call.json()
    if not name:
        raise bad_request("queue name must not be empty")
    auth.check(call.broker, call.user, vh.name, "configure", name)
    args = arguments(body)
    qtype = body.get("queue_type") or body.get("type")
    if isinstance(qtype, str) and qtype and "x-queue-type" not in args:
        args["x-queue-type"] = qtype
    existed = name in vh.queues
    vh.declare_queue(
        None, name, durable=flag(body, "durable", True), auto_delete=flag(body, "auto_delete", False), arguments=args
    )
    call.status = 204 if existed else 201


@API.add("DELETE", "/api/queues/{vhost}/{name}")
async def delete_queue(call: Call) -> None:
    vh, q = _queue(call)
    auth.check(call.broker, call.user, vh.name, "configure", q.name)
    vh.delete_queue(
        None, q.name, if_unused=call.query.get("if-unused") == "true", if_empty=call.query.get("if-empty") == "true"
    )


@API.add("DELETE", "/api/queues/{vhost}/{name}/contents")
async def purge_queue(call: Call) -> None:
    vh, q = _queue(call)
    auth.check(call.broker, call.user, vh.name, "read", q.name)
    vh.purge_queue(None, q.name)


@API.add("GET", "/api/queues/{vhost}/{name}/bindings")
async def queue_bindings(call: Call) -> Any:
    vh, q = _queue(call)
    items = [render.default_binding(vh.name, q)] + [render.binding(vh.name, b) for b in q.bindings.values()]
    return listing(items, call.query, lambda j: j, lambda j: j["source"])


# ------------------------------------------------------------------------------------ bindings


@API.add("GET", "/api/bindings")
@API.add("GET", "/api/bindings/{vhost}")
async def list_bindings(call: Call) -> Any:
    items = [b for vh in vhosts_of(call) for b in render.bindings_of(vh)]
    return listing(items, call.query, lambda j: j, lambda j: j["source"])


def _binding_ends(call: Call) -> tuple[VirtualHost, Exchange, Queue | Exchange, str]:
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    source = vh.exchanges.get(_default_name(call.params["source"]))
    kind = call.params["kind"]
    dest: Queue | Exchange | None
    if kind == "q":
        dest = vh.queues.get(call.params["destination"])
    elif kind == "e":
        dest = vh.exchanges.get(call.params["destination"])
    else:
        raise not_found()
    if source is None or dest is None:
        raise not_found()
    return vh, source, dest, kind


def _between(vh: VirtualHost, source: Exchange, dest: Queue | Exchange) -> list[Json]:
    if source.name == "":
        return [render.default_binding(vh.name, dest)] if isinstance(dest, Queue) else []
    return [render.binding(vh.name, b) for b in source.bindings.values() if b.destination is dest]


@API.add("GET", "/api/bindings/{vhost}/e/{source}/{kind}/{destination}")
async def list_bindings_between(call: Call) -> list[Json]:
    vh, source, dest, _ = _binding_ends(call)
    return _between(vh, source, dest)


@API.add("POST", "/api/bindings/{vhost}/e/{source}/{kind}/{destination}")
async def create_binding(call: Call) -> web.Response:
    vh, source, dest, kind = _binding_ends(call)
    body = await call.json()
    routing_key = str(body.get("routing_key", ""))
    args = arguments(body)
    _check_binding(call, vh.name, source, dest)
    if kind == "q":
        vh.bind_queue(None, dest.name, source.name, routing_key, args)
    else:
        vh.bind_exchange(dest.name, source.name, routing_key, args)
    key = render.properties_key(routing_key, args)
    return web.Response(status=201, headers={"Location": key})


def _check_binding(call: Call, vhost: str, source: Exchange, dest: Queue | Exchange) -> None:
    """RabbitMQ: write on the destination, read on the source."""
    kind = "queue" if isinstance(dest, Queue) else "exchange"
    auth.check(call.broker, call.user, vhost, "write", dest.name, kind)
    auth.check(call.broker, call.user, vhost, "read", source.name, "exchange")


@API.add("GET", "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}")
async def get_binding(call: Call) -> Json:
    vh, source, dest, _ = _binding_ends(call)
    for b in _between(vh, source, dest):
        if b["properties_key"] == call.params["props"]:
            return b
    raise not_found()


@API.add("DELETE", "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}")
async def delete_binding(call: Call) -> None:
    vh, source, dest, kind = _binding_ends(call)
    if source.name == "":
        raise HttpError(403, "access_refused", "operation not permitted on the default exchange")
    _check_binding(call, vh.name, source, dest)
    for b in list(source.bindings.values()):
        if b.destination is dest and render.properties_key(b.routing_key, b.arguments) == call.params["props"]:
            if kind == "q":
                vh.unbind_queue(None, dest.name, source.name, b.routing_key, b.arguments)
            else:
                vh.unbind_exchange(dest.name, source.name, b.routing_key, b.arguments)
            return
    raise not_found()


# ---------------------------------------------------------------------- connections, channels


def _connections(call: Call, vhost: str | None = None) -> Iterator[Any]:
    """The AMQP connections this user may see (all for administrator and monitoring, else its own)."""
    see_all = auth.is_monitor(call.user)
    for conn in list(call.door.server.connections):
        session = conn.session
        if session is None:
            if see_all and vhost is None:
                yield conn
            continue
        if vhost is not None and session.vhost.name != vhost:
            continue
        if see_all or session.user.name == call.user.name:
            yield conn


def _conn_by_session(call: Call) -> dict[int, Any]:
    return {id(c.session): c for c in call.door.server.connections if c.session is not None}


def _find_connection(call: Call) -> Any:
    name = call.params["name"]
    for conn in _connections(call):
        if render.connection_name(conn) == name:
            return conn
    raise not_found()


@API.add("GET", "/api/connections")
async def list_connections(call: Call) -> Any:
    return listing(list(_connections(call)), call.query, render.connection, render.connection_name)


@API.add("GET", "/api/vhosts/{vhost}/connections")
async def vhost_connections(call: Call) -> Any:
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    return listing(list(_connections(call, vh.name)), call.query, render.connection, render.connection_name)


@API.add("GET", "/api/connections/{name}")
async def get_connection(call: Call) -> Json:
    return render.connection(_find_connection(call))


@API.add("DELETE", "/api/connections/{name}")
async def close_connection(call: Call) -> None:
    conn = _find_connection(call)
    if not auth.is_admin(call.user) and conn.session is not None and conn.session.user.name != call.user.name:
        auth.require_admin(call.user)
    conn.shutdown()


def _channels(conns: Iterable[Any]) -> list[tuple[Any, Channel]]:
    out = []
    for conn in conns:
        for amqp_channel in list(getattr(conn, "channels", {}).values()):
            out.append((conn, amqp_channel.core))
    return out


@API.add("GET", "/api/connections/{name}/channels")
async def connection_channels(call: Call) -> list[Json]:
    conn = _find_connection(call)
    return [render.channel(c, ch) for c, ch in _channels([conn])]


@API.add("GET", "/api/channels")
async def list_channels(call: Call) -> Any:
    items = _channels(_connections(call))
    return listing(items, call.query, lambda i: render.channel(*i), lambda i: render.channel_name(i[0], i[1].number))


@API.add("GET", "/api/vhosts/{vhost}/channels")
async def vhost_channels(call: Call) -> Any:
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    items = _channels(_connections(call, vh.name))
    return listing(items, call.query, lambda i: render.channel(*i), lambda i: render.channel_name(i[0], i[1].number))


@API.add("GET", "/api/channels/{name}")
async def get_channel(call: Call) -> Json:
    for conn, ch in _channels(_connections(call)):
        if render.channel_name(conn, ch.number) == call.params["name"]:
            out = render.channel(conn, ch)
            out["consumer_details"] = [render.consumer(conn, c) for c in ch.consumers.values()]
            return out
    raise not_found()


@API.add("GET", "/api/consumers")
@API.add("GET", "/api/consumers/{vhost}")
async def list_consumers(call: Call) -> Any:
    names = {vh.name for vh in vhosts_of(call)}
    items = []
    for conn, ch in _channels(_connections(call)):
        if ch.vhost.name in names:
            items += [(conn, c) for c in ch.consumers.values()]
    return listing(items, call.query, lambda i: render.consumer(*i), lambda i: i[1].queue.name)
