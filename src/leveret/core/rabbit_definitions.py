"""Definitions in RabbitMQ's JSON format: export the broker's, import RabbitMQ's (or ours).

The format (``rabbitmqctl export_definitions``, ``GET /api/definitions``): top-level lists ``users``,
``vhosts``, ``permissions``, ``topic_permissions``, ``parameters``, ``global_parameters``,
``policies``, ``queues``, ``exchanges``, ``bindings``. A per-vhost export leaves out users, vhosts
and permissions, and its objects carry no ``vhost`` key.

Import applies everything through the broker's own methods (``Broker.add_user``,
``VirtualHost.declare_queue``...), so every change is journaled exactly as if a client had made it,
in RabbitMQ's order: users, vhosts, permissions, parameters, policies, queues, exchanges, bindings.
Objects that exist already are left as they are when equivalent; an inequivalent redeclaration or
any other refusal stops the import with the object named (what came before it stays applied, as in
RabbitMQ). Exclusive queues and the built-in exchanges (``""``, ``amq.*``) are never exported.
Pure and synchronous: the HTTP door and ``leveret ctl`` are the I/O around it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import errors
from .queue import Queue

if TYPE_CHECKING:
    from .broker import Broker
    from .vhost import VirtualHost

Json = dict[str, Any]
SECTIONS = (
    "users",
    "vhosts",
    "permissions",
    "topic_permissions",
    "parameters",
    "global_parameters",
    "policies",
    "queues",
    "exchanges",
    "bindings",
)
RABBITMQ_VERSION = "3.10.8"


def _builtin_exchange(name: str) -> bool:
    return name == "" or name.startswith("amq.")


# --------------------------------------------------------------------------------------- export


def export(broker: Broker, product_version: str, vhost: str | None = None) -> Json:
    """The whole broker's definitions, or one vhost's (``vhost``)."""
    vhosts = [broker.vhost(vhost)] if vhost is not None else list(broker.vhosts.values())
    out: Json = {
        "rabbit_version": RABBITMQ_VERSION,
        "rabbitmq_version": RABBITMQ_VERSION,
        "product_name": "Leveret",
        "product_version": product_version,
    }
    if vhost is None:
        out["users"] = [_user(u) for u in broker.users.values()]
        out["vhosts"] = [_vhost(vh) for vh in vhosts]
        out["permissions"] = [
            {"user": u, "vhost": v, "configure": p.configure, "write": p.write, "read": p.read}
            for (u, v), p in broker.permissions.items()
        ]
        out["topic_permissions"] = [
            {"user": u, "vhost": v, "exchange": p.exchange, "write": p.write, "read": p.read}
            for (u, v, _), p in broker.topic_permissions.items()
        ]
    with_vhost = vhost is None
    out["parameters"] = [
        _tag({"value": dict(vh.limits), "component": "vhost-limits", "name": "limits"}, vh.name, with_vhost)
        for vh in vhosts
        if vh.limits
    ]
    out["global_parameters"] = []
    out["policies"] = [_tag(_policy(p), vh.name, with_vhost) for vh in vhosts for p in vh.policies.values()]
    out["queues"] = [
        _tag(_queue(q), vh.name, with_vhost) for vh in vhosts for q in vh.queues.values() if not q.exclusive
    ]
    out["exchanges"] = [
        _tag(_exchange(ex), vh.name, with_vhost)
        for vh in vhosts
        for ex in vh.exchanges.values()
        if not _builtin_exchange(ex.name)
    ]
    out["bindings"] = [
        _tag(_binding(b), vh.name, with_vhost)
        for vh in vhosts
        for ex in vh.exchanges.values()
        for b in ex.bindings.values()
        if not (isinstance(b.destination, Queue) and b.destination.exclusive)
    ]
    return out


def _tag(item: Json, vhost: str, with_vhost: bool) -> Json:
    return {**item, "vhost": vhost} if with_vhost else item


def _user(u: Any) -> Json:
    return {
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm,
        "tags": list(u.tags),
        "limits": {},
    }


def _vhost(vh: VirtualHost) -> Json:
    meta = {"description": vh.description, "tags": list(vh.tags)}
    return {"name": vh.name, **meta, "metadata": meta}


def _policy(p: Any) -> Json:
    return {
        "name": p.name,
        "pattern": p.pattern,
        "apply-to": p.apply_to,
        "definition": dict(p.definition),
        "priority": p.priority,
    }


def _queue(q: Queue) -> Json:
    return {"name": q.name, "durable": q.durable, "auto_delete": q.auto_delete, "arguments": dict(q.arguments)}


def _exchange(ex: Any) -> Json:
    return {
        "name": ex.name,
        "type": ex.type,
        "durable": ex.durable,
        "auto_delete": ex.auto_delete,
        "internal": ex.internal,
        "arguments": dict(ex.arguments),
    }


def _binding(b: Any) -> Json:
    return {
        "source": b.source.name,
        "destination": b.destination.name,
        "destination_type": "queue" if isinstance(b.destination, Queue) else "exchange",
        "routing_key": b.routing_key,
        "arguments": dict(b.arguments),
    }


# --------------------------------------------------------------------------------------- import


@dataclass
class ImportReport:
    counts: dict[str, int] = field(default_factory=dict)

    def total(self) -> int:
        return sum(self.counts.values())


Progress = Callable[[str, int, int], None]


def import_(
    broker: Broker, data: Mapping[str, Any], vhost: str | None = None, progress: Progress | None = None
) -> ImportReport:
    """Apply definitions; with ``vhost``, every object goes into that vhost (a per-vhost import).
    Raises ``BrokerError`` (precondition-failed) naming the object that could not be applied."""
    if not isinstance(data, Mapping):
        raise errors.precondition_failed("definitions must be a JSON object")
    report = ImportReport()
    if vhost is not None:
        broker.vhost(vhost)
    steps: list[tuple[str, Callable[[Broker, Json, str | None], None]]] = [
        ("parameters", _apply_parameter),
        ("policies", _apply_policy),
        ("queues", _apply_queue),
        ("exchanges", _apply_exchange),
        ("bindings", _apply_binding),
    ]
    if vhost is None:
        steps = [
            ("users", _apply_user),
            ("vhosts", _apply_vhost),
            ("permissions", _apply_permission),
            ("topic_permissions", _apply_topic_permission),
            *steps,
        ]
    for section, apply in steps:
        items = _section(data, section)
        for i, item in enumerate(items):
            try:
                apply(broker, item, vhost)
            except (KeyError, TypeError, ValueError) as exc:
                raise errors.precondition_failed(
                    f"{section}[{i}]: bad definition ({type(exc).__name__}: {exc})"
                ) from None
            except errors.BrokerError as exc:
                raise errors.BrokerError(exc.kind, f"{section}[{i}] ({_label(item)}): {exc.text}") from None
            if progress is not None:
                progress(section, i + 1, len(items))
        report.counts[section] = len(items)
    return report


def _section(data: Mapping[str, Any], name: str) -> list[Json]:
    items = data.get(name) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise errors.precondition_failed(f"definitions: '{name}' must be a list of objects")
    return items


def _label(item: Json) -> str:
    for key in ("name", "user", "source"):
        if key in item:
            return f"{key} '{item[key]}'"
    return "?"


def _target(item: Json, vhost: str | None) -> str:
    return vhost if vhost is not None else str(item.get("vhost", "/"))


def _flag(item: Json, key: str, default: bool) -> bool:
    value = item.get(key, default)
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def _tags(raw: Any) -> Iterable[str]:
    if isinstance(raw, str):
        return [t for t in raw.split(",") if t]
    return [str(t) for t in raw or ()]


def _apply_user(broker: Broker, item: Json, vhost: str | None) -> None:
    name = str(item["name"])
    tags = _tags(item.get("tags"))
    if "password" in item:  # not in exports, but accepted (rabbitmqctl import accepts it too)
        broker.add_user(name, str(item["password"]), tags)
        return
    algorithm = item.get("hashing_algorithm") or "rabbit_password_hashing_sha256"
    broker.add_user(name, None, tags, str(item.get("password_hash", "")), str(algorithm))


def _apply_vhost(broker: Broker, item: Json, vhost: str | None) -> None:
    meta = item.get("metadata") or {}
    description = item.get("description", meta.get("description", ""))
    broker.add_vhost(str(item["name"]), str(description or ""), _tags(item.get("tags", meta.get("tags", ()))))


def _apply_permission(broker: Broker, item: Json, vhost: str | None) -> None:
    broker.set_permissions(
        str(item["user"]), _target(item, vhost), str(item["configure"]), str(item["write"]), str(item["read"])
    )


def _apply_topic_permission(broker: Broker, item: Json, vhost: str | None) -> None:
    broker.set_topic_permissions(
        str(item["user"]), _target(item, vhost), str(item["exchange"]), str(item["write"]), str(item["read"])
    )


def _apply_parameter(broker: Broker, item: Json, vhost: str | None) -> None:
    if item.get("component") == "vhost-limits":
        broker.set_vhost_limits(_target(item, vhost), dict(item["value"]))
    # other components (federation, shovel...) have no meaning here: skipped, as unknown plugins'


def _apply_policy(broker: Broker, item: Json, vhost: str | None) -> None:
    broker.set_policy(
        _target(item, vhost),
        str(item["name"]),
        str(item["pattern"]),
        dict(item.get("definition") or {}),
        int(item.get("priority", 0)),
        str(item.get("apply-to", "all")),
    )


def _apply_queue(broker: Broker, item: Json, vhost: str | None) -> None:
    vh = broker.vhost(_target(item, vhost))
    vh.declare_queue(
        None,
        str(item["name"]),
        durable=_flag(item, "durable", True),
        auto_delete=_flag(item, "auto_delete", False),
        arguments=dict(item.get("arguments") or {}),
    )


def _apply_exchange(broker: Broker, item: Json, vhost: str | None) -> None:
    vh = broker.vhost(_target(item, vhost))
    name = str(item["name"])
    if _builtin_exchange(name):
        return  # exports from RabbitMQ never hold them; ours neither
    vh.declare_exchange(
        name,
        str(item.get("type", "direct")),
        durable=_flag(item, "durable", True),
        auto_delete=_flag(item, "auto_delete", False),
        internal=_flag(item, "internal", False),
        arguments=dict(item.get("arguments") or {}),
    )


def _apply_binding(broker: Broker, item: Json, vhost: str | None) -> None:
    vh = broker.vhost(_target(item, vhost))
    source, dest = str(item["source"]), str(item["destination"])
    key, args = str(item.get("routing_key", "")), dict(item.get("arguments") or {})
    if source == "":
        return  # the default exchange's implicit bindings
    if item.get("destination_type", "queue") == "queue":
        vh.bind_queue(None, dest, source, key, args)
    else:
        vh.bind_exchange(dest, source, key, args)
