"""The broker: virtual hosts, users and the sessions of connected clients.

Users for now: a fixed table with ``guest``/``guest`` (the security issue brings stored users,
password hashes and permissions). Passwords are compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import definitions as defs
from . import errors
from .ports import DefinitionsLog, NullDefinitionsLog
from .session import Session
from .vhost import VirtualHost


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password: str = field(repr=False)
    tags: tuple[str, ...] = ()
    vhosts: tuple[str, ...] = ("/",)


class Broker:
    def __init__(self) -> None:
        self.uids = defs.QueueUids()  # queue uids are unique across vhosts (the message log names queues by uid)
        self.vhosts: dict[str, VirtualHost] = {"/": VirtualHost("/", self.uids)}
        self.definitions_log: DefinitionsLog = NullDefinitionsLog()
        self.users: dict[str, User] = {"guest": User("guest", "guest", ("administrator",))}
        self.sessions: set[Session] = set()

    def authenticate(self, username: str, password: str) -> User | None:
        user = self.users.get(username)
        expected = user.password if user is not None else "\x00 no such user"
        ok = hmac.compare_digest(expected.encode("utf-8"), password.encode("utf-8"))
        return user if ok and user is not None else None

    def open_session(self, user: User, vhost: str, name: str = "") -> Session:
        vh = self.vhosts.get(vhost)
        if vh is None:
            raise errors.not_allowed(f"vhost {vhost} not found")
        if vhost not in user.vhosts:
            raise errors.not_allowed(f"access to vhost '{vhost}' refused for user '{user.name}'")
        session = Session(vh, user, name)
        self.sessions.add(session)
        return session

    def close_session(self, session: Session) -> None:
        self.sessions.discard(session)
        session.close()

    # ---------------------------------------------------------------------- durable definitions

    def use_definitions_log(self, log: DefinitionsLog) -> None:
        """From now on every durable definition change is recorded in ``log``."""
        self.definitions_log = log
        self.uids.log = log
        for vh in self.vhosts.values():
            vh.definitions = log

    def replay_definitions(self, commands: Iterable[Mapping[str, Any]]) -> defs.ReplayReport:
        """Rebuild the durable definitions from logged commands (nothing is recorded meanwhile)."""
        log = self.definitions_log
        self.use_definitions_log(NullDefinitionsLog())
        for vh in self.vhosts.values():
            vh.replaying = True
        try:
            return defs.replay(self, commands)
        finally:
            for vh in self.vhosts.values():
                vh.replaying = False
            self.uids.resume()
            self.use_definitions_log(log)

    def definitions(self) -> list[dict[str, Any]]:
        """The durable definitions as commands (what compaction writes)."""
        return defs.snapshot(self)
