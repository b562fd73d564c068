"""A queue: ready messages in FIFO order, its consumers, and the dispatch loop.

Ready messages live in a deque; a message that comes back (nack/reject with requeue, recover,
channel close) goes into a heap keyed by the position it was first taken from, and the heap is
drained before the deque. That puts requeued messages back at their original position, in order
(RabbitMQ's behaviour), without touching the deque. Positions (``seq``) are handed out when a message
leaves the queue the first time, so they are monotonic in FIFO order.

A queue with none of the optional semantics (TTL, expiry, length limits, delivery limits, priorities,
a single active consumer, consumer priorities) is *plain* and takes the short paths in ``enqueue`` and
``dispatch``; anything else goes through the general path, which checks the head for expiry, applies
limits and picks consumers by priority. The queue's settings are resolved from its arguments and the
policy that applies to it (``configure``), as RabbitMQ resolves them: for numeric limits the lower of
the two wins, for everything else the argument wins.

Ready entries are compact where they can be (a plain queue's backlog costs tens of bytes per message,
not a ``Message`` object each): a transient message that waits deeper than ``COMPACT_AFTER`` is kept
as its body alone (``bytes``) when it arrived like the first message compacted since the queue was
last empty (same exchange, routing key, properties: the queue's *template*), and a stored message
deeper than ``PAGE_AFTER`` as its log position alone (``int``;
negative for a transient message paged out under memory pressure). Messages restored after a restart
are positions from the start. ``_materialize`` turns an entry back into a ``Message`` when it leaves.

Time comes from the queue's owner (the vhost): TTL deadlines are checked lazily at the head when
messages leave, and by timers the owner runs (``on_timer``) so that expired messages leave an idle
queue too. Messages that leave without being acknowledged (expired, dropped over a limit, rejected
without requeue, over the delivery limit) go to the owner's ``dead_letter`` when the queue has a
dead-letter exchange.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .message import NO_PROPERTIES, Message, PropertiesCodec

if TYPE_CHECKING:
    from .consumer import Consumer
    from .ports import MessageStore
    from .session import Session


PAGE_AFTER = 2048  # stored messages deeper than this in a queue keep only their index in memory
COMPACT_AFTER = 65536  # transient messages deeper than this are kept as their body alone (see above)
QUORUM_DELIVERY_LIMIT = 20  # RabbitMQ 4.0's default for quorum queues (3.10 had none)
DELIVERY_COUNT = "x-delivery-count"


class QueueOwner(Protocol):
    """What a queue needs from the vhost that holds it."""

    def now(self) -> float: ...

    def dead_letter(self, queue: Queue, message: Message, reason: str) -> None: ...

    def schedule(self, queue: Queue, at: float) -> None: ...

    def expire_queue(self, queue: Queue) -> None: ...


class _Detached:
    """The owner of a queue outside any vhost (unit tests): wall-clock time, nothing else."""

    def now(self) -> float:
        return time.time()

    def dead_letter(self, queue: Queue, message: Message, reason: str) -> None:
        pass

    def schedule(self, queue: Queue, at: float) -> None:
        pass

    def expire_queue(self, queue: Queue) -> None:
        pass


DETACHED: QueueOwner = _Detached()


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _lowest(*values: Any) -> int | None:
    found = [v for v in map(_int, values) if v is not None]
    return min(found) if found else None


class Queue:
    max_priority = 0  # a PriorityQueue's levels above 0

    def __init__(
        self,
        name: str,
        vhost: str = "/",
        durable: bool = False,
        exclusive_owner: Session | None = None,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.vhost = vhost
        self.durable = durable
        self.exclusive_owner = exclusive_owner
        self.auto_delete = auto_delete
        self.arguments: dict[str, Any] = dict(arguments or {})
        self.queue_type = str(self.arguments.get("x-queue-type", "classic"))
        self.consumers: list[Consumer] = []
        self.exclusive_consumer: Consumer | None = None
        self.had_consumer = False
        self.deleted = False
        self.unacked = 0
        self.ready_bytes = 0  # body bytes of the ready messages
        self.bindings: dict[Any, Any] = {}  # Binding.key -> Binding, for unbinding on delete
        self._ready: deque[Any] = deque()  # Message | bytes (body, with _template) | int (position)
        self._template: tuple[str, str, bytes, bytes, PropertiesCodec] | None = None
        self._restored = 0  # position entries at the head restored from disk (delivered as redelivered)
        self.codec: PropertiesCodec = NO_PROPERTIES  # for messages rebuilt from positions
        self._requeued: list[tuple[Any, ...]] = []
        self._next_seq = 0
        self._rr = 0
        self.uid = 0  # unique, never reused; names the queue in the message store
        self.store: MessageStore | None = None  # loads paged-out bodies; records acks if durable
        self.owner: QueueOwner = DETACHED
        self.page_after = PAGE_AFTER
        # Counters for the flow model (published, delivered, acked).
        self.stats_published = 0
        self.stats_delivered = 0
        self.stats_acked = 0
        self.stats_dead_lettered = 0
        self.stats_expired = 0
        self.stats_dropped = 0  # over a length limit (drop-head) or refused (reject-publish)
        # Settings (``configure``); a plain queue has none of them.
        self.policy: Any = None  # the policy that applies (core.policies.Policy), if any
        self.ttl: int | None = None  # ms
        self.expires: int | None = None  # ms
        self.max_length: int | None = None
        self.max_length_bytes: int | None = None
        self.overflow = "drop-head"
        self.refusing = False  # reject-publish(-dlx) with a length limit: publishes may be refused
        self.dead_letter_exchange: str | None = None
        self.dead_letter_routing_key: str | None = None
        self.delivery_limit: int | None = None
        self.counts_deliveries = False
        self.single_active = False
        self.consumer_timeout: int | None = None  # ms; None = the broker's default
        self.last_used = 0.0  # for x-expires: last consume, cancel, get or redeclare
        self._delivery_counts: dict[int, int] = {}  # seq -> failed deliveries (quorum, delivery limit)
        self._consumer_priorities = False
        self._timed = False  # TTL applies to some messages, or the queue itself expires
        self._plain = True
        self._timer_at = 0.0
        self._init_ready()
        self.configure()

    # ------------------------------------------------------------------------------ settings

    def _init_ready(self) -> None:
        """Subclasses with another ready structure set it up here (before ``configure`` runs)."""

    def configure(self, policy: Any = None) -> None:
        """Resolve the queue's settings from its arguments and ``policy`` (a ``Policy`` or None)."""
        self.policy = policy
        args = self.arguments
        pol: Mapping[str, Any] = policy.definition if policy is not None else {}
        self.ttl = _lowest(args.get("x-message-ttl"), pol.get("message-ttl"))
        self.expires = _lowest(args.get("x-expires"), pol.get("expires"))
        self.max_length = _lowest(args.get("x-max-length"), pol.get("max-length"))
        self.max_length_bytes = _lowest(args.get("x-max-length-bytes"), pol.get("max-length-bytes"))
        self.overflow = str(args.get("x-overflow", pol.get("overflow", "drop-head")))
        self.refusing = self.overflow != "drop-head" and (
            self.max_length is not None or self.max_length_bytes is not None
        )
        dlx = args.get("x-dead-letter-exchange", pol.get("dead-letter-exchange"))
        self.dead_letter_exchange = dlx if isinstance(dlx, str) else None
        dlrk = args.get("x-dead-letter-routing-key", pol.get("dead-letter-routing-key"))
        self.dead_letter_routing_key = dlrk if isinstance(dlrk, str) else None
        limit = _lowest(args.get("x-delivery-limit"), pol.get("delivery-limit"))
        if limit is None and self.queue_type == "quorum":
            limit = QUORUM_DELIVERY_LIMIT
        self.delivery_limit = limit if limit is not None and limit >= 0 else None
        self.counts_deliveries = self.queue_type == "quorum" or self.delivery_limit is not None
        self.single_active = args.get("x-single-active-consumer") is True
        self.consumer_timeout = _lowest(args.get("x-consumer-timeout"), pol.get("consumer-timeout"))
        self._timed = self.ttl is not None or self.expires is not None
        self._timer_at = 0.0  # any timer already set is superseded (on_timer ignores it)
        self._replan()
        if not self._plain:
            self._enforce_limits()
            self._schedule()

    def _replan(self) -> None:
        self._plain = not (
            self._timed
            or self.max_length is not None
            or self.max_length_bytes is not None
            or self.counts_deliveries
            or self.single_active
            or self.max_priority
            or self._consumer_priorities
        )

    @property
    def exclusive(self) -> bool:
        return self.exclusive_owner is not None

    def message_count(self) -> int:
        return len(self._ready) + len(self._requeued)

    def consumer_count(self) -> int:
        return len(self.consumers)

    # --------------------------------------------------------------------------- messages in

    def enqueue(self, message: Message) -> None:
        if not self._plain or message.ttl >= 0:
            self._enqueue_general(message)
            return
        ready = self._ready
        self.stats_published += 1
        consumers = self.consumers
        if not ready and len(consumers) == 1 and not self._requeued:
            consumer = consumers[0]
            if consumer.can_take():  # the usual case of a queue that keeps up: straight through
                seq = self._next_seq
                self._next_seq = seq + 1
                self.stats_delivered += 1
                consumer.channel.deliver(consumer, self, message, seq, message.recovered)
                return
        ready.append(message)
        self.ready_bytes += message.size
        if consumers:
            self.dispatch()
        if ready and ready[-1] is message:  # it waits: keep it compact
            if message.location:
                if len(ready) > self.page_after:  # deep in a backlog: the body waits on disk, not in RAM
                    self.codec = message.codec
                    self.ready_bytes -= message.size
                    ready[-1] = message.location if message.persistent else -message.location
            elif len(ready) <= COMPACT_AFTER:
                pass  # shallow: rebuilding the object when it leaves would cost more than it saves
            elif self._template is not None:
                ex, rk, props, wire, _ = self._template
                same = message.properties == props and message.routing_key == rk and message.exchange == ex
                if same and message.wire == wire and not message.recovered:
                    ready[-1] = message.body
            elif message.body is not None and not message.recovered:
                self._template = (
                    message.exchange,
                    message.routing_key,
                    message.properties,
                    message.wire,
                    message.codec,
                )
                ready[-1] = message.body

    def _materialize(self, entry: bytes | int) -> Message:
        """A ``Message`` for a compact ready entry (see the module's docstring)."""
        if type(entry) is bytes:
            assert self._template is not None
            ex, rk, props, wire, codec = self._template
            return Message(ex, rk, props, entry, False, wire, codec)
        assert isinstance(entry, int) and self.store is not None
        message = Message("", "", b"", None, entry > 0, b"", self.codec)
        message.location = abs(entry)
        if self._restored:
            self._restored -= 1
            message.recovered = True
        self.store.load(message)  # its size stays 0: it left ready_bytes when it became a position
        return message

    def _enqueue_general(self, message: Message) -> None:
        if message.ttl >= 0 and not self._timed:
            self._timed = True  # the queue checks its head for expiry from now on
            self._plain = False
        now = self.owner.now()
        if self._timed and not message.enqueued_at:  # set already if stored (VirtualHost.publish_to)
            message.enqueued_at = now
        self._push(message)
        self.ready_bytes += message.size
        self.stats_published += 1
        if message.location and self.message_count() > self.page_after:
            message.page_out()
        if self.consumers:
            self.dispatch(now)  # at the enqueue time: a TTL of 0 still reaches a waiting consumer
        if self._timed:
            self._expire(now, inclusive=True)  # e.g. an expiration of "0" that no consumer took
        self._enforce_limits()
        self._schedule()

    def rejects(self, message: Message) -> bool:
        """With ``x-overflow`` reject-publish(-dlx): True if ``message`` would take the queue over a
        length limit (then it is refused, not enqueued)."""
        if not self.refusing:
            return False
        if self.max_length is not None and self.message_count() >= self.max_length:
            return True
        return self.max_length_bytes is not None and self.ready_bytes + message.size > self.max_length_bytes

    def restore(self, positions: Iterable[int], codec: PropertiesCodec) -> None:
        """The stored messages this queue held at the last stop, by log position, in their original
        order; delivered as redelivered. A plain queue keeps them as positions until they leave."""
        self.codec = codec
        store = self.store
        timed = store.recovered_timed if store is not None else set()
        plain = self._plain and not self.max_priority
        now = self.owner.now()
        for position in positions:
            if plain and position not in timed:
                self._ready.append(position)
                self._restored += 1
                continue
            # A general-path queue, or a message with an expiration of its own: loaded once now.
            message = Message("", "", b"", None, True, b"", codec)
            message.location = position
            message.recovered = True
            self._restore_one(message, now)
        self._schedule()

    def _restore_one(self, message: Message, now: float) -> None:
        """A recovered message on the general path: loaded once for its priority, TTL and size."""
        if self.store is not None and message.body is None:
            self.store.load(message)  # its priority, expiration and size are in there
            peek = message.codec.peek(message.properties)
            if peek is not None:
                message.priority = peek[1] or 0
                if peek[0] is not None and peek[0].isdigit():
                    message.ttl = int(peek[0])
                    if not self._timed:
                        self._timed = True
                        self._plain = False
            message.size = len(message.body or b"")
        if not message.enqueued_at:  # a PUBLISH_AT record gave it back; else TTL counts from now
            message.enqueued_at = now
        self._push(message)
        self.ready_bytes += message.size
        if self.message_count() > self.page_after:
            message.page_out()

    def _load(self, message: Message) -> None:
        assert self.store is not None, "only stored messages are paged out"
        self.store.load(message)

    def requeue(self, seq: int, message: Message) -> None:
        """Put a delivered message back at its original position (redelivered from now on); past the
        delivery limit it is dead-lettered (or dropped) instead."""
        if self.counts_deliveries:
            count = self._delivery_counts.get(seq, 0) + 1
            if self.delivery_limit is not None and count > self.delivery_limit:
                self._delivery_counts.pop(seq, None)
                self.discard(message, "delivery_limit")
                return
            self._delivery_counts[seq] = count
        self._push_requeued(seq, message)
        self.ready_bytes += message.size
        if not self._plain:
            self._schedule()

    def _push(self, message: Message) -> None:
        self._ready.append(message)

    def _push_requeued(self, seq: int, message: Message) -> None:
        heapq.heappush(self._requeued, (seq, message))

    # -------------------------------------------------------------------------- messages out

    def _peek(self) -> Message | None:
        if self._requeued:
            message: Message = self._requeued[0][-1]
            return message
        if not self._ready:
            return None
        head = self._ready[0]
        if type(head) is not Message:
            head = self._ready[0] = self._materialize(head)
        return head

    def _take(self) -> tuple[Message, int, bool] | None:
        """The head message, (message, position, redelivered), without any checks."""
        if self._requeued:
            entry = heapq.heappop(self._requeued)
            return entry[-1], entry[-2], True
        if self._ready:
            seq = self._next_seq
            self._next_seq = seq + 1
            message = self._ready.popleft()
            if type(message) is not Message:
                message = self._materialize(message)
            return message, seq, message.recovered
        return None

    def pop(self, now: float | None = None) -> tuple[Message, int, bool] | None:
        """Take the head message: (message, position, redelivered), or None when empty."""
        if self._timed:
            self._expire(self.owner.now() if now is None else now)
        item = self._take()
        if item is None:
            return None
        message, seq, redelivered = item
        self.ready_bytes -= message.size
        if message.body is None:
            self._load(message)
        if redelivered and self.counts_deliveries:
            count = self._delivery_counts.get(seq, 0)
            if count:
                message = self._with_delivery_count(message, count)
        return message, seq, redelivered

    def _with_delivery_count(self, message: Message, count: int) -> Message:
        """The message as redelivered by a quorum queue: with an ``x-delivery-count`` header."""
        fields = message.codec.decode(message.properties)
        headers = dict(fields.get("headers") or {})
        headers[DELIVERY_COUNT] = count
        fields["headers"] = headers
        return message.copy(message.codec.encode(fields))

    def _deadline(self, message: Message) -> float | None:
        ttl = self.ttl
        if message.ttl >= 0 and (ttl is None or message.ttl < ttl):
            ttl = message.ttl
        return None if ttl is None else message.enqueued_at + ttl / 1000.0

    def _expire(self, now: float, inclusive: bool = False) -> None:
        """Dead-letter (or drop) the messages at the head whose deadline has passed (``inclusive``:
        or is now)."""
        while True:
            head = self._peek()
            if head is None:
                return
            deadline = self._deadline(head)
            if deadline is None or deadline > now or (deadline == now and not inclusive):
                return
            item = self._take()
            assert item is not None
            message, seq, _ = item
            self.ready_bytes -= message.size
            self._delivery_counts.pop(seq, None)
            self.stats_expired += 1
            self.discard(message, "expired")

    def _enforce_limits(self) -> None:
        """drop-head: drop (dead-letter) from the head until the queue is within its limits."""
        max_length, max_bytes = self.max_length, self.max_length_bytes
        if max_length is None and max_bytes is None:
            return
        while (max_length is not None and self.message_count() > max_length) or (
            max_bytes is not None and self.ready_bytes > max_bytes
        ):
            item = self._take()
            if item is None:
                return
            message, seq, _ = item
            self.ready_bytes -= message.size
            self._delivery_counts.pop(seq, None)
            self.stats_dropped += 1
            self.discard(message, "maxlen")

    def discard(self, message: Message, reason: str) -> None:
        """``message`` leaves the queue unacknowledged (rejected, expired, maxlen, delivery_limit):
        dead-lettered if the queue has a dead-letter exchange, then released. The copy is stored
        before the release is recorded, so a crash in between can only duplicate it."""
        if self.dead_letter_exchange is not None:
            if message.body is None:
                self._load(message)
            self.stats_dead_lettered += 1
            self.owner.dead_letter(self, message, reason)
        self.release(message)

    def settled(self, seq: int) -> None:
        """A delivery from this queue was settled for good (acked, rejected, dropped)."""
        if self._delivery_counts:
            self._delivery_counts.pop(seq, None)

    def purge(self) -> int:
        count = self.message_count()
        self._release(record=True)
        return count

    def drop_all(self) -> None:
        """The queue is being deleted: release its messages from the store without records."""
        self._release(record=False)

    def _messages(self) -> Iterable[Message]:
        """Every ready message, compact entries as index-only messages (for releasing them)."""
        for entry in self._ready:
            if type(entry) is Message:
                yield entry
            elif type(entry) is int:
                message = Message("", "", b"", None, entry > 0)
                message.location = abs(entry)
                yield message
        for requeued in self._requeued:
            yield requeued[-1]

    def _release(self, record: bool) -> None:
        if self.store is not None:
            for message in self._messages():
                if message.location:
                    self.release(message, record)
        self._clear()

    def _clear(self) -> None:
        self._restored = 0
        self._template = None
        self._ready.clear()
        self._requeued.clear()
        self.ready_bytes = 0
        self._delivery_counts = {}

    def release(self, message: Message, record: bool = True) -> None:
        """This queue no longer holds a stored message (acked, dropped, purged, or the queue went).
        A persistent message in a durable queue gets an ack record; a transient message that was
        paged out under memory pressure only gives back its reference (it never survives a restart)."""
        store = self.store
        if store is None or not message.location:
            return
        if not message.persistent:
            store.forget(self, message)
        elif self.durable:
            if record and not self.deleted:
                store.ack(self, message)
            else:
                store.forget(self, message)

    # ------------------------------------------------------------------------------ dispatch

    def dispatch(self, now: float | None = None) -> None:
        """Hand ready messages to consumers with credit until one side runs out: round robin on a
        plain queue; by consumer priority, or to the single active consumer, otherwise."""
        consumers = self.consumers
        ready = self._ready
        if len(consumers) == 1 and not self._requeued and self._plain:
            consumer = consumers[0]
            deliver = consumer.channel.deliver
            while ready and consumer.can_take():
                seq = self._next_seq
                self._next_seq = seq + 1
                self.stats_delivered += 1
                message = ready.popleft()
                if type(message) is not Message:
                    message = self._materialize(message)
                elif message.body is None:
                    self._load(message)
                self.ready_bytes -= message.size
                deliver(consumer, self, message, seq, message.recovered)
            if not ready:
                self._template = None  # no compact entry left: the next backlog may look different
            return
        while consumers and (ready or self._requeued or self.max_priority):
            taker = self._next_consumer()
            if taker is None:
                return
            item = self.pop(now)
            if item is None:
                return
            message, seq, redelivered = item
            self.stats_delivered += 1
            taker.channel.deliver(taker, self, message, seq, redelivered)

    def _next_consumer(self) -> Consumer | None:
        consumers = self.consumers
        if self.single_active:
            first = consumers[0]
            return first if first.can_take() else None
        n = len(consumers)
        if not self._consumer_priorities:
            for k in range(n):
                consumer = consumers[(self._rr + k) % n]
                if consumer.can_take():
                    self._rr += k + 1
                    return consumer
            return None
        # Consumers are kept highest priority first: round robin within the first group with credit.
        i = 0
        while i < n:
            priority = consumers[i].priority
            j = i
            while j < n and consumers[j].priority == priority:
                j += 1
            size = j - i
            for k in range(size):
                consumer = consumers[i + (self._rr + k) % size]
                if consumer.can_take():
                    self._rr += k + 1
                    return consumer
            i = j
        return None

    # -------------------------------------------------------------------------------- timers

    def touch(self) -> None:
        """Used (consume, cancel, get, redeclare): restarts the ``x-expires`` countdown."""
        if self.expires is not None:
            self.last_used = self.owner.now()
            self._schedule()

    def _schedule(self) -> None:
        if not self._timed or self.deleted:
            return
        at = 0.0
        head = self._peek()
        if head is not None:
            deadline = self._deadline(head)
            if deadline is not None:
                at = deadline
        if self.expires is not None and not self.consumers:
            idle_until = self.last_used + self.expires / 1000.0
            at = idle_until if not at else min(at, idle_until)
        if at and (not self._timer_at or at < self._timer_at):
            self._timer_at = at
            self.owner.schedule(self, at)

    def on_timer(self, at: float, now: float) -> None:
        """The owner's timer for ``at`` fired: expire what is due, reschedule."""
        if at != self._timer_at or self.deleted:
            return  # superseded by an earlier timer
        self._timer_at = 0.0
        self._expire(now)
        if self.expires is not None and not self.consumers and now >= self.last_used + self.expires / 1000.0:
            self.owner.expire_queue(self)
            return
        if self.consumers:
            self.dispatch()
        self._schedule()

    # ------------------------------------------------------------------------------ consumers

    def add_consumer(self, consumer: Consumer) -> None:
        if consumer.priority:
            self._consumer_priorities = True
            self._replan()
        if self._consumer_priorities:
            # Highest priority first; equal priorities keep their arrival order.
            at = len(self.consumers)
            while at and self.consumers[at - 1].priority < consumer.priority:
                at -= 1
            self.consumers.insert(at, consumer)
        else:
            self.consumers.append(consumer)
        self.had_consumer = True
        if consumer.exclusive:
            self.exclusive_consumer = consumer
        self.touch()

    def remove_consumer(self, consumer: Consumer) -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        if self.exclusive_consumer is consumer:
            self.exclusive_consumer = None
        self.touch()

    def should_auto_delete(self) -> bool:
        """RabbitMQ deletes an auto-delete queue when its last consumer goes (if it ever had one)."""
        return self.auto_delete and self.had_consumer and not self.consumers

    def __repr__(self) -> str:
        return f"Queue({self.vhost!r}, {self.name!r})"
