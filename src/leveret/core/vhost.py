"""A virtual host: its exchanges, queues and bindings, and routing.

Every definition change (declare, delete, bind, unbind, purge) is a method here, whichever door asks
for it: AMQP, and later the HTTP API and the definitions journal replayed on boot. Error texts follow
RabbitMQ's so clients that log them read the same.

Routing results are cached per (exchange, routing key) until any binding, exchange or queue changes;
paths through a headers exchange are not cached (they depend on the message).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import definitions as defs
from . import errors
from . import policies as pol
from .clock import Clock
from .exchange import EXCHANGE_TYPES, Binding, Exchange, HeadersExchange
from .message import Message
from .names import generated_queue_name
from .ports import DefinitionsLog, NullDefinitionsLog
from .priority_queue import PriorityQueue
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
REPLY_TO = "amq.rabbitmq.reply-to"
REPLY_TO_PREFIX = REPLY_TO + "."


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
    def __init__(self, name: str = "/", uids: defs.QueueUids | None = None, clock: Clock | None = None) -> None:
        self.name = name
        self.clock = clock or Clock()
        self.policies: dict[str, pol.Policy] = {}
        self.reply_queues: dict[str, Queue] = {}  # direct reply-to: hidden queues by their reply name
        self._timers: list[tuple[float, int, Queue]] = []
        self._timer_seq = itertools.count()
        self.description = ""
        self.tags: tuple[str, ...] = ()
        self.limits: dict[str, int] = {}  # RabbitMQ's vhost limits: max-connections, max-queues
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        # (exchange, routing key) -> (exchange, queues, 1 if any queue else 0): the flow counters' inputs
        self._routes: dict[tuple[str, str], tuple[Exchange, list[Queue], int]] = {}
        # Durable definition changes are recorded here (core.definitions); off while replaying.
        self.definitions: DefinitionsLog = NullDefinitionsLog()
        self.replaying = False
        self.uids = uids or defs.QueueUids()
        self.store: MessageStore | None = None  # keeps persistent messages of durable queues
        self.exchanges[""] = self._default_exchange = EXCHANGE_TYPES["direct"]("", durable=True)
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
        if self.policies:
            ex.configure(pol.select(self.policies.values(), "exchange", name))
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
            reply = self.reply_queues.get(name)
            if reply is not None:
                return reply
            found = self.queue(name, session)
            found.touch()  # as RabbitMQ: a passive declare counts as use for x-expires
            return found
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
            existing.touch()
            return existing
        self._validate_queue(name, durable, exclusive, auto_delete, args)
        cls = PriorityQueue if args.get("x-max-priority") else Queue
        q = cls(name, self.name, durable, session if exclusive else None, auto_delete, args)
        q.store = self.store
        q.owner = self
        q.last_used = self.clock.now()
        q.configure(pol.select(self.policies.values(), "queue", name, q.queue_type) if self.policies else None)
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

    def route(self, exchange: str, routing_key: str, message: Message, internal_ok: bool = False) -> list[Queue]:
        """The queues a message published to ``exchange`` with ``routing_key`` goes to (clients may
        not publish to an internal exchange; the broker may, when dead-lettering)."""
        cached = self._routes.get((exchange, routing_key))
        if cached is not None:
            ex, result, routed = cached
            ex.stats_in += 1  # the flow metrics' exchange in/out counters: two adds
            ex.stats_out += routed
            return result
        if exchange == "":
            default = self._default_exchange
            default.stats_in += 1
            q = self.queues.get(routing_key)
            if q is not None:  # cached until a queue goes (a new queue was never a cached miss)
                if len(self._routes) >= ROUTE_CACHE_LIMIT:
                    self._routes.clear()
                route = self._routes[(exchange, routing_key)] = (default, [q], 1)
                default.stats_out += 1
                return route[1]
            if routing_key.startswith(REPLY_TO_PREFIX):
                q = self.reply_queues.get(routing_key)
            default.stats_out += q is not None
            return [q] if q is not None else []
        ex = self.exchange(exchange)
        ex.stats_in += 1
        if ex.internal and not internal_ok:
            raise errors.access_refused(f"cannot publish to internal exchange '{exchange}' {self._where()}")
        queues: dict[Queue, None] = {}
        cacheable = self._route_into(ex, routing_key, message, queues, set())
        result = list(queues)
        ex.stats_out += bool(result)
        if cacheable and not ex.internal:  # an internal exchange's route must meet the check above
            if len(self._routes) >= ROUTE_CACHE_LIMIT:
                self._routes.clear()
            self._routes[(exchange, routing_key)] = (ex, result, 1 if result else 0)
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

    # ------------------------------------------------------------------ enqueueing, dead letters

    def publish_to(self, queues: list[Queue], message: Message) -> bool:
        """Enqueue a routed message: stored once for all its durable queues if persistent (under
        memory pressure a transient message bound for a deep queue is written too, never fsynced
        nor recovered, so that its body can page out). Returns True if a queue refused it
        (``x-overflow`` reject-publish or reject-publish-dlx at its limit)."""
        refused = False
        for q in queues:
            if q.refusing and q.rejects(message):
                queues = self._refuse(queues, message)
                refused = True
                break
        store = self.store
        if store is not None and queues:
            if message.persistent:
                durable = queues if len(queues) == 1 and queues[0].durable else [q for q in queues if q.durable]
                if durable:
                    timed = message.ttl >= 0
                    for q in durable:
                        timed = timed or q.ttl is not None
                    if timed:
                        message.enqueued_at = self.clock.now()  # stored: the TTL survives a restart
                    store.publish(message, durable)
            elif store.paging and any(q.message_count() >= q.page_after for q in queues):
                store.page(message, queues)
        for q in queues:
            q.enqueue(message)
        return refused

    def _refuse(self, queues: list[Queue], message: Message) -> list[Queue]:
        """The queues that take ``message``; the others (at their limit) drop it, or dead-letter it
        with ``reject-publish-dlx``."""
        kept = []
        for q in queues:
            if not q.rejects(message):
                kept.append(q)
                continue
            q.stats_dropped += 1
            if q.overflow == "reject-publish-dlx" and q.dead_letter_exchange is not None:
                q.stats_dead_lettered += 1
                self.dead_letter(q, message, "maxlen")
        return kept

    def dead_letter(self, queue: Queue, message: Message, reason: str) -> None:
        """Republish ``message`` to ``queue``'s dead-letter exchange with the ``x-death`` history
        RabbitMQ writes: one entry per (queue, reason), most recent first, with a count; the
        ``x-first-death-*`` headers; the original expiration kept in the entry and removed from the
        message. A cycle (the message would come back to a queue it died in, with no rejection on
        the way) drops it for that queue, as RabbitMQ does."""
        dlx = queue.dead_letter_exchange
        if dlx is None or message.body is None:
            return
        ex = self.exchanges.get(dlx)
        if ex is None:
            return  # RabbitMQ drops it too (and logs)
        codec = message.codec
        fields = codec.decode(message.properties)
        headers = dict(fields.get("headers") or {})
        cc = headers.get("CC")
        routing_keys = [message.routing_key] + ([k for k in cc if isinstance(k, str)] if isinstance(cc, list) else [])
        headers.pop("BCC", None)
        deaths = [d for d in headers.get("x-death") or [] if isinstance(d, Mapping)]
        for i, death in enumerate(deaths):
            if death.get("queue") == queue.name and death.get("reason") == reason:
                entry = dict(death)
                entry["count"] = int(entry.get("count") or 0) + 1
                deaths = [entry, *deaths[:i], *deaths[i + 1 :]]
                break
        else:
            entry = {
                "count": 1,
                "reason": reason,
                "queue": queue.name,
                "time": datetime.fromtimestamp(int(self.clock.now()), tz=UTC),
                "exchange": message.exchange,
                "routing-keys": routing_keys,
            }
            if "expiration" in fields:
                entry["original-expiration"] = fields["expiration"]
            deaths = [entry, *deaths]
        headers["x-death"] = deaths
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-queue", queue.name)
        headers.setdefault("x-first-death-exchange", message.exchange)
        fields["headers"] = headers
        fields.pop("expiration", None)
        routing_key = queue.dead_letter_routing_key
        copy = Message(
            dlx,
            routing_key if routing_key is not None else message.routing_key,
            codec.encode(fields),
            message.body,
            message.persistent,
            b"",
            codec,
        )
        copy.priority = message.priority
        targets: dict[Queue, None] = {}
        for key in [routing_key] if routing_key is not None else routing_keys:
            for q in self.route(dlx, key, copy, internal_ok=True):
                targets[q] = None
        if reason != "rejected":
            targets = {q: None for q in targets if not _is_cycle(q.name, deaths)}
        if targets:
            self.publish_to(list(targets), copy)

    # ---------------------------------------------------------------------------------- time

    def now(self) -> float:
        return self.clock.now()

    def schedule(self, queue: Queue, at: float) -> None:
        heapq.heappush(self._timers, (at, next(self._timer_seq), queue))

    def run_timers(self, now: float) -> None:
        """Fire the queue timers that are due (message TTL, queue expiry)."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, _, q = heapq.heappop(timers)
            q.on_timer(at, now)

    def next_timer(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def expire_queue(self, queue: Queue) -> None:
        """``x-expires``: the queue went unused for its whole expiry period."""
        if not queue.deleted and self.queues.get(queue.name) is queue:
            self.remove_queue(queue)

    # ------------------------------------------------------------------------------ policies

    def set_policy(
        self, name: str, pattern: str, definition: Mapping[str, Any], priority: int = 0, apply_to: str = "all"
    ) -> pol.Policy:
        policy = pol.make_policy(name, pattern, definition, priority, apply_to)
        self.policies[name] = policy
        self._apply_policies()
        self.definitions.record(defs.set_policy(self.name, policy))
        return policy

    def clear_policy(self, name: str) -> None:
        if self.policies.pop(name, None) is None:
            raise errors.not_found(f"no policy '{name}' {self._where()}")
        self._apply_policies()
        self.definitions.record(defs.clear_policy(self.name, name))

    def _apply_policies(self) -> None:
        """Policies changed: every queue and exchange takes the one that now applies to it."""
        policies = list(self.policies.values())
        for q in list(self.queues.values()):
            q.configure(pol.select(policies, "queue", q.name, q.queue_type))
        for ex in self.exchanges.values():
            ex.configure(pol.select(policies, "exchange", ex.name))
        self._routes.clear()


def _is_cycle(queue: str, deaths: list[Any]) -> bool:
    """RabbitMQ's rule (rabbit_dead_letter:is_cycle): ``queue`` already appears in the history and
    every death up to and including that one was automatic (no ``rejected``)."""
    for death in deaths:
        if death.get("reason") == "rejected":
            return False
        if death.get("queue") == queue:
            return True
    return False
