"""Pure parts of the management door: the flow model's windows and forecast, and definitions in
RabbitMQ's JSON format (export and import through the core, no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from leveret.core import rabbit_definitions as rd
from leveret.core.broker import Broker
from leveret.core.errors import BrokerError
from leveret.core.message import Message
from leveret.server.http.flow import WINDOW, Counters, FlowSampler, Ring, forecast


def test_counters_rate_is_over_the_sliding_window() -> None:
    c = Counters(1)
    assert c.rate(0) == 0.0
    for t, n in ((0.0, 0), (5.0, 50), (10.0, 150), (15.0, 150)):
        c.push(t, n)
    # WINDOW ticks back from t=15: (150 - 50) / 10 s
    assert WINDOW == 2 and c.rate(0) == pytest.approx(10.0)
    assert c.last(0) == 150


def test_ring_keeps_the_newest_points_in_order() -> None:
    r = Ring(3)
    for v in (1, 2, 3, 4):
        r.push(v)
    assert r.read() == [2.0, 3.0, 4.0] and len(r) == 3


@pytest.mark.parametrize(
    ("ready", "f", "g", "limit", "state", "seconds"),
    [
        (0, 0.0, 0.0, None, "empty", None),
        (100, 10.0, 30.0, None, "draining", 5.0),
        (100, 30.0, 10.0, 500, "filling", 20.0),
        (100, 30.0, 10.0, None, "growing", None),
        (100, 10.0, 10.0, None, "steady", None),
    ],
)
def test_forecast_from_the_flow_model(
    ready: int, f: float, g: float, limit: int | None, state: str, seconds: float | None
) -> None:
    fc = forecast(ready, f, g, limit)
    assert (fc.state, fc.seconds) == (state, seconds)
    if state == "draining":
        assert fc.text == "drains in ~5 s"
    if state == "filling":
        assert fc.text == "reaches max-length in ~20 s"


def test_sampler_rates_history_bounds_and_retired_counters() -> None:
    broker = Broker()
    vh = broker.vhosts["/"]
    queues = [vh.declare_queue(None, f"q{i}") for i in range(5)]
    sampler = FlowSampler(broker, interval=1.0, history_limit=2)

    async def ticks(n: int) -> None:
        for _ in range(n):
            await sampler.tick()

    asyncio.run(ticks(1))
    for _ in range(10):
        queues[0].enqueue(Message("", "q0", b"\x00\x00", b"x"))
    asyncio.run(ticks(1))
    assert sampler.sums["ready"] == 10 and sampler.sums["published"] == 10
    assert sum(1 for f in sampler.queues.values() if f.history is not None) == 2  # bounded
    sampler.watch(queues[4])  # asked for: gets history, the least recently watched loses it
    assert sampler.queue_history(queues[4]) is not None and sampler.queue_history(queues[0]) is None
    vh.delete_queue(None, "q0")
    asyncio.run(ticks(1))
    assert sampler.sums["published"] == 10  # a deleted queue's counters are kept as retired
    assert len(sampler.queues) == 4


def test_definitions_round_trip_through_the_core() -> None:
    src = Broker()
    src.add_vhost("v", "a vhost", ["prod"])
    src.add_user("ann", "pw", ["management"])
    src.set_permissions("ann", "v", "^a", ".*", ".*")
    vh = src.vhosts["v"]
    vh.declare_exchange("ex", "topic", durable=True)
    vh.declare_queue(None, "q", durable=True, arguments={"x-max-length": 5})
    vh.bind_queue(None, "q", "ex", "k.#", {})
    src.set_policy("v", "pol", "^q", {"message-ttl": 1000}, 2, "queues")
    exported = rd.export(src, "0.1.0")
    assert {"name": "q", "vhost": "v", "durable": True, "auto_delete": False, "arguments": {"x-max-length": 5}} in (
        exported["queues"]
    )
    assert exported["policies"] == [
        {
            "name": "pol",
            "pattern": "^q",
            "apply-to": "queues",
            "definition": {"message-ttl": 1000},
            "priority": 2,
            "vhost": "v",
        }
    ]
    dst = Broker()
    report = rd.import_(dst, exported)
    assert report.counts["queues"] == 1 and report.counts["bindings"] == 1
    again = rd.export(dst, "0.1.0")
    for key in ("vhosts", "permissions", "policies", "queues", "exchanges", "bindings"):
        assert again[key] == exported[key], key
    assert dst.authenticate("ann", "pw") is not None  # the hash travelled, not the password


def test_import_names_the_object_that_failed() -> None:
    broker = Broker()
    broker.vhosts["/"].declare_queue(None, "q", durable=True)
    with pytest.raises(BrokerError) as err:
        rd.import_(broker, {"queues": [{"name": "ok", "vhost": "/"}, {"name": "q", "vhost": "/", "durable": False}]})
    assert err.value.text.startswith("queues[1] (name 'q'): inequivalent arg 'durable'")
    with pytest.raises(BrokerError):
        rd.import_(broker, {"queues": "not a list"})
