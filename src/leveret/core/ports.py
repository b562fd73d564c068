"""The ports through which the core reaches persistence. The store implements them; the core
never imports the store (the composition root in ``server.runtime`` plugs one into the other)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .message import Message
    from .queue import Queue


class MessageStore(Protocol):
    """Keeps persistent messages of durable queues. Positions (``Message.location``) are ints that
    grow in log order; a message is durable once the store's durable position has passed it."""

    def publish(self, message: Message, queues: Sequence[Queue]) -> None:
        """Write the message once for all ``queues`` (buffered); sets ``message.location``."""
        ...

    paging: bool
    """True while the broker is under memory pressure: transient messages of deep queues page out."""

    recovered_timed: set[int]
    """Positions of recovered messages that were stored with an enqueue time (TTL applies)."""

    def page(self, message: Message, queues: Sequence[Queue]) -> None:
        """Write a transient message so it can leave memory; one reference per queue, never recovered."""
        ...

    def ack(self, queue: Queue, message: Message) -> None:
        """``queue`` no longer holds ``message`` (acked, dropped, purged); recorded lazily."""
        ...

    def forget(self, queue: Queue, message: Message) -> None:
        """``queue`` was deleted while holding ``message``: release it without writing a record."""
        ...

    def load(self, message: Message) -> None:
        """Read a paged-out message's properties and body back from disk into the object."""
        ...


class DefinitionsLog(Protocol):
    """Records durable definition changes as commands, replayed on boot through the vhost."""

    def record(self, command: Mapping[str, Any]) -> None: ...


class NullDefinitionsLog:
    def record(self, command: Mapping[str, Any]) -> None:
        pass
