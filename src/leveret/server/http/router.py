"""Routes of the management API, matched on the raw path's segments.

Why not aiohttp's router: RabbitMQ's URLs carry names percent-encoded in path segments, the default
vhost ``/`` as ``%2F``; matching must split the *raw* path on ``/`` and decode each segment after, or
``/api/queues/%2F/q`` would have four segments. The table is small; a linear scan is plenty.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .errors import bad_request

if TYPE_CHECKING:
    from aiohttp import web

    from leveret.core.broker import Broker, User

    from .door import HttpDoor

Handler = Callable[["Call"], Awaitable[Any]]


@dataclass
class Call:
    """One API request: who asks, the path's parameters, the query, the door."""

    request: web.Request
    user: User
    params: dict[str, str]
    query: dict[str, str]
    door: HttpDoor
    status: int = 200

    @property
    def broker(self) -> Broker:
        return self.door.broker

    async def json(self) -> dict[str, Any]:
        raw = await self.request.read()  # capped by the application's client_max_size
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(f"body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise bad_request("body must be a JSON object")
        return body


@dataclass
class Route:
    method: str
    parts: tuple[str, ...]
    handler: Handler


@dataclass
class Router:
    routes: list[Route] = field(default_factory=list)

    def add(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        parts = tuple(pattern.strip("/").split("/"))

        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, parts, handler))
            return handler

        return register

    def match(self, method: str, raw_path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, params, path_known): path_known tells 405 from 404 when no method matches."""
        segments = raw_path.split("?", 1)[0].strip("/").split("/")
        known = False
        for route in self.routes:
            params = _match(route.parts, segments)
            if params is None:
                continue
            known = True
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params, True
        return None, {}, known


def _match(parts: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    if len(parts) != len(segments):
        return None
    params: dict[str, str] = {}
    for part, seg in zip(parts, segments, strict=True):
        if part.startswith("{"):
            params[part[1:-1]] = unquote(seg)
        elif part != seg:
            return None
    return params


API = Router()
