"""One client connection as the core sees it: its vhost, channels and exclusive queues."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .channel import Channel, DeliverySink
from .queue import Queue

if TYPE_CHECKING:
    from .broker import User
    from .vhost import VirtualHost


class Session:
    def __init__(self, vhost: VirtualHost, user: User, name: str = "") -> None:
        self.vhost = vhost
        self.user = user
        self.name = name
        self.channels: dict[int, Channel] = {}
        self.exclusive_queues: dict[str, Queue] = {}
        self.internal = False  # a door of the broker's own (no permission checks, not counted)
        # Set by the door: tell the client its connection is closed by the broker (vhost deleted).
        self.on_forced_close: Callable[[str], None] | None = None

    def force_close(self, reason: str) -> None:
        if self.on_forced_close is not None:
            self.on_forced_close(reason)

    def open_channel(self, number: int, sink: DeliverySink) -> Channel:
        channel = Channel(self, number, sink)
        self.channels[number] = channel
        return channel

    def close_channel(self, number: int) -> None:
        channel = self.channels.pop(number, None)
        if channel is not None:
            channel.close()

    def close(self) -> None:
        """Connection gone: close every channel (requeueing), then delete its exclusive queues."""
        for number in list(self.channels):
            self.close_channel(number)
        for q in list(self.exclusive_queues.values()):
            self.vhost.remove_queue(q)
        self.exclusive_queues.clear()
