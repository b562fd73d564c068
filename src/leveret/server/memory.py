"""Memory watch: the broker's resident size against ``--memory-limit``.

Above half the limit (RabbitMQ's default paging ratio) the store is told to page: transient messages
bound for deep queues are written to the message log and their bodies leave RAM, as persistent ones
already do. Paging stops again below 40% of the limit. At the limit itself the memory alarm goes
off (``server.alarms``: each sample is handed to ``on_sample``, which also checks the disk).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from leveret.store.message_store import MessageStore

log = logging.getLogger("leveret.memory")

PAGE_AT = 0.5
PAGE_UNTIL = 0.4
DEFAULT_FRACTION = 0.4  # of physical memory, when no limit is configured (RabbitMQ's watermark)


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30


def cgroup_memory_limit() -> int | None:
    """The memory limit of this process's cgroup (v2 ``memory.max``, or v1), if there is one."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                raw = fh.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:  # v1 reports "no limit" as a huge number
            return int(raw)
    return None


def total_memory() -> int:
    """What the broker may use at most: physical memory, or the cgroup's limit when lower."""
    physical = physical_memory()
    limit = cgroup_memory_limit()
    return min(physical, limit) if limit else physical


def resident_bytes() -> int:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemoryWatch:
    def __init__(self, store: MessageStore, limit: int, interval: float = 0.25) -> None:
        self.store = store
        self.limit = limit or int(total_memory() * DEFAULT_FRACTION)
        self.interval = interval
        self._handle: asyncio.TimerHandle | None = None
        self.on_sample: Callable[[int], None] | None = None  # the alarm watch

    def start(self) -> None:
        log.info(
            "memory limit %d MiB; transient messages page out above %d MiB",
            self.limit >> 20,
            int(self.limit * PAGE_AT) >> 20,
        )
        self._tick()

    def _tick(self) -> None:
        try:
            rss = resident_bytes()
        except OSError:
            return  # no /proc: no paging of transient messages, no memory alarm
        if self.on_sample is not None:
            try:
                self.on_sample(rss)
            except Exception:  # an alarm check must never stop the watch
                log.exception("alarm check failed")
        paging = self.store.paging
        if not paging and rss > self.limit * PAGE_AT:
            self.store.paging = True
            log.info(
                "memory %d MiB above %d%% of the limit: paging transient messages out", rss >> 20, int(PAGE_AT * 100)
            )
        elif paging and rss < self.limit * PAGE_UNTIL:
            self.store.paging = False
            log.info("memory %d MiB: paging transient messages stopped", rss >> 20)
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
