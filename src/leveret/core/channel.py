"""A channel's broker-side state: consumers, unacknowledged deliveries, prefetch, transactions.

The door gives each channel a ``DeliverySink``; the core calls it to hand over a delivery or to tell
that the broker cancelled a consumer (queue deleted). Deliveries are recorded in tag order in an
``OrderedDict`` so ``multiple`` acks pop from the front in O(1) per delivery.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from . import errors
from .consumer import Consumer, Delivery
from .message import Message
from .names import generated_consumer_tag
from .queue import Queue
from .vhost import REPLY_TO, REPLY_TO_PREFIX

if TYPE_CHECKING:
    from .session import Session


class DeliverySink(Protocol):
    def deliver(self, consumer: Consumer, delivery_tag: int, redelivered: bool, message: Message) -> None: ...

    def consumer_cancelled(self, consumer: Consumer) -> None: ...

    def channel_failed(self, error: errors.BrokerError) -> None:
        """The broker closes the channel on its own (consumer timeout): tell the client."""
        ...


class Transaction:
    """Publishes and settlements buffered by ``tx.select`` until ``tx.commit``.

    As in RabbitMQ, an ack/nack inside a transaction takes its deliveries out of the channel's
    unacked set at once (so settling a tag twice is refused at once), holds them here until commit,
    and ``tx.rollback`` puts them back. Their prefetch credit comes back only at commit."""

    __slots__ = ("publishes", "settlements")

    def __init__(self) -> None:
        self.publishes: list[tuple[str, str, Message, bool]] = []
        self.settlements: list[tuple[list[Delivery], bool | None]] = []  # (deliveries, requeue; None = ack)

    def held(self) -> list[Delivery]:
        return [d for taken, _ in self.settlements for d in taken]


class Channel:
    def __init__(self, session: Session, number: int, sink: DeliverySink) -> None:
        self.session = session
        self.vhost = session.vhost
        self.number = number
        self.sink = sink
        self.unacked: OrderedDict[int, Delivery] = OrderedDict()
        self.consumer_unacked = 0  # consumer deliveries not yet settled (basic.get ones do not count)
        self.consumers: dict[str, Consumer] = {}
        self.prefetch_count = 0  # channel-wide (basic.qos global=true)
        self.consumer_prefetch = 0  # for consumers started after basic.qos global=false
        self.paused = False  # the door's output is backed up; stop delivering
        self.tx: Transaction | None = None
        self.confirm = False
        self.closed = False
        self.last_location = 0  # store position of the last persistent message published here
        self.refused = False  # the last publish was refused by a queue at its length limit
        self.reply_queue: Queue | None = None  # direct reply-to: this channel's hidden reply queue
        self.clock = self.vhost.clock
        self._next_tag = 1

    # ------------------------------------------------------------------------------ credit

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if not paused:
            self._dispatch(())

    def qos(self, prefetch_size: int, prefetch_count: int, global_: bool) -> None:
        if prefetch_size:
            raise errors.not_implemented(f"prefetch_size!=0 ({prefetch_size})")
        if global_:
            self.prefetch_count = prefetch_count
        else:
            # RabbitMQ (rabbit_channel, basic.qos global=false) also lifts a channel-wide limit set
            # before: the per-consumer form overrides an earlier global one.
            self.prefetch_count = 0
            self.consumer_prefetch = prefetch_count
        self._dispatch(())

    # --------------------------------------------------------------------------- publishing

    def publish(self, exchange: str, routing_key: str, message: Message, mandatory: bool) -> list[Queue] | None:
        """Route and enqueue; returns the queues the message reached (empty: unroutable). In a
        transaction the exchange is only checked here, routing happens at commit: returns None."""
        peek = message.codec.peek(message.properties)
        if peek is not None:
            self._read_properties(message, *peek)
        if self.tx is not None:
            self.vhost.exchange(exchange)
            self.tx.publishes.append((exchange, routing_key, message, mandatory))
            return None
        queues = self.vhost.route(exchange, routing_key, message)
        self._enqueue(queues, message)
        return queues

    def _read_properties(
        self, message: Message, expiration: str | None, priority: int | None, reply_to: str | None
    ) -> None:
        """The properties the broker acts on: per-message TTL, priority, direct reply-to."""
        if expiration is not None:
            message.ttl = _parse_expiration(expiration)
        if priority is not None:
            message.priority = priority
        if reply_to == REPLY_TO:
            if self.reply_queue is None:
                raise errors.precondition_failed("fast reply consumer does not exist")
            fields = message.codec.decode(message.properties)
            fields["reply_to"] = self.reply_queue.name
            message.properties = message.codec.encode(fields)
            message.wire = b""

    def _enqueue(self, queues: list[Queue], message: Message) -> None:
        """Enqueue everywhere (``VirtualHost.publish_to`` stores a persistent message once)."""
        self.refused = self.vhost.publish_to(queues, message)
        if message.location and message.persistent:
            self.last_location = message.location

    # ---------------------------------------------------------------------------- consuming

    def consume(
        self,
        queue_name: str,
        tag: str,
        no_ack: bool,
        exclusive: bool,
        arguments: Mapping[str, Any] | None = None,
    ) -> Consumer:
        if queue_name == REPLY_TO:
            return self._consume_replies(tag, no_ack)
        q = self.vhost.queue(queue_name, self.session)
        if not tag:
            tag = generated_consumer_tag()
        elif tag in self.consumers:
            raise errors.not_allowed(f"attempt to reuse consumer tag '{tag}'")
        if q.exclusive_consumer is not None or (exclusive and q.consumers):
            raise errors.access_refused(f"queue '{q.name}' in vhost '{self.vhost.name}' in exclusive use")
        priority = (arguments or {}).get("x-priority")
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            kind = {str: "longstr", float: "double", bool: "bool", bytes: "bytes"}.get(type(priority), "table")
            raise errors.precondition_failed(
                f"invalid arg 'x-priority' for queue '{q.name}' in vhost '{self.vhost.name}': "
                f'"expected integer, got {kind}"'
            )
        consumer = Consumer(tag, self, q, no_ack, exclusive, self.consumer_prefetch, arguments)
        self.consumers[tag] = consumer
        q.add_consumer(consumer)
        return consumer

    def _consume_replies(self, tag: str, no_ack: bool) -> Consumer:
        """Direct reply-to: a no-ack consumer on a hidden queue that only this channel can name."""
        if not no_ack:
            raise errors.precondition_failed("reply consumer cannot acknowledge")
        if self.reply_queue is not None:
            raise errors.precondition_failed("reply consumer already set")
        name = REPLY_TO_PREFIX + generated_consumer_tag().removeprefix("amq.ctag-")
        q = Queue(name, self.vhost.name, exclusive_owner=self.session)
        q.owner = self.vhost
        self.vhost.reply_queues[name] = q
        self.reply_queue = q
        consumer = Consumer(tag or generated_consumer_tag(), self, q, True, False, 0)
        if consumer.tag in self.consumers:
            raise errors.not_allowed(f"attempt to reuse consumer tag '{consumer.tag}'")
        self.consumers[consumer.tag] = consumer
        q.add_consumer(consumer)
        return consumer

    def _drop_reply_queue(self) -> None:
        q = self.reply_queue
        if q is not None:
            self.reply_queue = None
            q.deleted = True
            self.vhost.reply_queues.pop(q.name, None)

    def start(self, consumer: Consumer) -> None:
        """Begin deliveries (after the door has sent consume-ok)."""
        consumer.queue.dispatch()

    def cancel(self, tag: str) -> Consumer | None:
        consumer = self.consumers.pop(tag, None)
        if consumer is None:
            return None
        q = consumer.queue
        q.remove_consumer(consumer)
        if q is self.reply_queue:
            self._drop_reply_queue()
        elif q.should_auto_delete() and not q.deleted:
            self.vhost.remove_queue(q)
        else:
            q.dispatch()
        return consumer

    def cancelled_by_broker(self, consumer: Consumer) -> None:
        """The consumer's queue went away: forget the consumer and tell the client."""
        if self.consumers.pop(consumer.tag, None) is not None:
            self.sink.consumer_cancelled(consumer)

    def deliver(self, consumer: Consumer, queue: Queue, message: Message, seq: int, redelivered: bool) -> None:
        tag = self._next_tag
        self._next_tag = tag + 1
        if not consumer.no_ack:
            self.unacked[tag] = Delivery(tag, queue, message, seq, consumer, self.clock.coarse)
            consumer.unacked += 1
            self.consumer_unacked += 1
            queue.unacked += 1
        elif message.location:
            queue.release(message)  # no-ack: the queue no longer holds it (at-most-once)
        self.sink.deliver(consumer, tag, redelivered, message)

    def get(self, queue_name: str, no_ack: bool) -> tuple[int, Message, bool, int] | None:
        """basic.get: (delivery tag, message, redelivered, messages left) or None if empty."""
        q = self.vhost.queue(queue_name, self.session)
        q.touch()
        item = q.pop()
        if item is None:
            return None
        message, seq, redelivered = item
        tag = self._next_tag
        self._next_tag = tag + 1
        q.stats_delivered += 1
        if not no_ack:
            self.unacked[tag] = Delivery(tag, q, message, seq, None, self.clock.coarse)
            q.unacked += 1
        else:
            q.settled(seq)
            if message.location:
                q.release(message)
        return tag, message, redelivered, q.message_count()

    # ---------------------------------------------------------------------------- settling

    def ack(self, tag: int, multiple: bool) -> None:
        taken = self._take(tag, multiple)
        if self.tx is not None:
            self.tx.settlements.append((taken, None))
        else:
            self._settle(taken, None)

    def nack(self, tag: int, multiple: bool, requeue: bool) -> None:
        taken = self._take(tag, multiple)
        if self.tx is not None:
            self.tx.settlements.append((taken, requeue))
        else:
            self._settle(taken, requeue)

    def recover(self, requeue: bool) -> None:
        if not requeue:
            raise errors.not_implemented("requeue=false")
        self._settle(self._take(0, True), True)

    def _take(self, tag: int, multiple: bool) -> list[Delivery]:
        """Remove and return the deliveries an ack/nack names. As RabbitMQ (rabbit_channel
        collect_acks): the tag itself must be outstanding, even with ``multiple`` (which then also
        takes every earlier tag); ``multiple`` with tag 0 takes everything."""
        unacked = self.unacked
        if multiple and tag == 0:
            taken = list(unacked.values())
            unacked.clear()
            return taken
        if tag not in unacked:
            raise errors.precondition_failed(f"unknown delivery tag {tag}")
        if not multiple:
            return [unacked.pop(tag)]
        taken = []
        while True:  # tags are kept in ascending order
            first, delivery = unacked.popitem(last=False)
            taken.append(delivery)
            if first == tag:
                return taken

    def _settle(self, deliveries: Iterable[Delivery], requeue: bool | None) -> None:
        """requeue None = ack, True = back to the queue, False = discard (dead-lettered if the
        queue has a dead-letter exchange)."""
        touched: dict[Queue, None] = {}
        for d in deliveries:
            q = d.queue
            q.unacked -= 1
            if d.consumer is not None:
                d.consumer.unacked -= 1
                self.consumer_unacked -= 1
            message = d.message
            touched[q] = None
            if requeue is None:
                q.stats_acked += 1
            elif not q.deleted:
                if requeue:
                    q.requeue(d.seq, message)
                else:
                    q.settled(d.seq)
                    q.discard(message, "rejected")
                continue
            q.settled(d.seq)
            if message.location:
                q.release(message)
        self._dispatch(touched)

    def _dispatch(self, queues: Iterable[Queue]) -> None:
        todo = dict.fromkeys(queues)
        for consumer in self.consumers.values():
            todo[consumer.queue] = None
        for q in todo:
            if not q.deleted:
                q.dispatch()

    # --------------------------------------------------------------------------- transactions

    def tx_select(self) -> None:
        if self.confirm:
            raise errors.precondition_failed("cannot switch from confirm to tx mode")
        if self.tx is None:
            self.tx = Transaction()

    def confirm_select(self) -> None:
        if self.tx is not None:
            raise errors.precondition_failed("cannot switch from tx to confirm mode")
        self.confirm = True

    def tx_commit(self) -> list[tuple[str, str, Message]]:
        """Apply the transaction; returns the mandatory messages that reached no queue."""
        tx = self._transaction()
        self.tx = Transaction()
        unroutable = []
        for exchange, routing_key, message, mandatory in tx.publishes:
            queues = self.vhost.route(exchange, routing_key, message)
            self._enqueue(queues, message)
            if not queues and mandatory:
                unroutable.append((exchange, routing_key, message))
        for taken, requeue in tx.settlements:
            self._settle(taken, requeue)
        return unroutable

    def tx_rollback(self) -> None:
        """Drop buffered publishes; deliveries acked/nacked in the transaction are unacked again."""
        held = self._transaction().held()
        self.tx = Transaction()
        if held:
            merged = sorted([*held, *self.unacked.values()], key=lambda d: d.tag)
            self.unacked.clear()
            self.unacked.update((d.tag, d) for d in merged)

    def _transaction(self) -> Transaction:
        if self.tx is None:
            raise errors.precondition_failed("channel is not transactional")
        return self.tx

    # ---------------------------------------------------------------------------------- close

    def close(self) -> None:
        """Channel or connection gone: cancel consumers, requeue everything unacked."""
        if self.closed:
            return
        self.closed = True
        for tag in list(self.consumers):
            self.cancel(tag)
        deliveries = list(self.unacked.values())
        if self.tx is not None:  # settled in a transaction never committed: requeued too
            deliveries += self.tx.held()
            self.tx = Transaction()
        self.unacked.clear()
        self._settle(deliveries, True)
        self._drop_reply_queue()

    # ------------------------------------------------------------------------ consumer timeout

    def check_timeout(self, now: float, default_ms: int) -> None:
        """RabbitMQ's consumer timeout: the oldest unacknowledged delivery has waited too long; the
        channel is closed with 406 (its deliveries are requeued by the close)."""
        if not self.unacked or self.closed:
            return
        oldest = next(iter(self.unacked.values()))
        limit = oldest.queue.consumer_timeout
        if limit is None:
            limit = default_ms
        if limit and (now - oldest.at) * 1000.0 > limit:
            self.sink.channel_failed(
                errors.precondition_failed(
                    f"delivery acknowledgement on channel {self.number} timed out. Timeout value used: "
                    f"{limit} ms. This timeout value can be configured, see consumers doc guide to learn more"
                )
            )


def _parse_expiration(text: str) -> int:
    """A per-message TTL in ms, with RabbitMQ's reasons for refusing one (rabbit_basic)."""
    match = _INTEGER.match(text)
    if match is None:
        raise errors.precondition_failed(f"invalid expiration '{text}': no_integer")
    if match.end() < len(text):
        rest = text[match.end() :]
        raise errors.precondition_failed(f"invalid expiration '{text}': {{leftover_string,\"{rest}\"}}")
    value = int(match.group())
    if value < 0:
        raise errors.precondition_failed(f"invalid expiration '{text}': {{value_negative,{value}}}")
    return value


_INTEGER = re.compile(r"[+-]?[0-9]+")
