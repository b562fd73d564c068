"""A virtual host: its exchanges, queues and bindings, and routing.

Every definition change (declare, delete, bind, unbind, purge) is a method here, whichever door asks
for it: AMQP, and later the HTTP API and the definitions journal replayed on boot. Error texts follow
RabbitMQ's so clients that log them read the same.

Routing results are cached per (exchange, routing key) until any binding, exchange or queue changes;
paths through a headers exchange are not cached (they depend on the message).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import definitions as defs
from . import errors
from .exchange import EXCHANGE_TYPES, Binding, Exchange, HeadersExchange
from .message import Message
from .names import generated_queue_name
from .ports import DefinitionsLog, NullDefinitionsLog
from .queue import Queue
from .queue_args import invalid_argument

if TYPE_CHECKING:
    from .ports import MessageStore
    from .session import Session

DEFAULT_EXCHANGES = (
    ("amq.direct", "direct"),
    ("amq.fanout", "fanout"),
    ("amq.topic", "topic"),
    ("amq.headers", "headers"),
    ("amq.match", "headers"),
)
QUEUE_TYPES = ("classic", "quorum")
# Arguments RabbitMQ compares on redeclare (rabbit_amqqueue:declare_args/0 and friends).
EQUIVALENT_QUEUE_ARGS = (
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-single-active-consumer",
    "x-delivery-limit",
)
ROUTE_CACHE_LIMIT = 16384


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "none" if value is None else str(value)


def _typed(value: Any) -> str:
    if value is None:
        return "none"
    kind = {bool: "bool", int: "long", float: "double", str: "longstr", bytes: "bytes"}.get(type(value), "table")
    return f"the value '{_fmt(value)}' of type '{kind}'"


def _received(what: str, want: Any, have: Any) -> str:
    """RabbitMQ's wording: flags as 'true'/'false', arguments as typed values."""
    if what in ("type", "durable", "auto_delete", "internal"):
        return f"received '{_fmt(want)}' but current is '{_fmt(have)}'"
    return f"received {_typed(want)} but current is {_typed(have)}"


def _queue_side_key(binding: Binding) -> tuple[str, Any]:
    """A queue's own index of its bindings: ``Binding.key`` names the destination, not the source,
    so the same key bound from two exchanges must not collide there."""
    return binding.source.name, binding.key


