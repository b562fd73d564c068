"""Who may do what over HTTP: basic auth against the broker's users, RabbitMQ's management tags.

RabbitMQ's rules (rabbitmq_management's authorisation, 3.10):

- no management tag: no access to the API at all (401 "Not management user");
- ``management``: the vhosts the user has permissions in, its own connections and channels;
- ``policymaker``: as management, plus policies and parameters in those vhosts;
- ``monitoring``: every vhost, connection and channel, read-only beyond what its permissions allow;
- ``administrator``: everything (users, vhosts, permissions, definitions of the whole broker).

Acting on an object (declare, delete, purge, publish, get) also needs the user's AMQP permission on
it: configure for declare/delete, write for publish (and the destination side of a binding), read
for get/purge (and the source side of a binding), as the AMQP door enforces them. A permission is a
regex that must match somewhere in the name (``re:run`` without anchors, as RabbitMQ); an empty one
matches nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import TYPE_CHECKING

from leveret.core import auth as core_auth
from leveret.server.amqp_login import is_loopback

from .errors import HttpError

if TYPE_CHECKING:
    from leveret.core.broker import Broker, User
    from leveret.core.vhost import VirtualHost
    from leveret.server.config import Config

MANAGEMENT_TAGS = frozenset({"administrator", "monitoring", "policymaker", "management"})
REALM = 'Basic realm="Leveret Management"'


def credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = raw.partition(":")
    return (user, password) if sep else None


async def login(broker: Broker, header: str | None, peer: str, config: Config) -> User:
    """The user these basic-auth credentials name. A login that was seen before is a cache hit; a
    new one pays the password KDF on a worker thread, as the AMQP door does, so the loop stays free.
    ``loopback_users`` (guest) are refused from a non-loopback peer, as over AMQP."""
    creds = credentials(header)
    if creds is None:
        raise HttpError(401, "not_authorized", "Login failed")
    name, password = creds
    user = broker.cached_login(name, password)
    if user is None:
        stored, algorithm = broker.credentials(name)
        ok = await asyncio.get_running_loop().run_in_executor(None, core_auth.verify, password, stored, algorithm)
        user = broker.finish_login(name, password, stored, ok)
    if user is None:
        raise HttpError(401, "not_authorized", "Login failed")
    if user.name in config.loopback_users and not is_loopback(peer, config.loopback_addresses):
        raise HttpError(401, "not_authorized", "User can only log in via localhost")
    if not MANAGEMENT_TAGS.intersection(user.tags):
        raise HttpError(401, "not_authorized", "Not management user")
    return user


def is_admin(user: User) -> bool:
    return "administrator" in user.tags


def is_monitor(user: User) -> bool:
    return is_admin(user) or "monitoring" in user.tags


def is_policymaker(user: User) -> bool:
    return is_admin(user) or "policymaker" in user.tags


def require_admin(user: User) -> None:
    if not is_admin(user):
        raise HttpError(401, "not_authorized", "Not administrator user")


def require_monitor(user: User) -> None:
    if not is_monitor(user):
        raise HttpError(401, "not_authorized", "Not monitor user")


def require_policymaker(user: User) -> None:
    if not is_policymaker(user):
        raise HttpError(401, "not_authorized", "Not policymaker user")


def has_vhost(broker: Broker, user: User, vhost: str) -> bool:
    return is_monitor(user) or (user.name, vhost) in broker.permissions


def visible_vhosts(broker: Broker, user: User) -> list[VirtualHost]:
    return [vh for name, vh in broker.vhosts.items() if has_vhost(broker, user, name)]


def vhost(broker: Broker, user: User, name: str) -> VirtualHost:
    """The vhost, if it exists (404) and the user may see it (401, as RabbitMQ)."""
    vh = broker.vhosts.get(name)
    if vh is None:
        raise HttpError(404, "Object Not Found", "Not Found")
    if not has_vhost(broker, user, name):
        raise HttpError(401, "not_authorized", f"User not authorised to access virtual host '{name}'")
    return vh


def check(broker: Broker, user: User, vhost_name: str, kind: str, name: str, resource: str = "queue") -> None:
    """``kind`` is "configure", "write" or "read"; refused with 401 and RabbitMQ's text."""
    if not broker.may(user.name, vhost_name, kind, name):
        raise HttpError(
            401,
            "not_authorized",
            f"access to {resource} '{name}' in vhost '{vhost_name}' refused for user '{user.name}'",
        )
