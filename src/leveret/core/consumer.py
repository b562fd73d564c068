"""Consumers and the records of unacknowledged deliveries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .channel import Channel
    from .message import Message
    from .queue import Queue


class Consumer:
    __slots__ = (
        "arguments",
        "channel",
        "exclusive",
        "no_ack",
        "prefetch",
        "priority",
        "queue",
        "tag",
        "unacked",
        "wire",
    )

    def __init__(
        self,
        tag: str,
        channel: Channel,
        queue: Queue,
        no_ack: bool,
        exclusive: bool,
        prefetch: int,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.tag = tag
        self.channel = channel
        self.queue = queue
        self.no_ack = no_ack
        self.exclusive = exclusive
        self.prefetch = prefetch  # 0 = unlimited (per-consumer basic.qos at consume time)
        self.arguments = dict(arguments or {})
        priority = self.arguments.get("x-priority", 0)
        self.priority = priority if isinstance(priority, int) and not isinstance(priority, bool) else 0
        self.unacked = 0
        self.wire: Any = None  # the door's pre-encoded delivery template

    def can_take(self) -> bool:
        """Room for one more delivery: the channel is not paused (its output backed up) and neither
        this consumer's prefetch nor the channel-wide one is used up (no limit for no-ack)."""
        channel = self.channel
        if channel.paused:
            return False
        if self.no_ack:
            return True
        if self.prefetch and self.unacked >= self.prefetch:
            return False
        # RabbitMQ's limiter counts consumer deliveries only, not basic.get ones.
        return not channel.prefetch_count or channel.consumer_unacked < channel.prefetch_count


class Delivery:
    """One unacknowledged delivery on a channel."""

    __slots__ = ("at", "consumer", "message", "queue", "seq", "tag")

    def __init__(
        self, tag: int, queue: Queue, message: Message, seq: int, consumer: Consumer | None, at: float = 0.0
    ) -> None:
        self.tag = tag
        self.queue = queue
        self.message = message
        self.seq = seq
        self.consumer = consumer
        self.at = at  # when it was delivered (the broker's coarse clock), for the consumer timeout
