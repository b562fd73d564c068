"""Flow metrics: the seed's flow model measured. Per queue the publish rate f(t), the deliver and ack
rates g(t), the depth L(t) (ready, unacked), consumers and consumer utilisation; per exchange the
in/out rates; totals; and a forecast ("drains in ~N s", "reaches max-length in ~N s"). The event
handlers' h(t) comes from their own reports (handlers.py); its total joins the totals' history here.

Theory of operation: nothing here touches the hot path. The core keeps monotonic counters
(``Queue.stats_published/delivered/acked``, ``Exchange.stats_in/out``); a timer samples them every
``interval`` seconds (5 s by default). A rate is the difference between the newest sample and the one
``WINDOW`` ticks older, over the time between them: a sliding window, so one burst does not make
the rate jump and fall back within one tick.

Memory is bounded with many queues: every queue keeps only its last ``WINDOW + 1`` counter samples
(one small ``array`` each, about 250 bytes per queue with its record). History (10 minutes at 5 s:
120 points per series) is kept for the totals and for at most ``history_limit`` queues: the first
ones seen, then those asked for most recently (``watch``), evicting the least recently asked.

Cost with many queues: a tick samples ``CHUNK`` queues per loop turn and yields in between, so the
broker keeps serving clients while 100k queues are sampled. Samples of one tick are therefore a few
milliseconds apart; rates use the tick's time, an error far below the window.

Counters of a deleted queue are added to ``retired`` at the first tick that misses it, so the
totals (Prometheus ``_total`` counters) never go backwards; what it counted after its last sample
is lost (at most one interval's worth of one queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leveret.core.broker import Broker
    from leveret.core.exchange import Exchange
    from leveret.core.queue import Queue

WINDOW = 2  # ticks a rate spans (10 s at the default 5 s interval)
HISTORY_SECONDS = 600
CHUNK = 2000  # queues sampled per loop turn
UTILISATION_ALPHA = 0.3
EPSILON = 1e-9
QUEUE_FIELDS = ("ready", "unacked", "publish", "deliver", "ack")
TOTAL_FIELDS = ("ready", "unacked", "publish", "deliver", "ack", "handle", "connections", "queues")


class Ring:
    """Fixed-size history of floats, oldest first when read."""

    __slots__ = ("_n", "_pos", "values")

    def __init__(self, size: int, typecode: str = "f") -> None:
        self.values = array(typecode, bytes(array(typecode).itemsize * size))
        self._pos = 0
        self._n = 0

    def push(self, value: float) -> None:
        self.values[self._pos] = value  # type: ignore[call-overload]  # typeshed: array[int] only
        self._pos = (self._pos + 1) % len(self.values)
        self._n = min(self._n + 1, len(self.values))

    def __len__(self) -> int:
        return self._n

    def read(self) -> list[float]:
        size = len(self.values)
        start = (self._pos - self._n) % size
        return [round(float(self.values[(start + i) % size]), 3) for i in range(self._n)]


class Counters:
    """The last ``WINDOW + 1`` samples of a few monotonic counters, packed in one array."""

    __slots__ = ("_k", "_n", "_pos", "ticks", "values")

    def __init__(self, k: int) -> None:
        self._k = k
        self.values = array("q", bytes(8 * k * (WINDOW + 1)))
        self.ticks = array("d", bytes(8 * (WINDOW + 1)))
        self._pos = 0
        self._n = 0

    def push(self, now: float, *counts: int) -> None:
        base = self._pos * self._k
        for i, c in enumerate(counts):
            self.values[base + i] = c
        self.ticks[self._pos] = now
        self._pos = (self._pos + 1) % (WINDOW + 1)
        self._n = min(self._n + 1, WINDOW + 1)

    def last(self, i: int) -> int:
        if not self._n:
            return 0
        return self.values[((self._pos - 1) % (WINDOW + 1)) * self._k + i]

    def rate(self, i: int) -> float:
        """Per second, over the window (or what there is of it)."""
        if self._n < 2:
            return 0.0
        new = (self._pos - 1) % (WINDOW + 1)
        old = (self._pos - self._n) % (WINDOW + 1)
        dt = self.ticks[new] - self.ticks[old]
        if dt <= 0:
            return 0.0
        return max(0.0, (self.values[new * self._k + i] - self.values[old * self._k + i]) / dt)


class QueueFlow:
    __slots__ = ("counters", "history", "utilisation")

    def __init__(self) -> None:
        self.counters = Counters(3)  # published, delivered, acked
        self.history: dict[str, Ring] | None = None
        self.utilisation = 1.0


@dataclass
class Forecast:
    state: str  # "empty", "draining", "filling", "growing", "steady"
    seconds: float | None
    text: str

    def as_json(self) -> dict[str, Any]:
        return {"state": self.state, "seconds": self.seconds, "text": self.text}


def forecast(ready: int, publish_rate: float, deliver_rate: float, max_length: int | None) -> Forecast:
    """From L' = f - g: when the ready depth reaches zero or the length limit at today's rates."""
    net = publish_rate - deliver_rate
    if ready == 0 and net <= EPSILON:
        return Forecast("empty", None, "empty")
    if net < -EPSILON:
        seconds = ready / -net
        return Forecast("draining", round(seconds, 1), f"drains in ~{_human(seconds)}")
    if net > EPSILON:
        if max_length is not None and max_length > ready:
            seconds = (max_length - ready) / net
            return Forecast("filling", round(seconds, 1), f"reaches max-length in ~{_human(seconds)}")
        return Forecast("growing", None, f"grows by {net:.1f} msg/s")
    return Forecast("steady", None, "steady")


def _human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _no_handlers() -> float:
    return 0.0


class FlowSampler:
    def __init__(
        self, broker: Broker, interval: float = 5.0, history_limit: int = 1000, connections: Any = None
    ) -> None:
        self.broker = broker
        self.interval = interval
        self.history_limit = history_limit
        self.connections = connections  # a sized collection (the server's AMQP connections) or None
        self.size = max(2, int(HISTORY_SECONDS / interval))
        self.queues: dict[Queue, QueueFlow] = {}
        self.exchanges: dict[Exchange, Counters] = {}
        self._watched: OrderedDict[Queue, None] = OrderedDict()  # queues with history, LRU first
        self.totals = Counters(4)  # published (into exchanges), delivered, acked, routed out
        self.total_history = {f: Ring(self.size) for f in TOTAL_FIELDS}
        self.ticks = Ring(self.size, "d")  # wall-clock times of the history points
        self.retired = [0, 0, 0]  # counters of deleted queues: published, delivered, acked
        self.retired_in = 0
        self.sums = {"ready": 0, "unacked": 0, "consumers": 0, "published": 0, "delivered": 0, "acked": 0}
        self.last_tick_seconds = 0.0  # how long the last tick took (all chunks), for the docs
        self.tick_count = 0
        self.handler_rate: Callable[[], float] = _no_handlers  # h(t) of the event handlers (handlers.py)
        self._task: asyncio.Task[None] | None = None

    # --------------------------------------------------------------------------------- timer

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        started = time.perf_counter()
        now = time.monotonic()
        seen: dict[Queue, QueueFlow] = {}
        sums = dict.fromkeys(self.sums, 0)
        for n, q in enumerate(self._all_queues(), 1):
            seen[q] = self._sample_queue(q, now, sums)
            if n % CHUNK == 0:
                await asyncio.sleep(0)  # let clients be served between chunks
        for q, flow in self.queues.items():
            if q not in seen:
                for i in range(3):
                    self.retired[i] += flow.counters.last(i)
                self._watched.pop(q, None)
        self.queues = seen
        self._sample_exchanges(now)
        sums["published"] += self.retired[0]
        sums["delivered"] += self.retired[1]
        sums["acked"] += self.retired[2]
        self.sums = sums
        ex_in = self.retired_in + sum(c.last(0) for c in self.exchanges.values())
        ex_out = sum(c.last(1) for c in self.exchanges.values())
        self.totals.push(now, ex_in, sums["delivered"], sums["acked"], ex_out)
        self._push_total_history(sums)
        self.tick_count += 1
        self.last_tick_seconds = time.perf_counter() - started

    def _all_queues(self) -> Iterator[Queue]:
        for vh in list(self.broker.vhosts.values()):
            yield from list(vh.queues.values())

    def _sample_queue(self, q: Queue, now: float, sums: dict[str, int]) -> QueueFlow:
        flow = self.queues.get(q)
        if flow is None:
            flow = QueueFlow()
            if len(self._watched) < self.history_limit:
                self._add_history(q, flow)
        ready, unacked = q.message_count(), q.unacked
        published, delivered, acked = q.stats_published, q.stats_delivered, q.stats_acked
        flow.counters.push(now, published, delivered, acked)
        consumers = q.consumers
        if consumers:
            busy = 0.0 if ready and not any(c.can_take() for c in consumers[:8]) else 1.0
            flow.utilisation += UTILISATION_ALPHA * (busy - flow.utilisation)
        else:
            flow.utilisation = 1.0
        sums["ready"] += ready
        sums["unacked"] += unacked
        sums["consumers"] += len(consumers)
        sums["published"] += published
        sums["delivered"] += delivered
        sums["acked"] += acked
        h = flow.history
        if h is not None:
            c = flow.counters
            h["ready"].push(ready)
            h["unacked"].push(unacked)
            h["publish"].push(c.rate(0))
            h["deliver"].push(c.rate(1))
            h["ack"].push(c.rate(2))
        return flow

    def _add_history(self, q: Queue, flow: QueueFlow) -> None:
        flow.history = {f: Ring(self.size) for f in QUEUE_FIELDS}
        self._watched[q] = None

    def _sample_exchanges(self, now: float) -> None:
        seen: dict[Exchange, Counters] = {}
        for vh in self.broker.vhosts.values():
            for ex in vh.exchanges.values():
                c = self.exchanges.get(ex) or Counters(2)
                c.push(now, getattr(ex, "stats_in", 0), getattr(ex, "stats_out", 0))
                seen[ex] = c
        for ex, c in self.exchanges.items():
            if ex not in seen:
                self.retired_in += c.last(0)
        self.exchanges = seen

    def _push_total_history(self, sums: dict[str, int]) -> None:
        t = self.total_history
        self.ticks.push(time.time())
        t["ready"].push(sums["ready"])
        t["unacked"].push(sums["unacked"])
        t["publish"].push(self.totals.rate(0))
        t["deliver"].push(self.totals.rate(1))
        t["ack"].push(self.totals.rate(2))
        t["handle"].push(self.handler_rate())
        t["connections"].push(len(self.connections) if self.connections is not None else 0)
        t["queues"].push(len(self.queues))

    # -------------------------------------------------------------------------------- reads

    def watch(self, q: Queue) -> None:
        """``q`` was looked at: keep (or start keeping) its history, evicting the least recently watched."""
        flow = self.queues.get(q)
        if flow is None:
            return
        if q in self._watched:
            self._watched.move_to_end(q)
            return
        while len(self._watched) >= self.history_limit and self._watched:
            old, _ = self._watched.popitem(last=False)
            old_flow = self.queues.get(old)
            if old_flow is not None:
                old_flow.history = None
        self._add_history(q, flow)

    def queue_rates(self, q: Queue) -> tuple[float, float, float]:
        flow = self.queues.get(q)
        if flow is None:
            return 0.0, 0.0, 0.0
        c = flow.counters
        return c.rate(0), c.rate(1), c.rate(2)

    def utilisation(self, q: Queue) -> float | None:
        flow = self.queues.get(q)
        return flow.utilisation if flow is not None and q.consumers else None

    def queue_history(self, q: Queue) -> dict[str, list[float]] | None:
        flow = self.queues.get(q)
        if flow is None or flow.history is None:
            return None
        return {name: ring.read() for name, ring in flow.history.items()}

    def exchange_rates(self, ex: Exchange) -> tuple[float, float]:
        c = self.exchanges.get(ex)
        return (c.rate(0), c.rate(1)) if c is not None else (0.0, 0.0)

    def total_rates(self) -> tuple[float, float, float]:
        return self.totals.rate(0), self.totals.rate(1), self.totals.rate(2)

    def history_times(self) -> list[float]:
        return self.ticks.read()

    def totals_history(self) -> dict[str, list[float]]:
        return {name: ring.read() for name, ring in self.total_history.items()}
