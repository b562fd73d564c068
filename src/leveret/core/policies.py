"""Policies: named settings applied to the queues and exchanges whose names match a pattern.

As RabbitMQ: a policy has a regular-expression ``pattern`` (searched in the name, in linear time by
``core.safe_regex``), ``apply_to``
(``queues``, ``classic_queues``, ``quorum_queues``, ``exchanges`` or ``all``), a ``priority`` and a
``definition``; the one policy that applies to an object is the matching one with the highest
priority (ties: the name that sorts first). What a queue then does is resolved in ``Queue.configure``:
for numeric limits the lower of argument and policy wins, otherwise the argument wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .safe_regex import SafePattern

APPLY_TO = ("all", "queues", "classic_queues", "quorum_queues", "exchanges")


def _non_negative(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _positive(value: Any) -> bool:
    return _non_negative(value) and value > 0


def _string(value: Any) -> bool:
    return isinstance(value, str)


# Definition keys this broker acts on, with their validation (rabbit_policies / the queue types).
KEYS: dict[str, Callable[[Any], bool]] = {
    "message-ttl": _non_negative,
    "expires": _positive,
    "max-length": _non_negative,
    "max-length-bytes": _non_negative,
    "overflow": lambda v: v in ("drop-head", "reject-publish", "reject-publish-dlx"),
    "dead-letter-exchange": _string,
    "dead-letter-routing-key": _string,
    "delivery-limit": _non_negative,
    "consumer-timeout": _positive,
    "alternate-exchange": _string,
    "queue-mode": lambda v: v in ("default", "lazy"),
}
# Accepted and kept for compatibility (mirroring, leader placement...); nothing to do on one node.
IGNORED_KEYS = (
    "ha-mode",
    "ha-params",
    "ha-sync-mode",
    "ha-promote-on-shutdown",
    "ha-promote-on-failure",
    "queue-master-locator",
    "queue-leader-locator",
    "max-in-memory-length",
    "max-in-memory-bytes",
    "dead-letter-strategy",
    "federation-upstream",
    "federation-upstream-set",
    "initial-cluster-size",
)


@dataclass
class Policy:
    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int = 0
    apply_to: str = "all"
    regex: SafePattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.regex = SafePattern(self.pattern)  # linear time, like permission patterns (core.safe_regex)

    def applies(self, kind: str, name: str, queue_type: str = "classic") -> bool:
        """``kind`` is "queue" or "exchange"."""
        wanted = {"all", "queues", f"{queue_type}_queues"} if kind == "queue" else {"all", "exchanges"}
        return self.apply_to in wanted and self.regex.search(name)

    def as_dict(self, vhost: str) -> dict[str, Any]:
        return {
            "vhost": vhost,
            "name": self.name,
            "pattern": self.pattern,
            "apply-to": self.apply_to,
            "definition": dict(self.definition),
            "priority": self.priority,
        }


def make_policy(
    name: str, pattern: str, definition: Mapping[str, Any], priority: int = 0, apply_to: str = "all"
) -> Policy:
    """A validated policy; 406 with RabbitMQ's kind of reason when something is wrong."""
    if not name:
        raise errors.precondition_failed("policy name must not be empty")
    if apply_to not in APPLY_TO:
        raise errors.precondition_failed(f"'{apply_to}' is not a valid apply-to value")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise errors.precondition_failed(f"priority must be an integer, got {priority!r}")
    if not definition:
        raise errors.precondition_failed("policy definition must not be empty")
    unknown = sorted(k for k in definition if k not in KEYS and k not in IGNORED_KEYS)
    if unknown:
        raise errors.precondition_failed(f"Validation failed: {unknown} are not recognised policy settings")
    for key, value in definition.items():
        check = KEYS.get(key)
        if check is not None and not check(value):
            raise errors.precondition_failed(f"Validation failed: {value!r} is not a valid value for '{key}'")
    try:
        return Policy(name, pattern, dict(definition), priority, apply_to)
    except ValueError as exc:
        reason = f"Validation failed: pattern {pattern!r} is not a valid regex: {exc}"
        raise errors.precondition_failed(reason) from None


def select(policies: Iterable[Policy], kind: str, name: str, queue_type: str = "classic") -> Policy | None:
    best: Policy | None = None
    for policy in policies:
        if policy.applies(kind, name, queue_type) and (
            best is None
            or policy.priority > best.priority
            or (policy.priority == best.priority and policy.name < best.name)
        ):
            best = policy
    return best
