"""The AMQP listener: one ``asyncio.Protocol`` per client connection.

Theory of operation: ``data_received`` feeds the sans-I/O ``ServerConnection`` and handles the
events in order, synchronously (the core never awaits). Everything written while handling one batch
of input (replies, deliveries to this connection's consumers, confirms) is collected and written
once per loop turn. Back-pressure both ways: when the socket's write buffer is full, this
connection's channels stop taking deliveries; when a queue this connection publishes to runs deep,
reading from it pauses until the queue drains (like RabbitMQ's credit flow).
"""

from __future__ import annotations

import asyncio
import logging
import platform
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from leveret import __version__
from leveret.amqp import methods as m
from leveret.amqp.connection import ConnectionState, ServerConnection
from leveret.amqp.constants import PROTOCOL_HEADER, ReplyCode
from leveret.amqp.errors import ProtocolError
from leveret.amqp.events import (
    BadProtocolHeaderReceived,
    ChannelFailed,
    ConnectionFailed,
    ContentBatch,
    ContentReceived,
    Event,
    MethodReceived,
    ProtocolHeaderReceived,
)
from leveret.amqp.frames import HEARTBEAT_FRAME, Chunk
from leveret.core.broker import Broker, User
from leveret.core.errors import BrokerError
from leveret.core.queue import Queue
from leveret.core.session import Session

from . import alarms, amqp_login
from .amqp_access import Access
from .amqp_channel import AMQPChannel
from .amqp_errors import reply_text, to_protocol_error
from .config import Config
from .durability import GroupCommitter

log = logging.getLogger("leveret.amqp")

CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
}
CLOSE_OK_TIMEOUT = 3.0
READ_SLICE = 16384  # bytes of input handled per loop turn (about 200 small publishes, ~1 ms)
SLICE_WORTH = 64  # a read whose first slice holds fewer messages than this is handled whole


def worth_slicing(first_slice: list[Event]) -> bool:
    """Whether a big read whose first ``READ_SLICE`` bytes gave ``first_slice`` is handled a slice
    per loop turn: only if that slice holds many messages (a ``ContentBatch`` counts its publishes)."""
    return sum(len(e.bodies) if type(e) is ContentBatch else 1 for e in first_slice) >= SLICE_WORTH


def server_properties() -> dict[str, Any]:
    return {
        "product": "Leveret",
        "version": __version__,
        "platform": f"Python {platform.python_version()}",
        "copyright": "Leveret authors",
        "information": "Licensed under the Apache License 2.0",
        "cluster_name": f"leveret@{socket.gethostname()}",
        "capabilities": CAPABILITIES,
    }


