"""The handler monitor's aggregation on a fake clock: sums across instances, expiry after three of an
instance's intervals, the bound on (group, instance) entries, and history that follows live groups."""

from __future__ import annotations

import json
from typing import Any

from leveret.core.broker import Broker
from leveret.server.http.handlers import HandlerMonitor, parse_report


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def report(group: str, instance: str, **fields: Any) -> bytes:
    body = {"group": group, "instance": instance, "pattern": "a.*", "handled": 1, "handled_rate": 0.5, "interval": 1.0}
    body.update(fields)
    return json.dumps(body).encode()


def test_groups_sum_live_instances_and_expire_after_three_intervals() -> None:
    clock = Clock()
    mon = HandlerMonitor(Broker(), interval=1.0, clock=clock)
    assert mon.add(report("g", "a:1", handled=3, failed=1), clock.now)
    assert mon.add(report("g", "b:2", handled=4, in_flight=2, handled_rate=1.25, interval=10.0), clock.now)
    assert mon.add(report("g", "a:1", handled=5, failed=1), clock.now)  # a newer report replaces the older
    g = mon.groups()["g"]
    assert (g["instances"], g["handled"], g["failed"], g["in_flight"], g["handled_rate"]) == (2, 9, 1, 2, 1.75)
    assert mon.total_rate() == 1.75
    clock.now += 3.0  # three of a:1's intervals without a report: it is gone, b:2 (10 s) stays
    g = mon.groups()["g"]
    assert (g["instances"], g["handled"]) == (1, 4)
    clock.now += 30.0
    assert mon.groups() == {} and mon.total_rate() == 0.0


def test_entries_are_bounded_and_bad_reports_counted() -> None:
    clock = Clock()
    mon = HandlerMonitor(Broker(), interval=1.0, max_reporters=2, clock=clock)
    assert mon.add(report("g1", "a"), clock.now) and mon.add(report("g2", "a"), clock.now)
    assert not mon.add(report("g3", "a"), clock.now)  # full
    assert mon.add(report("g1", "a", handled=2), clock.now)  # known entries still update
    clock.now += 3.0
    assert mon.add(report("g3", "a"), clock.now)  # the expired ones made room
    assert sorted(mon.groups()) == ["g3"]
    for bad in (b"{", b"null", report("", "a"), report("g", "a", handled=1.5), report("g", "a", interval=0)):
        assert not mon.add(bad, clock.now)
    assert (mon.received, mon.rejected) == (10, 6)


def test_history_follows_live_groups() -> None:
    clock = Clock()
    mon = HandlerMonitor(Broker(), interval=1.0, clock=clock)
    mon.add(report("g", "a", handled_rate=2.0), clock.now)
    mon.tick()
    mon.tick()
    history = mon.group_history("g")
    assert history is not None and history["handle"] == [2.0, 2.0] and len(history["times"]) == 2
    clock.now += 10.0
    mon.tick()
    assert mon.group_history("g") is None


def test_parse_report_caps_sizes() -> None:
    assert parse_report(report("g", "a", pattern="x" * 300), 0.0) is None
    assert parse_report(report("g", "a", pad="x" * 5000), 0.0) is None
    parsed = parse_report(report("g", "a"), 0.0)
    assert parsed is not None and parsed.expires == 3.0
