"""Power loss and crash points (RELIABILITY.md, "Fault scenarios").

A power cut is a crash that also drops every byte not yet fsynced and tears the last write at a
random offset. ``kill -9`` alone lets the kernel write the page cache out, so the broker runs with
``LEVERET_FAULT_SYNC_LOG`` (``leveret.store.faults``): each fsync of a data file logs the size it
made durable. A crash freezes the broker (SIGSTOP: nothing changes on disk from then on), cuts every
data file back to its fsynced size plus a random prefix of the rest (or zeros), deletes files never
fsynced, kills it (SIGKILL) and starts it again at once. Clients reconnect and go on.

Crash points: at a random moment; right after a write and before its fsync (frozen while unsynced
bytes exist); right after an fsync, before the confirms it allows go out; during a segment roll
(64 KiB segments, frozen the instant a segment file appears); during a definitions journal
compaction (compaction after 6 dead records, frozen the instant the ``.tmp`` appears or the journal
is renamed). A definitions churner keeps declaring, binding and deleting durable queues throughout,
so the journal is written (and compacted) at every crash.

Not modelled: a directory entry lost because the directory was not fsynced (a created file
vanishing, a deleted or renamed one coming back); the store fsyncs the directory after each.

After the rounds: one last power cut, a quiet drain and the shared checker: lost = unexpected =
corrupt = 0, no message returned unroutable (the binding survived), no quarantine, and every
durable queue whose declare was answered (and not deleted since) still exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from tests.conftest import BrokerProcess
from tests.faults.checker import (
    CLIENT_ERRORS,
    Consumer,
    Freezer,
    Ledger,
    PowerCut,
    Publisher,
    Target,
    close_quietly,
    connect,
    drain,
    fsync_logged,
    journal_rewritten,
    power_cut,
    recoveries,
    recovery_problems,
    run_seed,
    segment_count_changed,
    unsynced_bytes,
)

SEGMENT_SIZE = 65536
COMPACT_AFTER = 6


class Churn:
    """Declares ``churn.<n>`` (durable, bound to the storm exchange), deletes ``churn.<n-2>``, and
    so on, recording which queues must exist and which must not."""

    def __init__(self, url: str, exchange: str, stop: asyncio.Event) -> None:
        self.url = url
        self.exchange = exchange
        self.stop = stop
        self.state: dict[str, str] = {}  # name -> "exists" | "deleted" | "unknown" (in flight at a crash)
        self.n = 0

    async def run(self) -> None:
        while not self.stop.is_set():
            conn = None
            try:
                conn = await connect(self.url, self.stop)
                channel = await conn.channel(publisher_confirms=False)
                exchange = await channel.get_exchange(self.exchange, ensure=False)
                while not self.stop.is_set():
                    await self._step(channel, exchange)
            except CLIENT_ERRORS:
                pass
            finally:
                await close_quietly(conn)

    async def _step(self, channel: aio_pika.abc.AbstractChannel, exchange: aio_pika.abc.AbstractExchange) -> None:
        name = f"churn.{self.n}"
        self.n += 1
        self.state[name] = "unknown"
        queue = await channel.declare_queue(name, durable=True)
        await queue.bind(exchange, name)
        self.state[name] = "exists"
        old = f"churn.{self.n - 3}"
        if self.state.get(old) == "exists":
            self.state[old] = "unknown"
            await channel.queue_delete(old)
            self.state[old] = "deleted"

    async def verify(self) -> list[str]:
        """Problems: queues that should exist and do not, or the reverse."""
        problems = []
        conn = await connect(self.url)
        try:
            for name, state in self.state.items():
                if state == "unknown":
                    continue
                channel = await conn.channel(publisher_confirms=False)
                try:
                    await channel.declare_queue(name, passive=True)
                    exists = True
                except aio_pika.exceptions.ChannelClosed:
                    exists = False
                if exists != (state == "exists"):
                    problems.append(f"{name}: expected {state}, {'exists' if exists else 'missing'}")
                if not channel.is_closed:
                    await channel.close()
        finally:
            await close_quietly(conn)
        return problems


class PowerRig:
    def __init__(self, tmp_path: Path, seed: int) -> None:
        self.rng = random.Random(seed)
        self.data_dir = tmp_path / "data"
        self.sync_log = tmp_path / "fsync.log"
        env = {
            "LEVERET_FAULT_SYNC_LOG": str(self.sync_log),
            "LEVERET_SEGMENT_SIZE": str(SEGMENT_SIZE),
            "LEVERET_JOURNAL_COMPACT_AFTER": str(COMPACT_AFTER),
        }
        self.broker = BrokerProcess(self.data_dir, env=env)
        self.ledger = Ledger(seed)
        self.target = Target(self.broker.url, queue="power.q", exchange="power.x")
        self.cuts: list[tuple[str, PowerCut]] = []
        self.missed: list[str] = []  # crash points that were not reached in time

    # ---- crashing

    def crash(
        self, point: str, reached: Callable[[], bool] | None = None, timeout: float = 5.0, drop_some: bool = False
    ) -> None:
        """Freeze the broker (when ``reached()`` holds, or now), cut the power, kill, restart."""
        pid = self.broker.proc.pid
        if reached is not None:
            freezer = Freezer(pid, reached, timeout)
            freezer.start()
            if not freezer.frozen.wait(timeout + 1):
                freezer.cancel()
                self.missed.append(point)
                os.kill(pid, signal.SIGSTOP)
        else:
            os.kill(pid, signal.SIGSTOP)
        cut = power_cut(self.data_dir, self.sync_log, self.rng, drop_some=drop_some)
        self.cuts.append((point, cut))
        self.broker.proc.kill()
        self.broker.proc.wait()
        self.broker.restart()

    def crash_unsynced(self) -> None:
        """Freeze the broker at a moment when written bytes are not yet fsynced, then cut."""
        pid = self.broker.proc.pid
        for _ in range(2000):
            os.kill(pid, signal.SIGSTOP)
            if unsynced_bytes(self.data_dir, self.sync_log) > 0:
                break
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.0005)
        else:
            self.missed.append("after write, before fsync")
        self.crash("after write, before fsync", reached=lambda: True, drop_some=True)

    async def crash_at(self, point: str) -> None:
        loop = asyncio.get_running_loop()
        if point == "random":
            await asyncio.sleep(self.rng.uniform(0.2, 0.8))
            await loop.run_in_executor(None, self.crash, point)
        elif point == "unsynced":
            await asyncio.sleep(self.rng.uniform(0.2, 0.5))
            await loop.run_in_executor(None, self.crash_unsynced)
        elif point == "synced":
            await asyncio.sleep(self.rng.uniform(0.2, 0.5))
            await loop.run_in_executor(None, self.crash, point, fsync_logged(self.sync_log))
        elif point == "roll":
            await asyncio.sleep(self.rng.uniform(0.1, 0.3))
            reached = segment_count_changed(self.data_dir / "msgs")
            await loop.run_in_executor(None, self.crash, point, reached)
        elif point == "compaction":
            await asyncio.sleep(self.rng.uniform(0.1, 0.3))
            reached = journal_rewritten(self.data_dir / "defs")
            await loop.run_in_executor(None, self.crash, point, reached)
        else:
            raise ValueError(point)

    # ---- the run

    async def run(self, points: list[str]) -> None:
        await self.target.declare()
        stop_pub, stop_con, stop_churn = asyncio.Event(), asyncio.Event(), asyncio.Event()
        pubs = [Publisher(self.ledger, n, self.target, stop_pub, window=32) for n in range(3)]
        consumer = Consumer(self.ledger, self.target, stop_con)
        churn = Churn(self.broker.url, self.target.exchange, stop_churn)
        pub_tasks = [asyncio.create_task(p.run()) for p in pubs]
        con_task = asyncio.create_task(consumer.run())
        churn_task = asyncio.create_task(churn.run())
        for n, point in enumerate(points):
            if n == (len(points) + 1) // 2:
                stop_con.set()  # from here on the backlog has to survive the cuts
                await con_task
            await self.crash_at(point)
        await asyncio.sleep(self.rng.uniform(0.2, 0.5))
        stop_pub.set()
        stop_churn.set()
        stop_con.set()
        await asyncio.gather(*pub_tasks, con_task, churn_task)
        await asyncio.get_running_loop().run_in_executor(None, self.crash, "final")
        self.drained = await drain(self.ledger, self.target)
        self.churn_problems = await churn.verify()
        self.churned = churn.n

    def check(self) -> None:
        report = self.ledger.report()
        print(report)
        print(f"drained={self.drained} churned queues={self.churned} missed crash points={self.missed}")
        for point, cut in self.cuts:
            print(f"  {point}: {cut}")
        report.assert_ok()
        log = self.broker.log()
        assert not recovery_problems(log), recovery_problems(log)
        assert len(recoveries(log)) == 1 + len(self.cuts)
        assert not self.churn_problems, self.churn_problems
        assert report.confirmed > 200, "too little traffic to prove anything"


def _run(tmp_path: Path, seed: int, points: list[str]) -> PowerRig:
    rig = PowerRig(tmp_path, seed)
    try:
        asyncio.run(rig.run(points))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(rig.broker.proc.pid, signal.SIGCONT)
        rig.broker.stop()
    rig.check()
    return rig


def test_power_cuts_at_random_moments(tmp_path: Path) -> None:
    _run(tmp_path, run_seed(101), ["random"] * 4)


def test_crash_after_fsync_before_confirm(tmp_path: Path) -> None:
    rig = _run(tmp_path, run_seed(505), ["synced"] * 4)
    assert "synced" not in rig.missed


def test_crash_after_write_before_fsync(tmp_path: Path) -> None:
    rig = _run(tmp_path, run_seed(202), ["unsynced"] * 4)
    assert "after write, before fsync" not in rig.missed
    # The fsync thread may finish between the watcher seeing unsynced bytes and the freeze, so a single
    # cut can drop nothing; across the four cuts at least one must have dropped unsynced bytes.
    assert any(cut.dropped_bytes for point, cut in rig.cuts if point != "final"), "no cut dropped bytes"


def test_crash_during_segment_roll(tmp_path: Path) -> None:
    rig = _run(tmp_path, run_seed(303), ["roll"] * 4)
    assert "roll" not in rig.missed


@pytest.mark.parametrize("seed", [404])
def test_crash_during_journal_compaction(tmp_path: Path, seed: int) -> None:
    rig = _run(tmp_path, run_seed(seed), ["compaction"] * 4)
    assert "compaction" not in rig.missed


# ------------------------------------------------------------------------------ the fsync hook


def test_fsync_hook_is_plain_os_fsync_when_unset() -> None:
    assert "LEVERET_FAULT_SYNC_LOG" not in os.environ
    from leveret.store import faults

    assert faults.fsync is os.fsync  # zero cost in production


def test_fsync_hook_logs_what_each_fsync_made_durable(tmp_path: Path) -> None:
    script = """
