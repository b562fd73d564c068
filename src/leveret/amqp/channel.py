"""Per-channel protocol state: lifecycle and content assembly (method -> header -> body frames).

Both are tables: ``LIFECYCLE`` says which methods move a channel between OPEN and CLOSING, and
``ASSEMBLY`` which frame type each assembly state accepts. A frame the table does not allow is
505 UNEXPECTED_FRAME (spec 4.2.6); once the server has sent ``channel.close`` every frame but
``channel.close``/``channel.close-ok`` is dropped (spec 4.2.4, 1.5.2.5).
"""

from __future__ import annotations

from enum import StrEnum

from .constants import FRAME_BODY, FRAME_HEADER, FRAME_METHOD


class ChannelState(StrEnum):
    OPEN = "open"
    CLOSING = "closing"  # the server sent channel.close and waits for close-ok


class Assembly(StrEnum):
    IDLE = "idle"
    AWAIT_HEADER = "await-header"
    AWAIT_BODY = "await-body"


# (assembly state, frame type) -> allowed. Anything missing is 505 UNEXPECTED_FRAME.
ASSEMBLY: dict[tuple[Assembly, int], bool] = {
    (Assembly.IDLE, FRAME_METHOD): True,
    (Assembly.AWAIT_HEADER, FRAME_HEADER): True,
    (Assembly.AWAIT_BODY, FRAME_BODY): True,
}


class ChannelMachine:
    """What the protocol layer remembers of one channel."""

    __slots__ = ("assembly", "body_parts", "body_received", "body_size", "method", "properties", "state", "wire")

    def __init__(self) -> None:
        self.state = ChannelState.OPEN
        self.assembly = Assembly.IDLE
        self.method: object = None
        self.properties = b""
        self.body_size = 0
        self.body_received = 0
        self.body_parts: list[bytes] = []
        self.wire = b""  # exchange + routing key of the pending publish, as short strings

    def reset_content(self) -> None:
        self.assembly = Assembly.IDLE
        self.method = None
        self.properties = b""
        self.body_parts = []
        self.body_received = 0
        self.body_size = 0
