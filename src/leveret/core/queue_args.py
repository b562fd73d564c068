"""Validation of queue arguments at declare time, as RabbitMQ does it (rabbit_amqqueue:declare_args).

What the arguments *mean* (TTL, limits, dead-lettering, priorities...) is in ``core.queue``; a
malformed value is refused at declare time, with RabbitMQ's reason, as RabbitMQ does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], str | None]


def _type_name(value: Any) -> str:
    kinds = {bool: "bool", int: "long", float: "double", str: "longstr", bytes: "bytes", list: "array"}
    return kinds.get(type(value), "table")


def _integer(minimum: int, maximum: int | None = None) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f'"expected integer, got {_type_name(value)}"'
        if value < minimum:
            return (
                "{value_zero," + str(value) + "}"
                if minimum == 1 and value == 0
                else "{value_negative," + str(value) + "}"
            )
        if maximum is not None and value > maximum:
            return "{max_value_exceeded," + str(value) + "}"
        return None

    return check


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else f'"expected longstr, got {_type_name(value)}"'


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        if value in choices:
            return None
        return "{unknown_value," + repr(value) + "}"

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f'"expected bool, got {_type_name(value)}"'


CHECKS: dict[str, Check] = {
    "x-expires": _integer(1),
    "x-message-ttl": _integer(0),
    "x-dead-letter-exchange": _string,
    "x-dead-letter-routing-key": _string,
    "x-max-length": _integer(0),
    "x-max-length-bytes": _integer(0),
    "x-max-priority": _integer(0, 255),
    "x-overflow": _one_of("drop-head", "reject-publish", "reject-publish-dlx"),
    "x-queue-mode": _one_of("default", "lazy"),
    "x-single-active-consumer": _boolean,
    "x-delivery-limit": _integer(0),
    "x-queue-master-locator": _string,
}


def invalid_argument(arguments: Mapping[str, Any]) -> tuple[str, str] | None:
    """(argument, reason) for the first invalid queue argument, or None if all are acceptable."""
    for key, check in CHECKS.items():
        if key in arguments:
            reason = check(arguments[key])
            if reason is not None:
                return key, reason
    if "x-dead-letter-routing-key" in arguments and "x-dead-letter-exchange" not in arguments:
        return "x-dead-letter-routing-key", "{dead_letter_exchange_not_set}"
    return None
