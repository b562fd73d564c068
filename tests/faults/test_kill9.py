"""kill -9 storm (RELIABILITY.md, "Fault scenarios"): publishers with confirms and an acking
consumer run while the broker is SIGKILLed every 1-2 s (jittered) and restarted at once; then one
last kill, a quiet drain, and the shared checker: lost = unexpected = corrupt = 0.

``run_storm`` is shared with ``benchmarks/soak_kill9.py`` (the long version)."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import BrokerProcess
from tests.faults.checker import (
    Consumer,
    Ledger,
    Publisher,
    Report,
    Target,
    drain,
    recoveries,
    recovery_problems,
    run_seed,
)


@dataclass
class StormResult:
    report: Report
    kills: int
    drained: int
    elapsed: float
    restart_seconds: list[float] = field(default_factory=list)  # kill -> listening again
    consumer_received: int = 0

    def __str__(self) -> str:
        restarts = self.restart_seconds
        avg = sum(restarts) / len(restarts) if restarts else 0.0
        return (
            f"{self.report}\nkills={self.kills} drained={self.drained} consumed_live={self.consumer_received} "
            f"elapsed={self.elapsed:.1f}s restart avg={avg:.2f}s max={max(restarts, default=0):.2f}s"
        )


async def run_storm(
    broker: BrokerProcess,
    seed: int,
    kills: int,
    interval: tuple[float, float] = (1.0, 2.0),
    publishers: int = 3,
    window: int = 32,
    consumer_phase: int = 0,
    progress: bool = False,
) -> StormResult:
    """Publish and consume on ``broker`` while killing it ``kills`` times; then stop the clients,
    kill it once more (so what was left is read back from disk), drain and report. The consumer
    runs for ``consumer_phase`` kills, pauses for as many, and so on (default: the first half), so
    a backlog has to survive kills, read back from disk each time, and acks are recorded too."""
    started = time.monotonic()
    rng = random.Random(seed)
    ledger = Ledger(seed)
    target = Target(broker.url, queue="storm.q", exchange="storm.x")
    await target.declare()
    phase = consumer_phase or max(1, (kills + 1) // 2)
    stop_publishing = asyncio.Event()
    pubs = [Publisher(ledger, n, target, stop_publishing, window) for n in range(publishers)]
    tasks = [asyncio.create_task(p.run()) for p in pubs]
    consumers: list[Consumer] = []
    consuming: tuple[asyncio.Event, asyncio.Task[None]] | None = None
    loop = asyncio.get_running_loop()
    result_restarts = []

    async def crash() -> None:
        t0 = time.monotonic()
        await loop.run_in_executor(None, lambda: broker.restart(kill=True))
        result_restarts.append(time.monotonic() - t0)

    async def consume(on: bool) -> None:
        nonlocal consuming
        if on and consuming is None:
            stop = asyncio.Event()
            consumers.append(Consumer(ledger, target, stop))
            consuming = stop, asyncio.create_task(consumers[-1].run())
        elif not on and consuming is not None:
            consuming[0].set()
            await consuming[1]  # what it held unacked goes back to the queue
            consuming = None

    for n in range(kills):
        await consume((n // phase) % 2 == 0)
        await asyncio.sleep(rng.uniform(*interval))  # the jittered gap between kills is the test's input
        await crash()
        if progress:
            r = ledger.report()
            print(
                f"kill {n + 1}/{kills}: published={r.published} confirmed={r.confirmed} deliveries={r.deliveries} "
                f"not yet delivered={len(r.lost)} unexpected={r.unexpected} corrupt={r.corrupt}",
                flush=True,
            )
    await asyncio.sleep(rng.uniform(*interval))  # clients go on after the last restart
    stop_publishing.set()
    await asyncio.gather(*tasks)
    await consume(False)
    await crash()  # the last kill: everything not yet consumed comes back from disk only
    drained = await drain(ledger, target)
    return StormResult(
        ledger.report(),
        kills + 1,
        drained,
        time.monotonic() - started,
        result_restarts,
        sum(c.received for c in consumers),
    )


def test_kill9_storm_loses_nothing_confirmed(tmp_path: Path) -> None:
    seed = run_seed(9)
    broker = BrokerProcess(tmp_path / "data")
    try:
        result = asyncio.run(run_storm(broker, seed, kills=4, interval=(1.0, 2.0)))
    finally:
        broker.stop()
    print(result)
    result.report.assert_ok()
    log = broker.log()
    assert not recovery_problems(log), recovery_problems(log)
    starts = recoveries(log)
    assert len(starts) == 1 + result.kills, [r.line for r in starts]
    assert all(not r.clean for r in starts[1:]), "a kill -9 must be detected as an unclean stop"
    assert result.report.confirmed > 500, "too little traffic to prove anything"
    assert result.drained > 0, "the last kill should leave messages for the drain"
