"""Events the sans-I/O connection produces from bytes (past-tense nouns, as h11's)."""

from __future__ import annotations

from .errors import ProtocolError
from .methods import BasicPublish, Method


class Event:
    __slots__ = ()


class ProtocolHeaderReceived(Event):
    """A valid ``AMQP 0-9-1`` header arrived; the server answers with ``connection.start``."""

    __slots__ = ()


class BadProtocolHeaderReceived(Event):
    """Anything else arrived first; the server writes its own header and closes (spec 4.2.2)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class MethodReceived(Event):
    __slots__ = ("channel", "method")

    def __init__(self, channel: int, method: Method) -> None:
        self.channel = channel
        self.method = method

    def __repr__(self) -> str:
        return f"MethodReceived({self.channel}, {self.method!r})"


class ContentReceived(Event):
    """A whole ``basic.publish``: method, raw properties (flags + list) and the body. ``wire`` is the
    exchange and routing key exactly as they arrived (two short strings), reused for deliveries."""

    __slots__ = ("body", "channel", "method", "properties", "wire")

    def __init__(self, channel: int, method: BasicPublish, properties: bytes, body: bytes, wire: bytes = b"") -> None:
        self.channel = channel
        self.method = method
        self.properties = properties
        self.body = body
        self.wire = wire

    def __repr__(self) -> str:
        return f"ContentReceived({self.channel}, {self.method!r}, {self.properties!r}, {self.body!r})"


class ContentBatch(Event):
    """Publishes in a row on one channel that differ only in their bodies (the same method frame,
    properties and body size: what a publisher's stream usually is), as one event: the server acts
    on them as on as many ``ContentReceived``, in order."""

    __slots__ = ("bodies", "channel", "method", "properties", "wire")

    def __init__(self, channel: int, method: BasicPublish, properties: bytes, wire: bytes) -> None:
        self.channel = channel
        self.method = method
        self.properties = properties
        self.wire = wire
        self.bodies: list[bytes] = []

    def __repr__(self) -> str:
        return f"ContentBatch({self.channel}, {self.method!r}, {self.properties!r}, {len(self.bodies)} bodies)"


class ChannelFailed(Event):
    """A soft error on one channel: the server closes that channel with ``error``'s code."""

    __slots__ = ("channel", "error")

    def __init__(self, channel: int, error: ProtocolError) -> None:
        self.channel = channel
        self.error = error


class ConnectionFailed(Event):
    """A hard error: the server closes the connection with ``error``'s code. Parsing stops."""

    __slots__ = ("error",)

    def __init__(self, error: ProtocolError) -> None:
        self.error = error
