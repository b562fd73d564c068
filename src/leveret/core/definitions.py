"""Durable definitions as commands: what the vhost records, what boot replays, what compaction keeps.

Theory of operation: every successful change of the durable state of a vhost (a durable exchange or
queue declared or deleted, a binding whose source AND destination are durable added or removed:
RabbitMQ keeps a binding across a restart only then) is recorded as one command, a plain dict, through
the ``DefinitionsLog`` port. On boot the commands are replayed through the same ``VirtualHost`` methods a
client uses, with recording switched off. Compaction replaces the log with ``snapshot(broker)``: the
current durable state as the shortest list of commands that rebuilds it. The journal may compact
inside ``record()``, so a change is always applied first and recorded second (and what it causes,
such as an auto-deletion, after that): the snapshot then already holds the recorded change.

What is not recorded, because replaying the delete that caused it reproduces it exactly: bindings
removed with their deleted queue or exchange. What IS recorded although implicit: an auto-delete
exchange deleted because it lost its last binding. Replay does not auto-delete exchanges; the delete
is in the log instead. That is exact in every case, including the two where replaying the cause would
not be: the last binding was to a transient queue (never recorded), or the exchange still had
transient bindings when its last durable one went (RabbitMQ keeps such an exchange across a restart).

Commands (``vhost`` names the virtual host; ``arguments`` are field tables):

- ``{"op": "declare_exchange", "vhost", "name", "type", "durable", "auto_delete", "internal", "arguments"}``
- ``{"op": "delete_exchange", "vhost", "name"}``
- ``{"op": "declare_queue", "vhost", "name", "uid", "durable", "auto_delete", "arguments"}``
- ``{"op": "delete_queue", "vhost", "name", "uid"}``
- ``{"op": "bind" | "unbind", "vhost", "source", "destination", "destination_kind": "queue" | "exchange",
  "routing_key", "arguments"}``
- ``{"op": "reserve_queue_uids", "below": n}``: queue uids below ``n`` may have been handed out.
- ``{"op": "set_policy", "vhost", "name", "pattern", "apply-to", "definition", "priority"}``,
  ``{"op": "clear_policy", "vhost", "name"}`` (``core.policies``)

Users, vhosts and permissions (``core.broker``; RabbitMQ's objects, recorded the same way):

- ``{"op": "add_vhost", "name", "description", "tags"}`` (creates, or updates the metadata of, a vhost)
- ``{"op": "delete_vhost", "name"}`` (its queues and exchanges go with it)
- ``{"op": "set_vhost_limits", "vhost", "limits": {"max-connections": n, "max-queues": n}}``
- ``{"op": "add_user", "name", "password_hash", "hashing_algorithm", "tags"}`` (the hash, never a
  password; ``core.auth`` documents the formats)
- ``{"op": "delete_user", "name"}`` (with the user's permissions)
- ``{"op": "set_permissions", "user", "vhost", "configure", "write", "read"}``
- ``{"op": "clear_permissions", "user", "vhost"}``
- ``{"op": "set_topic_permissions", "user", "vhost", "exchange", "write", "read"}``
- ``{"op": "clear_topic_permissions", "user", "vhost", "exchange"}`` (``exchange`` null: all of them)

A fresh broker starts with vhost ``/`` and user ``guest`` (full permissions on ``/``). The snapshot
records departures from these defaults as deletions (``delete_vhost "/"``, ``delete_user "guest"``,
``clear_permissions``) ahead of everything else, so replay onto a fresh broker is exact.

Queue uids name queues in the message log, so they are never reused, not even across restarts: uids
are reserved in blocks (one record per ``UID_BLOCK`` queues declared, durable or not), and after a
restart numbering resumes above the last reservation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import BrokerError, ErrorKind
from .exchange import Binding, Exchange
from .ports import DefinitionsLog, NullDefinitionsLog
from .queue import Queue

if TYPE_CHECKING:
    from .broker import Broker, User
    from .permissions import Permission, TopicPermission
    from .policies import Policy
    from .vhost import VirtualHost

Command = dict[str, Any]

UID_BLOCK = 1024
MAX_UID = 2**32 - 1  # uids are u32 in the message log


class QueueUids:
    """Hands out queue uids: unique, increasing, never reused (see the module docstring)."""

    def __init__(self, log: DefinitionsLog | None = None) -> None:
        self.log: DefinitionsLog = log or NullDefinitionsLog()
        self.next = 1  # 0 means "no uid"
        self.reserved = 1  # uids below this may already be in use

    def allocate(self) -> int:
        uid = self.next
        if uid > MAX_UID:
            raise BrokerError(ErrorKind.INTERNAL, "queue uids exhausted")
        if uid >= self.reserved:
            # Applied, then recorded: the journal may compact inside record() from a snapshot.
            self.reserved = min(uid + UID_BLOCK, MAX_UID + 1)
            self.log.record(reserve_uids(self.reserved))
        self.next = uid + 1
        return uid

    def claim(self, uid: int) -> None:
        """A uid restored from the log: never hand it out again."""
        self.next = max(self.next, uid + 1)
        self.reserved = max(self.reserved, self.next)

    def reserve(self, below: int) -> None:
        self.reserved = max(self.reserved, below)

    def resume(self) -> None:
        """After replay: continue above everything the previous run may have handed out."""
        self.next = max(self.next, self.reserved)


# ------------------------------------------------------------------------------------- commands


def reserve_uids(below: int) -> Command:
    return {"op": "reserve_queue_uids", "below": below}


def declare_exchange(vhost: str, ex: Exchange) -> Command:
    return {
        "op": "declare_exchange",
        "vhost": vhost,
        "name": ex.name,
        "type": ex.type,
        "durable": ex.durable,
        "auto_delete": ex.auto_delete,
        "internal": ex.internal,
        "arguments": dict(ex.arguments),
    }


def delete_exchange(vhost: str, ex: Exchange) -> Command:
    return {"op": "delete_exchange", "vhost": vhost, "name": ex.name}


def declare_queue(vhost: str, q: Queue) -> Command:
    return {
        "op": "declare_queue",
        "vhost": vhost,
        "name": q.name,
        "uid": q.uid,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "arguments": dict(q.arguments),
    }


def delete_queue(vhost: str, q: Queue) -> Command:
    return {"op": "delete_queue", "vhost": vhost, "name": q.name, "uid": q.uid}


def binding(op: str, vhost: str, b: Binding) -> Command:
    dest = b.destination
    return {
        "op": op,
        "vhost": vhost,
        "source": b.source.name,
        "destination": dest.name,
        "destination_kind": "queue" if isinstance(dest, Queue) else "exchange",
        "routing_key": b.routing_key,
        "arguments": dict(b.arguments),
    }


def add_vhost(vh: VirtualHost) -> Command:
    return {"op": "add_vhost", "name": vh.name, "description": vh.description, "tags": list(vh.tags)}


def delete_vhost(name: str) -> Command:
    return {"op": "delete_vhost", "name": name}


def set_vhost_limits(vhost: str, limits: Mapping[str, int]) -> Command:
    return {"op": "set_vhost_limits", "vhost": vhost, "limits": dict(limits)}


def add_user(user: User) -> Command:
    return {
        "op": "add_user",
        "name": user.name,
        "password_hash": user.password_hash,
        "hashing_algorithm": user.hashing_algorithm,
        "tags": list(user.tags),
    }


def delete_user(name: str) -> Command:
    return {"op": "delete_user", "name": name}


def set_permissions(user: str, vhost: str, p: Permission) -> Command:
    return {
        "op": "set_permissions",
        "user": user,
        "vhost": vhost,
        "configure": p.configure,
        "write": p.write,
        "read": p.read,
    }


def clear_permissions(user: str, vhost: str) -> Command:
    return {"op": "clear_permissions", "user": user, "vhost": vhost}


def set_topic_permissions(user: str, vhost: str, p: TopicPermission) -> Command:
    return {
        "op": "set_topic_permissions",
        "user": user,
        "vhost": vhost,
        "exchange": p.exchange,
        "write": p.write,
        "read": p.read,
    }


def clear_topic_permissions(user: str, vhost: str, exchange: str | None) -> Command:
    return {"op": "clear_topic_permissions", "user": user, "vhost": vhost, "exchange": exchange}


def set_policy(vhost: str, p: Policy) -> Command:
    return {"op": "set_policy", **p.as_dict(vhost)}


def clear_policy(vhost: str, name: str) -> Command:
    return {"op": "clear_policy", "vhost": vhost, "name": name}


def is_durable_binding(b: Binding) -> bool:
    return bool(b.source.durable and b.destination.durable)


# ------------------------------------------------------------------------------------- snapshot


def _builtin(name: str) -> bool:
    return name == "" or name.startswith("amq.")  # clients can create neither


def snapshot(broker: Broker) -> list[Command]:
    """The durable state as commands: uid reservation, then exchanges, queues, bindings."""
    commands = [reserve_uids(broker.uids.reserved), *_access_snapshot(broker)]
    vhosts = list(broker.vhosts.values())
    for vh in vhosts:
        exchanges = [ex for ex in vh.exchanges.values() if ex.durable and not _builtin(ex.name)]
        commands += [declare_exchange(vh.name, ex) for ex in exchanges]
    for vh in vhosts:
        commands += [declare_queue(vh.name, q) for q in vh.queues.values() if q.durable and not q.exclusive]
    for vh in vhosts:
        for ex in vh.exchanges.values():
            commands += [binding("bind", vh.name, b) for b in ex.bindings.values() if is_durable_binding(b)]
    for vh in vhosts:
        commands += [set_policy(vh.name, p) for p in vh.policies.values()]
    return commands


def _access_snapshot(broker: Broker) -> list[Command]:
    """Vhosts, users, permissions as departures from a fresh broker's defaults (see above)."""
    from .broker import DEFAULT_USER, DEFAULT_VHOST, FULL

    commands = []
    if DEFAULT_VHOST not in broker.vhosts:
        commands.append(delete_vhost(DEFAULT_VHOST))
    if DEFAULT_USER not in broker.users:
        commands.append(delete_user(DEFAULT_USER))
    elif DEFAULT_VHOST in broker.vhosts and (DEFAULT_USER, DEFAULT_VHOST) not in broker.permissions:
        commands.append(clear_permissions(DEFAULT_USER, DEFAULT_VHOST))
    for vh in broker.vhosts.values():
        if vh.name != DEFAULT_VHOST or vh.description or vh.tags:
            commands.append(add_vhost(vh))
        if vh.limits:
            commands.append(set_vhost_limits(vh.name, vh.limits))
    commands += [add_user(user) for user in broker.users.values() if not broker.is_default_user(user)]
    defaults = {(DEFAULT_USER, DEFAULT_VHOST): FULL}
    commands += [set_permissions(u, v, p) for (u, v), p in broker.permissions.items() if defaults.get((u, v)) != p]
    commands += [set_topic_permissions(u, v, p) for (u, v, _), p in broker.topic_permissions.items()]
    return commands