class AMQPConnection(asyncio.Protocol):
    def __init__(
        self,
        broker: Broker,
        config: Config,
        registry: set[AMQPConnection],
        committer: GroupCommitter | None = None,
    ) -> None:
        self.committer = committer
        self._durable_waiters: dict[AMQPChannel, None] = {}
        self.broker = broker
        self.config = config
        self.registry = registry
        self.proto = ServerConnection(config.frame_max, config.channel_max, config.max_message_size)
        self.session: Session | None = None
        self.channels: dict[int, AMQPChannel] = {}
        self.client_properties: dict[str, Any] = {}
        self.client_capabilities: dict[str, Any] = {}
        self.frame_max = config.frame_max
        self.heartbeat = 0
        self.peer = "?"
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_event_loop()
        self._out: list[Chunk] = []
        self._flush_scheduled = False
        self._confirms: dict[AMQPChannel, None] = {}
        self._received = True
        self._sent = True
        self._missed = 0  # heartbeat ticks (half intervals) without input
        self._timers: list[asyncio.TimerHandle] = []
        self._reading_paused = False
        self._slices: deque[bytes] | None = None  # the rest of a big read, handled a slice per loop turn
        self._flow_queues: dict[Queue, int] = {}  # queue -> its delivered count at the last check
        # Security (server.amqp_login, server.amqp_access): who logged in, from where, what they may do.
        self.user: User | None = None
        self.access: Access | None = None
        self.peer_address = ""
        self.peer_cert_cn: str | None = None  # CN of a verified TLS client certificate
        self._held: list[object] | None = None  # input held while a password is being checked
        self.published = False  # has published: blocked while a resource alarm is in force
        self.blocked = False
        self.blocked_notice: str | None = None  # the connection.blocked reason sent, if any

    # ------------------------------------------------------------------------------- I/O

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        assert self.transport is not None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.peer_address = str(peer[0]) if peer else ""
        if transport.get_extra_info("sslcontext") is not None:
            self.peer_cert_cn = amqp_login.common_name(transport.get_extra_info("peercert"))
        self.transport.set_write_buffer_limits(high=self.config.write_buffer_high)
        self.registry.add(self)
        self._later(self.config.handshake_timeout, self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        self._received = True
        if self._slices is not None:  # still working through an earlier read: keep the order
            self._slices.append(data)  # (reading was resumed meanwhile, e.g. by flow control)
            if self.transport is not None:
                self.transport.pause_reading()  # _next_slice resumes it once all is handled
            return
        if len(data) <= READ_SLICE:
            self._handle_events(iter(self.proto.receive(data)))
            return
        # A big read (a publisher at full speed fills 256 KiB at a time: thousands of messages) is
        # handled a slice per loop turn, so that other connections (consumers' acks, their
        # deliveries) are served in between instead of waiting out the whole read.
        events = self.proto.receive(data[:READ_SLICE])
        if not worth_slicing(events):  # big messages: few per slice, slicing would only cost turns
            events += self.proto.receive(data[READ_SLICE:])
            self._handle_events(iter(events))
            return
        self._slices = deque(data[i : i + READ_SLICE] for i in range(READ_SLICE, len(data), READ_SLICE))
        if self.transport is not None:
            self.transport.pause_reading()
        self._loop.call_soon(self._next_slice)
        self._handle_events(iter(events))

    def _next_slice(self) -> None:
        slices = self._slices
        if slices is None or self.transport is None or self.transport.is_closing():
            self._slices = None
            return
        data = slices.popleft()
        if slices:
            self._loop.call_soon(self._next_slice)
        else:
            self._slices = None
            if not (self._reading_paused or self.blocked or self._held is not None):
                self.transport.resume_reading()
        self._handle_events(iter(self.proto.receive(data)))

    def _handle_events(self, events: Iterator[object]) -> None:
        if self._held is not None:  # a login is being checked: what follows waits for its answer
            self._held.extend(events)
            return
        channels = self.channels
        for event in events:
            try:
                if type(event) is ContentBatch or type(event) is ContentReceived:
                    ch = channels.get(event.channel)
                    if ch is not None:
                        self._publish(ch, event)
                else:
                    self._handle(event)
            except ProtocolError as exc:
                self._fail(getattr(event, "channel", 0), exc)
            if self.transport is None or self.transport.is_closing():
                return
            if self.proto.state is ConnectionState.CLOSING:
                break  # a hard error: nothing after it is acted on (spec 4.2.4)
            if self._held is not None:
                self._held.extend(events)
                return
        if self._confirms:
            self._send_confirms()
        if self.committer is not None:
            self.committer.poke()
        if self._flow_queues:
            self._apply_flow()

    def hold_input(self) -> None:
        """Act on nothing more from this client until ``release_input`` (a login is being checked)."""
        self._held = []
        if self.transport is not None:
            self.transport.pause_reading()

    def release_input(self) -> None:
        held, self._held = self._held or [], None
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.resume_reading()
        self._handle_events(iter(held))
        self._flush()

    def write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def write_chunks(self, chunks: Iterable[Chunk]) -> None:
        self._out.extend(chunks)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def send(self, channel: int, method: m.Method) -> None:
        self.write_chunks((self.proto.send(channel, method),))

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out or self.transport is None or self.transport.is_closing():
            out.clear()
            return
        self._out = []
        self._sent = True
        self.transport.write(b"".join(out))

    def pause_writing(self) -> None:
        for ch in self.channels.values():
            ch.core.paused = True

    def resume_writing(self) -> None:
        for ch in list(self.channels.values()):
            ch.core.set_paused(False)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.registry.discard(self)
        self._durable_waiters.clear()
        if self.session is not None:
            self.broker.close_session(self.session)
            self.session = None
        if self.committer is not None:
            self.committer.unlisten(self)
            self.committer.poke()  # discards recorded while closing still need writing
        self.channels.clear()
        self.transport = None

    def close_transport(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._flush()
            self.transport.close()

    def shutdown(self, internal_error: bool = False) -> None:
        """Broker stopping: tell an open client why (320, as RabbitMQ does; 541 if the store
        failed), then close."""
        if self.proto.state is ConnectionState.OPEN:
            if internal_error:
                code, text = ReplyCode.INTERNAL_ERROR, "INTERNAL_ERROR - message store failure"
            else:
                code = ReplyCode.CONNECTION_FORCED
                text = "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
            self.send(0, m.ConnectionClose(code, text, 0, 0))
        self.close_transport()

    # ------------------------------------------------------------------------------ events

    def _handle(self, event: object) -> None:
        """Every event but a publish (``_handle_events`` acts on those itself: the hot case)."""
        if type(event) is MethodReceived:
            if event.channel == 0:
                self._connection_method(event.method)
            else:
                self._channel_method(event.channel, event.method)
        elif type(event) is ProtocolHeaderReceived:
            self.send(0, m.ConnectionStart(0, 9, server_properties(), amqp_login.mechanisms(self), b"en_US"))
        elif type(event) is BadProtocolHeaderReceived:
            self.write_chunks((PROTOCOL_HEADER,))
            self.close_transport()
        elif type(event) is ChannelFailed:
            self._fail(event.channel, event.error)
        elif type(event) is ConnectionFailed:
            self._fail(0, event.error)

    def _publish(self, ch: AMQPChannel, event: ContentReceived | ContentBatch) -> None:
        try:
            access = self.access
            assert access is not None
            method = event.method
            if access.version != self.broker.access_version or method.exchange not in access.writable:
                access.publish(method.exchange, method.routing_key)  # not a cached decision
            self.published = True
            if self.broker.alarms:
                alarms.block(self, self.broker.alarms)
            bodies = event.bodies if isinstance(event, ContentBatch) else (event.body,)
            ch.publish(method, event.properties, bodies, event.wire)
        except BrokerError as exc:
            raise to_protocol_error(exc, 60, 40) from None

    def _channel_method(self, number: int, method: m.Method) -> None:
        if type(method) is m.ChannelOpen:
            self.channels[number] = AMQPChannel(self, number)
            self.send(number, m.ChannelOpenOk())
            return
        ch = self.channels.get(number)
        if ch is None:
            return
        if type(method) is m.ChannelClose:
            self._drop_channel(number)
            self.send(number, m.ChannelCloseOk())
            return
        try:
            assert self.access is not None
            self.access.authorize(method)
            ch.handle(method)
        except BrokerError as exc:
            raise to_protocol_error(exc, method.CLASS_ID, method.METHOD_ID) from None

    def _drop_channel(self, number: int) -> None:
        ch = self.channels.pop(number, None)
        if ch is not None:
            self._confirms.pop(ch, None)
            self._durable_waiters.pop(ch, None)
        if ch is not None:
            ch.close()

    def _fail(self, channel: int, error: ProtocolError) -> None:
        text = reply_text(error)
        if error.is_hard or channel == 0:
            log.info("closing connection %s: %s", self.peer, text)
            if self.proto.state not in (ConnectionState.CLOSING, ConnectionState.CLOSED):
                try:
                    self.send(0, m.ConnectionClose(error.code, text, error.class_id, error.method_id))
                except RuntimeError:
                    self.close_transport()
                    return
            if self.session is not None:
                self.broker.close_session(self.session)
                self.session = None
            if error.code in (ReplyCode.FRAME_ERROR, ReplyCode.SYNTAX_ERROR) or channel == -1:
                self.close_transport()
            else:
                self._later(CLOSE_OK_TIMEOUT, self.close_transport)
            return
        log.debug("closing channel %d of %s: %s", channel, self.peer, text)
        self._drop_channel(channel)
        self.send(channel, m.ChannelClose(error.code, text, error.class_id, error.method_id))

    # ------------------------------------------------------------------------- connection

    def _connection_method(self, method: m.Method) -> None:
        if type(method) is m.ConnectionStartOk:
            self._start_ok(method)
        elif type(method) is m.ConnectionTuneOk:
            self._tune_ok(method)
        elif type(method) is m.ConnectionOpen:
            self._open(method)
        elif type(method) is m.ConnectionClose:
            if self.session is not None:
                self.broker.close_session(self.session)
                self.session = None
            self.send(0, m.ConnectionCloseOk())
            self.close_transport()
        elif type(method) is m.ConnectionCloseOk:
            self.close_transport()
        elif type(method) is m.ConnectionUpdateSecret:
            self.send(0, m.ConnectionUpdateSecretOk())

    def _start_ok(self, method: m.ConnectionStartOk) -> None:
        amqp_login.start(self, method)

    def _tune_ok(self, method: m.ConnectionTuneOk) -> None:
        frame_max = method.frame_max or self.config.frame_max
        channel_max = method.channel_max or self.config.channel_max
        if frame_max < 4096 or frame_max > self.config.frame_max:
            raise ProtocolError(ReplyCode.NOT_ALLOWED, f"frame_max={frame_max} outside 4096..{self.config.frame_max}")
        if channel_max > self.config.channel_max:
            raise ProtocolError(ReplyCode.NOT_ALLOWED, f"channel_max={channel_max} > {self.config.channel_max}")
        self.proto.tuned(frame_max, channel_max)
        self.frame_max = frame_max
        self.heartbeat = method.heartbeat
        if self.heartbeat:
            self._later(self.heartbeat / 2, self._heartbeat_tick)

    def _open(self, method: m.ConnectionOpen) -> None:
        assert self.user is not None  # the state machine allows connection.open only after tune-ok
        limit = self.config.max_connections
        if limit and sum(1 for c in self.registry if c.session is not None) >= limit:
            raise ProtocolError(
                ReplyCode.NOT_ALLOWED, f"connection refused: node connection limit ({limit}) is reached", 10, 40
            )
        try:
            self.session = self.broker.open_session(self.user, method.virtual_host, self.peer)
        except BrokerError as exc:
            raise to_protocol_error(exc, 10, 40) from None
        self.session.on_forced_close = self._forced_close
        self.access = Access(self.broker, self.user.name, method.virtual_host, self.config.max_queues_per_vhost)
        self.send(0, m.ConnectionOpenOk())

    def _forced_close(self, reason: str) -> None:
        """The broker ends this connection (its vhost was deleted): 320, as RabbitMQ does."""
        self.session = None  # the broker closes it
        self._fail(0, ProtocolError(ReplyCode.CONNECTION_FORCED, reason))
        self._flush()

    # ---------------------------------------------------------------------------- confirms

    def confirm_pending(self, ch: AMQPChannel) -> None:
        self._confirms[ch] = None

    def await_durable(self, ch: AMQPChannel) -> None:
        committer = self.committer
        if committer is None:  # no store: nothing is waited for
            ch.durable_advanced(1 << 64)
            return
        if not self._durable_waiters:
            committer.listen(self, self._durable_advanced)
        self._durable_waiters[ch] = None

    def _durable_advanced(self, durable: int) -> None:
        waiters = self._durable_waiters
        for ch in list(waiters):
            if ch.number not in self.channels or ch.durable_advanced(durable):
                del waiters[ch]
        if not waiters and self.committer is not None:
            self.committer.unlisten(self)

    def flush_confirm(self, ch: AMQPChannel) -> None:
        """Send ``ch``'s batched ack now (a nack follows it, and acks are cumulative)."""
        if self._confirms.pop(ch, False) is None:
            self.send(ch.number, m.BasicAck(ch.confirmable_seq, True))

    def channel_failed(self, number: int, error: ProtocolError) -> None:
        """The broker closes a channel on its own (consumer timeout)."""
        self._fail(number, error)
        self._flush()

    def _send_confirms(self) -> None:
        for ch in self._confirms:
            if ch.number in self.channels:
                self.send(ch.number, m.BasicAck(ch.confirmable_seq, True))
        self._confirms.clear()

    # -------------------------------------------------------------------------------- flow

    def note_publish_target(self, queue: Queue) -> None:
        if queue.message_count() > self.config.flow_high and queue.consumers:
            self._flow_queues.setdefault(queue, queue.stats_delivered)

    def _apply_flow(self) -> None:
        if self._reading_paused or self.transport is None:
            return
        if any(ch.core.consumers for ch in self.channels.values()):
            self._flow_queues.clear()  # never stall a connection that also consumes (it must ack)
            return
        self._reading_paused = True
        self.transport.pause_reading()
        self._later(0.002, self._check_flow)

    def _check_flow(self) -> None:
        low = self.config.flow_low
        queues = self._flow_queues
        for q, delivered in list(queues.items()):
            # A queue that delivered nothing since the last check is not draining (its consumers are
            # at their prefetch limit): waiting for it would stall the publisher indefinitely.
            if q.deleted or q.message_count() <= low or not q.consumers or q.stats_delivered == delivered:
                del queues[q]
            else:
                queues[q] = q.stats_delivered
        if queues:
            self._later(0.002, self._check_flow)
            return
        self._reading_paused = False
        if self.transport is not None and not self.transport.is_closing() and not self.blocked:
            self.transport.resume_reading()

    # ------------------------------------------------------------------------------ timers

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        self._timers = [t for t in self._timers if not t.cancelled()]
        self._timers.append(self._loop.call_later(delay, callback))

    def _handshake_timeout(self) -> None:
        if self.proto.state is not ConnectionState.OPEN and self.session is None:
            log.info("handshake timeout from %s", self.peer)
            self.close_transport()

    def _heartbeat_tick(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if not self._sent:
            self.write_chunks((HEARTBEAT_FRAME,))
        self._sent = False
        # Not reading (flow control) is not the peer's silence: RabbitMQ pauses its heartbeat monitor
        # while credit flow blocks the reader.
        self._missed = 0 if self._received or self._reading_paused or self.blocked else self._missed + 1
        self._received = False
        if self._missed >= 4:  # two heartbeat intervals (ticks are half an interval)
            log.info("missed heartbeats from %s, closing", self.peer)
            if self.session is not None:
                self.broker.close_session(self.session)
                self.session = None
            self.transport.abort()
            return
        self._later(self.heartbeat / 2, self._heartbeat_tick)
