"""HTTP errors as RabbitMQ's management API writes them: ``{"error": ..., "reason": ...}``."""

from __future__ import annotations

from leveret.core.errors import BrokerError, ErrorKind


class HttpError(Exception):
    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


NOT_FOUND = ("Object Not Found", "Not Found")

# core error kind -> HTTP status, error word (RabbitMQ answers most refusals of the core with 400)
_STATUS = {
    ErrorKind.NOT_FOUND: (404, "not_found"),
    ErrorKind.ACCESS_REFUSED: (400, "bad_request"),
    ErrorKind.RESOURCE_LOCKED: (400, "bad_request"),
    ErrorKind.PRECONDITION_FAILED: (400, "bad_request"),
    ErrorKind.NOT_ALLOWED: (400, "bad_request"),
    ErrorKind.COMMAND_INVALID: (400, "bad_request"),
    ErrorKind.NOT_IMPLEMENTED: (501, "not_implemented"),
    ErrorKind.INTERNAL: (500, "internal_error"),
}


def from_broker(exc: BrokerError) -> HttpError:
    status, error = _STATUS.get(exc.kind, (500, "internal_error"))
    return HttpError(status, error, exc.text)


def not_found() -> HttpError:
    return HttpError(404, *NOT_FOUND)


def bad_request(reason: str) -> HttpError:
    return HttpError(400, "bad_request", reason)
