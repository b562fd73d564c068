"""A published message as the core sees it: names for routing, everything else opaque bytes.

``properties`` and ``body`` are passed through untouched from publisher to consumer (and, later, to
disk). The core decodes a field only when a decision needs it, through the ``decoder`` the door
supplied (headers for the headers exchange; later TTL, priority, DLX). ``wire`` is a slot the door
may fill with a pre-encoded form of exchange and routing key; the core never reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

HeadersDecoder = Callable[[bytes], Mapping[str, Any] | None]


def _no_headers(_properties: bytes) -> Mapping[str, Any] | None:
    return None


class Message:
    __slots__ = (
        "_headers",
        "body",
        "decoder",
        "exchange",
        "location",
        "persistent",
        "properties",
        "recovered",
        "routing_key",
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
        decoder: HeadersDecoder = _no_headers,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties
        self.body = body
        self.persistent = persistent
        self.wire = wire
        self.decoder = decoder
        self._headers: Mapping[str, Any] | bool | None = False
        self.location = 0  # position in the message store; 0 = not stored
        self.recovered = False  # restored from disk after a restart: delivered as redelivered

    def page_out(self) -> None:
        """Drop properties and body from memory; only stored messages may do this."""
        assert self.location
        self.properties = b""
        self.body = None
        self.wire = b""
        self._headers = False

    def headers(self) -> Mapping[str, Any]:
        """The message's headers table (decoded once, on first use)."""
        if self._headers is False:
            self._headers = self.decoder(self.properties)
        return self._headers or {}  # type: ignore[return-value]

    def __repr__(self) -> str:
        size = "paged out" if self.body is None else f"{len(self.body)} bytes"
        return f"Message({self.exchange!r}, {self.routing_key!r}, {size})"
