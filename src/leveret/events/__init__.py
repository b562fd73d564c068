"""``leveret.events``: an event-handler runtime for applications, on aio-pika.

It talks plain AMQP 0-9-1, so it works against RabbitMQ as well as Leveret. Events are published to a
durable topic exchange (``leveret.events``); each consumer group is a durable queue named after the
group and bound with the handler's pattern, so the instances of one group compete for its events and
every group gets every event. See :class:`EventBus`.
"""

from __future__ import annotations

from .bus import EventBus
from .worker import Event, GroupMetrics, HandlerSpec

__all__ = ["Event", "EventBus", "GroupMetrics", "HandlerSpec"]