# --------------------------------------------------------------------------------------- replay


@dataclass
class ReplayReport:
    applied: int = 0
    failures: list[tuple[Command, str]] = field(default_factory=list)
    exchanges: int = 0  # durable definitions present after replay
    queues: int = 0
    bindings: int = 0


def replay(broker: Broker, commands: Iterable[Mapping[str, Any]]) -> ReplayReport:
    """Apply logged commands; one that fails is reported and skipped (the broker still starts)."""
    report = ReplayReport()
    for command in commands:
        try:
            _apply(broker, command)
        except (BrokerError, KeyError, TypeError, ValueError) as exc:
            text = exc.text if isinstance(exc, BrokerError) else f"{type(exc).__name__}: {exc}"
            report.failures.append((dict(command), text))
        else:
            report.applied += 1
    for command in snapshot(broker):
        op = command["op"]
        report.exchanges += op == "declare_exchange"
        report.queues += op == "declare_queue"
        report.bindings += op == "bind"
    return report


def _vhost(broker: Broker, command: Mapping[str, Any]) -> VirtualHost:
    vh = broker.vhosts.get(command["vhost"])
    if vh is None:
        raise BrokerError(ErrorKind.NOT_FOUND, f"no vhost '{command['vhost']}'")
    return vh


def _apply(broker: Broker, c: Mapping[str, Any]) -> None:
    op = c["op"]
    if op == "reserve_queue_uids":
        broker.uids.reserve(int(c["below"]))
        return
    if op in _ACCESS_OPS:
        _apply_access(broker, c)
        return
    vh = _vhost(broker, c)
    if op == "declare_exchange":
        flags = {"durable": c["durable"], "auto_delete": c["auto_delete"], "internal": c["internal"]}
        vh.declare_exchange(c["name"], c["type"], arguments=c["arguments"], **flags)
    elif op == "delete_exchange":
        vh.delete_exchange(c["name"])
    elif op == "declare_queue":
        q = vh.declare_queue(
            None, c["name"], durable=c["durable"], auto_delete=c["auto_delete"], arguments=c["arguments"], uid=c["uid"]
        )
        if q.uid != c["uid"]:
            raise ValueError(f"queue '{q.name}' declared twice (uids {q.uid} and {c['uid']})")
    elif op == "delete_queue":
        vh.delete_queue(None, c["name"])
    elif op in ("bind", "unbind"):
        _apply_binding(vh, c)
    elif op == "set_policy":
        vh.set_policy(c["name"], c["pattern"], c["definition"], c["priority"], c["apply-to"])
    elif op == "clear_policy":
        vh.clear_policy(c["name"])
    else:
        raise ValueError(f"unknown command {op!r}")