import os, sys
from leveret.store.segments import SegmentLog
log = SegmentLog(sys.argv[1], segment_size=4096)
log.open()
for i in range(100):
    log.append(b"x" * 100)
    if i % 10 == 9:
        log.flush()
        log.sync()
log.close()
"""
    sync_log = tmp_path / "fsync.log"
    env = dict(os.environ, LEVERET_FAULT_SYNC_LOG=str(sync_log))
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "msgs")], env=env, check=True)
    lines = [line.rsplit(" ", 2) for line in sync_log.read_text().splitlines()]
    assert lines, "no fsync was logged"
    last: dict[str, tuple[int, int]] = {}
    for path, size, ino in lines:
        last[path] = (int(size), int(ino))
    segments = sorted((tmp_path / "msgs").glob("*.seg"))
    assert len(segments) > 1, "the test should roll segments"
    for seg in segments:
        size, ino = last[str(seg)]
        assert (size, ino) == (seg.stat().st_size, seg.stat().st_ino), seg


# --------------------------------------------------------------- compaction keeps every command


def _canonical(broker: Any) -> list[str]:
    return sorted(
        json.dumps(c, sort_keys=True, default=str) for c in broker.definitions() if c["op"] != "reserve_queue_uids"
    )


def test_journal_compaction_at_any_record_keeps_the_definitions(tmp_path: Path) -> None:
    """The journal compacts inside ``record()``, writing a snapshot of the live definitions; a
    deletion recorded before it was applied was lost that way (the deleted queue came back on the
    next start, with its old uid). Random definition changes with a tiny compaction threshold: the
    definitions replayed from the journal must equal the live ones."""
    from leveret.core.broker import Broker
    from leveret.core.errors import BrokerError
    from leveret.server.definitions import restore_definitions

    rng = random.Random(run_seed(606))
    exchanges, queues = [f"x{i}" for i in range(4)], [f"q{i}" for i in range(4)]
    compactions = 0
    for trial in range(120):
        where = str(tmp_path / f"t{trial}")
        broker = Broker()
        journal = restore_definitions(broker, where, lambda exc: None, compact_after=rng.randint(1, 6))
        vh = broker.vhosts["/"]
        for _ in range(rng.randint(5, 60)):
            op, x, q, x2 = rng.randrange(6), rng.choice(exchanges), rng.choice(queues), rng.choice(exchanges)
            with contextlib.suppress(BrokerError):
                if op == 0:
                    vh.declare_exchange(x, "direct", durable=True, auto_delete=rng.random() < 0.5)
                elif op == 1:
                    vh.delete_exchange(x)
                elif op == 2:
                    vh.declare_queue(None, q, durable=True)
                elif op == 3:
                    vh.delete_queue(None, q)
                elif op == 4:
                    (vh.bind_queue(None, q, x, "k", {}) if rng.random() < 0.5 else vh.bind_exchange(x2, x, "k", {}))
                else:
                    (vh.unbind_queue(None, q, x, "k", {}) if rng.random() < 0.5 else vh.unbind_exchange(x2, x, "k", {}))
        compactions += journal.compactions
        journal.close()
        again = Broker()
        restore_definitions(again, where, lambda exc: None)
        assert _canonical(again) == _canonical(broker), f"trial {trial}: replayed definitions differ"
    assert compactions > 100, compactions
