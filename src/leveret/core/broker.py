"""The broker: virtual hosts, users, permissions and the sessions of connected clients.

Users keep a password hash (``core.auth``), tags (``administrator``, ``management``, ...) and, per
vhost, a ``Permission`` (``core.permissions``). Every change of users, vhosts, permissions and vhost
limits is applied, then recorded in the definitions log (``core.definitions``), like queue
declarations. A fresh broker holds RabbitMQ's defaults: vhost ``/`` and user ``guest``/``guest``
(tag ``administrator``, ``.*`` on ``/``); the log records departures from them too, so a deleted
guest stays deleted. ``access_version`` grows on every change that can alter an access decision:
the doors cache decisions (the publish path, per channel and exchange) and drop them when it moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from . import auth, errors
from . import definitions as defs
from .clock import Clock
from .permissions import CONFIGURE, READ, WRITE, Permission, TopicPermission, expand_topic, pattern, validate
from .policies import Policy
from .ports import DefinitionsLog, NullDefinitionsLog
from .session import Session
from .vhost import VirtualHost

if TYPE_CHECKING:
    from .ports import MessageStore

DEFAULT_VHOST = "/"
DEFAULT_USER = "guest"
FULL = Permission(".*", ".*", ".*")
VHOST_LIMITS = ("max-connections", "max-queues")


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password_hash: str = field(default="", repr=False)
    tags: tuple[str, ...] = ()
    hashing_algorithm: str = auth.PBKDF2


@lru_cache(maxsize=1)
def _default_guest_hash() -> str:
    return auth.hash_password(DEFAULT_USER)  # once per process: it costs a full KDF run


class Broker:
    def __init__(self) -> None:
        self.uids = defs.QueueUids()  # queue uids are unique across vhosts (the message log names queues by uid)
        self.clock = Clock()  # the broker's time (queues' TTL and expiry, consumer timeouts)
        self.consumer_timeout = 1_800_000  # ms, RabbitMQ's default; queues may set their own
        self.vhosts: dict[str, VirtualHost] = {DEFAULT_VHOST: VirtualHost(DEFAULT_VHOST, self.uids, self.clock)}
        self.definitions_log: DefinitionsLog = NullDefinitionsLog()
        self._default_user = User(DEFAULT_USER, _default_guest_hash(), ("administrator",))
        self.users: dict[str, User] = {DEFAULT_USER: self._default_user}
        self.permissions: dict[tuple[str, str], Permission] = {(DEFAULT_USER, DEFAULT_VHOST): FULL}
        self.topic_permissions: dict[tuple[str, str, str], TopicPermission] = {}  # (user, vhost, exchange)
        self.sessions: set[Session] = set()
        self.alarms: set[str] = set()  # "memory", "disk": set by the server's alarm watch
        self.store: MessageStore | None = None  # given to vhosts added at run time
        self.access_version = 0
        self._logins = auth.LoginCache()
        self._replaying = False

    # --------------------------------------------------------------------------- logging in

    def authenticate(self, username: str, password: str) -> User | None:
        """Check a password (one KDF run unless these credentials logged in before)."""
        user = self.cached_login(username, password)
        if user is not None:
            return user
        stored = self.users.get(username)
        found = stored.password_hash if stored else None
        ok = auth.verify(password, found, stored.hashing_algorithm if stored else None)
        return self.finish_login(username, password, found, ok)

    def cached_login(self, username: str, password: str) -> User | None:
        user = self.users.get(username)
        if user is not None and user.password_hash and self._logins.hit(username, password, user.password_hash):
            return user
        return None

    def finish_login(self, username: str, password: str, checked_hash: str | None, ok: bool) -> User | None:
        """After ``auth.verify`` ran (maybe on another thread) against ``checked_hash``: the user,
        if the check passed and the user still has that hash."""
        user = self.users.get(username)
        if not ok or user is None or checked_hash is None or user.password_hash != checked_hash:
            return None
        self._logins.add(username, password, checked_hash)
        return user

    def credentials(self, username: str) -> tuple[str | None, str | None]:
        """(hash, algorithm) to verify a password against; (None, None) for an unknown user."""
        user = self.users.get(username)
        return (user.password_hash, user.hashing_algorithm) if user else (None, None)

    # -------------------------------------------------------------------------------- users

    def add_user(
        self,
        name: str,
        password: str | None,
        tags: Iterable[str] = (),
        password_hash: str | None = None,
        hashing_algorithm: str | None = None,
    ) -> User:
        """Create or replace a user: from a password (hashed here), from a stored hash (imported
        definitions), or with neither (no password: EXTERNAL login only)."""
        if not name:
            raise errors.precondition_failed("user name must not be empty")
        if password is not None:
            stored, algorithm = auth.hash_password(password), auth.PBKDF2
        else:
            stored, algorithm = password_hash or "", hashing_algorithm or auth.guess_algorithm(password_hash or "")
            try:
                auth.validate(stored, algorithm)
            except ValueError as exc:
                raise errors.precondition_failed(str(exc)) from None
        user = User(name, stored, _tags(tags), algorithm)
        self.users[name] = user
        self._changed(defs.add_user(user))
        return user

    def delete_user(self, name: str) -> None:
        if name not in self.users:
            raise errors.not_found(f"no user '{name}'")
        del self.users[name]
        for key in [k for k in self.permissions if k[0] == name]:
            del self.permissions[key]
        for tkey in [k for k in self.topic_permissions if k[0] == name]:
            del self.topic_permissions[tkey]
        self._changed(defs.delete_user(name))
        # As RabbitMQ (3.7+): the deleted user's connections are closed (320).
        for session in [s for s in self.sessions if s.user.name == name and not s.internal]:
            session.force_close(f"user '{name}' is deleted")
            self.close_session(session)

    def change_password(self, name: str, password: str | None) -> User:
        user = self.user(name)
        if password is None:
            return self.add_user(name, None, user.tags)  # RabbitMQ's clear_password
        return self.add_user(name, password, user.tags)

    def set_user_tags(self, name: str, tags: Iterable[str]) -> User:
        user = self.user(name)
        return self.add_user(name, None, tags, user.password_hash, user.hashing_algorithm)

    def is_default_user(self, user: User) -> bool:
        """Still the ``guest`` a fresh broker starts with (its hash differs in every process)."""
        return user is self._default_user

    def user(self, name: str) -> User:
        user = self.users.get(name)
        if user is None:
            raise errors.not_found(f"no user '{name}'")
        return user

    # -------------------------------------------------------------------------- permissions

    def set_permissions(self, user: str, vhost: str, configure: str, write: str, read: str) -> Permission:
        self.user(user)
        self.vhost(vhost)
        try:
            validate(configure, write, read)
        except ValueError as exc:
            raise errors.precondition_failed(f"invalid permission pattern: {exc}") from None
        permission = Permission(configure, write, read)
        self.permissions[(user, vhost)] = permission
        self._changed(defs.set_permissions(user, vhost, permission))
        return permission

    def clear_permissions(self, user: str, vhost: str) -> None:
        if self.permissions.pop((user, vhost), None) is not None:
            self._changed(defs.clear_permissions(user, vhost))

    def set_topic_permissions(self, user: str, vhost: str, exchange: str, write: str, read: str) -> TopicPermission:
        self.user(user)
        self.vhost(vhost)
        try:  # checked with the variables expanded to a plain name
            validate(expand_topic(write, "u", "v"), expand_topic(read, "u", "v"))
        except ValueError as exc:
            raise errors.precondition_failed(f"invalid topic permission pattern: {exc}") from None
        permission = TopicPermission(exchange, write, read)
        self.topic_permissions[(user, vhost, exchange)] = permission
        self._changed(defs.set_topic_permissions(user, vhost, permission))
        return permission

    def clear_topic_permissions(self, user: str, vhost: str, exchange: str | None = None) -> None:
        keys = [k for k in self.topic_permissions if k[:2] == (user, vhost) and exchange in (None, k[2])]
        for key in keys:
            del self.topic_permissions[key]
        if keys:
            self._changed(defs.clear_topic_permissions(user, vhost, exchange))

    def may(self, user: str, vhost: str, kind: str, name: str) -> bool:
        """Whether ``user`` has ``kind`` (configure, write, read) permission on resource ``name``."""
        permission = self.permissions.get((user, vhost))
        return permission is not None and pattern(permission.pattern_for(kind)).matches(name)

    def check(self, user: str, vhost: str, kind: str, resource: str, name: str) -> None:
        """Raise 403 (RabbitMQ's text) unless ``may``; ``resource`` is "queue" or "exchange"."""
        if not self.may(user, vhost, kind, name):
            raise errors.access_refused(f"access to {resource} '{name}' in vhost '{vhost}' refused for user '{user}'")

    def check_topic(self, user: str, vhost: str, kind: str, exchange: str, routing_key: str) -> None:
        """Topic authorisation: only where a topic permission names this exchange."""
        permission = self.topic_permissions.get((user, vhost, exchange))
        if permission is None:
            return
        source = expand_topic(permission.write if kind == WRITE else permission.read, user, vhost)
        if not pattern(source).matches(routing_key):
            raise errors.access_refused(
                f"{kind} access to topic '{routing_key}' in exchange '{exchange}' in vhost '{vhost}' "
                f"refused for user '{user}'"
            )

    # ------------------------------------------------------------------------------- vhosts

    def vhost(self, name: str) -> VirtualHost:
        vh = self.vhosts.get(name)
        if vh is None:
            raise errors.not_found(f"no vhost '{name}'")
        return vh

    def add_vhost(self, name: str, description: str = "", tags: Iterable[str] = ()) -> VirtualHost:
        """Create a vhost (with its amq.* exchanges), or update the description and tags of one."""
        if not name:
            raise errors.precondition_failed("vhost name must not be empty")
        vh = self.vhosts.get(name)
        if vh is None:
            vh = VirtualHost(name, self.uids, self.clock)
            vh.store = self.store
            vh.definitions = self.definitions_log
            vh.replaying = self._replaying
            self.vhosts[name] = vh
        vh.description, vh.tags = description, _tags(tags)
        self._changed(defs.add_vhost(vh))
        return vh

    def delete_vhost(self, name: str) -> None:
        """Delete a vhost: its connections are closed (320), its queues and their messages dropped."""
        vh = self.vhost(name)
        for session in [s for s in self.sessions if s.vhost is vh]:
            session.force_close(f"vhost '{name}' is deleted")
            self.close_session(session)
        for q in list(vh.queues.values()):
            vh.remove_queue(q)
        del self.vhosts[name]
        for key in [k for k in self.permissions if k[1] == name]:
            del self.permissions[key]
        for tkey in [k for k in self.topic_permissions if k[1] == name]:
            del self.topic_permissions[tkey]
        self._changed(defs.delete_vhost(name))

    def set_vhost_limits(self, name: str, limits: Mapping[str, int]) -> None:
        """RabbitMQ's vhost limits: ``max-connections``, ``max-queues`` (a negative value: no limit)."""
        vh = self.vhost(name)
        unknown = set(limits) - set(VHOST_LIMITS)
        if unknown:
            raise errors.precondition_failed(f"unknown vhost limits: {', '.join(sorted(unknown))}")
        vh.limits = {k: int(v) for k, v in limits.items() if int(v) >= 0}
        self._changed(defs.set_vhost_limits(name, vh.limits))

    def vhost_limit(self, name: str, limit: str) -> int | None:
        vh = self.vhosts.get(name)
        return vh.limits.get(limit) if vh is not None else None

    # ----------------------------------------------------------------------------- sessions

    def open_session(self, user: User, vhost: str, name: str = "", internal: bool = False) -> Session:
        """A connection opens ``vhost`` (530 if it does not exist, the user has no permission
        there, or its connection limit is reached). ``internal`` doors skip the checks."""
        vh = self.vhosts.get(vhost)
        if vh is None:
            raise errors.not_allowed(f"vhost {vhost} not found")
        if not internal:
            if (user.name, vhost) not in self.permissions:
                raise errors.not_allowed(f"access to vhost '{vhost}' refused for user '{user.name}'")
            limit = vh.limits.get("max-connections")
            if limit is not None and sum(1 for s in self.sessions if s.vhost is vh and not s.internal) >= limit:
                raise errors.not_allowed(
                    f"access to vhost '{vhost}' refused for user '{user.name}': connection limit ({limit}) is reached"
                )
        session = Session(vh, user, name)
        session.internal = internal
        self.sessions.add(session)
        return session

    def close_session(self, session: Session) -> None:
        self.sessions.discard(session)
        session.close()

    # ---------------------------------------------------------------------- durable definitions

    def _changed(self, command: dict[str, Any]) -> None:
        self.access_version += 1
        self.definitions_log.record(command)

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
        self._replaying = True
        for vh in self.vhosts.values():
            vh.replaying = True
        try:
            return defs.replay(self, commands)
        finally:
            self._replaying = False
            for vh in self.vhosts.values():
                vh.replaying = False
            self.uids.resume()
            self.use_definitions_log(log)

    def definitions(self) -> list[dict[str, Any]]:
        """The durable definitions as commands (what compaction writes)."""
        return defs.snapshot(self)

    # ------------------------------------------------------------------- policies, time (issue 4)

    def set_policy(
        self,
        vhost: str,
        name: str,
        pattern: str,
        definition: Mapping[str, Any],
        priority: int = 0,
        apply_to: str = "all",
    ) -> Policy:
        return self.vhost(vhost).set_policy(name, pattern, definition, priority, apply_to)

    def clear_policy(self, vhost: str, name: str) -> None:
        self.vhost(vhost).clear_policy(name)

    def tick(self) -> float | None:
        """Run what is due: queue timers (TTL, expiry) and consumer timeouts. Returns the time of
        the next queue timer, if any (the server sleeps until then or its own tick)."""
        now = self.clock.now()
        nearest: float | None = None
        for vh in list(self.vhosts.values()):
            vh.run_timers(now)
            at = vh.next_timer()
            if at is not None and (nearest is None or at < nearest):
                nearest = at
        return nearest

    def check_consumer_timeouts(self) -> None:
        """Close (406) the channels whose oldest unacknowledged delivery is past its timeout."""
        now = self.clock.now()
        for session in list(self.sessions):
            for channel in list(session.channels.values()):
                channel.check_timeout(now, self.consumer_timeout)


def _tags(tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        tags = tags.split(",")
    return tuple(t.strip() for t in tags if t.strip())


__all__ = ["CONFIGURE", "READ", "WRITE", "Broker", "Permission", "TopicPermission", "User"]
