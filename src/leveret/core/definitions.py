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
    from .broker import Broker
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


def is_durable_binding(b: Binding) -> bool:
    return bool(b.source.durable and b.destination.durable)


# ------------------------------------------------------------------------------------- snapshot


def _builtin(name: str) -> bool:
    return name == "" or name.startswith("amq.")  # clients can create neither


def snapshot(broker: Broker) -> list[Command]:
    """The durable state as commands: uid reservation, then exchanges, queues, bindings."""
    commands = [reserve_uids(broker.uids.reserved)]
    vhosts = list(broker.vhosts.values())
    for vh in vhosts:
        exchanges = [ex for ex in vh.exchanges.values() if ex.durable and not _builtin(ex.name)]
        commands += [declare_exchange(vh.name, ex) for ex in exchanges]
    for vh in vhosts:
        commands += [declare_queue(vh.name, q) for q in vh.queues.values() if q.durable and not q.exclusive]
    for vh in vhosts:
        for ex in vh.exchanges.values():
            commands += [binding("bind", vh.name, b) for b in ex.bindings.values() if is_durable_binding(b)]
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
