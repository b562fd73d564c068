"""A published message as the core sees it: names for routing, everything else opaque bytes.

``properties`` and ``body`` are passed through untouched from publisher to consumer (and, later, to
disk). The core decodes a field only when a decision needs it, through the ``codec`` the door
supplied (``PropertiesCodec``: headers for the headers exchange, expiration, priority, reply-to,
and re-encoding for dead-lettering). ``wire`` is a slot the door
may fill with a pre-encoded form of exchange and routing key; the core never reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class PropertiesCodec(Protocol):
    """How the core reads and rewrites a message's raw properties; the door that knows the wire
    format supplies it. ``peek`` is on the publish path: it answers None at once, without decoding,
    when none of the fields the core acts on (expiration, priority, reply-to) is present."""

    def peek(self, properties: bytes) -> tuple[str | None, int | None, str | None] | None:
        """(expiration, priority, reply_to), or None when all three are absent."""
        ...

    def decode(self, properties: bytes) -> dict[str, Any]:
        """Every present property by its AMQP name (``headers``, ``expiration``, ``priority``...)."""
        ...

    def encode(self, fields: Mapping[str, Any]) -> bytes: ...


class _NoProperties:
    def peek(self, properties: bytes) -> tuple[str | None, int | None, str | None] | None:
        return None

    def decode(self, properties: bytes) -> dict[str, Any]:
        return {}

    def encode(self, fields: Mapping[str, Any]) -> bytes:
        raise NotImplementedError("this message source cannot encode properties")


NO_PROPERTIES: PropertiesCodec = _NoProperties()


class Message:
    __slots__ = (
        "_headers",
        "body",
        "codec",
        "enqueued_at",
        "exchange",
        "location",
        "persistent",
        "priority",
        "properties",
        "recovered",
        "routing_key",
        "size",
        "ttl",
        "wire",
    )

    def __init__(
        self,
        exchange: str,
        routing_key: str,
        properties: bytes,
        body: bytes | None,
        persistent: bool = False,
        wire: bytes = b"",
        codec: PropertiesCodec = NO_PROPERTIES,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties
        self.body = body
        self.persistent = persistent
        self.wire = wire
        self.codec = codec
        self._headers: Mapping[str, Any] | bool | None = False
        self.size = len(body) if body is not None else 0  # body bytes, kept when the body pages out
        self.ttl = -1  # the message's own expiration in ms (-1: none)
        self.priority = 0
        self.enqueued_at = 0.0  # when it entered its queues (set only where TTL applies)
        self.location = 0  # position in the message store; 0 = not stored
        self.recovered = False  # restored from disk after a restart: delivered as redelivered

    def page_out(self) -> None:
        """Drop properties and body from memory; only stored messages may do this."""
        assert self.location
        self.properties = b""
        self.body = None
        self.wire = b""
        self._headers = False

    def copy(self, properties: bytes) -> Message:
        """The same stored message with other properties (a redelivery with an added header)."""
        other = Message(self.exchange, self.routing_key, properties, self.body, self.persistent, self.wire, self.codec)
        other.location = self.location
        other.recovered = self.recovered
        other.size = self.size
        other.ttl = self.ttl
        other.priority = self.priority
        other.enqueued_at = self.enqueued_at
        return other

    def headers(self) -> Mapping[str, Any]:
        """The message's headers table (decoded once, on first use)."""
        if self._headers is False:
            self._headers = self.codec.decode(self.properties).get("headers")
        return self._headers or {}  # type: ignore[return-value]

    def __repr__(self) -> str:
        size = "paged out" if self.body is None else f"{len(self.body)} bytes"
        return f"Message({self.exchange!r}, {self.routing_key!r}, {size})"
