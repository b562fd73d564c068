"""Protocol errors. Each carries the reply the peer should get (code, text, offending method).

``NeedData`` is not an error: it is the answer "not enough bytes yet" and is a distinct outcome
(a sentinel), never an exception. Malformed input raises ``ProtocolError`` with its reply code.
"""

from __future__ import annotations

from .constants import ReplyCode


class ProtocolError(Exception):
    """Malformed or illegal input; ``code`` and ``text`` are what goes into the close method."""

    def __init__(self, code: ReplyCode, text: str, class_id: int = 0, method_id: int = 0) -> None:
        super().__init__(f"{code.name} - {text}")
        self.code = code
        self.text = text
        self.class_id = class_id
        self.method_id = method_id

    @property
    def is_hard(self) -> bool:
        return self.code.is_hard


def frame_error(text: str) -> ProtocolError:
    return ProtocolError(ReplyCode.FRAME_ERROR, text)


def syntax_error(text: str, class_id: int = 0, method_id: int = 0) -> ProtocolError:
    return ProtocolError(ReplyCode.SYNTAX_ERROR, text, class_id, method_id)
