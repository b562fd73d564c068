"""The HTTP door: management API (``/api``), Prometheus (``/metrics``) and the web UI (``/``).

Theory of operation: an aiohttp application on the broker's own event loop, so a handler reads and
changes broker state directly and synchronously, like an AMQP method handler does; nothing is
locked, nothing crosses threads. Every change goes through the core's methods (``VirtualHost``,
``Broker``), so what the API declares is journaled exactly as an AMQP declare is.

Requests under ``/api`` are authenticated (HTTP basic against the broker's users) and authorised by
management tags (``auth``). Bodies are capped (``http_max_body``, 413 beyond). Every error is JSON
``{"error", "reason"}``, as RabbitMQ answers. ``/metrics`` needs no credentials (as RabbitMQ's
Prometheus plugin), and the UI's static files neither: the UI asks for credentials and sends them
with each API call.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from leveret.core.errors import BrokerError

from ..tls import http_context
from . import auth
from .errors import HttpError, from_broker, not_found
from .flow import FlowSampler
from .handlers import HandlerMonitor
from .router import API, Call

if TYPE_CHECKING:
    from leveret.core.broker import Broker
    from leveret.server.runtime import Server

log = logging.getLogger("leveret.http")

STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
}


class HttpDoor:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.broker: Broker = server.broker
        self.config = server.config
        self.started_at = time.time()
        self.flow = FlowSampler(
            self.broker, self.config.stats_interval, self.config.stats_history_queues, server.connections
        )
        self.handlers = HandlerMonitor(self.broker, self.config.stats_interval)
        self.flow.handler_rate = self.handlers.total_rate
        self._runner: web.AppRunner | None = None
        self.ports: list[int] = []

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.http_max_body, middlewares=[self._errors])
        app.router.add_route("*", "/api/{tail:.*}", self._api)
        app.router.add_route("*", "/api", self._api)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._static)
        app.router.add_get("/static/{file}", self._static)
        return app

    async def start(self) -> None:
        from . import api, api_admin, api_handlers, api_messages  # noqa: F401  (they register their routes)

        cfg = self.config
        https = cfg.https_port > 0 and bool(cfg.tls_cert and cfg.tls_key)
        if cfg.http_port <= 0 and not https:
            return
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        hosts = list(cfg.hosts)
        listeners: list[tuple[int, ssl.SSLContext | None]] = []
        if cfg.http_port > 0:
            listeners.append((cfg.http_port, None))
        if https:
            listeners.append((cfg.https_port, http_context(cfg)))
        for port, context in listeners:
            for host in hosts:
                site = web.TCPSite(self._runner, host, port, reuse_address=True, ssl_context=context)
                try:
                    await site.start()
                except OSError as exc:
                    if len(hosts) > 1 and host == "::1":
                        log.warning("HTTP: not listening on %s: %s", host, exc)
                        continue
                    raise
            kind = "HTTPS" if context is not None else "HTTP"
            log.info("%s management listening on %s port %d", kind, ", ".join(hosts), port)
        self.flow.start()
        self.handlers.start()

    async def stop(self) -> None:
        await self.flow.stop()
        await self.handlers.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ----------------------------------------------------------------------------- handlers

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except HttpError as exc:
            response = error_response(exc, request)
        except BrokerError as exc:
            response = error_response(from_broker(exc), request)
        except web.HTTPRequestEntityTooLarge:
            limit = self.config.http_max_body
            response = error_response(HttpError(413, "payload_too_large", f"body over {limit} bytes"), request)
        except web.HTTPException as exc:
            response = error_response(HttpError(exc.status, exc.reason, exc.text or exc.reason), request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    async def _api(self, request: web.Request) -> web.StreamResponse:
        raw = request.rel_url.raw_path
        route, params, known = API.match(request.method, raw)
        if route is None:
            if known:
                raise HttpError(405, "method_not_allowed", f"{request.method} not allowed")
            raise not_found()
        _same_origin(request)
        user = await auth.login(self.broker, request.headers.get("Authorization"), request.remote or "", self.config)
        call = Call(request, user, params, dict(request.query), self)
        result = await route.handler(call)
        self._poke()
        if isinstance(result, web.StreamResponse):
            return result
        if result is None:
            return web.Response(status=call.status if call.status != 200 else 204)
        return json_response(result, call.status)

    def _poke(self) -> None:
        committer = self.server.committer
        if committer is not None:
            committer.poke()  # anything an API call appended to the store gets written and fsynced

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        from .prometheus import render

        detail = request.query.get("detail", "")
        per_queue = detail == "queues" or (self.config.metrics_detail and detail != "none")
        text = render(self, per_queue, per_group=detail != "none")
        return web.Response(text=text, content_type="text/plain", charset="utf-8", headers={"X-Version": "0.0.4"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("file", "index.html")
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
            raise not_found()
        try:
            data = resources.files("leveret.server.http").joinpath("static", name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise not_found() from None
        return web.Response(body=data, content_type=STATIC_TYPES[suffix], headers={"Cache-Control": "no-cache"})


def _same_origin(request: web.Request) -> None:
    """Browsers send ``Origin`` with cross-site requests: a page elsewhere must not drive the API
    with credentials the browser remembered (CSRF). Tools (curl, rabbitmqadmin, ctl) send none."""
    origin = request.headers.get("Origin")
    if origin is None or request.method in ("GET", "HEAD"):
        return
    if origin.split("://", 1)[-1].rstrip("/") != request.host:
        raise HttpError(403, "forbidden", "cross-origin request refused")


def json_response(data: Any, status: int = 200) -> web.Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
    return web.Response(text=body, status=status, content_type="application/json")


def error_response(exc: HttpError, request: web.Request) -> web.Response:
    response = json_response({"error": exc.error, "reason": exc.reason}, exc.status)
    # The web UI asks for credentials itself; the browser's own dialog would get in its way.
    if exc.status == 401 and "x-leveret-ui" not in request.headers:
        response.headers["WWW-Authenticate"] = auth.REALM
    return response
