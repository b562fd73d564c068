"""The ZeroMQ door of the event bus: XSUB (publish port), XPUB (subscribe port) and PULL (push port).

Theory of operation. Three plain (non-blocking) pyzmq sockets live on the broker's own event loop:
each socket's ``ZMQ_FD`` is registered with ``loop.add_reader``; that descriptor is edge-triggered and
only says "look at ``ZMQ_EVENTS``", so ``_pump`` drains every socket while ``ZMQ_EVENTS`` shows
``POLLIN`` (at most ``BATCH`` messages per socket per turn, then it reschedules itself) and runs again
after every send. No threads besides libzmq's own I/O thread.

Ports: ``--zmq-publish-port`` (5555) is an XSUB where ``zmq.PUB`` publishers connect;
``--zmq-subscribe-port`` (5556) an XPUB where ``zmq.SUB`` subscribers connect; ``--zmq-push-port``
(5557) a PULL where ``zmq.PUSH`` publishers connect. A port of 0 turns that socket off; all three 0
turns the door off. The sockets bind on the configured hosts only (``--host``; default loopback). A
socket that cannot bind (port taken) is logged as an error and left off; AMQP keeps serving.

ZeroMQ -> everyone. Every message received on XSUB or PULL is
  (a) forwarded unchanged (all frames) to the XPUB subscribers, with ZeroMQ's own prefix matching on
      the first frame, and
  (b) published into the AMQP exchange ``--zmq-exchange`` (default ``leveret.events``, a durable topic
      exchange declared at start), persistent (delivery_mode 2) with the header
      ``x-leveret-source: zmq``, so durable queues bound there keep it through the message store:
        * one frame ``[body]``              -> routing key ``""``, body = the frame;
        * two frames ``[topic, body]``      -> routing key = topic (UTF-8), body = second frame;
        * more ``[topic, f1, ..., body]``   -> routing key = first frame, body = last frame, the middle
                                               frames in the header ``x-zmq-frames`` (a list of bytes).
      A topic that is not UTF-8 or longer than 255 bytes cannot be a routing key: the message is not
      published into AMQP (counted in ``dropped``); it was still forwarded in (a).
  The XSUB subscribes to everything (one ``\\x01`` frame to its publishers): the door needs every
  message for (b), so XPUB subscription frames are read and counted but not forwarded upstream
  (forwarding an unsubscribe would cancel the door's own catch-all subscription at the publisher).
  There is no acknowledgement in ZeroMQ: a message is durable once the store's next group fsync has
  covered it (milliseconds); a crash inside that window loses it.

AMQP -> ZeroMQ. An exclusive, non-durable queue of the door's own session, bound to the exchange with
``#``, has a no-ack consumer: every message AMQP clients publish there goes out on XPUB as
``[routing key, body]``. Messages carrying ``x-leveret-source: zmq`` are skipped (they came from
ZeroMQ and were forwarded in (a) already): no loops, no duplicates. XPUB drops for subscribers past
their high-water mark, as ZeroMQ's PUB does.

Slow joiners: a ``zmq.PUB`` that connects and sends at once loses what it sends before the door's
subscription has reached it (ZeroMQ drops on a PUB socket with no matching subscriber); the door
cannot change that inside the publisher's libzmq. Remedies: pause after ``connect``, keep publishers
long-lived, or use ``zmq.PUSH`` to the push port (PUSH queues until connected and flushes on close
within its linger).

Metrics (counters on the door, logged at shutdown): ``received`` (ZeroMQ messages in), ``routed``
(published into AMQP and reached at least one queue), ``unroutable`` (published, no queue bound),
``dropped`` (not publishable into AMQP), ``forwarded`` (messages sent out on XPUB, both directions),
``from_amqp`` (AMQP messages among them), ``subscriptions`` (XPUB subscription frames seen).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import zmq

from leveret.amqp.properties import WIRE_PROPERTIES, BasicProperties, encode_properties
from leveret.core.broker import Broker, User
from leveret.core.errors import BrokerError
from leveret.core.message import Message

from .config import Config

if TYPE_CHECKING:
    from leveret.core.channel import Channel
    from leveret.core.consumer import Consumer
    from leveret.core.session import Session

    from .durability import GroupCommitter

log = logging.getLogger("leveret.zmq")

BATCH = 256  # messages per socket per loop turn before giving other work a chance
SOURCE_HEADER = "x-leveret-source"
FRAMES_HEADER = "x-zmq-frames"
_USER = User("leveret-zmq-door")
_PLAIN_PROPERTIES = encode_properties(BasicProperties(headers={SOURCE_HEADER: "zmq"}, delivery_mode=2))
# The encoded table entry ``x-leveret-source: "zmq"`` as it appears inside raw properties.
_MARK = bytes([len(SOURCE_HEADER)]) + SOURCE_HEADER.encode() + b"S\x00\x00\x00\x03zmq"


class ZmqDoor:
    def __init__(self, broker: Broker, config: Config, committer: GroupCommitter | None) -> None:
        self.broker = broker
        self.config = config
        self.committer = committer
        self.exchange = config.zmq_exchange
        self.received = 0
        self.routed = 0
        self.unroutable = 0
        self.dropped = 0
        self.forwarded = 0
        self.from_amqp = 0
        self.subscriptions = 0
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._xsub: zmq.Socket[bytes] | None = None
        self._xpub: zmq.Socket[bytes] | None = None
        self._pull: zmq.Socket[bytes] | None = None
        self._readers: list[int] = []
        self._session: Session | None = None
        self._channel: Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump_scheduled = False
        self._closed = False
        self._exchange_missing_logged = False

    # ------------------------------------------------------------------------------ life cycle

    @property
    def enabled(self) -> bool:
        cfg = self.config
        return bool(cfg.zmq_publish_port or cfg.zmq_subscribe_port or cfg.zmq_push_port)

    def start(self) -> None:
        if not self.enabled:
            log.info("ZeroMQ door off (all its ports are 0)")
            return
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        vhost = self.broker.vhosts["/"]
        try:
            vhost.declare_exchange(self.exchange, "topic", durable=True)
        except BrokerError as exc:  # e.g. an exchange of that name but another type
            log.error("ZeroMQ door off: cannot declare exchange '%s': %s", self.exchange, exc)
            return
        self._session = self.broker.open_session(_USER, "/", "zmq-door", internal=True)
        self._channel = self._session.open_channel(1, self)
        self._ctx = zmq.Context()
        self._xsub = self._bind(zmq.XSUB, cfg.zmq_publish_port, "XSUB (publish)")
        self._xpub = self._bind(zmq.XPUB, cfg.zmq_subscribe_port, "XPUB (subscribe)")
        self._pull = self._bind(zmq.PULL, cfg.zmq_push_port, "PULL (push)")
        if self._xsub is not None:
            self._xsub.send(b"\x01")  # subscribe to everything at every publisher, now and later
        if self._xpub is not None:
            queue = vhost.declare_queue(self._session, "", exclusive=True)
            vhost.bind_queue(self._session, queue.name, self.exchange, "#", {})
            self._channel.start(self._channel.consume(queue.name, "zmq-door", no_ack=True, exclusive=True))
        for sock in (self._xsub, self._xpub, self._pull):
            if sock is not None:
                fd = int(sock.getsockopt(zmq.FD))
                self._loop.add_reader(fd, self._schedule_pump)
                self._readers.append(fd)
        self._schedule_pump()

    def _bind(self, kind: int, port: int, what: str) -> zmq.Socket[bytes] | None:
        if not port:
            return None
        assert self._ctx is not None
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if kind != zmq.XPUB:
            sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_message_size)
        bound = []
        for host in self.config.hosts:
            ipv6 = ":" in host
            if ipv6:
                sock.setsockopt(zmq.IPV6, 1)
            endpoint = f"tcp://[{host}]:{port}" if ipv6 else f"tcp://{host}:{port}"
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                level = logging.WARNING if host == "::1" and len(self.config.hosts) > 1 else logging.ERROR
                log.log(level, "ZeroMQ %s: cannot bind %s: %s", what, endpoint, exc)
                continue
            bound.append(host)
        if not bound:
            sock.close()
            log.error("ZeroMQ %s is off: no address could be bound", what)
            return None
        log.info("ZeroMQ %s listening on %s port %d", what, ", ".join(bound), port)
        return sock

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop is not None:
            for fd in self._readers:
                self._loop.remove_reader(fd)
        self._readers.clear()
        if self._session is not None:
            self.broker.close_session(self._session)
            self._session = None
        for sock in (self._xsub, self._xpub, self._pull):
            if sock is not None:
                sock.close(linger=0)
        self._xsub = self._xpub = self._pull = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
            log.info("ZeroMQ door stopped: %s", self.metrics())

    def metrics(self) -> dict[str, int]:
        return {
            "received": self.received,
            "routed": self.routed,
            "unroutable": self.unroutable,
            "dropped": self.dropped,
            "forwarded": self.forwarded,
            "from_amqp": self.from_amqp,
            "subscriptions": self.subscriptions,
        }

    # ----------------------------------------------------------------------------- the pump

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled and not self._closed and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if self._closed:
            return
        published = False
        for sock in (self._xsub, self._pull):
            if sock is None:
                continue
            for _ in range(BATCH):
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._received(frames)
                published = True
        xpub = self._xpub
        if xpub is not None:
            for _ in range(BATCH):
                try:
                    xpub.recv_multipart(zmq.NOBLOCK)  # subscription frames: seen, not forwarded (see above)
                except zmq.Again:
                    break
                self.subscriptions += 1
        if published and self.committer is not None:
            self.committer.poke()
        # ZMQ_FD is edge-triggered: look again while anything is readable (sends change the state too).
        for sock in (self._xsub, self._pull, self._xpub):
            if sock is not None and int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                self._schedule_pump()
                return

    def _received(self, frames: list[bytes]) -> None:
        self.received += 1
        if self._xpub is not None:
            self._xpub.send_multipart(frames, zmq.NOBLOCK)
            self.forwarded += 1
        if len(frames) == 1:
            key, body, properties = "", frames[0], _PLAIN_PROPERTIES
        else:
            try:
                key = frames[0].decode("utf-8")
            except UnicodeDecodeError:
                self.dropped += 1
                return
            if len(frames[0]) > 255:
                self.dropped += 1
                return
            body = frames[-1]
            if len(frames) == 2:
                properties = _PLAIN_PROPERTIES
            else:
                headers = {SOURCE_HEADER: "zmq", FRAMES_HEADER: list(frames[1:-1])}
                properties = encode_properties(BasicProperties(headers=headers, delivery_mode=2))
        self._publish(key, properties, body)

    def _publish(self, key: str, properties: bytes, body: bytes) -> None:
        channel = self._channel
        assert channel is not None
        message = Message(self.exchange, key, properties, body, True, b"", WIRE_PROPERTIES)
        try:
            queues = channel.publish(self.exchange, key, message, False)
        except BrokerError as exc:  # the exchange was deleted by an AMQP client
            self.dropped += 1
            if not self._exchange_missing_logged:
                self._exchange_missing_logged = True
                log.error("ZeroMQ door cannot publish into AMQP: %s", exc)
            return
        self._exchange_missing_logged = False
        if queues:
            self.routed += 1
        else:
            self.unroutable += 1

    # ------------------------------------------------------------- AMQP -> ZeroMQ (DeliverySink)

    def deliver(self, consumer: Consumer, delivery_tag: int, redelivered: bool, message: Message) -> None:
        xpub = self._xpub
        if xpub is None or _MARK in message.properties:
            return  # came from ZeroMQ: forwarded on arrival already
        body = message.body
        assert body is not None, "the queue loads a paged-out message before handing it over"
        xpub.send_multipart([message.routing_key.encode("utf-8"), body], zmq.NOBLOCK)
        self.forwarded += 1
        self.from_amqp += 1
        self._schedule_pump()

    def consumer_cancelled(self, consumer: Consumer) -> None:
        log.warning("ZeroMQ door: its AMQP queue was deleted; AMQP messages no longer reach ZeroMQ")

    def channel_failed(self, error: BrokerError) -> None:
        log.error("ZeroMQ door: its channel failed: %s", error.text)  # no-ack consumer: no timeout applies
