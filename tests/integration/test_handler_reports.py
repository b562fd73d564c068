"""h(t) of the events runtime seen by the broker: an :class:`EventBus` reports each group to
``leveret.metrics``; the management door aggregates the reports per group (``/api/leveret/handlers``,
``/api/overview``, ``/metrics``), across instances, and shrugs off malformed ones."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import aio_pika
import pytest

from leveret.events import Event, EventBus

from ..conftest import BrokerProcess
from .test_http_api import Http
from .test_http_metrics import samples

INTERVAL = 0.2


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path_factory.mktemp("handlers") / "data", "--stats-interval", "0.2", http=True)
    yield proc
    proc.stop()


async def eventually(probe: Callable[[], Any], check: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    """Poll ``probe`` (blocking HTTP, run in a thread so the bus keeps running) until ``check`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(probe)
        if check(value):
            return value
        assert time.monotonic() < deadline, f"not met in time; last value: {value!r}"
        await asyncio.sleep(0.05)


def handlers(api: Http) -> dict[str, Any]:
    return {g["group"]: g for g in api.get("/api/leveret/handlers")}


def metrics(node: BrokerProcess) -> str:
    with urllib.request.urlopen(node.http_url + "/metrics", timeout=10) as resp:
        return str(resp.read().decode())


async def test_reported_h_of_t_reaches_api_overview_and_metrics(node: BrokerProcess, unique: str) -> None:
    group = unique + "-billing"
    api = Http(node.http_url)
    bus = EventBus(node.url, exchange=unique + "-events", report_interval=INTERVAL)
    handled: list[Event] = []

    @bus.handler("order.*", group=group)
    async def on_order(event: Event) -> None:
        handled.append(event)

    async with bus:
        for i in range(5):
            await bus.publish("order.created", {"id": i})
        seen = await eventually(lambda: handlers(api).get(group), lambda g: g is not None and g["handled"] == 5)
        assert seen["instances"] == 1 and seen["pattern"] == "order.*" and seen["vhost"] == "/"
        assert seen["handled_rate"] > 0 and seen["failed"] == seen["in_flight"] == 0
        overview = await asyncio.to_thread(api.get, "/api/overview")
        assert overview["handler_rate"] >= seen["handled_rate"] > 0
        one = await asyncio.to_thread(api.get, f"/api/leveret/handlers/{quote(group, safe='')}?flow=true")
        assert one["group"] == group
        values = samples(await asyncio.to_thread(metrics, node))
        assert values[f'leveret_handler_rate{{group="{group}"}}'] > 0
        assert values[f'leveret_handler_in_flight{{group="{group}"}}'] == 0
        assert values[f'leveret_handler_failed_total{{group="{group}"}}'] == 0
        assert values["leveret_handler_rate_sum"] > 0
        history = await eventually(
            lambda: api.get("/api/overview?flow=true")["leveret_flow"]["handle"], lambda h: any(v > 0 for v in h)
        )
        assert len(history) >= 1
    # The bus is gone: its entry expires after three of its intervals.
    await eventually(lambda: handlers(api), lambda gs: group not in gs, timeout=5.0)
    assert len(handled) == 5


async def test_two_instances_of_one_group_aggregate(node: BrokerProcess, unique: str) -> None:
    group, exchange = unique + "-work", unique + "-events"
    api = Http(node.http_url)
    buses = [EventBus(node.url, exchange=exchange, report_interval=INTERVAL) for _ in range(2)]
    assert buses[0].instance != buses[1].instance

    for bus in buses:

        @bus.handler("job.#", group=group)
        async def work(event: Event) -> None:
            await asyncio.sleep(0.001)

    async with buses[0], buses[1]:
        for i in range(20):
            await buses[0].publish("job.run", {"n": i})
        seen = await eventually(
            lambda: handlers(api).get(group), lambda g: g is not None and g["instances"] == 2 and g["handled"] == 20
        )
        per_bus = [b.metrics[group].handled for b in buses]
        assert sum(per_bus) == 20
        assert seen["handled_rate"] > 0


async def test_malformed_reports_are_ignored(node: BrokerProcess, unique: str) -> None:
    api = Http(node.http_url)
    good = {
        "group": unique + '-ha"nd',  # any string: reports need not come from a bus (escaping below)
        "pattern": "#",
        "instance": "made-by-hand:1",
        "handled": 7,
        "failed": 1,
        "retried": 1,
        "dead_lettered": 0,
        "in_flight": 2,
        "handled_rate": 0.7,
        "interval": 1.0,
        "at": time.time(),
    }
    bad: list[bytes] = [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        json.dumps({"instance": "x:1", "handled": 1}).encode(),  # no group
        json.dumps(dict(good, group=unique + "-neg", handled=-1)).encode(),
        json.dumps(dict(good, group=unique + "-str", handled_rate="fast")).encode(),
        json.dumps(dict(good, group=unique + "-bool", in_flight=True)).encode(),
        json.dumps(dict(good, group=unique + "-big", pattern="x" * 5000)).encode(),
        json.dumps(dict(good, group="")).encode(),
    ]
    connection = await aio_pika.connect(node.url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange("leveret.metrics")
        for body in [*bad, json.dumps(good).encode()]:
            await exchange.publish(aio_pika.Message(body), routing_key="events.anything")
    seen = await eventually(lambda: handlers(api), lambda gs: good["group"] in gs)
    assert not [name for name in seen if name.startswith(unique) and name != good["group"]]
    g = seen[good["group"]]
    assert (g["instances"], g["handled"], g["failed"], g["in_flight"], g["handled_rate"]) == (1, 7, 1, 2, 0.7)
    assert (await asyncio.to_thread(api.get, "/api/overview"))["handler_rate"] >= 0.7
    values = samples(await asyncio.to_thread(metrics, node))
    assert values[f'leveret_handler_in_flight{{group="{unique}-ha\\"nd"}}'] == 2
    assert values["leveret_handler_reports_rejected_total"] >= len(bad)
