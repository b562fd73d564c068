"""Broker errors, protocol-free. Each door maps ``ErrorKind`` to its own codes in one table
(the AMQP door: ``leveret.server.amqp_errors``)."""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    NOT_FOUND = "not-found"  # AMQP 404, channel
    ACCESS_REFUSED = "access-refused"  # 403, channel
    RESOURCE_LOCKED = "resource-locked"  # 405, channel
    PRECONDITION_FAILED = "precondition-failed"  # 406, channel
    NOT_ALLOWED = "not-allowed"  # 530, connection
    COMMAND_INVALID = "command-invalid"  # 503, connection
    NOT_IMPLEMENTED = "not-implemented"  # 540, connection
    INTERNAL = "internal"  # 541, connection


class BrokerError(Exception):
    def __init__(self, kind: ErrorKind, text: str) -> None:
        super().__init__(text)
        self.kind = kind
        self.text = text


def not_found(text: str) -> BrokerError:
    return BrokerError(ErrorKind.NOT_FOUND, text)


def access_refused(text: str) -> BrokerError:
    return BrokerError(ErrorKind.ACCESS_REFUSED, text)


def resource_locked(text: str) -> BrokerError:
    return BrokerError(ErrorKind.RESOURCE_LOCKED, text)


def precondition_failed(text: str) -> BrokerError:
    return BrokerError(ErrorKind.PRECONDITION_FAILED, text)


def not_allowed(text: str) -> BrokerError:
    return BrokerError(ErrorKind.NOT_ALLOWED, text)


def command_invalid(text: str) -> BrokerError:
    return BrokerError(ErrorKind.COMMAND_INVALID, text)


def not_implemented(text: str) -> BrokerError:
    return BrokerError(ErrorKind.NOT_IMPLEMENTED, text)