class VirtualHost:
    def __init__(self, name: str = "/", uids: defs.QueueUids | None = None) -> None:
        self.name = name
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        self._routes: dict[tuple[str, str], list[Queue]] = {}
        # Durable definition changes are recorded here (core.definitions); off while replaying.
        self.definitions: DefinitionsLog = NullDefinitionsLog()
        self.replaying = False
        self.uids = uids or defs.QueueUids()
        self.store: MessageStore | None = None  # keeps persistent messages of durable queues
        self.exchanges[""] = EXCHANGE_TYPES["direct"]("", durable=True)
        for name_, type_ in DEFAULT_EXCHANGES:
            self.exchanges[name_] = EXCHANGE_TYPES[type_](name_, durable=True)

    def _where(self) -> str:
        return f"in vhost '{self.name}'"

    # ------------------------------------------------------------------------------ lookups

    def exchange(self, name: str) -> Exchange:
        ex = self.exchanges.get(name)
        if ex is None:
            raise errors.not_found(f"no exchange '{name}' {self._where()}")
        return ex

    def queue(self, name: str, session: Session | None = None) -> Queue:
        q = self.queues.get(name)
        if q is None:
            raise errors.not_found(f"no queue '{name}' {self._where()}")
        if session is not None:
            self.check_exclusive(q, session)
        return q

    def check_exclusive(self, queue: Queue, session: Session) -> None:
        owner = queue.exclusive_owner
        if owner is not None and owner is not session:
            self._refuse_exclusive(queue)

    def _refuse_exclusive(self, queue: Queue) -> None:
        raise errors.resource_locked(
            f"cannot obtain exclusive access to locked queue '{queue.name}' {self._where()}. It could be "
            "originally declared on another connection or the exclusive property value does not match "
            "that of the original declaration."
        )

    # ---------------------------------------------------------------------------- exchanges

    def declare_exchange(
        self,
        name: str,
        type_: str,
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Exchange:
        # RabbitMQ's order: passive checks the name only; otherwise an unknown type (503) comes first.
        if passive:
            return self.exchange(self._not_default(name))
        cls = EXCHANGE_TYPES.get(type_)
        if cls is None:
            raise errors.command_invalid(f"unknown exchange type '{type_}'")
        self._not_default(name)
        existing = self.exchanges.get(name)
        if existing is not None:
            self._check_exchange_equivalent(existing, type_, durable, auto_delete, internal, arguments or {})
            return existing
        if name.startswith("amq."):
            raise errors.access_refused(f"exchange name '{name}' contains reserved prefix 'amq.*'")
        ex = cls(name, durable=durable, auto_delete=auto_delete, internal=internal, arguments=arguments)
        self.exchanges[name] = ex
        if durable:
            self.definitions.record(defs.declare_exchange(self.name, ex))
        return ex

    def _check_exchange_equivalent(
        self, ex: Exchange, type_: str, durable: bool, auto_delete: bool, internal: bool, args: Mapping[str, Any]
    ) -> None:
        for what, have, want in (
            ("type", ex.type, type_),
            ("durable", ex.durable, durable),
            ("auto_delete", ex.auto_delete, auto_delete),
            ("internal", ex.internal, internal),
            ("alternate-exchange", ex.arguments.get("alternate-exchange"), args.get("alternate-exchange")),
        ):
            if have != want:
                raise errors.precondition_failed(
                    f"inequivalent arg '{what}' for exchange '{ex.name}' {self._where()}: {_received(what, want, have)}"
                )

    def _not_default(self, name: str) -> str:
        if name == "":
            raise errors.access_refused("operation not permitted on the default exchange")
        return name

    def delete_exchange(self, name: str, if_unused: bool = False) -> None:
        self._not_default(name)
        if name.startswith("amq."):  # RabbitMQ 3.10: 403 whether or not the amq.* exchange exists
            raise errors.access_refused(f"deletion of system exchange '{name}' {self._where()} not allowed")
        ex = self.exchanges.get(name)
        if ex is None:
            return  # RabbitMQ: deleting a missing exchange succeeds
        if if_unused and ex.bindings:
            raise errors.precondition_failed(f"exchange '{name}' {self._where()} in use")
        self._remove_exchange(ex)

    def _remove_exchange(self, ex: Exchange) -> None:
        """Remove ``ex`` and its bindings, record the deletion, then auto-delete the exchanges that
        were bound to it (see _drop_binding for the order)."""
        for binding in list(ex.bindings.values()):
            self._drop_binding(binding, auto_delete=False)
        sources = []
        for other in list(self.exchanges.values()):  # bindings where ex is the destination
            for binding in other.bindings_to(ex):
                self._drop_binding(binding, auto_delete=False)
                sources.append(other)
        self.exchanges.pop(ex.name, None)
        self._routes.clear()
        if ex.durable:
            self.definitions.record(defs.delete_exchange(self.name, ex))
        for source in sources:
            self._auto_delete(source)

    # ------------------------------------------------------------------------------- queues

    def declare_queue(
        self,
        session: Session | None,
        name: str,
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        uid: int = 0,
    ) -> Queue:
        """``uid`` is given only when replaying the definitions journal; otherwise a new one is taken."""
        args = dict(arguments or {})
        if passive:
            return self.queue(name, session)
        if not name:
            name = generated_queue_name()
        elif name.startswith("amq.") and not self.replaying:  # a server-named durable queue comes back
            raise errors.access_refused(f"queue name '{name}' contains reserved prefix 'amq.*'")
        durable = durable and not exclusive  # RabbitMQ 3.10: an exclusive queue is never durable
        existing = self.queues.get(name)
        if existing is not None:
            # RabbitMQ's strict check: the exclusive flag must match too, both ways (405).
            if session is not None and existing.exclusive_owner is not (session if exclusive else None):
                self._refuse_exclusive(existing)
            self._check_queue_equivalent(existing, durable, auto_delete, args)
            return existing
        self._validate_queue(name, durable, exclusive, auto_delete, args)
        q = Queue(name, self.name, durable, session if exclusive else None, auto_delete, args)
        q.store = self.store
        if uid:
            self.uids.claim(uid)
        q.uid = uid or self.uids.allocate()
        self.queues[name] = q
        if exclusive and session is not None:
            session.exclusive_queues[name] = q
        if durable:  # never exclusive (see above)
            self.definitions.record(defs.declare_queue(self.name, q))
        return q

    def _validate_queue(
        self, name: str, durable: bool, exclusive: bool, auto_delete: bool, args: dict[str, Any]
    ) -> None:
        bad = invalid_argument(args)
        if bad is not None:
            raise errors.precondition_failed(f"invalid arg '{bad[0]}' for queue '{name}' {self._where()}: {bad[1]}")
        qtype = args.get("x-queue-type", "classic")
        if qtype not in QUEUE_TYPES:
            raise errors.precondition_failed(
                f"invalid arg 'x-queue-type' for queue '{name}' {self._where()}: "
                f"queue type '{_fmt(qtype)}' is not supported by this broker"
            )
        if qtype == "quorum":
            for refused, prop in (  # in RabbitMQ's order (rabbit_quorum_queue:declare)
                (auto_delete, "auto-delete"),
                (exclusive, "exclusive-owner"),
                (not durable, "non-durable"),
            ):
                if refused:
                    raise errors.precondition_failed(f"invalid property '{prop}' for queue '{name}' {self._where()}")

    def _check_queue_equivalent(self, q: Queue, durable: bool, auto_delete: bool, args: Mapping[str, Any]) -> None:
        checks: list[tuple[str, Any, Any]] = [
            ("durable", q.durable, durable),
            ("auto_delete", q.auto_delete, auto_delete),
        ]
        checks.append(("x-queue-type", q.queue_type, args.get("x-queue-type", "classic")))
        checks += [(key, q.arguments.get(key), args.get(key)) for key in EQUIVALENT_QUEUE_ARGS]
        for what, have, want in checks:
            if have != want:
                raise errors.precondition_failed(
                    f"inequivalent arg '{what}' for queue '{q.name}' {self._where()}: {_received(what, want, have)}"
                )

    def delete_queue(self, session: Session | None, name: str, if_unused: bool = False, if_empty: bool = False) -> int:
        q = self.queues.get(name)
        if q is None:
            return 0  # RabbitMQ: deleting a missing queue succeeds with a count of 0
        if session is not None:
            self.check_exclusive(q, session)
        if if_unused and q.consumers:
            raise errors.precondition_failed(f"queue '{name}' {self._where()} in use")
        if if_empty and q.message_count():
            raise errors.precondition_failed(f"queue '{name}' {self._where()} not empty")
        return self.remove_queue(q)

    def remove_queue(self, q: Queue) -> int:
        """Delete a queue: cancel its consumers (they are told), drop its bindings and messages."""
        if q.deleted:
            return 0
        q.deleted = True
        count = q.message_count()
        self.queues.pop(q.name, None)
        bindings = list(q.bindings.values())
        for binding in bindings:
            self._drop_binding(binding, auto_delete=False)
        if q.exclusive_owner is not None:
            q.exclusive_owner.exclusive_queues.pop(q.name, None)
        self._routes.clear()
        if q.durable:  # auto-delete and exclusive-owner deletions come through here too
            # Once gone from the definitions (see _drop_binding), and before its messages are
            # released: the store may delete their segments at once, and a crash must not leave
            # the queue on disk without the messages it was confirmed to hold.
            self.definitions.record(defs.delete_queue(self.name, q))
        q.drop_all()
        for consumer in list(q.consumers):
            consumer.channel.cancelled_by_broker(consumer)
        q.consumers.clear()
        for binding in bindings:
            self._auto_delete(binding.source)
        return count

    def purge_queue(self, session: Session | None, name: str) -> int:
        return self.queue(name, session).purge()

    # ----------------------------------------------------------------------------- bindings

    def bind_queue(
        self, session: Session | None, queue: str, exchange: str, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        q = self.queue(queue, session)
        self._bind(self._bindable_exchange(exchange), q, routing_key, arguments)

    def unbind_queue(
        self, session: Session | None, queue: str, exchange: str, routing_key: str, arguments: Mapping[str, Any]
    ) -> None:
        q = self.queue(queue, session)
        self._unbind(self._bindable_exchange(exchange), q, routing_key, arguments)

    def bind_exchange(self, destination: str, source: str, routing_key: str, arguments: Mapping[str, Any]) -> None:
        dest = self._bindable_exchange(destination)
        self._bind(self._bindable_exchange(source), dest, routing_key, arguments)

    def unbind_exchange(self, destination: str, source: str, routing_key: str, arguments: Mapping[str, Any]) -> None:
        dest = self._bindable_exchange(destination)
        self._unbind(self._bindable_exchange(source), dest, routing_key, arguments)

    def _bindable_exchange(self, name: str) -> Exchange:
        if name == "":
            raise errors.access_refused("operation not permitted on the default exchange")
        return self.exchange(name)

    def _bind(self, ex: Exchange, dest: Queue | Exchange, routing_key: str, arguments: Mapping[str, Any]) -> None:
        if isinstance(ex, HeadersExchange):
            ex.validate_arguments(arguments)
        binding = Binding(ex, dest, routing_key, arguments)
        added = ex.add_binding(binding)
        if added and isinstance(dest, Queue):
            dest.bindings[_queue_side_key(binding)] = binding
        self._routes.clear()
        if added and defs.is_durable_binding(binding):  # RabbitMQ keeps a binding only if both ends are durable
            self.definitions.record(defs.binding("bind", self.name, binding))

    def _unbind(self, ex: Exchange, dest: Queue | Exchange, routing_key: str, arguments: Mapping[str, Any]) -> None:
        key = Binding(ex, dest, routing_key, arguments).key
        binding = ex.bindings.get(key)
        if binding is not None:
            self._drop_binding(binding, record=True)

    def _drop_binding(self, binding: Binding, auto_delete: bool = True, record: bool = False) -> None:
        """A deletion is recorded once applied and before what it causes (auto-deletions): the
        journal may compact inside ``record()``, writing a snapshot of the live definitions, and
        that snapshot must already show the recorded command applied, and nothing half done."""
        source = binding.source
        source.remove_binding(binding.key)
        if isinstance(binding.destination, Queue):
            binding.destination.bindings.pop(_queue_side_key(binding), None)
        self._routes.clear()
        if record and defs.is_durable_binding(binding):
            self.definitions.record(defs.binding("unbind", self.name, binding))
        if auto_delete:
            self._auto_delete(source)

    def _auto_delete(self, source: Exchange) -> None:
        if source.auto_delete and not source.bindings and source.name in self.exchanges:
            if self.replaying:
                return  # an auto-deletion is a command of its own in the journal (see core.definitions)
            self._remove_exchange(source)

    # ------------------------------------------------------------------------------ routing

    def route(self, exchange: str, routing_key: str, message: Message) -> list[Queue]:
        """The queues a message published to ``exchange`` with ``routing_key`` goes to."""
        cached = self._routes.get((exchange, routing_key))
        if cached is not None:
            return cached
        if exchange == "":
            q = self.queues.get(routing_key)
            return [q] if q is not None else []
        ex = self.exchange(exchange)
        if ex.internal:
            raise errors.access_refused(f"cannot publish to internal exchange '{exchange}' {self._where()}")
        queues: dict[Queue, None] = {}
        cacheable = self._route_into(ex, routing_key, message, queues, set())
        result = list(queues)
        if cacheable:
            if len(self._routes) >= ROUTE_CACHE_LIMIT:
                self._routes.clear()
            self._routes[(exchange, routing_key)] = result
        return result

    def _route_into(
        self, ex: Exchange, routing_key: str, message: Message, out: dict[Queue, None], seen: set[str]
    ) -> bool:
        """Route through ``ex`` and exchanges bound to it; False if the result depends on the message."""
        seen.add(ex.name)
        cacheable = not ex.decodes_headers
        matched = False
        for dest in ex.route(routing_key, message):
            matched = True
            if isinstance(dest, Queue):
                out[dest] = None
            elif dest.name not in seen:
                cacheable &= self._route_into(dest, routing_key, message, out, seen)
        # RabbitMQ consults the AE only when ``ex`` matched no binding at all (a matched exchange that
        # routes nowhere, or a queue already reached by another path, still counts as a match).
        if not matched and ex.alternate_exchange and ex.alternate_exchange not in seen:
            ae = self.exchanges.get(ex.alternate_exchange)
            if ae is not None:
                cacheable &= self._route_into(ae, routing_key, message, out, seen)
        return cacheable
