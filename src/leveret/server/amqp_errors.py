"""The AMQP door's one exhaustive table from core error kinds to AMQP reply codes."""

from __future__ import annotations

from leveret.amqp.constants import ReplyCode
from leveret.amqp.errors import ProtocolError
from leveret.core.errors import BrokerError, ErrorKind

REPLY_CODES: dict[ErrorKind, ReplyCode] = {
    ErrorKind.NOT_FOUND: ReplyCode.NOT_FOUND,
    ErrorKind.ACCESS_REFUSED: ReplyCode.ACCESS_REFUSED,
    ErrorKind.RESOURCE_LOCKED: ReplyCode.RESOURCE_LOCKED,
    ErrorKind.PRECONDITION_FAILED: ReplyCode.PRECONDITION_FAILED,
    ErrorKind.NOT_ALLOWED: ReplyCode.NOT_ALLOWED,
    ErrorKind.COMMAND_INVALID: ReplyCode.COMMAND_INVALID,
    ErrorKind.NOT_IMPLEMENTED: ReplyCode.NOT_IMPLEMENTED,
    ErrorKind.INTERNAL: ReplyCode.INTERNAL_ERROR,
}


def to_protocol_error(error: BrokerError, class_id: int = 0, method_id: int = 0) -> ProtocolError:
    return ProtocolError(REPLY_CODES[error.kind], error.text, class_id, method_id)


def reply_text(error: ProtocolError) -> str:
    """RabbitMQ's reply text shape: ``NOT_FOUND - no queue 'x' in vhost '/'`` (at most 255 bytes)."""
    text = f"{error.code.name} - {error.text}"
    raw = text.encode("utf-8")
    return raw[:255].decode("utf-8", "ignore") if len(raw) > 255 else text
