"""Resource alarms: memory high watermark and disk free limit, and blocking publishers.

Theory of operation, as RabbitMQ's alarms: ``MemoryWatch`` samples the broker's resident size every
``alarm_interval`` and hands it to ``AlarmWatch.sample``, which also reads the free space of the
data directory's file system. ``Broker.alarms`` holds the alarms in force ("memory", "disk"). While
any is in force, a connection that publishes is blocked: its socket is no longer read (the publisher
is pushed back by TCP), and, if the client announced the ``connection.blocked`` capability, it
receives ``connection.blocked`` with the reason. A connection that publishes nothing (a consumer)
is left alone, so queues keep draining. A connection already known to publish is blocked when the
alarm goes off; any other is blocked at its first publish after that (that message is taken).
When the last alarm clears, blocked connections are read again and receive
``connection.unblocked`` (if they received ``connection.blocked``).

Thresholds: memory at ``memory_limit`` bytes, or ``memory_high_watermark`` of the physical memory or
of the cgroup's limit when lower; disk when fewer than ``disk_free_limit`` bytes are free. Both are
config fields, so a test can raise an alarm at will (a disk limit larger than the free space).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from leveret.amqp import methods as m
from leveret.core.broker import Broker

if TYPE_CHECKING:
    from .amqp_door import AMQPConnection

log = logging.getLogger("leveret.alarms")

REASONS = {"memory": "low on memory", "disk": "low on disk"}


def disk_free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class AlarmWatch:
    def __init__(
        self,
        broker: Broker,
        connections: Iterable[AMQPConnection],
        data_dir: str,
        memory_limit: int,
        disk_free_limit: int,
    ) -> None:
        self.broker = broker
        self.connections = connections
        self.data_dir = data_dir
        self.memory_limit = memory_limit
        self.disk_free_limit = disk_free_limit
        self.last_rss = 0
        self.last_disk_free = 0

    def sample(self, rss: int) -> None:
        """One check: set or clear each alarm, and block or release connections on a change."""
        self.last_rss = rss
        before = set(self.broker.alarms)
        self._set("memory", self.memory_limit > 0 and rss >= self.memory_limit, f"{rss >> 20} MiB in use")
        try:
            self.last_disk_free = disk_free(self.data_dir)
        except OSError:
            pass  # the directory went away: keep the last verdict
        else:
            low = self.last_disk_free < self.disk_free_limit
            self._set("disk", low, f"{self.last_disk_free >> 20} MiB free")
        if self.broker.alarms != before:
            self._changed()

    def _set(self, name: str, on: bool, detail: str) -> None:
        alarms = self.broker.alarms
        if on and name not in alarms:
            alarms.add(name)
            log.warning("%s alarm set (%s): publishers are blocked", name, detail)
        elif not on and name in alarms:
            alarms.discard(name)
            log.warning("%s alarm cleared (%s)", name, detail)

    def _changed(self) -> None:
        for conn in list(self.connections):
            if not self.broker.alarms:
                unblock(conn)
            elif conn.published:
                block(conn, self.broker.alarms)


def reason(alarms: set[str]) -> str:
    return " & ".join(REASONS[a] for a in sorted(alarms))


def block(conn: AMQPConnection, alarms: set[str]) -> None:
    """Stop reading ``conn`` (it published while an alarm is in force)."""
    if conn.blocked or conn.transport is None:
        return
    conn.blocked = True
    conn.transport.pause_reading()
    notify(conn, alarms)


def notify(conn: AMQPConnection, alarms: set[str]) -> None:
    if conn.blocked_notice is None and conn.client_capabilities.get("connection.blocked"):
        conn.blocked_notice = reason(alarms)
        conn.send(0, m.ConnectionBlocked(conn.blocked_notice))


def unblock(conn: AMQPConnection) -> None:
    if not conn.blocked:
        return
    conn.blocked = False
    if conn.blocked_notice is not None:
        conn.blocked_notice = None
        conn.send(0, m.ConnectionUnblocked())
    if conn.transport is not None and not conn.transport.is_closing() and not conn._reading_paused:
        conn.transport.resume_reading()
