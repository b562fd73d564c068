"""Handler groups' h(t), as the event-handler runtime (``leveret.events``) reports it.

Theory of operation. Every :class:`~leveret.events.EventBus` publishes, every ``report_interval``
seconds, one small transient JSON message per consumer group to the durable topic exchange
``leveret.metrics`` with routing key ``events.<group>`` (see ``leveret.events.bus``). The broker
cannot measure h(t) itself: handling happens in the application, between a delivery and its ack.

Here an internal session of the broker (like the ZeroMQ door's) consumes those reports: an exclusive,
non-durable, auto-delete, server-named queue bound to ``leveret.metrics`` with ``events.#``, no-ack.
``deliver`` runs inside the publisher's turn, so it only appends the body to a bounded list and
schedules the parsing for a later loop turn: the hot path pays one append per report (a few per
second per application instance), nothing more.

State is bounded: at most ``max_reporters`` (group, instance) entries; an entry expires when its
instance has not reported for ``EXPIRE_INTERVALS`` of its own report intervals (a stopped or crashed
worker leaves within seconds). Reports are untrusted input (anyone with write permission on the
exchange may publish): a body that is not a JSON object with the expected fields, or too large, is
counted in ``rejected`` and otherwise ignored.

Per group, across its live instances: h(t) is the sum of the instances' ``handled_rate`` (each an
h(t) over its own 10 s window), the counters are summed, and ``instances`` counts them. Counters of
an instance that went away leave the sums with it (Prometheus sees a counter reset, which it
handles). History: every ``interval`` (the flow sampler's) each group's h(t) is pushed into a
:class:`~leveret.server.http.flow.Ring` (10 minutes), as flow.py keeps queue history; a group's
history goes when its last instance does.

Reports reach this consumer only on the vhost ``/``: a bus connected to another vhost publishes into
that vhost's ``leveret.metrics``, which nobody here reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from leveret.core.broker import User
from leveret.core.errors import BrokerError

from .flow import HISTORY_SECONDS, Ring

if TYPE_CHECKING:
    from leveret.core.broker import Broker
    from leveret.core.channel import Channel
    from leveret.core.consumer import Consumer
    from leveret.core.message import Message
    from leveret.core.session import Session

log = logging.getLogger("leveret.http")

REPORT_EXCHANGE = "leveret.metrics"
REPORT_PREFIX = "events."
MAX_REPORT_BYTES = 4096
MAX_NAME = 255
MAX_PENDING = 4096  # reports waiting to be parsed; beyond, they are dropped (counted in rejected)
EXPIRE_INTERVALS = 3
DEFAULT_REPORT_INTERVAL = 5.0
COUNTERS = ("handled", "failed", "retried", "dead_lettered", "in_flight")
_USER = User("leveret-handler-monitor")


@dataclass(slots=True)
class Report:
    """One instance's latest report for one group; ``expires`` is on the monitor's clock."""

    group: str
    instance: str
    pattern: str
    handled: int
    failed: int
    retried: int
    dead_lettered: int
    in_flight: int
    handled_rate: float
    at: float
    expires: float


def parse_report(body: bytes, now: float) -> Report | None:
    """The report in ``body``, or None if it is not one (wrong shape, types or sizes)."""
    if len(body) > MAX_REPORT_BYTES:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    group, instance, pattern = data.get("group"), data.get("instance"), data.get("pattern", "")
    if not (_name(group) and _name(instance) and isinstance(pattern, str) and len(pattern) <= MAX_NAME):
        return None
    counts = [data.get(k, 0) for k in COUNTERS]
    if not all(_count(c) for c in counts):
        return None
    rate, at, interval = data.get("handled_rate", 0.0), data.get("at", 0.0), data.get("interval")
    if not (_number(rate) and rate >= 0 and _number(at)):
        return None
    if interval is None:
        interval = DEFAULT_REPORT_INTERVAL
    if not (_number(interval) and interval > 0):
        return None
    handled, failed, retried, dead_lettered, in_flight = (int(c) for c in counts)
    expires = now + EXPIRE_INTERVALS * min(float(interval), 3600.0)
    return Report(
        str(group),
        str(instance),
        pattern,
        handled,
        failed,
        retried,
        dead_lettered,
        in_flight,
        float(rate),
        float(at),
        expires,
    )


def _name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class HandlerMonitor:
    """Consumes the runtime's reports and aggregates them per group (see the module's docstring)."""

    def __init__(
        self,
        broker: Broker,
        interval: float = 5.0,
        max_reporters: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker = broker
        self.interval = interval
        self.max_reporters = max_reporters
        self.clock = clock
        self.size = max(2, int(HISTORY_SECONDS / interval))
        self.reports: dict[tuple[str, str], Report] = {}
        self.history: dict[str, Ring] = {}
        self.ticks = Ring(self.size, "d")  # wall-clock times of the history points
        self.received = 0
        self.rejected = 0
        self._pending: list[bytes] = []
        self._session: Session | None = None
        self._channel: Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._drain_scheduled = False

    # ------------------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Declare the exchange, bind the monitor's queue, start consuming and the history timer."""
        self._loop = asyncio.get_running_loop()
        vhost = self.broker.vhosts.get("/")
        if vhost is None:
            return
        try:
            vhost.declare_exchange(REPORT_EXCHANGE, "topic", durable=True)
        except BrokerError as exc:  # an exchange of that name but another type or durability
            log.error("handler reports off: cannot declare exchange '%s': %s", REPORT_EXCHANGE, exc.text)
            return
        self._session = self.broker.open_session(_USER, "/", "handler-monitor", internal=True)
        self._channel = self._session.open_channel(1, self)
        queue = vhost.declare_queue(self._session, "", exclusive=True, auto_delete=True)
        vhost.bind_queue(self._session, queue.name, REPORT_EXCHANGE, REPORT_PREFIX + "#", {})
        consumer = self._channel.consume(queue.name, "handler-monitor", no_ack=True, exclusive=True)
        self._channel.start(consumer)
        self._task = self._loop.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            self.broker.close_session(self._session)
            self._session = self._channel = None

    async def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # a timer must never stop ticking
                log.exception("handler monitor tick failed")
            await asyncio.sleep(self.interval)

    def tick(self) -> None:
        """Drop expired entries, push each live group's h(t) into its history."""
        self.drain()
        self.expire()
        groups = self.groups()
        for name in list(self.history):
            if name not in groups:
                del self.history[name]
        self.ticks.push(time.time())
        for name, group in groups.items():
            ring = self.history.get(name)
            if ring is None:
                ring = self.history[name] = Ring(self.size)
            ring.push(group["handled_rate"])

    # ---------------------------------------------------------------------- DeliverySink

    def deliver(self, consumer: Consumer, delivery_tag: int, redelivered: bool, message: Message) -> None:
        body = message.body
        if body is None or len(self._pending) >= MAX_PENDING:
            self.rejected += 1
            return
        self._pending.append(bytes(body))
        if not self._drain_scheduled and self._loop is not None:
            self._drain_scheduled = True
            self._loop.call_soon(self.drain)

    def consumer_cancelled(self, consumer: Consumer) -> None:
        log.warning("handler monitor: its queue was deleted; handler reports are no longer read")

    def channel_failed(self, error: BrokerError) -> None:
        log.error("handler monitor: its channel failed: %s", error.text)  # no-ack: no timeout applies

    # ------------------------------------------------------------------------------ reports

    def drain(self) -> None:
        """Parse the reports that arrived since the last call."""
        self._drain_scheduled = False
        pending, self._pending = self._pending, []
        now = self.clock()
        for body in pending:
            self.add(body, now)

    def add(self, body: bytes, now: float) -> bool:
        self.received += 1
        report = parse_report(body, now)
        if report is None:
            self.rejected += 1
            return False
        key = (report.group, report.instance)
        if key not in self.reports and len(self.reports) >= self.max_reporters:
            self.expire(now)
            if len(self.reports) >= self.max_reporters:
                self.rejected += 1
                return False
        self.reports[key] = report
        return True

    def expire(self, now: float | None = None) -> None:
        current = self.clock() if now is None else now
        for key in [k for k, r in self.reports.items() if r.expires <= current]:
            del self.reports[key]

    # -------------------------------------------------------------------------------- reads

    def groups(self) -> dict[str, dict[str, Any]]:
        """Per group, over its live instances: h(t) and counters summed, instances counted."""
        now = self.clock()
        out: dict[str, dict[str, Any]] = {}
        newest: dict[str, float] = {}
        for r in self.reports.values():
            if r.expires <= now:
                continue
            g = out.get(r.group)
            if g is None:
                g = out[r.group] = {"group": r.group, "pattern": r.pattern, "instances": 0, "handled_rate": 0.0}
                g.update(dict.fromkeys(COUNTERS, 0))
                g["last_report"] = r.at
                newest[r.group] = r.expires
            g["instances"] += 1
            g["handled_rate"] += r.handled_rate
            for k in COUNTERS:
                g[k] += getattr(r, k)
            if r.expires >= newest[r.group]:  # the freshest report names the pattern
                newest[r.group] = r.expires
                g["pattern"], g["last_report"] = r.pattern, r.at
        for g in out.values():
            g["handled_rate"] = round(g["handled_rate"], 3)
        return out

    def group_history(self, group: str) -> dict[str, list[float]] | None:
        ring = self.history.get(group)
        if ring is None:
            return None
        times = self.ticks.read()
        values = ring.read()
        return {"times": times[len(times) - len(values) :], "handle": values}

    def total_rate(self) -> float:
        """h(t) of all groups together (a part of the throughput T(t))."""
        return round(sum(float(g["handled_rate"]) for g in self.groups().values()), 3)
