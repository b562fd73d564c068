"""``x-max-priority`` queues: the ready structure is one FIFO per priority level (``core.queue``
holds everything else a queue does)."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable

from .message import Message
from .queue import Queue


class PriorityQueue(Queue):
    """``x-max-priority``: one FIFO per priority level, highest level first; a requeued message goes
    back ahead of the ready messages of its own level, at its original position."""

    def _init_ready(self) -> None:
        self.max_priority = int(self.arguments.get("x-max-priority") or 0)
        self._levels: list[deque[Message]] = [deque() for _ in range(self.max_priority + 1)]
        self._count = 0

    def message_count(self) -> int:
        return self._count + len(self._requeued)

    def _level(self, message: Message) -> int:
        return min(message.priority, self.max_priority)

    def _push(self, message: Message) -> None:
        self._levels[self._level(message)].append(message)
        self._count += 1

    def _push_requeued(self, seq: int, message: Message) -> None:
        heapq.heappush(self._requeued, (-self._level(message), seq, message))

    def _top(self) -> int:
        for level in range(self.max_priority, -1, -1):
            if self._levels[level]:
                return level
        return -1

    def _peek(self) -> Message | None:
        top = self._top()
        if self._requeued and -self._requeued[0][0] >= top:
            message: Message = self._requeued[0][-1]
            return message
        return self._levels[top][0] if top >= 0 else None

    def _take(self) -> tuple[Message, int, bool] | None:
        top = self._top()
        if self._requeued and -self._requeued[0][0] >= top:
            entry = heapq.heappop(self._requeued)
            return entry[-1], entry[-2], True
        if top < 0:
            return None
        seq = self._next_seq
        self._next_seq = seq + 1
        message = self._levels[top].popleft()
        self._count -= 1
        return message, seq, message.recovered

    def _messages(self) -> Iterable[Message]:
        for level in self._levels:
            yield from level
        for entry in self._requeued:
            yield entry[-1]

    def _clear(self) -> None:
        for level in self._levels:
            level.clear()
        self._count = 0
        super()._clear()
