"""A queue: ready messages in FIFO order, its consumers, and the dispatch loop.

Ready messages live in a deque; a message that comes back (nack/reject with requeue, recover,
channel close) goes into a heap keyed by the position it was first taken from, and the heap is
drained before the deque. That puts requeued messages back at their original position, in order
(RabbitMQ's behaviour), without touching the deque. Positions (``seq``) are handed out when a message
leaves the queue the first time, so they are monotonic in FIFO order.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .message import Message

if TYPE_CHECKING:
    from .consumer import Consumer
    from .ports import MessageStore
    from .session import Session


PAGE_AFTER = 2048  # stored messages deeper than this in a queue keep only their index in memory


class Queue:
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
        self.bindings: dict[Any, Any] = {}  # Binding.key -> Binding, for unbinding on delete
        self._ready: deque[Message] = deque()
        self._requeued: list[tuple[int, Message]] = []
        self._next_seq = 0
        self._rr = 0
        self.uid = 0  # unique, never reused; names the queue in the message store
        self.store: MessageStore | None = None  # loads paged-out bodies; records acks if durable
        self.page_after = PAGE_AFTER
        # Counters for the flow model (published, delivered, acked).
        self.stats_published = 0
        self.stats_delivered = 0
        self.stats_acked = 0

    @property
    def exclusive(self) -> bool:
        return self.exclusive_owner is not None

    def message_count(self) -> int:
        return len(self._ready) + len(self._requeued)

    def consumer_count(self) -> int:
        return len(self.consumers)

    # --------------------------------------------------------------------------- messages in

    def enqueue(self, message: Message) -> None:
        ready = self._ready
        ready.append(message)
        self.stats_published += 1
        if message.location and len(ready) > self.page_after:
            message.page_out()  # deep in a backlog: the body waits on disk, not in RAM
        if self.consumers:
            self.dispatch()

    def restore(self, messages: Iterable[Message]) -> None:
        """Messages recovered from disk after a restart, in their original order."""
        self._ready.extend(messages)

    def _load(self, message: Message) -> None:
        assert self.store is not None, "only stored messages are paged out"
        self.store.load(message)

    def requeue(self, seq: int, message: Message) -> None:
        """Put a delivered message back at its original position (redelivered from now on)."""
        heapq.heappush(self._requeued, (seq, message))

    # -------------------------------------------------------------------------- messages out

    def pop(self) -> tuple[Message, int, bool] | None:
        """Take the head message: (message, position, redelivered), or None when empty."""
        if self._requeued:
            seq, message = heapq.heappop(self._requeued)
            if message.body is None:
                self._load(message)
            return message, seq, True
        if self._ready:
            seq = self._next_seq
            self._next_seq = seq + 1
            message = self._ready.popleft()
            if message.body is None:
                self._load(message)
            return message, seq, message.recovered
        return None

    def purge(self) -> int:
        count = self.message_count()
        self._release(record=True)
        return count

    def drop_all(self) -> None:
        """The queue is being deleted: release its messages from the store without records."""
        self._release(record=False)

    def _release(self, record: bool) -> None:
        if self.store is not None:
            for message in self._ready:
                if message.location:
                    self.release(message, record)
            for _seq, message in self._requeued:
                if message.location:
                    self.release(message, record)
        self._ready.clear()
        self._requeued.clear()

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

    def dispatch(self) -> None:
        """Hand ready messages to consumers with credit, round robin, until one side runs out."""
        consumers = self.consumers
        ready = self._ready
        if len(consumers) == 1 and not self._requeued:
            consumer = consumers[0]
            deliver = consumer.channel.deliver
            while ready and consumer.can_take():
                seq = self._next_seq
                self._next_seq = seq + 1
                self.stats_delivered += 1
                message = ready.popleft()
                if message.body is None:
                    self._load(message)
                deliver(consumer, self, message, seq, message.recovered)
            return
        idle = 0
        while consumers and (ready or self._requeued):
            n = len(consumers)
            consumer = consumers[self._rr % n]
            self._rr += 1
            if not consumer.can_take():
                idle += 1
                if idle >= n:
                    return
                continue
            idle = 0
            item = self.pop()
            assert item is not None
            message, seq, redelivered = item
            self.stats_delivered += 1
            consumer.channel.deliver(consumer, self, message, seq, redelivered)

    # ------------------------------------------------------------------------------ consumers

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        self.had_consumer = True
        if consumer.exclusive:
            self.exclusive_consumer = consumer

    def remove_consumer(self, consumer: Consumer) -> None:
        try:
            self.consumers.remove(consumer)
        except ValueError:
            return
        if self.exclusive_consumer is consumer:
            self.exclusive_consumer = None

    def should_auto_delete(self) -> bool:
        """RabbitMQ deletes an auto-delete queue when its last consumer goes (if it ever had one)."""
        return self.auto_delete and self.had_consumer and not self.consumers

    def __repr__(self) -> str:
        return f"Queue({self.vhost!r}, {self.name!r})"
