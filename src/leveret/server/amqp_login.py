"""Logging in over AMQP: ``connection.start-ok`` to ``connection.tune`` or a refusal.

Mechanisms: PLAIN and AMQPLAIN (user name and password), and EXTERNAL on a TLS connection whose
client presented a verified certificate: the user is the certificate subject's common name (CN), as
RabbitMQ's rabbitmq_auth_mechanism_ssl does by default, and must exist (no password is checked).

The password check is a full KDF run (``core.auth``) unless these credentials logged in before, so it
runs on a worker thread: the event loop keeps serving other connections meanwhile, and the door
holds this connection's input (``hold_input``) until the answer is in.

Refusals follow RabbitMQ: ``connection.close`` 403 ACCESS_REFUSED with a text that tells nothing
("Login was refused using authentication mechanism PLAIN. For details see the broker logfile.")
when the client announced the ``authentication_failure_close`` capability, else the socket is
just closed. The log line names the user and the reason, never the password. Users listed in
``loopback_users`` (``guest`` by default) are refused unless the peer address is loopback.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from leveret.amqp import methods as m
from leveret.amqp.constants import ReplyCode
from leveret.amqp.errors import ProtocolError
from leveret.amqp.wire import read_table
from leveret.core import auth
from leveret.core.broker import User

if TYPE_CHECKING:
    from .amqp_door import AMQPConnection

log = logging.getLogger("leveret.amqp")

PASSWORD_MECHANISMS = ("PLAIN", "AMQPLAIN")


def mechanisms(conn: AMQPConnection) -> bytes:
    return b"PLAIN AMQPLAIN EXTERNAL" if conn.peer_cert_cn else b"PLAIN AMQPLAIN"


def parse_credentials(mechanism: str, response: bytes) -> tuple[str, str] | None:
    """PLAIN: ``[authzid]\\0user\\0password``; AMQPLAIN: a field table body with LOGIN and PASSWORD."""
    if mechanism == "PLAIN":
        parts = response.split(b"\x00")
        if len(parts) != 3:
            return None
        return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
    if mechanism == "AMQPLAIN":
        try:
            table, _ = read_table(len(response).to_bytes(4, "big") + response, 0)
        except ProtocolError:
            return None
        login, password = _text(table.get("LOGIN")), _text(table.get("PASSWORD"))
        if login is not None and password is not None:
            return login, password
    return None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def common_name(peercert: Mapping[str, Any] | None) -> str | None:
    """The CN of a certificate as ``SSLSocket.getpeercert()`` returns it (the last CN if several)."""
    found = None
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                found = value
    return found


def is_loopback(address: str, configured: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if configured:
        return str(ip) in configured
    return ip.is_loopback


_FLIGHT_KEY = secrets.token_bytes(32)  # keys the in-flight table: no password is kept in it
_in_flight: dict[tuple[str, str | None, bytes], asyncio.Future[bool]] = {}


def start(conn: AMQPConnection, method: m.ConnectionStartOk) -> None:
    """Handle ``connection.start-ok``: log in now, or later from a worker thread."""
    conn.client_properties = method.client_properties
    caps = method.client_properties.get("capabilities")
    conn.client_capabilities = caps if isinstance(caps, dict) else {}
    mechanism = method.mechanism
    if mechanism not in mechanisms(conn).decode().split():
        raise ProtocolError(ReplyCode.COMMAND_INVALID, f"unknown authentication mechanism '{mechanism}'")
    broker = conn.broker
    if mechanism == "EXTERNAL":
        name = conn.peer_cert_cn or ""
        user = broker.users.get(name)
        decide(conn, mechanism, name, user, "no such user" if user is None else "")
        return
    creds = parse_credentials(mechanism, method.response)
    if creds is None:
        decide(conn, mechanism, "?", None, "malformed response")
        return
    name, password = creds
    user = broker.cached_login(name, password)
    if user is not None:
        decide(conn, mechanism, name, user, "")
        return
    password_hash, algorithm = broker.credentials(name)
    conn.hold_input()
    # Single flight: clients logging in with the same credentials at once (a fleet restarting) share
    # one key-derivation run instead of queueing one each behind the worker threads.
    key = (name, password_hash, hmac.digest(_FLIGHT_KEY, password.encode("utf-8"), "sha256"))
    future = _in_flight.get(key)
    if future is None:
        future = asyncio.get_running_loop().run_in_executor(None, auth.verify, password, password_hash, algorithm)
        _in_flight[key] = future
        future.add_done_callback(lambda _done: _in_flight.pop(key, None))

    def checked(done: asyncio.Future[bool]) -> None:
        ok = not done.cancelled() and done.exception() is None and done.result()
        found = broker.finish_login(name, password, password_hash, ok)
        if conn.transport is None:
            return  # the client went away meanwhile
        decide(conn, mechanism, name, found, "" if found else "invalid credentials")
        conn.release_input()

    future.add_done_callback(checked)


def decide(conn: AMQPConnection, mechanism: str, name: str, user: User | None, reason: str) -> None:
    cfg = conn.config
    if (
        user is not None
        and user.name in cfg.loopback_users
        and not is_loopback(conn.peer_address, cfg.loopback_addresses)
    ):
        user, reason = None, f"user '{name}' can only connect via localhost"
    if user is None:
        refuse(conn, mechanism, name, reason)
        return
    conn.user = user
    conn.send(0, m.ConnectionTune(cfg.channel_max, cfg.frame_max, cfg.heartbeat))


def refuse(conn: AMQPConnection, mechanism: str, name: str, reason: str) -> None:
    log.warning("login refused for user %r from %s (%s): %s", name, conn.peer, mechanism, reason)
    if conn.client_capabilities.get("authentication_failure_close"):
        error = ProtocolError(
            ReplyCode.ACCESS_REFUSED,
            f"Login was refused using authentication mechanism {mechanism}. For details see the broker logfile.",
        )
        conn._fail(0, error)
    else:
        conn.close_transport()
