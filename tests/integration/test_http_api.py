"""The management HTTP API against a real ``leveret serve``: RabbitMQ's shapes, auth by tags, limits,
definitions through the journal, message publish/get, connections seen from pika, and RabbitMQ's
own ``rabbitmqadmin`` pointed at Leveret."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pytest

from ..conftest import BrokerProcess


class Http:
    def __init__(self, base: str, user: str = "guest", password: str = "guest") -> None:
        self.base = base
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", self.auth)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                text = resp.read()
                return resp.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            text = exc.read()
            return exc.code, json.loads(text) if text else None

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        assert status == 200, (path, status, body)
        return body

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, out = self.call(method, path, body)
        assert 200 <= status < 300, (method, path, status, out)
        return out


def q(name: str) -> str:
    return quote(name, safe="")


@pytest.fixture(scope="module")
def mgmt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(
        tmp_path_factory.mktemp("http") / "data",
        "--stats-interval",
        "0.2",
        http=True,
        env={"LEVERET_HTTP_MAX_BODY": "200000"},
    )
    yield proc
    proc.stop()


@pytest.fixture
def api(mgmt: BrokerProcess) -> Http:
    return Http(mgmt.http_url)


def wait_until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------- basics


def test_overview_and_whoami(api: Http) -> None:
    ov = api.get("/api/overview")
    assert ov["product_name"] == "Leveret"
    assert {"queue_totals", "object_totals", "message_stats", "listeners"} <= set(ov)
    assert {t["name"] for t in ov["exchange_types"]} == {"direct", "fanout", "topic", "headers"}
    assert api.get("/api/whoami") == {"name": "guest", "tags": ["administrator"]}
    assert api.get("/api/health/checks/alarms") == {"status": "ok"}
    assert api.get("/api/aliveness-test/%2F") == {"status": "ok"}


def test_errors_are_json(api: Http, unique: str) -> None:
    assert api.call("GET", "/api/nope") == (404, {"error": "Object Not Found", "reason": "Not Found"})
    assert api.call("GET", f"/api/queues/%2F/{unique}")[0] == 404
    assert api.call("PATCH", "/api/overview")[0] == 405
    api.ok("PUT", f"/api/queues/%2F/{unique}", {"durable": True})
    status, body = api.call("PUT", f"/api/queues/%2F/{unique}", {"durable": False})
    assert status == 400
    assert body["reason"].startswith(f"inequivalent arg 'durable' for queue '{unique}'")
    assert api.call("PUT", f"/api/queues/%2F/{unique}", raw=b"{not json")[0] == 400
    api.ok("DELETE", f"/api/queues/%2F/{unique}")


def test_request_bodies_are_capped(api: Http, unique: str) -> None:
    status, body = api.call("POST", "/api/exchanges/%2F/amq.default/publish", raw=b"x" * 300_000)
    assert status == 413
    assert body["error"] == "payload_too_large"


# ---------------------------------------------------------------------------- authentication


def test_authentication_and_tags(mgmt: BrokerProcess, api: Http, unique: str) -> None:
    anonymous = urllib.request.Request(mgmt.http_url + "/api/overview")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(anonymous, timeout=10)
    assert err.value.code == 401
    assert err.value.headers["WWW-Authenticate"].startswith("Basic")
    assert Http(mgmt.http_url, "guest", "wrong").call("GET", "/api/overview")[0] == 401

    vhost = unique + "-vh"
    api.ok("PUT", f"/api/vhosts/{q(vhost)}", {"description": "for tags"})
    for name, tags in (("plain", ""), ("mgmt", "management"), ("mon", "monitoring"), ("pol", "policymaker")):
        api.ok("PUT", f"/api/users/{unique}-{name}", {"password": "pw", "tags": tags})
    api.ok("PUT", f"/api/permissions/{q(vhost)}/{unique}-mgmt", {"configure": "^mine", "write": ".*", "read": ".*"})
    api.ok("PUT", f"/api/permissions/{q(vhost)}/{unique}-pol", {"configure": ".*", "write": ".*", "read": ".*"})

    plain = Http(mgmt.http_url, f"{unique}-plain", "pw")
    assert plain.call("GET", "/api/overview") == (401, {"error": "not_authorized", "reason": "Not management user"})

    m = Http(mgmt.http_url, f"{unique}-mgmt", "pw")
    assert [v["name"] for v in m.get("/api/vhosts")] == [vhost]  # not "/": no permissions there
    assert m.call("GET", "/api/users")[0] == 401
    assert m.call("GET", "/api/queues/%2F")[0] == 401
    assert m.call("PUT", f"/api/queues/{q(vhost)}/mine-1", {})[0] == 201
    status, body = m.call("PUT", f"/api/queues/{q(vhost)}/other", {})
    assert status == 401 and "refused" in body["reason"]
    assert m.call("PUT", f"/api/policies/{q(vhost)}/p", {"pattern": ".*", "definition": {}})[0] == 401

    mon = Http(mgmt.http_url, f"{unique}-mon", "pw")
    assert {v["name"] for v in mon.get("/api/vhosts")} >= {"/", vhost}
    assert mon.call("GET", "/api/users")[0] == 401

    pol = Http(mgmt.http_url, f"{unique}-pol", "pw")
    assert pol.call("PUT", f"/api/policies/{q(vhost)}/p", {"pattern": "^x", "definition": {"max-length": 3}})[0] == 201
    assert [p["name"] for p in pol.get(f"/api/policies/{q(vhost)}")] == ["p"]

    api.ok("DELETE", f"/api/vhosts/{q(vhost)}")
    for name in ("plain", "mgmt", "mon", "pol"):
        api.ok("DELETE", f"/api/users/{unique}-{name}")
    assert api.call("GET", f"/api/users/{unique}-mgmt")[0] == 404


# ------------------------------------------------------------------------------ queues, messages


def test_declare_publish_get_purge_delete(api: Http, unique: str) -> None:
    assert api.call("PUT", f"/api/queues/%2F/{unique}", {"durable": True, "arguments": {"x-max-length": 100}})[0] == 201
    assert api.call("PUT", f"/api/queues/%2F/{unique}", {"durable": True, "arguments": {"x-max-length": 100}})[0] == 204
    for i in range(3):
        out = api.ok(
            "POST",
            "/api/exchanges/%2F/amq.default/publish",
            {
                "routing_key": unique,
                "payload": f"m{i}",
                "payload_encoding": "string",
                "properties": {"delivery_mode": 2, "headers": {"n": i}, "content_type": "text/plain"},
            },
        )
        assert out == {"routed": True}
    assert api.ok("POST", "/api/exchanges/%2F/amq.default/publish", {"routing_key": "nowhere-" + unique}) == {
        "routed": False
    }
    raw = base64.b64encode(b"\xff\x00bin").decode()
    api.ok(
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        {"routing_key": unique, "payload": raw, "payload_encoding": "base64"},
    )
    queue = api.get(f"/api/queues/%2F/{unique}")
    assert (queue["messages"], queue["messages_ready"], queue["durable"]) == (4, 4, True)
    assert queue["message_stats"]["publish"] == 4

    got = api.ok(
        "POST", f"/api/queues/%2F/{unique}/get", {"count": 2, "ackmode": "ack_requeue_true", "encoding": "auto"}
    )
    assert [m["payload"] for m in got] == ["m0", "m1"]
    assert got[0]["properties"] == {"content_type": "text/plain", "headers": {"n": 0}, "delivery_mode": 2}
    assert (got[0]["redelivered"], got[1]["message_count"]) == (False, 2)
    again = api.ok("POST", f"/api/queues/%2F/{unique}/get", {"count": 10, "ackmode": "ack_requeue_false"})
    assert [m["redelivered"] for m in again] == [True, True, False, False]
    assert again[3]["payload_encoding"] == "base64" and base64.b64decode(again[3]["payload"]) == b"\xff\x00bin"
    assert api.get(f"/api/queues/%2F/{unique}")["messages"] == 0

    api.ok("POST", "/api/exchanges/%2F/amq.default/publish", {"routing_key": unique, "payload": "x"})
    api.ok("DELETE", f"/api/queues/%2F/{unique}/contents")
    assert api.get(f"/api/queues/%2F/{unique}")["messages"] == 0
    assert api.call("POST", f"/api/queues/%2F/{unique}/get", {"count": 1, "ackmode": "nonsense"})[0] == 400
    api.ok("DELETE", f"/api/queues/%2F/{unique}")
    assert api.call("DELETE", f"/api/queues/%2F/{unique}")[0] == 404


def test_exchanges_and_bindings(api: Http, unique: str) -> None:
    ex, queue = unique + "-ex", unique + "-q"
    assert api.call("PUT", f"/api/exchanges/%2F/{ex}", {"type": "topic", "durable": "false"})[0] == 201
    api.ok("PUT", f"/api/queues/%2F/{queue}", {"durable": False})
    status, _ = api.call("POST", f"/api/bindings/%2F/e/{ex}/q/{queue}", {"routing_key": "a.*", "arguments": {}})
    assert status == 201
    listed = api.get(f"/api/bindings/%2F/e/{ex}/q/{queue}")
    assert [(b["routing_key"], b["properties_key"]) for b in listed] == [("a.*", "a.*")]
    assert {b["source"] for b in api.get(f"/api/queues/%2F/{queue}/bindings")} == {"", ex}
    assert api.get(f"/api/exchanges/%2F/{ex}/bindings/source")[0]["destination"] == queue
    for key in ("a.b", "a.c", "z.z"):
        api.ok("POST", f"/api/exchanges/%2F/{ex}/publish", {"routing_key": key, "payload": key})
    assert api.get(f"/api/queues/%2F/{queue}")["messages"] == 2
    stats = api.get(f"/api/exchanges/%2F/{ex}")["message_stats"]
    assert (stats["publish_in"], stats["publish_out"]) == (3, 2)
    api.ok("DELETE", f"/api/bindings/%2F/e/{ex}/q/{queue}/{q('a.*')}")
    assert api.get(f"/api/bindings/%2F/e/{ex}/q/{queue}") == []
    assert api.call("DELETE", "/api/exchanges/%2F/amq.direct")[0] == 400
    api.ok("DELETE", f"/api/exchanges/%2F/{ex}")
    api.ok("DELETE", f"/api/queues/%2F/{queue}")


def test_pagination_filtering_sorting_columns(api: Http, unique: str) -> None:
    names = [f"{unique}-p{i:02d}" for i in range(12)]
    for i, name in enumerate(names):
        api.ok("PUT", f"/api/queues/%2F/{name}", {"durable": False})
        for _ in range(i % 3):
            api.ok("POST", "/api/exchanges/%2F/amq.default/publish", {"routing_key": name, "payload": "x"})
    page = api.get(f"/api/queues/%2F?page=2&page_size=5&name={unique}-p")
    assert (page["page"], page["page_count"], page["filtered_count"], page["item_count"]) == (2, 3, 12, 5)
    assert [i["name"] for i in page["items"]] == names[5:10]
    regex = api.get(f"/api/queues?name={q(unique + '-p0[0-3]$')}&use_regex=true&columns=name,messages")
    assert regex == [{"name": n, "messages": i % 3} for i, n in enumerate(names[:4])]
    by_depth = api.get(f"/api/queues?name={unique}-p&sort=messages&sort_reverse=true&columns=messages")
    assert [i["messages"] for i in by_depth] == sorted((i % 3 for i in range(12)), reverse=True)
    assert api.call("GET", "/api/queues?page=1&page_size=501")[0] == 400
    for name in names:
        api.ok("DELETE", f"/api/queues/%2F/{name}")


# ---------------------------------------------------------------------- connections, consumers


def test_connections_channels_consumers(mgmt: BrokerProcess, api: Http, unique: str) -> None:
    conn = pika.BlockingConnection(
        pika.URLParameters(mgmt.url + "?heartbeat=0"),
    )
    try:
        ch = conn.channel()
        ch.queue_declare(unique, auto_delete=True)
        ch.basic_qos(prefetch_count=7)
        ch.basic_consume(unique, lambda *a: None, consumer_tag="ctag-" + unique)
        conns = api.get("/api/connections")
        mine = [c for c in conns if c["client_properties"].get("product") == "Pika Python Client Library"]
        assert mine and mine[0]["user"] == "guest" and mine[0]["vhost"] == "/" and mine[0]["channels"] == 1
        name = mine[-1]["name"]
        assert api.get(f"/api/connections/{q(name)}")["peer_host"] == "127.0.0.1"
        channels = api.get(f"/api/connections/{q(name)}/channels")
        assert channels[0]["prefetch_count"] == 7 and channels[0]["consumer_count"] == 1
        consumers = [c for c in api.get("/api/consumers/%2F") if c["queue"]["name"] == unique]
        assert consumers[0]["consumer_tag"] == "ctag-" + unique and consumers[0]["ack_required"]
        detail = api.get(f"/api/queues/%2F/{unique}")
        assert detail["consumers"] == 1 and detail["consumer_details"][0]["consumer_tag"] == "ctag-" + unique
        api.ok("DELETE", f"/api/connections/{q(name)}")
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
            conn.process_data_events(time_limit=5)
            conn.process_data_events(time_limit=5)
        assert closed.value.reply_code == 320
    finally:
        if conn.is_open:
            conn.close()


# --------------------------------------------------------------------------------- definitions


def test_definitions_round_trip_and_journal(mgmt: BrokerProcess, api: Http, unique: str) -> None:
    source = unique + "-src"
    api.ok("PUT", f"/api/vhosts/{q(source)}", {})
    api.ok("PUT", f"/api/exchanges/{q(source)}/ex", {"type": "fanout", "durable": True})
    api.ok("PUT", f"/api/queues/{q(source)}/q1", {"durable": True, "arguments": {"x-message-ttl": 5000}})
    api.ok("POST", f"/api/bindings/{q(source)}/e/ex/q/q1", {"routing_key": "k"})
    api.ok("PUT", f"/api/policies/{q(source)}/lim", {"pattern": "^q", "definition": {"max-length": 9}, "priority": 1})
    exported = api.get(f"/api/definitions/{q(source)}")
    assert [x["name"] for x in exported["queues"]] == ["q1"] and "vhost" not in exported["queues"][0]
    assert exported["bindings"] == [
        {"source": "ex", "destination": "q1", "destination_type": "queue", "routing_key": "k", "arguments": {}}
    ]
    whole = api.get("/api/definitions")
    assert {"users", "vhosts", "permissions", "policies", "queues", "exchanges", "bindings"} <= set(whole)
    assert any(v["name"] == source for v in whole["vhosts"])

    # A RabbitMQ-made file: a user with a RabbitMQ password hash, a vhost, permissions, objects.
    target = unique + "-dst"
    rabbit = {
        "users": [
            {
                "name": unique + "-imp",
                "password_hash": _rabbit_hash("s3cret"),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": ["management"],
            }
        ],
        "vhosts": [{"name": target}],
        "permissions": [{"user": unique + "-imp", "vhost": target, "configure": ".*", "write": ".*", "read": ".*"}],
        "queues": [dict(x, vhost=target) for x in exported["queues"]],
        "exchanges": [dict(x, vhost=target) for x in exported["exchanges"]],
        "bindings": [dict(x, vhost=target) for x in exported["bindings"]],
        "policies": [dict(x, vhost=target) for x in exported["policies"]],
    }
    assert api.call("POST", "/api/definitions", rabbit)[0] == 201
    imported = Http(mgmt.http_url, unique + "-imp", "s3cret")
    assert [x["name"] for x in imported.get(f"/api/queues/{q(target)}")] == ["q1"]
    bad = {"queues": [{"name": "q1", "vhost": target, "durable": False}]}
    status, body = api.call("POST", "/api/definitions", bad)
    assert status == 400 and "queues[0]" in body["reason"] and "inequivalent" in body["reason"]

    mgmt.restart()  # definitions made over HTTP are journaled like AMQP ones
    after = api.get(f"/api/definitions/{q(target)}")
    assert after["queues"] == exported["queues"] and after["bindings"] == exported["bindings"]
    assert [p["name"] for p in after["policies"]] == ["lim"]
    assert Http(mgmt.http_url, unique + "-imp", "s3cret").get("/api/whoami")["name"] == unique + "-imp"
    for vhost in (source, target):
        api.ok("DELETE", f"/api/vhosts/{q(vhost)}")
    api.ok("DELETE", f"/api/users/{unique}-imp")


def _rabbit_hash(password: str) -> str:
    import hashlib

    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


# ---------------------------------------------------------------------------------- flow metrics


def test_rates_history_and_forecast(mgmt: BrokerProcess, api: Http, unique: str) -> None:
    api.ok("PUT", f"/api/queues/%2F/{unique}", {"durable": False, "arguments": {"x-max-length": 100000}})
    conn = pika.BlockingConnection(pika.URLParameters(mgmt.url))
    try:
        ch = conn.channel()
        deadline = time.monotonic() + 1.0
        sent = 0
        while time.monotonic() < deadline:  # about a second of steady publishing
            for _ in range(50):
                ch.basic_publish("", unique, b"x")
                sent += 1
            conn.process_data_events(time_limit=0.02)
        queue = wait_until(
            lambda: (d := api.get(f"/api/queues/%2F/{unique}"))["message_stats"]["publish_details"]["rate"] > 0 and d
        )
        assert queue["leveret_forecast"]["state"] in ("filling", "steady")
        if queue["leveret_forecast"]["state"] == "filling":
            assert queue["leveret_forecast"]["text"].startswith("reaches max-length in ~")
        ch.basic_qos(prefetch_count=100)
        got = 0

        def on_message(channel: Any, method: Any, props: Any, body: bytes) -> None:
            nonlocal got
            got += 1
            channel.basic_ack(method.delivery_tag)

        ch.basic_consume(unique, on_message)
        while got < sent:
            conn.process_data_events(time_limit=0.05)
        detail = wait_until(
            lambda: (
                (d := api.get(f"/api/queues/%2F/{unique}?flow=true"))["message_stats"]["ack_details"]["rate"] > 0 and d
            )
        )
        flow = detail["leveret_flow"]
        assert len(flow["times"]) == len(flow["ready"]) >= 2
        assert max(flow["ready"]) > 0 and max(flow["publish"]) > 0
        assert detail["consumer_utilisation"] is not None
        ov = api.get("/api/overview?flow=true")
        assert len(ov["leveret_flow"]["times"]) >= 2 and max(ov["leveret_flow"]["publish"]) > 0
    finally:
        conn.close()
    api.ok("DELETE", f"/api/queues/%2F/{unique}")


# ------------------------------------------------------------------------------- rabbitmqadmin


def _rabbitmqadmin() -> str | None:
    found = shutil.which("rabbitmqadmin")
    if found:
        return found
    shipped = Path("/usr/lib/rabbitmq/lib").glob(
        "rabbitmq_server-*/plugins/rabbitmq_management-*/priv/www/cli/rabbitmqadmin"
    )
    return str(next(iter(shipped), "")) or None


def test_rabbitmqadmin_against_leveret(mgmt: BrokerProcess, unique: str) -> None:
    tool = _rabbitmqadmin()
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("rabbitmqadmin not found (Debian's rabbitmq-server package ships it)")
        pytest.skip("rabbitmqadmin not installed (apt-get install rabbitmq-server)")

    def admin(*args: str) -> str:
        out = subprocess.run(
            ["python3", tool, "-H", "127.0.0.1", "-P", str(mgmt.http_port), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    assert "queue declared" in admin("declare", "queue", f"name={unique}", "durable=false")
    admin("publish", "exchange=amq.default", f"routing_key={unique}", "payload=hello from rabbitmqadmin")
    listed = admin("-f", "tsv", "list", "queues", "name", "messages")
    assert f"{unique}\t1" in listed.splitlines()
    got = admin("get", f"queue={unique}", "ackmode=ack_requeue_false")
    assert "hello from rabbitmqadmin" in got
    assert "queue deleted" in admin("delete", "queue", f"name={unique}")
    assert unique not in admin("list", "queues")
    assert "3.10.8" in admin("show", "overview")


def test_loopback_users_only_from_loopback_over_http(tmp_path: Path) -> None:
    # 127.0.0.1 is not counted as loopback here, so guest is refused as from any remote address
    node = BrokerProcess(tmp_path / "b", http=True, env={"LEVERET_LOOPBACK_ADDRESSES": "192.0.2.1"})
    try:
        status, body = Http(node.http_url).call("GET", "/api/overview")
        assert (status, body["reason"]) == (401, "User can only log in via localhost")
    finally:
        node.stop()


def test_cross_origin_writes_are_refused(api: Http, unique: str) -> None:
    req = urllib.request.Request(
        api.base + f"/api/queues/%2F/{unique}", data=b"{}", method="PUT", headers={"Origin": "http://evil.example"}
    )
    req.add_header("Authorization", api.auth)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 403
    assert api.call("GET", f"/api/queues/%2F/{unique}")[0] == 404
