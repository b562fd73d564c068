"""Permissions: configure / write / read patterns per user per vhost, and topic permissions.

RabbitMQ's rule (rabbit_auth_backend_internal:check_resource_access): a user with no permission
entry for the vhost may do nothing there; otherwise the resource name must match the pattern of the
permission asked for, searched anywhere in the name (``re:run``), an empty pattern meaning ``^$``.
Patterns are compiled once (``pattern()``, cached) by ``safe_regex``: linear-time matching, so a
pathological pattern cannot stall the broker; a pattern outside the supported subset is refused
when it is set. Each compiled pattern also remembers its recent answers.

Topic permissions (RabbitMQ's topic authorisation) restrict the routing keys a user may publish with
(write) or bind with (read) on a topic exchange; with no entry for that exchange, anything goes.
``{username}`` and ``{vhost}`` in a topic pattern stand for the user's name and the vhost.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .safe_regex import SafePattern

CONFIGURE, WRITE, READ = "configure", "write", "read"
_ANSWERS = 4096  # remembered answers per compiled pattern


@dataclass(frozen=True, slots=True)
class Permission:
    configure: str
    write: str
    read: str

    def pattern_for(self, kind: str) -> str:
        return self.configure if kind == CONFIGURE else self.write if kind == WRITE else self.read


@dataclass(frozen=True, slots=True)
class TopicPermission:
    exchange: str
    write: str
    read: str


class Pattern:
    """A compiled permission pattern with a bounded memory of the names it was asked about."""

    __slots__ = ("_answers", "_compiled", "_everything", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._compiled = SafePattern(source or "^$")
        self._everything = source in (".*", "^.*", ".*$")  # these match any name (an empty match)
        self._answers: dict[str, bool] = {}

    def matches(self, name: str) -> bool:
        if self._everything:
            return True
        answer = self._answers.get(name)
        if answer is None:
            answer = self._compiled.search(name)
            if len(self._answers) >= _ANSWERS:
                self._answers.clear()
            self._answers[name] = answer
        return answer


@lru_cache(maxsize=1024)
def pattern(source: str) -> Pattern:
    """The compiled pattern (ValueError if it is not supported; see ``safe_regex``)."""
    return Pattern(source)


def validate(*sources: str) -> None:
    for source in sources:
        pattern(source)


def expand_topic(source: str, user: str, vhost: str) -> str:
    return source.replace("{username}", user).replace("{vhost}", vhost)
