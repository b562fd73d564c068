"""Prometheus ``/metrics``: the text exposition format, RabbitMQ-style names, and scrape cost with 10k
queues (broker-wide by default, per queue with ``?detail=queues``)."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator

import pika
import pytest

from ..conftest import BrokerProcess
from .test_http_api import Http

LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? -?[0-9.e+-]+$')


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path_factory.mktemp("metrics") / "data", "--stats-interval", "0.2", http=True)
    yield proc
    proc.stop()


def scrape(node: BrokerProcess, query: str = "") -> tuple[float, str, str]:
    started = time.perf_counter()
    with urllib.request.urlopen(f"{node.http_url}/metrics{query}", timeout=30) as resp:
        text = resp.read().decode()
        ctype = resp.headers["Content-Type"]
    return time.perf_counter() - started, text, ctype


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert LINE.match(line), line
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_format_and_values(node: BrokerProcess) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(node.url))
    ch = conn.channel()
    ch.queue_declare('we"ird\\q')
    for _ in range(5):
        ch.basic_publish("", 'we"ird\\q', b"x")
    time.sleep(0.5)  # two sample ticks (0.2 s)
    _, text, ctype = scrape(node)
    assert ctype.startswith("text/plain")
    values = samples(text)
    assert values["leveret_connections"] == 1
    assert values["leveret_queue_messages_ready_sum"] == 5
    assert values["leveret_global_messages_received_total"] == 5
    assert "# TYPE leveret_queue_messages_published_sum_total counter" in text
    _, detail, _ = scrape(node, "?detail=queues")
    values = samples(detail)
    assert values['leveret_queue_messages_ready{vhost="/",queue="we\\"ird\\\\q"}'] == 5
    assert values['leveret_queue_messages_published_total{vhost="/",queue="we\\"ird\\\\q"}'] == 5
    conn.close()


def test_scrape_stays_fast_with_10k_queues(node: BrokerProcess) -> None:
    api = Http(node.http_url)
    started = time.perf_counter()
    defs = {"queues": [{"name": f"many-{i:05d}", "vhost": "/", "durable": False} for i in range(10_000)]}
    assert api.call("POST", "/api/definitions", defs)[0] == 201
    declared = time.perf_counter() - started
    time.sleep(0.5)  # let the sampler go over them
    aggregate = min(scrape(node)[0] for _ in range(5))
    detail_time, detail, _ = scrape(node, "?detail=queues")
    assert detail.count("leveret_queue_messages_ready{") >= 10_000
    sample_seconds = samples(scrape(node)[1])["leveret_stats_sample_seconds"]
    page_started = time.perf_counter()
    page = api.get("/api/queues?page=1&page_size=100&name=many-")
    page_time = time.perf_counter() - page_started
    assert page["filtered_count"] == 10_000
    print(
        f"\n10k queues: import {declared:.2f} s, /metrics {aggregate * 1000:.1f} ms, "
        f"?detail=queues {detail_time * 1000:.0f} ms, sample tick {sample_seconds * 1000:.0f} ms, "
        f"one API page {page_time * 1000:.0f} ms"
    )
    assert aggregate < 0.05  # independent of the number of queues
    assert detail_time < 2.0
    assert page_time < 1.0