def _apply_binding(vh: VirtualHost, c: Mapping[str, Any]) -> None:
    args = (c["routing_key"], c["arguments"])
    if c["destination_kind"] == "queue":
        (vh.bind_queue if c["op"] == "bind" else vh.unbind_queue)(None, c["destination"], c["source"], *args)
    elif c["destination_kind"] == "exchange":
        (vh.bind_exchange if c["op"] == "bind" else vh.unbind_exchange)(c["destination"], c["source"], *args)
    else:
        raise ValueError(f"unknown destination kind {c['destination_kind']!r}")


_ACCESS_OPS = frozenset(
    (
        "add_vhost",
        "delete_vhost",
        "set_vhost_limits",
        "add_user",
        "delete_user",
        "set_permissions",
        "clear_permissions",
        "set_topic_permissions",
        "clear_topic_permissions",
    )
)


def _apply_access(broker: Broker, c: Mapping[str, Any]) -> None:
    op = c["op"]
    if op == "add_vhost":
        broker.add_vhost(c["name"], c["description"], c["tags"])
    elif op == "delete_vhost":
        broker.delete_vhost(c["name"])
    elif op == "set_vhost_limits":
        broker.set_vhost_limits(c["vhost"], c["limits"])
    elif op == "add_user":
        broker.add_user(c["name"], None, c["tags"], c["password_hash"], c["hashing_algorithm"])
    elif op == "delete_user":
        broker.delete_user(c["name"])
    elif op == "set_permissions":
        broker.set_permissions(c["user"], c["vhost"], c["configure"], c["write"], c["read"])
    elif op == "clear_permissions":
        broker.clear_permissions(c["user"], c["vhost"])
    elif op == "set_topic_permissions":
        broker.set_topic_permissions(c["user"], c["vhost"], c["exchange"], c["write"], c["read"])
    else:
        broker.clear_topic_permissions(c["user"], c["vhost"], c["exchange"])
