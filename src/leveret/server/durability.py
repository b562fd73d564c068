"""Group commit: buffered records are written on the loop, fsynced in one worker thread.

Theory of operation: whenever something was appended to the message store during a batch of
input, ``poke()`` schedules one cycle for the end of the loop turn. A cycle writes everything
buffered to the OS (cheap, on the loop) and hands one ``fsync`` to the worker thread. While that
fsync runs, new records pile up; when it returns, the durable position advances, the waiting
confirms go out, and the next cycle covers everything that arrived meanwhile. So one fsync covers a
window bounded by the previous fsync's duration, and throughput does not collapse under confirms.

A failed write or fsync is never retried: the broker stops (``on_fatal``) without confirming
anything the failed call covered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from leveret.store.message_store import MessageStore

log = logging.getLogger("leveret.store")

DurableListener = Callable[[int], None]


class GroupCommitter:
    def __init__(self, store: MessageStore, on_fatal: Callable[[BaseException], None]) -> None:
        self.store = store
        self.durable = 0  # every record before this position is on disk
        self.failed = False
        self._on_fatal = on_fatal
        self._loop = asyncio.get_event_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="leveret-fsync")
        self._scheduled = False
        self._inflight = False
        self._seen = 0  # store.appended when the last cycle started
        self._listeners: dict[object, DurableListener] = {}
        self.fsyncs = 0

    def listen(self, owner: object, listener: DurableListener) -> None:
        self._listeners[owner] = listener

    def unlisten(self, owner: object) -> None:
        self._listeners.pop(owner, None)

    def poke(self) -> None:
        """Something may have been appended: make sure a cycle will run."""
        if self.store.appended != self._seen and not self._scheduled and not self._inflight and not self.failed:
            self._scheduled = True
            self._loop.call_soon(self._cycle)

    def _cycle(self) -> None:
        self._scheduled = False
        if self.failed or self._inflight:
            return
        self._seen = self.store.appended
        try:
            self.store.flush()
        except OSError as exc:
            self._fail(exc)
            return
        self._inflight = True
        future = self._executor.submit(self.store.sync)
        future.add_done_callback(self._done_in_thread)

    def _done_in_thread(self, future: Future[int]) -> None:
        self._loop.call_soon_threadsafe(self._done, future)

    def _done(self, future: Future[int]) -> None:
        self._inflight = False
        exc = future.exception()
        if exc is not None:
            self._fail(exc)
            return
        self.fsyncs += 1
        self.durable = max(self.durable, future.result())
        for listener in list(self._listeners.values()):
            listener(self.durable)
        self.poke()

    def _fail(self, exc: BaseException) -> None:
        self.failed = True
        log.critical("message store write/fsync failed, stopping without confirming: %r", exc)
        self._on_fatal(exc)

    def close(self) -> None:
        """Final flush + fsync on clean shutdown (on the loop; the worker is idle by then)."""
        self._executor.shutdown(wait=True)
        if not self.failed:
            self.store.close()
