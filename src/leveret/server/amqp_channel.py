"""One AMQP channel of a client connection: methods in, core calls, frames out.

``AMQPChannel`` is the ``DeliverySink`` of its core channel: deliveries are encoded from the
consumer's pre-built ``basic.deliver`` template straight into the connection's output batch.
Each method class has one handler in ``HANDLERS``; a ``BrokerError`` from the core becomes a channel
or connection close through ``amqp_errors``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from leveret.amqp import methods as m
from leveret.amqp.constants import ReplyCode
from leveret.amqp.errors import ProtocolError
from leveret.amqp.frames import DeliverTemplate, content_frames, encode_shortstr, get_ok_frame, method_frame
from leveret.amqp.properties import WIRE_PROPERTIES, peek_delivery_mode
from leveret.core.channel import Channel
from leveret.core.consumer import Consumer
from leveret.core.errors import BrokerError
from leveret.core.message import Message

from .amqp_errors import to_protocol_error

if TYPE_CHECKING:
    from .amqp_door import AMQPConnection

FLOW_CHECK_EVERY = 16  # a queue may overshoot the flow-control mark by this many publishes per channel


class AMQPChannel:
    __slots__ = (
        "confirmable_seq",
        "conn",
        "core",
        "flow_countdown",
        "number",
        "pending_commit_ok",
        "pending_confirms",
        "publish_seq",
    )

    def __init__(self, conn: AMQPConnection, number: int) -> None:
        self.conn = conn
        self.number = number
        assert conn.session is not None
        self.core: Channel = conn.session.open_channel(number, self)
        self.publish_seq = 0
        self.flow_countdown = 1  # publishes until the next look at the depth of their queues
        self.confirmable_seq = 0  # highest seq that can be confirmed at the end of this batch
        self.pending_confirms: deque[tuple[int, int]] = deque()  # (seq, store position) awaiting fsync
        self.pending_commit_ok: deque[int] = deque()  # store positions of committed transactions

    # ------------------------------------------------------------------------ DeliverySink

    def deliver(self, consumer: Consumer, delivery_tag: int, redelivered: bool, message: Message) -> None:
        template = consumer.wire
        wire = message.wire or _wire_of(message)
        conn = self.conn
        conn.write(template.encode(delivery_tag, redelivered, wire, message.properties, _body(message), conn.frame_max))

    def consumer_cancelled(self, consumer: Consumer) -> None:
        if self.conn.client_capabilities.get("consumer_cancel_notify"):
            self.conn.send(self.number, m.BasicCancel(consumer.tag, True))

    def channel_failed(self, error: BrokerError) -> None:
        if self.number in self.conn.channels:
            self.conn.channel_failed(self.number, to_protocol_error(error, 0, 0))

    # ---------------------------------------------------------------------------- methods

    def reply(self, method: m.Method) -> None:
        self.conn.send(self.number, method)

    def handle(self, method: m.Method) -> None:
        handler = HANDLERS.get(type(method))
        if handler is None:
            raise ProtocolError(
                ReplyCode.NOT_IMPLEMENTED, f"unimplemented method {method.NAME}", method.CLASS_ID, method.METHOD_ID
            )
        handler(self, method)

    def publish(self, method: m.BasicPublish, properties: bytes, bodies: Sequence[bytes], wire: bytes) -> None:
        """``basic.publish`` of each of ``bodies`` in turn, with the same method and properties (one
        publish, or a ``ContentBatch`` of repeats). A refusal raises out of the loop: the channel
        closes, and the publishes after it are dropped with it."""
        if method.immediate:
            raise ProtocolError(ReplyCode.NOT_IMPLEMENTED, "immediate=true", 60, 40)
        exchange, routing_key, mandatory = method.exchange, method.routing_key, method.mandatory
        persistent = bool(properties[0] & 0x10) and peek_delivery_mode(properties) == 2  # 0x10: delivery mode
        core = self.core
        for body in bodies:
            message = Message(exchange, routing_key, properties, body, persistent, wire, WIRE_PROPERTIES)
            queues = core.publish(exchange, routing_key, message, mandatory)
            if queues is not None:
                if not queues and mandatory:
                    self._return(message)
                self.flow_countdown -= 1
                if not self.flow_countdown:  # a queue's depth moves slowly: look every FLOW_CHECK_EVERY publishes
                    self.flow_countdown = FLOW_CHECK_EVERY
                    high = self.conn.config.flow_high
                    for q in queues:
                        if q.message_count() > high:
                            self.conn.note_publish_target(q)
            if core.confirm:
                self._confirm(message)

    def _confirm(self, message: Message) -> None:
        seq = self.publish_seq = self.publish_seq + 1
        if self.core.refused:  # a queue at its length limit with x-overflow reject-publish(-dlx)
            if self.pending_confirms:
                self.pending_confirms.append((-seq, 0))  # nacked in turn, after the acks before it
            else:
                self.conn.flush_confirm(self)
                self.conn.send(self.number, m.BasicNack(seq, False, False))
        elif message.location or self.pending_confirms:
            # Persistent in a durable queue: confirmed once the store's fsync has covered it
            # (and anything published after it waits its turn, confirms being cumulative).
            pending = self.pending_confirms
            pending.append((seq, message.location))
            if len(pending) == 1:  # the door knows already that this channel waits
                self.conn.await_durable(self)
        else:
            self.confirmable_seq = seq
            self.conn.confirm_pending(self)

    def durable_advanced(self, durable: int) -> bool:
        """Send the confirms (and commit-oks) the store's durable position now covers; True when
        nothing is left waiting."""
        pending = self.pending_confirms
        last = 0
        while pending and pending[0][1] < durable:
            seq = pending.popleft()[0]
            if seq < 0:  # refused at a queue's length limit: nacked, in order
                if last:
                    self.conn.send(self.number, m.BasicAck(last, True))
                    last = 0
                self.conn.send(self.number, m.BasicNack(-seq, False, False))
            else:
                last = seq
        if last:
            self.conn.send(self.number, m.BasicAck(last, True))
        commits = self.pending_commit_ok
        while commits and commits[0] < durable:
            commits.popleft()
            self.reply(m.TxCommitOk())
        return not pending and not commits

    def _return(self, message: Message) -> None:
        ret = m.BasicReturn(ReplyCode.NO_ROUTE, "NO_ROUTE", message.exchange, message.routing_key)
        conn = self.conn
        conn.write_chunks([method_frame(self.number, ret)])
        conn.write_chunks(content_frames(self.number, message.properties, _body(message), conn.frame_max))

    def close(self) -> None:
        assert self.conn.session is not None
        self.conn.session.close_channel(self.number)


def _body(message: Message) -> bytes:
    body = message.body
    assert body is not None, "the queue loads a paged-out message before handing it over"
    return body


def _wire_of(message: Message) -> bytes:
    message.wire = encode_shortstr(message.exchange) + encode_shortstr(message.routing_key)
    return message.wire


# --------------------------------------------------------------------------------- handlers


def _channel_flow(ch: AMQPChannel, method: m.ChannelFlow) -> None:
    if not method.active:
        raise ProtocolError(ReplyCode.NOT_IMPLEMENTED, "active=false", 20, 20)
    ch.reply(m.ChannelFlowOk(True))


def _access_request(ch: AMQPChannel, method: m.AccessRequest) -> None:
    ch.reply(m.AccessRequestOk(1))


def _exchange_declare(ch: AMQPChannel, method: m.ExchangeDeclare) -> None:
    ch.core.vhost.declare_exchange(
        method.exchange,
        method.type,
        method.passive,
        method.durable,
        method.auto_delete,
        method.internal,
        method.arguments,
    )
    if not method.nowait:
        ch.reply(m.ExchangeDeclareOk())


def _exchange_delete(ch: AMQPChannel, method: m.ExchangeDelete) -> None:
    ch.core.vhost.delete_exchange(method.exchange, method.if_unused)
    if not method.nowait:
        ch.reply(m.ExchangeDeleteOk())


def _exchange_bind(ch: AMQPChannel, method: m.ExchangeBind) -> None:
    ch.core.vhost.bind_exchange(method.destination, method.source, method.routing_key, method.arguments)
    if not method.nowait:
        ch.reply(m.ExchangeBindOk())


def _exchange_unbind(ch: AMQPChannel, method: m.ExchangeUnbind) -> None:
    ch.core.vhost.unbind_exchange(method.destination, method.source, method.routing_key, method.arguments)
    if not method.nowait:
        ch.reply(m.ExchangeUnbindOk())


def _queue_declare(ch: AMQPChannel, method: m.QueueDeclare) -> None:
    q = ch.core.vhost.declare_queue(
        ch.core.session,
        method.queue,
        method.passive,
        method.durable,
        method.exclusive,
        method.auto_delete,
        method.arguments,
    )
    if not method.nowait:
        ch.reply(m.QueueDeclareOk(q.name, q.message_count(), q.consumer_count()))


def _queue_bind(ch: AMQPChannel, method: m.QueueBind) -> None:
    ch.core.vhost.bind_queue(ch.core.session, method.queue, method.exchange, method.routing_key, method.arguments)
    if not method.nowait:
        ch.reply(m.QueueBindOk())


def _queue_unbind(ch: AMQPChannel, method: m.QueueUnbind) -> None:
    ch.core.vhost.unbind_queue(ch.core.session, method.queue, method.exchange, method.routing_key, method.arguments)
    ch.reply(m.QueueUnbindOk())


def _queue_purge(ch: AMQPChannel, method: m.QueuePurge) -> None:
    count = ch.core.vhost.purge_queue(ch.core.session, method.queue)
    if not method.nowait:
        ch.reply(m.QueuePurgeOk(count))


def _queue_delete(ch: AMQPChannel, method: m.QueueDelete) -> None:
    count = ch.core.vhost.delete_queue(ch.core.session, method.queue, method.if_unused, method.if_empty)
    if not method.nowait:
        ch.reply(m.QueueDeleteOk(count))


def _basic_qos(ch: AMQPChannel, method: m.BasicQos) -> None:
    ch.core.qos(method.prefetch_size, method.prefetch_count, method.global_)
    ch.reply(m.BasicQosOk())


def _basic_consume(ch: AMQPChannel, method: m.BasicConsume) -> None:
    consumer = ch.core.consume(method.queue, method.consumer_tag, method.no_ack, method.exclusive, method.arguments)
    consumer.wire = DeliverTemplate(ch.number, consumer.tag)
    if not method.nowait:
        ch.reply(m.BasicConsumeOk(consumer.tag))
    ch.core.start(consumer)


def _basic_cancel(ch: AMQPChannel, method: m.BasicCancel) -> None:
    ch.core.cancel(method.consumer_tag)
    if not method.nowait:
        ch.reply(m.BasicCancelOk(method.consumer_tag))


def _basic_get(ch: AMQPChannel, method: m.BasicGet) -> None:
    got = ch.core.get(method.queue, method.no_ack)
    if got is None:
        ch.reply(m.BasicGetEmpty())
        return
    tag, message, redelivered, remaining = got
    conn = ch.conn
    wire = message.wire or _wire_of(message)
    conn.write_chunks([get_ok_frame(ch.number, tag, redelivered, wire, remaining)])
    conn.write_chunks(content_frames(ch.number, message.properties, _body(message), conn.frame_max))


def _basic_ack(ch: AMQPChannel, method: m.BasicAck) -> None:
    ch.core.ack(method.delivery_tag, method.multiple)


def _basic_nack(ch: AMQPChannel, method: m.BasicNack) -> None:
    ch.core.nack(method.delivery_tag, method.multiple, method.requeue)


def _basic_reject(ch: AMQPChannel, method: m.BasicReject) -> None:
    ch.core.nack(method.delivery_tag, False, method.requeue)


def _basic_recover(ch: AMQPChannel, method: m.BasicRecover) -> None:
    ch.core.recover(method.requeue)
    ch.reply(m.BasicRecoverOk())


def _basic_recover_async(ch: AMQPChannel, method: m.BasicRecoverAsync) -> None:
    ch.core.recover(method.requeue)


def _confirm_select(ch: AMQPChannel, method: m.ConfirmSelect) -> None:
    ch.core.confirm_select()
    if not method.nowait:
        ch.reply(m.ConfirmSelectOk())


def _tx_select(ch: AMQPChannel, method: m.TxSelect) -> None:
    ch.core.tx_select()
    ch.reply(m.TxSelectOk())


def _tx_commit(ch: AMQPChannel, method: m.TxCommit) -> None:
    before = ch.core.last_location
    for exchange, routing_key, message in ch.core.tx_commit():
        message.exchange, message.routing_key = exchange, routing_key
        ch._return(message)
    if ch.core.last_location != before or ch.pending_commit_ok:
        ch.pending_commit_ok.append(ch.core.last_location)  # commit-ok only once it is on disk
        ch.conn.await_durable(ch)
    else:
        ch.reply(m.TxCommitOk())


def _tx_rollback(ch: AMQPChannel, method: m.TxRollback) -> None:
    ch.core.tx_rollback()
    ch.reply(m.TxRollbackOk())


Handler = Callable[[AMQPChannel, m.Method], None]
HANDLERS: dict[type[m.Method], Handler] = {
    m.ChannelFlow: _channel_flow,  # type: ignore[dict-item]
    m.AccessRequest: _access_request,  # type: ignore[dict-item]
    m.ExchangeDeclare: _exchange_declare,  # type: ignore[dict-item]
    m.ExchangeDelete: _exchange_delete,  # type: ignore[dict-item]
    m.ExchangeBind: _exchange_bind,  # type: ignore[dict-item]
    m.ExchangeUnbind: _exchange_unbind,  # type: ignore[dict-item]
    m.QueueDeclare: _queue_declare,  # type: ignore[dict-item]
    m.QueueBind: _queue_bind,  # type: ignore[dict-item]
    m.QueueUnbind: _queue_unbind,  # type: ignore[dict-item]
    m.QueuePurge: _queue_purge,  # type: ignore[dict-item]
    m.QueueDelete: _queue_delete,  # type: ignore[dict-item]
    m.BasicQos: _basic_qos,  # type: ignore[dict-item]
    m.BasicConsume: _basic_consume,  # type: ignore[dict-item]
    m.BasicCancel: _basic_cancel,  # type: ignore[dict-item]
    m.BasicGet: _basic_get,  # type: ignore[dict-item]
    m.BasicAck: _basic_ack,  # type: ignore[dict-item]
    m.BasicNack: _basic_nack,  # type: ignore[dict-item]
    m.BasicReject: _basic_reject,  # type: ignore[dict-item]
    m.BasicRecover: _basic_recover,  # type: ignore[dict-item]
    m.BasicRecoverAsync: _basic_recover_async,  # type: ignore[dict-item]
    m.ConfirmSelect: _confirm_select,  # type: ignore[dict-item]
    m.TxSelect: _tx_select,  # type: ignore[dict-item]
    m.TxCommit: _tx_commit,  # type: ignore[dict-item]
    m.TxRollback: _tx_rollback,  # type: ignore[dict-item]
}
