"""Access control for AMQP methods: RabbitMQ's table of which method needs which permission.

One ``Access`` per open connection (user + vhost). ``authorize(method)`` runs before a channel
method's handler; ``publish()`` before each ``basic.publish``. Each raises a ``BrokerError``
(403 ACCESS_REFUSED with RabbitMQ's text, 406 for the vhost queue limit) that the door turns into
a channel close. The table (RabbitMQ's access-control guide, checked against RabbitMQ 3.10):

=====================  ====================  ====================  ===================
method                 configure             write                 read
=====================  ====================  ====================  ===================
exchange.declare       exchange                                    exchange (with AE)
  (alternate-exch.)                          AE
exchange.declare       -                     -                     -   (passive)
exchange.delete        exchange
queue.declare          queue                                       queue (with DLX)
  (dead-letter-exch.)                        DLX
queue.declare          -                     -                     -   (passive)
queue.delete           queue
exchange.bind/unbind                         destination exchange  source exchange
queue.bind/unbind                            queue                 exchange
basic.publish                                exchange
basic.get/consume                                                  queue
queue.purge                                                        queue
=====================  ====================  ====================  ===================

The default exchange is checked under the name ``amq.default``. Passive declares need no
permission (RabbitMQ 3.10), only access to the vhost, which ``connection.open`` checked. Checks run
where RabbitMQ runs them relative to its other checks, so a refused client reads the same error:
an unknown exchange type, the default exchange, ``amq.*`` names are refused by the core first.
Topic permissions: write on the routing key at publish, read on the binding key at bind, for
topic exchanges named in a topic permission.

The publish path is hot: an exchange once allowed for writing is remembered per connection until
``Broker.access_version`` moves (any user, permission or vhost change).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from leveret.amqp import methods as m
from leveret.core import errors
from leveret.core.broker import Broker
from leveret.core.exchange import EXCHANGE_TYPES
from leveret.core.names import generated_queue_name
from leveret.core.permissions import CONFIGURE, READ, WRITE

DEFAULT_EXCHANGE = "amq.default"
_WRITABLE_CACHE = 256


class Access:
    __slots__ = ("broker", "max_queues", "user", "version", "vhost", "writable")

    def __init__(self, broker: Broker, user: str, vhost: str, max_queues: int = 0) -> None:
        self.broker = broker
        self.user = user
        self.vhost = vhost
        self.max_queues = max_queues  # the server's default when the vhost sets no max-queues
        self.version = broker.access_version
        self.writable: set[str] = set()  # exchanges this connection may publish to (no topic rule)

    # ------------------------------------------------------------------------------- checks

    def check(self, kind: str, resource: str, name: str) -> None:
        if resource == "exchange" and name == "":
            name = DEFAULT_EXCHANGE
        self.broker.check(self.user, self.vhost, kind, resource, name)

    def publish(self, exchange: str, routing_key: str) -> None:
        """``basic.publish``: write on the exchange (and the topic rule on the routing key)."""
        broker = self.broker
        if self.version == broker.access_version and exchange in self.writable:
            return
        if self.version != broker.access_version:
            self.writable.clear()
            self.version = broker.access_version
        self.check(WRITE, "exchange", exchange)
        if (self.user, self.vhost, exchange) in broker.topic_permissions:
            self._topic(WRITE, exchange, routing_key)
            return  # decided per routing key: not cached
        if len(self.writable) >= _WRITABLE_CACHE:
            self.writable.clear()
        self.writable.add(exchange)

    def _topic(self, kind: str, exchange: str, routing_key: str) -> None:
        vh = self.broker.vhosts.get(self.vhost)
        ex = vh.exchanges.get(exchange) if vh is not None else None
        if ex is not None and ex.type == "topic":
            self.broker.check_topic(self.user, self.vhost, kind, exchange, routing_key)

    def authorize(self, method: m.Method) -> None:
        """Check a channel method (``basic.publish`` has ``publish``)."""
        check = _CHECKS.get(type(method))
        if check is not None:
            check(self, method)

    # ------------------------------------------------------------------------- per method

    def exchange_declare(self, method: m.ExchangeDeclare) -> None:
        name = method.exchange
        if method.passive or method.type not in EXCHANGE_TYPES or name == "":
            return  # no permission needed; or the core's own refusal comes first
        self.check(CONFIGURE, "exchange", name)
        vh = self.broker.vhosts.get(self.vhost)
        if vh is None or name in vh.exchanges or name.startswith("amq."):
            return
        ae = method.arguments.get("alternate-exchange")
        if isinstance(ae, str | bytes):
            self.check(READ, "exchange", name)
            self.check(WRITE, "exchange", _text(ae))

    def exchange_delete(self, method: m.ExchangeDelete) -> None:
        if method.exchange and not method.exchange.startswith("amq."):
            self.check(CONFIGURE, "exchange", method.exchange)

    def bind_exchange(self, method: m.ExchangeBind | m.ExchangeUnbind) -> None:
        self.check(WRITE, "exchange", method.destination)
        if method.destination and method.source:
            self.check(READ, "exchange", method.source)
            if isinstance(method, m.ExchangeBind):
                self._topic(READ, method.source, method.routing_key)

    def queue_declare(self, method: m.QueueDeclare) -> None:
        if method.passive:
            return
        # A server-named queue is checked under a name of the same shape (the core draws its own).
        name = method.queue or generated_queue_name()
        if method.queue.startswith("amq."):
            return  # the core refuses the reserved prefix (RabbitMQ checks the name first)
        self.check(CONFIGURE, "queue", name)
        vh = self.broker.vhosts.get(self.vhost)
        if vh is None or name in vh.queues:
            return
        limit = vh.limits.get("max-queues", self.max_queues or None)
        if limit is not None and len(vh.queues) >= limit:
            raise errors.precondition_failed(
                f"cannot declare queue '{name}': queue limit in vhost '{self.vhost}' ({limit}) is reached"
            )
        dlx = method.arguments.get("x-dead-letter-exchange")
        if isinstance(dlx, str | bytes):
            self.check(READ, "queue", name)
            self.check(WRITE, "exchange", _text(dlx))

    def bind_queue(self, method: m.QueueBind | m.QueueUnbind) -> None:
        self.check(WRITE, "queue", method.queue)
        if method.exchange:
            self.check(READ, "exchange", method.exchange)
            if isinstance(method, m.QueueBind):
                self._topic(READ, method.exchange, method.routing_key)

    def configure_queue(self, method: m.QueueDelete) -> None:
        self.check(CONFIGURE, "queue", method.queue)

    def read_queue(self, method: m.QueuePurge | m.BasicGet | m.BasicConsume) -> None:
        self.check(READ, "queue", method.queue)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


_CHECKS: dict[type[m.Method], Callable[[Access, Any], None]] = {
    m.ExchangeDeclare: Access.exchange_declare,
    m.ExchangeDelete: Access.exchange_delete,
    m.ExchangeBind: Access.bind_exchange,
    m.ExchangeUnbind: Access.bind_exchange,
    m.QueueDeclare: Access.queue_declare,
    m.QueueDelete: Access.configure_queue,
    m.QueueBind: Access.bind_queue,
    m.QueueUnbind: Access.bind_queue,
    m.QueuePurge: Access.read_queue,
    m.BasicGet: Access.read_queue,
    m.BasicConsume: Access.read_queue,
}
