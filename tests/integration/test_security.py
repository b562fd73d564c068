"""Security through real clients: logins, guest from loopback only, the permission matrix, vhosts,
connection and queue limits, no credential in the logs. Error codes and texts are RabbitMQ 3.10's
(checked against it with the same client calls).

The brokers run in this process (``LeveretBroker``) so a test can add users and vhosts through
``Broker``'s API (what the management door calls) and read the log records; clients still connect
over TCP.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from leveret.amqp import methods as m
from leveret.amqp.codec import decode_method
from leveret.amqp.constants import PROTOCOL_HEADER
from leveret.amqp.frames import method_frame
from leveret.testing.broker import LeveretBroker

SECRET = "s3cret-" + os.urandom(4).hex()


def connect(port: int, user: str = "guest", password: str = "guest", vhost: str = "/") -> pika.BlockingConnection:
    params = pika.ConnectionParameters("127.0.0.1", port, vhost, pika.PlainCredentials(user, password))
    return pika.BlockingConnection(params)


def refusal(fn: Callable[[], Any]) -> str:
    """The text of the AMQP error ``fn`` ends with (channel or connection)."""
    with pytest.raises(pika.exceptions.AMQPError) as info:
        fn()
    return str(info.value)


@pytest.fixture(scope="module")
def lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeveretBroker]:
    broker = LeveretBroker.start(tmp_path_factory.mktemp("security"))
    broker.call(lambda s: s.broker.add_user("alice", SECRET, ["management"]))
    broker.call(lambda s: s.broker.set_permissions("alice", "/", ".*", ".*", ".*"))
    yield broker
    broker.stop()


# -------------------------------------------------------------------------------------- logins


class RawLogin:
    """The handshake up to start-ok by hand, from a chosen source address."""

    def __init__(self, port: int, host: str = "127.0.0.1", source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=5, source_address=(source, 0))
        self.buf = b""

    def read_method(self) -> m.Method | None:
        while True:
            if len(self.buf) >= 7:
                _, _, size = struct.unpack(">BHI", self.buf[:7])
                if len(self.buf) >= 8 + size:
                    payload, self.buf = self.buf[7 : 7 + size], self.buf[8 + size :]
                    return decode_method(payload)
            chunk = self.sock.recv(65536)
            if not chunk:
                return None  # closed without a word
            self.buf += chunk

    def login(self, user: str, password: str, capabilities: dict[str, Any] | None = None) -> m.Method | None:
        self.sock.sendall(PROTOCOL_HEADER)
        assert isinstance(self.read_method(), m.ConnectionStart)
        props = {"capabilities": capabilities or {}}
        response = f"\x00{user}\x00{password}".encode()
        self.sock.sendall(method_frame(0, m.ConnectionStartOk(props, "PLAIN", response, "en_US")))
        return self.read_method()

    def close(self) -> None:
        self.sock.close()


def test_wrong_password_is_refused_with_403_when_the_client_can_read_it(lb: LeveretBroker) -> None:
    text = refusal(lambda: connect(lb.port, "alice", "wrong"))
    assert "403" in text and "Login was refused using authentication mechanism PLAIN" in text
    raw = RawLogin(lb.port)
    reply = raw.login("nobody", "x", {"authentication_failure_close": True})
    assert isinstance(reply, m.ConnectionClose) and reply.reply_code == 403
    raw.close()


def test_wrong_password_without_the_capability_just_closes_the_socket(lb: LeveretBroker) -> None:
    raw = RawLogin(lb.port)
    assert raw.login("alice", "wrong") is None  # RabbitMQ: no connection.close, the socket closes
    raw.close()


def test_right_password_logs_in_and_no_password_is_ever_logged(
    lb: LeveretBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for password in (SECRET, SECRET + "x"):
        try:
            conn = connect(lb.port, "alice", password)
        except pika.exceptions.AMQPError:
            continue
        conn.channel().queue_declare("", exclusive=True)
        conn.close()
    assert "login refused for user 'alice'" in caplog.text  # the refusal is logged, by user name
    assert SECRET not in caplog.text
    assert all(SECRET not in str(r.args) for r in caplog.records)


def test_logins_through_amqplain(lb: LeveretBroker) -> None:
    class AMQPlain(pika.credentials.PlainCredentials):
        TYPE = "AMQPLAIN"

        def response_for(self, start: Any) -> tuple[str | None, bytes | None]:
            from pika.data import encode_table

            out: list[bytes] = []
            encode_table(out, {"LOGIN": self.username, "PASSWORD": self.password})
            return "AMQPLAIN", b"".join(out)[4:]

    params = pika.ConnectionParameters("127.0.0.1", lb.port, "/", AMQPlain("alice", SECRET))
    pika.BlockingConnection(params).close()


@pytest.fixture(scope="module")
def remote_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeveretBroker]:
    """A broker that counts only 127.0.0.2 as loopback: 127.0.0.1 plays a remote host."""
    broker = LeveretBroker.start(tmp_path_factory.mktemp("remote"), loopback_addresses=("127.0.0.2",))
    broker.call(lambda s: s.broker.add_user("bob", "pw"))
    broker.call(lambda s: s.broker.set_permissions("bob", "/", ".*", ".*", ".*"))
    yield broker
    broker.stop()


def test_guest_is_refused_from_a_non_loopback_address(remote_broker: LeveretBroker, caplog: Any) -> None:
    caplog.set_level(logging.INFO)
    text = refusal(lambda: connect(remote_broker.port))
    assert "403" in text and "ACCESS_REFUSED" in text
    assert "user 'guest' can only connect via localhost" in caplog.text
    connect(remote_broker.port, "bob", "pw").close()  # other users may come from anywhere


def test_guest_is_let_in_from_a_loopback_address(remote_broker: LeveretBroker) -> None:
    raw = RawLogin(remote_broker.port, source="127.0.0.2")  # the peer address is what counts
    assert isinstance(raw.login("guest", "guest"), m.ConnectionTune)
    raw.close()


# ----------------------------------------------------------------------------- vhost access


def test_opening_a_vhost_without_permission_is_530(lb: LeveretBroker) -> None:
    lb.call(lambda s: s.broker.add_user("carol", "pw"))
    lb.call(lambda s: s.broker.add_vhost("/carol"))
    text = refusal(lambda: connect(lb.port, "carol", "pw", "/carol"))
    assert "530" in text and "access to vhost '/carol' refused for user 'carol'" in text
    lb.call(lambda s: s.broker.set_permissions("carol", "/carol", "", "", ""))
    conn = connect(lb.port, "carol", "pw", "/carol")
    text = refusal(lambda: conn.channel().queue_declare("q"))  # in, but allowed to do nothing
    assert "access to queue 'q' in vhost '/carol' refused for user 'carol'" in text
    conn.close()


def test_deleting_a_user_closes_its_connections(lb: LeveretBroker) -> None:
    """RabbitMQ 3.7+: the connections of a deleted user are closed with 320."""
    lb.call(lambda s: s.broker.add_user("leaver", "pw"))
    lb.call(lambda s: s.broker.set_permissions("leaver", "/", ".*", ".*", ".*"))
    gone, stays = connect(lb.port, "leaver", "pw"), connect(lb.port)
    lb.call(lambda s: s.broker.delete_user("leaver"))
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        gone.process_data_events(time_limit=2)
        gone.channel()
    assert info.value.reply_code == 320 and "user 'leaver' is deleted" in info.value.reply_text
    assert stays.channel().queue_declare("", exclusive=True).method.queue
    stays.close()


def test_vhosts_are_separate_and_deleting_one_closes_its_connections(lb: LeveretBroker) -> None:
    lb.call(lambda s: s.broker.add_vhost("/tmp-v"))
    lb.call(lambda s: s.broker.set_permissions("guest", "/tmp-v", ".*", ".*", ".*"))
    inside, outside = connect(lb.port, vhost="/tmp-v"), connect(lb.port)
    ch = inside.channel()
    ch.queue_declare("shared-name")
    ch.basic_publish("", "shared-name", b"in /tmp-v")
    out_ch = outside.channel()
    assert out_ch.queue_declare("shared-name", auto_delete=True).method.message_count == 0
    lb.call(lambda s: s.broker.delete_vhost("/tmp-v"))
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        inside.process_data_events(time_limit=2)
        ch.queue_declare("shared-name", passive=True)
    assert info.value.reply_code == 320 and "vhost '/tmp-v' is deleted" in info.value.reply_text
    out_ch.queue_delete("shared-name")
    outside.close()
    assert "/tmp-v" not in lb.call(lambda s: list(s.broker.vhosts))


# ---------------------------------------------------------------------------- permission matrix

CONF, WRITE, READ = "^(c|cr|cw)-", "^(w|cw)-|^amq\\.topic$", "^(r|cr)-"


@pytest.fixture(scope="module")
def matrix(lb: LeveretBroker) -> Iterator[tuple[pika.BlockingConnection, BlockingChannel]]:
    """A user with a configure, write and read pattern each; guest sets up resources per test."""
    lb.call(lambda s: s.broker.add_user("matrix", "pw"))
    lb.call(lambda s: s.broker.set_permissions("matrix", "/", CONF, WRITE, READ))
    admin = connect(lb.port)
    user = connect(lb.port, "matrix", "pw")
    yield user, admin.channel()
    user.close()
    admin.close()


def _setup(admin: BlockingChannel, n: str) -> None:
    for prefix in ("c", "w", "r", "x", "cr", "cw"):
        admin.queue_declare(f"{prefix}-q{n}")
        admin.exchange_declare(f"{prefix}-x{n}", "fanout")
    admin.queue_bind(f"w-q{n}", f"r-x{n}")
    admin.queue_bind(f"x-q{n}", f"r-x{n}")
    admin.queue_bind(f"w-q{n}", f"x-x{n}")
    admin.exchange_bind(f"w-x{n}", f"r-x{n}")
    admin.exchange_bind(f"x-x{n}", f"r-x{n}")
    admin.exchange_bind(f"w-x{n}", f"x-x{n}")


def _publish(exchange: str, routing_key: str = "k") -> Callable[[BlockingChannel, str], Any]:
    def run(ch: BlockingChannel, n: str) -> None:
        ch.confirm_delivery()
        ch.basic_publish(exchange.format(n=n), routing_key, b"m")

    return run


# (id, action on the user's channel with suffix n, None if allowed or the refused resource)
MATRIX: list[tuple[str, Callable[[BlockingChannel, str], Any], str | None]] = [
    ("exchange.declare allowed", lambda ch, n: ch.exchange_declare(f"c-new{n}", "fanout"), None),
    ("exchange.declare denied", lambda ch, n: ch.exchange_declare(f"w-new{n}"), "exchange 'w-new{n}'"),
    ("exchange.declare existing denied", lambda ch, n: ch.exchange_declare(f"r-x{n}", "fanout"), "exchange 'r-x{n}'"),
    ("exchange.declare passive", lambda ch, n: ch.exchange_declare(f"x-x{n}", passive=True), None),
    (
        "exchange.declare AE allowed",
        lambda ch, n: ch.exchange_declare(f"cr-ae{n}", "fanout", arguments={"alternate-exchange": f"w-x{n}"}),
        None,
    ),
    (
        "exchange.declare AE not writable",
        lambda ch, n: ch.exchange_declare(f"cr-ae{n}", "fanout", arguments={"alternate-exchange": f"x-x{n}"}),
        "exchange 'x-x{n}'",
    ),
    (
        "exchange.declare AE, exchange not readable",
        lambda ch, n: ch.exchange_declare(f"cw-ae{n}", "fanout", arguments={"alternate-exchange": f"w-x{n}"}),
        "exchange 'cw-ae{n}'",
    ),
    ("exchange.delete allowed", lambda ch, n: ch.exchange_delete(f"c-x{n}"), None),
    ("exchange.delete denied", lambda ch, n: ch.exchange_delete(f"x-x{n}"), "exchange 'x-x{n}'"),
    ("queue.declare allowed", lambda ch, n: ch.queue_declare(f"c-new{n}"), None),
    ("queue.declare denied", lambda ch, n: ch.queue_declare(f"r-new{n}"), "queue 'r-new{n}'"),
    ("queue.declare existing denied", lambda ch, n: ch.queue_declare(f"x-q{n}"), "queue 'x-q{n}'"),
    ("queue.declare server-named denied", lambda ch, n: ch.queue_declare(""), "queue 'amq.gen-"),
    ("queue.declare passive", lambda ch, n: ch.queue_declare(f"x-q{n}", passive=True), None),
    (
        "queue.declare DLX allowed",
        lambda ch, n: ch.queue_declare(f"cr-dl{n}", arguments={"x-dead-letter-exchange": f"w-x{n}"}),
        None,
    ),
    (
        "queue.declare DLX not writable",
        lambda ch, n: ch.queue_declare(f"cr-dl{n}", arguments={"x-dead-letter-exchange": f"x-x{n}"}),
        "exchange 'x-x{n}'",
    ),
    (
        "queue.declare DLX default exchange",
        lambda ch, n: ch.queue_declare(f"cr-dl{n}", arguments={"x-dead-letter-exchange": ""}),
        "exchange 'amq.default'",
    ),
    (
        "queue.declare DLX, queue not readable",
        lambda ch, n: ch.queue_declare(f"cw-dl{n}", arguments={"x-dead-letter-exchange": f"w-x{n}"}),
        "queue 'cw-dl{n}'",
    ),
    ("queue.delete allowed", lambda ch, n: ch.queue_delete(f"c-q{n}"), None),
    ("queue.delete denied", lambda ch, n: ch.queue_delete(f"r-q{n}"), "queue 'r-q{n}'"),
    ("queue.bind allowed", lambda ch, n: ch.queue_bind(f"w-q{n}", f"r-x{n}", "k"), None),
    ("queue.bind queue not writable", lambda ch, n: ch.queue_bind(f"x-q{n}", f"r-x{n}", "k"), "queue 'x-q{n}'"),
    ("queue.bind exchange not readable", lambda ch, n: ch.queue_bind(f"w-q{n}", f"x-x{n}", "k"), "exchange 'x-x{n}'"),
    ("queue.unbind allowed", lambda ch, n: ch.queue_unbind(f"w-q{n}", f"r-x{n}"), None),
    ("queue.unbind queue not writable", lambda ch, n: ch.queue_unbind(f"x-q{n}", f"r-x{n}"), "queue 'x-q{n}'"),
    ("queue.unbind exchange not readable", lambda ch, n: ch.queue_unbind(f"w-q{n}", f"x-x{n}"), "exchange 'x-x{n}'"),
    ("exchange.bind allowed", lambda ch, n: ch.exchange_bind(f"w-x{n}", f"r-x{n}", "k"), None),
    ("exchange.bind dest not writable", lambda ch, n: ch.exchange_bind(f"x-x{n}", f"r-x{n}"), "exchange 'x-x{n}'"),
    ("exchange.bind source not readable", lambda ch, n: ch.exchange_bind(f"w-x{n}", f"x-x{n}"), "exchange 'x-x{n}'"),
    ("exchange.unbind allowed", lambda ch, n: ch.exchange_unbind(f"w-x{n}", f"r-x{n}"), None),
    ("exchange.unbind dest not writable", lambda ch, n: ch.exchange_unbind(f"x-x{n}", f"r-x{n}"), "exchange 'x-x{n}'"),
    ("exchange.unbind src not readable", lambda ch, n: ch.exchange_unbind(f"w-x{n}", f"x-x{n}"), "exchange 'x-x{n}'"),
    ("basic.publish allowed", _publish("w-x{n}"), None),
    ("basic.publish denied", _publish("x-x{n}"), "exchange 'x-x{n}'"),
    ("basic.publish default exchange", _publish(""), "exchange 'amq.default'"),
    ("basic.publish amq.direct", _publish("amq.direct"), "exchange 'amq.direct'"),
    ("basic.get allowed", lambda ch, n: ch.basic_get(f"r-q{n}"), None),
    ("basic.get denied", lambda ch, n: ch.basic_get(f"w-q{n}"), "queue 'w-q{n}'"),
    ("basic.consume allowed", lambda ch, n: ch.basic_consume(f"r-q{n}", lambda *a: None), None),
    ("basic.consume denied", lambda ch, n: ch.basic_consume(f"c-q{n}", lambda *a: None), "queue 'c-q{n}'"),
    ("queue.purge allowed", lambda ch, n: ch.queue_purge(f"r-q{n}"), None),
    ("queue.purge denied", lambda ch, n: ch.queue_purge(f"c-q{n}"), "queue 'c-q{n}'"),
]


@pytest.mark.parametrize(("action", "refused"), [(c[1], c[2]) for c in MATRIX], ids=[c[0] for c in MATRIX])
def test_permission_matrix(
    matrix: tuple[pika.BlockingConnection, BlockingChannel],
    action: Callable[[BlockingChannel, str], Any],
    refused: str | None,
) -> None:
    user, admin = matrix
    n = os.urandom(3).hex()
    _setup(admin, n)
    ch = user.channel()
    if refused is None:
        action(ch, n)
        ch.close()
        return
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        action(ch, n)
    assert info.value.reply_code == 403
    assert f"ACCESS_REFUSED - access to {refused.format(n=n)}" in info.value.reply_text
    assert info.value.reply_text.endswith("in vhost '/' refused for user 'matrix'")
    assert user.is_open  # a channel error: the connection carries on


def test_amq_prefix_is_refused_whatever_the_permissions(lb: LeveretBroker) -> None:
    conn = connect(lb.port)
    text = refusal(lambda: conn.channel().exchange_declare("amq.mine", "topic"))
    assert "403" in text and "reserved prefix 'amq.*'" in text
    text = refusal(lambda: conn.channel().queue_declare("amq.mine"))
    assert "403" in text and "reserved prefix 'amq.*'" in text
    conn.close()


def test_permission_changes_apply_to_open_connections(lb: LeveretBroker) -> None:
    lb.call(lambda s: s.broker.add_user("dave", "pw"))
    lb.call(lambda s: s.broker.set_permissions("dave", "/", ".*", ".*", ".*"))
    conn = connect(lb.port, "dave", "pw")
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("amq.fanout", "", b"allowed")  # now cached as writable for this connection
    lb.call(lambda s: s.broker.set_permissions("dave", "/", ".*", "^$", ".*"))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.basic_publish("amq.fanout", "", b"refused")
    assert info.value.reply_code == 403
    conn.close()


def test_topic_permissions_restrict_routing_keys(lb: LeveretBroker) -> None:
    lb.call(lambda s: s.broker.add_user("erin", "pw"))
    lb.call(lambda s: s.broker.set_permissions("erin", "/", ".*", ".*", ".*"))
    lb.call(lambda s: s.broker.set_topic_permissions("erin", "/", "amq.topic", "^{username}\\.", "^public\\."))
    conn = connect(lb.port, "erin", "pw")
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.topic", "public.#")
    ch.basic_publish("amq.topic", "erin.news", b"ok")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.basic_publish("amq.topic", "frank.news", b"no")
    assert info.value.reply_code == 403 and "write access to topic 'frank.news'" in info.value.reply_text
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        ch.queue_bind(q, "amq.topic", "private.#")
    assert "read access to topic 'private.#'" in info.value.reply_text
    conn.close()


# -------------------------------------------------------------------------------------- limits


def test_connection_limits_global_and_per_vhost(tmp_path: Path) -> None:
    broker = LeveretBroker.start(tmp_path, max_connections=2)
    try:
        broker.call(lambda s: s.broker.add_vhost("/small"))
        broker.call(lambda s: s.broker.set_permissions("guest", "/small", ".*", ".*", ".*"))
        broker.call(lambda s: s.broker.set_vhost_limits("/small", {"max-connections": 1}))
        first = connect(broker.port, vhost="/small")
        text = refusal(lambda: connect(broker.port, vhost="/small"))
        assert "530" in text and "access to vhost '/small' refused for user 'guest': connection limit (1)" in text
        second = connect(broker.port)
        text = refusal(lambda: connect(broker.port))
        assert "530" in text and "connection refused: node connection limit (2) is reached" in text
        first.close()
        connect(broker.port).close()  # a place is free again
        second.close()
    finally:
        broker.stop()


def test_queue_limits_per_vhost(tmp_path: Path) -> None:
    broker = LeveretBroker.start(tmp_path, max_queues_per_vhost=2)
    try:
        conn = connect(broker.port)
        ch = conn.channel()
        ch.queue_declare("q1")
        ch.queue_declare("q2")
        ch.queue_declare("q2")  # redeclaring an existing queue is not a new one
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
            ch.queue_declare("q3")
        assert info.value.reply_code == 406
        assert "cannot declare queue 'q3': queue limit in vhost '/' (2) is reached" in info.value.reply_text
        broker.call(lambda s: s.broker.set_vhost_limits("/", {"max-queues": 3}))  # the vhost's own wins
        ch = conn.channel()
        ch.queue_declare("q3")
        conn.close()
    finally:
        broker.stop()


# ---------------------------------------------------------------------------------- durability


def test_users_vhosts_and_permissions_survive_a_restart(tmp_path: Path) -> None:
    broker = LeveretBroker.start(tmp_path)
    broker.call(lambda s: s.broker.add_vhost("/kept", "described"))
    broker.call(lambda s: s.broker.add_user("kept", "pw", ["monitoring"]))
    broker.call(lambda s: s.broker.set_permissions("kept", "/kept", "^k", "^k", "^k"))
    broker.call(lambda s: s.broker.delete_user("guest"))
    broker.stop()
    broker = LeveretBroker.start(tmp_path)
    try:
        conn = connect(broker.port, "kept", "pw", "/kept")
        conn.channel().queue_declare("k-q", durable=True)
        conn.close()
        assert "403" in refusal(lambda: connect(broker.port))  # guest stays deleted
    finally:
        broker.stop()
    broker = LeveretBroker.start(tmp_path)
    try:
        assert broker.call(lambda s: "k-q" in s.broker.vhosts["/kept"].queues)
        assert broker.call(lambda s: s.broker.vhosts["/kept"].description) == "described"
    finally:
        broker.stop()


# ------------------------------------------------------------------------------- bad input


def test_a_new_login_checked_off_the_loop_then_pipelined_open(lb: LeveretBroker) -> None:
    lb.call(lambda s: s.broker.add_user("piper", "pw"))  # never logged in: a full KDF run on a worker
    lb.call(lambda s: s.broker.set_permissions("piper", "/", ".*", ".*", ".*"))
    raw = RawLogin(lb.port)
    assert isinstance(raw.login("piper", "pw"), m.ConnectionTune)
    raw.sock.sendall(
        method_frame(0, m.ConnectionTuneOk(0, 131072, 0))
        + method_frame(0, m.ConnectionOpen("/"))
        + method_frame(1, m.ChannelOpen())
    )
    assert [type(raw.read_method()) for _ in range(2)] == [m.ConnectionOpenOk, m.ChannelOpenOk]
    raw.close()


def test_a_fleet_logging_in_at_once_shares_one_password_check(
    lb: LeveretBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single flight: 20 clients with the same new credentials at once cost one key derivation."""
    import threading

    from leveret.core import auth

    runs: list[str] = []
    real = auth.verify

    def counting(password: str, stored: str | None, algorithm: str | None) -> bool:
        runs.append(password)
        return real(password, stored, algorithm)

    monkeypatch.setattr(auth, "verify", counting)
    lb.call(lambda s: s.broker.add_user("fleet", "pw"))
    lb.call(lambda s: s.broker.set_permissions("fleet", "/", ".*", ".*", ".*"))
    barrier = threading.Barrier(20)
    opened: list[pika.BlockingConnection] = []

    def client() -> None:
        barrier.wait()
        opened.append(connect(lb.port, "fleet", "pw"))

    threads = [threading.Thread(target=client) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(opened) == 20
    assert len(runs) == 1
    for conn in opened:
        conn.close()


def test_a_flood_of_failed_logins_does_not_stall_other_clients(lb: LeveretBroker) -> None:
    import threading
    import time

    bystander = connect(lb.port, "alice", SECRET)
    ch = bystander.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    stop = threading.Event()
    attempts = [0]

    def attacker() -> None:
        while not stop.is_set():
            raw = RawLogin(lb.port)
            raw.login("alice", "guess", {"authentication_failure_close": True})
            raw.close()
            attempts[0] += 1

    threads = [threading.Thread(target=attacker) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        worst = 0.0
        for n in range(50):
            started = time.perf_counter()
            ch.basic_publish("", q, b"%d" % n)
            assert ch.basic_get(q, auto_ack=True)[2] == b"%d" % n
            worst = max(worst, time.perf_counter() - started)
    finally:
        stop.set()
        for t in threads:
            t.join()
    bystander.close()
    assert attempts[0] >= 8
    assert worst < 0.25, worst  # a KDF run takes ~0.13 s; they run on worker threads, not the event loop
