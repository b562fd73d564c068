"""The broker's time, injected: wall-clock seconds by default, a fake in tests.

``coarse`` is the time of the last ``now()`` call; the hot path reads it (the consumer timeout
stamps deliveries with it) instead of asking the system on every message. The server's timer calls
``now()`` several times a second, so ``coarse`` is never more than a tick old.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Clock:
    __slots__ = ("coarse", "source")

    def __init__(self, source: Callable[[], float] = time.time) -> None:
        self.source = source
        self.coarse = source()

    def now(self) -> float:
        t = self.source()
        self.coarse = t
        return t
