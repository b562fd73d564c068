"""``/metrics`` in Prometheus' text exposition format (version 0.0.4), names in RabbitMQ's style.

By default only broker-wide figures are served, read from the flow sampler's last tick: a scrape
costs the same with 10 or 100k queues. Per-queue series (labels ``vhost``, ``queue``) come with
``?detail=queues`` or the ``metrics_detail`` setting; they cost a line per queue and metric
(measured in docs/architecture.md). Per handler group series (label ``group``: h(t) and counters as
the events runtime reports them) are served by default, as there are few (bounded by the handler
monitor); ``?detail=none`` leaves them out too.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from leveret import __version__

if TYPE_CHECKING:
    from .door import HttpDoor

_QUEUE_METRICS = (
    ("leveret_queue_messages_ready", "gauge", "Messages ready to be delivered"),
    ("leveret_queue_messages_unacked", "gauge", "Messages delivered and not yet acknowledged"),
    ("leveret_queue_messages", "gauge", "Messages ready and unacknowledged"),
    ("leveret_queue_consumers", "gauge", "Consumers of the queue"),
    ("leveret_queue_messages_published_total", "counter", "Messages published into the queue"),
    ("leveret_queue_messages_delivered_total", "counter", "Messages delivered from the queue (consumers and gets)"),
    ("leveret_queue_messages_acked_total", "counter", "Messages acknowledged"),
)
_HANDLER_METRICS = (
    ("leveret_handler_rate", "gauge", "Events handled per second h(t), all instances", "handled_rate"),
    ("leveret_handler_instances", "gauge", "Instances of the handler group reporting", "instances"),
    ("leveret_handler_in_flight", "gauge", "Events being handled now", "in_flight"),
    ("leveret_handler_handled_total", "counter", "Events handled (acked)", "handled"),
    ("leveret_handler_failed_total", "counter", "Handler exceptions", "failed"),
    ("leveret_handler_retried_total", "counter", "Events sent to a retry", "retried"),
    ("leveret_handler_dead_lettered_total", "counter", "Events dead-lettered", "dead_lettered"),
)


def label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(door: HttpDoor, per_queue: bool, per_group: bool = True) -> str:
    flow = door.flow
    broker = door.broker
    sums = flow.sums
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, value: float, labels: str = "") -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{labels} {value}")

    metric("leveret_build_info", "gauge", "Leveret version", 1, f'{{version="{label(__version__)}"}}')
    metric("leveret_identity_info", "gauge", "Node name", 1, f'{{leveret_node="{label(_node())}"}}')
    connections = door.server.connections
    metric("leveret_connections", "gauge", "Open AMQP connections", len(connections))
    metric("leveret_channels", "gauge", "Open AMQP channels", sum(len(c.channels) for c in connections))
    metric("leveret_queues", "gauge", "Queues", sum(len(vh.queues) for vh in broker.vhosts.values()))
    metric("leveret_exchanges", "gauge", "Exchanges", sum(len(vh.exchanges) for vh in broker.vhosts.values()))
    metric("leveret_consumers", "gauge", "Consumers (at the last sample)", sums["consumers"])
    metric("leveret_queue_messages_ready_sum", "gauge", "Ready messages in all queues (last sample)", sums["ready"])
    metric("leveret_queue_messages_unacked_sum", "gauge", "Unacknowledged messages (last sample)", sums["unacked"])
    metric("leveret_queue_messages_published_sum_total", "counter", "Messages enqueued, all queues", sums["published"])
    metric("leveret_queue_messages_delivered_sum_total", "counter", "Messages delivered, all queues", sums["delivered"])
    metric("leveret_queue_messages_acked_sum_total", "counter", "Messages acknowledged, all queues", sums["acked"])
    metric(
        "leveret_global_messages_received_total",
        "counter",
        "Messages published into exchanges",
        flow.totals.last(0),
    )
    metric(
        "leveret_global_messages_routed_total",
        "counter",
        "Messages routed to at least one queue",
        flow.totals.last(3),
    )
    lines.append("# HELP leveret_alarms_active Resource alarm in effect (1) or not (0)")
    lines.append("# TYPE leveret_alarms_active gauge")
    for resource in ("memory", "disk"):
        lines.append(f'leveret_alarms_active{{resource="{resource}"}} {int(resource in broker.alarms)}')
    metric("leveret_process_resident_memory_bytes", "gauge", "Resident memory", _rss())
    metric("leveret_stats_sample_seconds", "gauge", "How long the last flow sample took", flow.last_tick_seconds)
    groups = door.handlers.groups()
    metric("leveret_handler_groups", "gauge", "Event handler groups reporting", len(groups))
    h_total = door.handlers.total_rate()
    metric("leveret_handler_rate_sum", "gauge", "Events handled per second h(t), all groups", h_total)
    metric("leveret_handler_reports_received_total", "counter", "Handler reports received", door.handlers.received)
    metric("leveret_handler_reports_rejected_total", "counter", "Handler reports ignored", door.handlers.rejected)
    if per_group:
        _handlers(groups, lines)
    if per_queue:
        _queues(door, lines)
    lines.append("")
    return "\n".join(lines)


def _queues(door: HttpDoor, lines: list[str]) -> None:
    queues = [(vh.name, q) for vh in door.broker.vhosts.values() for q in vh.queues.values()]
    labels = [f'{{vhost="{label(v)}",queue="{label(q.name)}"}}' for v, q in queues]
    columns = (
        [q.message_count() for _, q in queues],
        [q.unacked for _, q in queues],
        None,
        [len(q.consumers) for _, q in queues],
        [q.stats_published for _, q in queues],
        [q.stats_delivered for _, q in queues],
        [q.stats_acked for _, q in queues],
    )
    ready, unacked = columns[0], columns[1]
    assert ready is not None and unacked is not None
    for (name, kind, help_), column in zip(_QUEUE_METRICS, columns, strict=True):
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        values = column if column is not None else [r + u for r, u in zip(ready, unacked, strict=True)]
        lines.extend(f"{name}{lab} {v}" for lab, v in zip(labels, values, strict=True))


def _handlers(groups: dict[str, dict[str, Any]], lines: list[str]) -> None:
    labels = [(f'{{group="{label(name)}"}}', g) for name, g in sorted(groups.items())]
    for name, kind, help_, key in _HANDLER_METRICS:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{lab} {g[key]}" for lab, g in labels)


def _node() -> str:
    from .render import NODE

    return NODE


def _rss() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
