"""The web UI in a real headless Chromium (Playwright): pages load, charts draw with data, actions
work, a queue named ``<script>alert(1)</script>`` stays text. Screenshots go to ``test-artifacts/ui``
(or ``$LEVERET_TEST_ARTIFACTS``).

The browser: ``$LEVERET_CHROMIUM``, else Debian's ``/usr/bin/chromium`` (``.ci/run`` installs it),
else Playwright's own download. In CI (``CI=true``) a missing browser fails the test; locally it
skips with a message.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from ..conftest import BrokerProcess
from .test_http_api import Http, q

ARTIFACTS = (
    Path(os.environ.get("LEVERET_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")) / "ui"
)
XSS = "<script>alert(1)</script>"


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI needs it: .ci/run installs Debian's chromium)")
    pytest.skip(f"{reason}: install Debian's chromium (apt-get install chromium) to run the UI test")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    executable = os.environ.get("LEVERET_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as pw:
        try:
            found = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except Error as exc:
            _missing(f"no Chromium to drive ({str(exc).splitlines()[0]})")
        yield found
        found.close()


@pytest.fixture(scope="module")
def ui_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path_factory.mktemp("ui") / "data", "--stats-interval", "0.2", http=True)
    yield proc
    proc.stop()


def painted(page: Any, selector: str) -> int:
    """How many pixels of the canvas are not blank (the chart drew something)."""
    return int(
        page.eval_on_selector(
            selector,
            """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                      let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""",
        )
    )


def wait_points(page: Any, selector: str, at_least: int = 2) -> None:
    page.wait_for_function(
        f"() => Number(document.querySelector({selector!r})?.dataset.points || 0) >= {at_least}", timeout=15000
    )


def depth_is(page: Any, text: str) -> None:
    page.wait_for_function(f"() => document.querySelector('#queue-depth')?.textContent === {text!r}", timeout=15000)


def test_ui_pages_charts_actions_and_escaping(browser: Any, ui_broker: BrokerProcess) -> None:
    api = Http(ui_broker.http_url)
    api.ok("PUT", f"/api/queues/%2F/{q(XSS)}", {"durable": False})
    api.ok("PUT", "/api/queues/%2F/ui-work", {"durable": False})
    conn = pika.BlockingConnection(pika.URLParameters(ui_broker.url))
    ch = conn.channel()
    for _ in range(200):
        ch.basic_publish("", "ui-work", b"job")
    report = {"group": XSS, "instance": "ui:1", "handled": 42, "in_flight": 3, "handled_rate": 4.2, "interval": 60}
    ch.basic_publish("leveret.metrics", "events.ui", json.dumps(report).encode())  # as an EventBus reports h(t)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", on_dialog)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(ui_broker.http_url + "/")
        page.fill("#login input[name=password]", "wrong")
        page.click("#login button[type=submit]")
        page.wait_for_selector("#login-error:has-text('Login failed')")
        page.fill("#login input[name=password]", "guest")
        page.click("#login button[type=submit]")
        page.wait_for_selector("#total-ready")
        wait_points(page, "#chart-rates", 3)
        page.wait_for_selector("#handler-list td:text-is('42')")
        assert page.inner_text("#handler-list tbody td >> nth=0") == XSS
        assert page.locator("#page script").count() == 0
        assert painted(page, "#chart-depth") > 500 and painted(page, "#chart-rates") > 500
        page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

        # Queues: the XSS name is shown as text, nothing runs.
        page.click("#nav a[data-page=queues]")
        page.wait_for_selector("#queue-list table")
        link = page.get_by_role("link", name=XSS, exact=True)
        assert link.inner_text() == XSS
        assert page.locator("#page script").count() == 0
        page.fill("#declare-queue input[name=name]", "from-the-ui")
        page.fill("#declare-queue input[name=max_length]", "50")
        page.click("#declare-queue button[type=submit]")
        page.wait_for_selector("#status:has-text('queue from-the-ui declared')")
        page.wait_for_selector("#queue-list a:text-is('from-the-ui')")
        made = api.get("/api/queues/%2F/from-the-ui")
        assert made["arguments"] == {"x-max-length": 50} and made["durable"] is True
        page.screenshot(path=str(ARTIFACTS / "queues.png"), full_page=True)

        # A queue page: charts with data, forecast, publish, get, purge, delete.
        page.goto(ui_broker.http_url + "/#/queue/%2F/ui-work")
        depth_is(page, "200 / 0")
        wait_points(page, "#chart-queue-depth", 2)
        assert painted(page, "#chart-queue-depth") > 500
        assert page.inner_text("#forecast").startswith("Forecast: ")
        got = 0

        def on_message(channel: Any, method: Any, props: Any, body: bytes) -> None:
            nonlocal got
            got += 1
            time.sleep(0.002)  # a slow consumer: the queue drains over a few samples
            channel.basic_ack(method.delivery_tag)

        ch.basic_qos(prefetch_count=10)
        ch.basic_consume("ui-work", on_message)
        while got < 200:
            conn.process_data_events(time_limit=0.05)
        depth_is(page, "0 / 0")
        page.screenshot(path=str(ARTIFACTS / "queue.png"), full_page=True)

        page.goto(ui_broker.http_url + f"/#/queue/%2F/{q(XSS)}")
        page.wait_for_selector("#queue-depth")
        assert page.inner_text("#queue-name") == XSS
        page.fill("#publish textarea[name=payload]", "<b>not bold</b>")
        page.click("#publish button[type=submit]")
        page.wait_for_selector("#status:has-text('message published')")
        page.click("#get button[type=submit]")
        page.wait_for_selector("#get-results pre.payload")
        assert page.inner_text("#get-results pre.payload") == "<b>not bold</b>"
        assert page.locator("#get-results b").count() == 0
        page.click("#purge")
        page.wait_for_selector("#status:has-text('queue purged')")
        assert api.get(f"/api/queues/%2F/{q(XSS)}")["messages"] == 0
        page.click("#delete")
        page.wait_for_selector("#status:has-text('deleted')")
        assert api.call("GET", f"/api/queues/%2F/{q(XSS)}")[0] == 404
        assert dialogs == [f"Delete queue {XSS}?"]  # the confirmation, never an alert from a name

        # Exchanges (declare), bindings, connections, channels.
        page.click("#nav a[data-page=exchanges]")
        page.fill("#declare-exchange input[name=name]", "ui-ex")
        page.select_option("#declare-exchange select[name=type]", "topic")
        page.click("#declare-exchange button[type=submit]")
        page.wait_for_selector("#status:has-text('exchange ui-ex declared')")
        assert api.get("/api/exchanges/%2F/ui-ex")["type"] == "topic"
        for name, expect in (("bindings", "ui-work"), ("connections", "Pika"), ("channels", "guest")):
            page.click(f"#nav a[data-page={name}]")
            page.wait_for_selector(f"#page table:has-text('{expect}')")
        page.screenshot(path=str(ARTIFACTS / "channels.png"), full_page=True)
        assert errors == []
    finally:
        context.close()
        conn.close()
