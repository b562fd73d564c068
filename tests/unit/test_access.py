"""Users, vhosts, permissions in the core: password hashes, the broker API, durability through the
definitions log (replay and snapshot), and the linear-time permission patterns. Pure: no sockets."""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from leveret.core import auth
from leveret.core.broker import FULL, Broker, Permission
from leveret.core.errors import BrokerError, ErrorKind
from leveret.core.permissions import CONFIGURE, READ, WRITE
from leveret.core.safe_regex import SafePattern

from .test_definitions import ListLog, canonical, recording, restarted


@contextmanager
def refused(kind: ErrorKind, text: str = "") -> Iterator[None]:
    with pytest.raises(BrokerError) as info:
        yield
    assert info.value.kind is kind
    assert text in info.value.text


# ------------------------------------------------------------------------------ password hashes


def test_new_hashes_are_pbkdf2_in_the_documented_format() -> None:
    stored = auth.hash_password("s3cret", iterations=1000, salt=b"0123456789abcdef")
    prefix, iterations, salt, key = stored.split("$")
    assert (prefix, iterations, salt) == ("pbkdf2_sha256", "1000", "MDEyMzQ1Njc4OWFiY2RlZg==")
    import base64
    import hashlib

    assert base64.b64decode(key) == hashlib.pbkdf2_hmac("sha256", b"s3cret", b"0123456789abcdef", 1000)
    assert auth.verify("s3cret", stored, auth.PBKDF2)
    assert not auth.verify("s3cret ", stored, auth.PBKDF2)
    assert auth.hash_password("x") != auth.hash_password("x")  # salted


def test_rabbitmq_hashes_are_verified() -> None:
    # Computed by RabbitMQ 3.10 (rabbitmqctl hash_password is random-salted; this is the scheme:
    # base64(salt4 + sha256(salt4 + password))).
    import base64
    import hashlib

    salt = bytes.fromhex("908dc60a")
    rabbit = base64.b64encode(salt + hashlib.sha256(salt + b"test12").digest()).decode()
    assert auth.rabbit_hash("test12", salt=salt) == rabbit
    assert auth.verify("test12", rabbit, auth.RABBIT_SHA256)
    assert not auth.verify("test13", rabbit, auth.RABBIT_SHA256)
    for algorithm in (auth.RABBIT_SHA512, auth.RABBIT_MD5):
        assert auth.verify("pw", auth.rabbit_hash("pw", algorithm), algorithm)
    assert not auth.verify("pw", auth.rabbit_hash("pw", auth.RABBIT_SHA512), auth.RABBIT_SHA256)


@pytest.mark.parametrize(
    ("stored", "algorithm"),
    [
        ("", auth.PBKDF2),
        ("not base64!", auth.RABBIT_SHA256),
        ("pbkdf2_sha256$0$AA==$AA==", auth.PBKDF2),
        ("pbkdf2_sha256$99999999999$AA==$AA==", auth.PBKDF2),
        ("pbkdf2_sha256$10$AA==", auth.PBKDF2),
        ("c2hvcnQ=", auth.RABBIT_SHA256),
    ],
)
def test_damaged_or_empty_hashes_match_nothing(stored: str, algorithm: str) -> None:
    assert not auth.verify("", stored, algorithm)
    assert not auth.verify("x", stored, algorithm)


def test_refusal_costs_the_same_for_unknown_users_and_wrong_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each refusal is exactly one full PBKDF2 run, whoever asks (counted, not timed: deterministic)."""
    monkeypatch.setattr(auth, "ITERATIONS", 1000)  # the dummy run follows the configured cost
    broker = Broker()
    broker.add_user("known", "pw")
    broker.add_user("imported", None, password_hash=auth.rabbit_hash("pw"), hashing_algorithm=auth.RABBIT_SHA256)
    runs: list[int] = []
    real = hashlib.pbkdf2_hmac

    def counting(name: str, password: bytes, salt: bytes, iterations: int, dklen: int | None = None) -> bytes:
        runs.append(iterations)
        return real(name, password, salt, iterations, dklen)

    monkeypatch.setattr(auth.hashlib, "pbkdf2_hmac", counting)
    for name in ("known", "nobody", "imported"):
        runs.clear()
        assert broker.authenticate(name, "wrong") is None
        assert runs == [1000], (name, runs)


def test_a_successful_login_is_remembered_but_a_wrong_password_never_is(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = Broker()
    assert broker.authenticate("guest", "guest") is broker.users["guest"]
    runs: list[int] = []
    real = hashlib.pbkdf2_hmac

    def counting(name: str, password: bytes, salt: bytes, iterations: int, dklen: int | None = None) -> bytes:
        runs.append(iterations)
        return real(name, password, salt, iterations, dklen)

    monkeypatch.setattr(auth.hashlib, "pbkdf2_hmac", counting)
    assert broker.authenticate("guest", "guest") is not None
    assert runs == []  # the cache, not the KDF
    assert broker.authenticate("guest", "Guest") is None
    broker.change_password("guest", "new")
    assert broker.authenticate("guest", "guest") is None  # the cache is keyed by the stored hash too
    assert broker.authenticate("guest", "new") is not None


# ----------------------------------------------------------------------------------- broker API


def test_users_tags_and_passwords() -> None:
    broker = Broker()
    user = broker.add_user("alice", "pw", ["management", "monitoring"])
    assert user.tags == ("management", "monitoring") and user.hashing_algorithm == auth.PBKDF2
    assert "pw" not in repr(user) and user.password_hash.startswith("pbkdf2_sha256$")
    assert broker.authenticate("alice", "pw") is user
    assert broker.set_user_tags("alice", "administrator").tags == ("administrator",)
    assert broker.authenticate("alice", "pw") is not None  # tags changed, password kept
    broker.change_password("alice", None)  # RabbitMQ's clear_password
    assert broker.authenticate("alice", "pw") is None and broker.authenticate("alice", "") is None
    broker.delete_user("alice")
    assert "alice" not in broker.users
    with refused(ErrorKind.NOT_FOUND):
        broker.delete_user("alice")
    with refused(ErrorKind.PRECONDITION_FAILED):
        broker.add_user("bob", None, password_hash="abc", hashing_algorithm="rabbit_password_hashing_sha1")


def test_imported_hash_without_algorithm_is_rabbitmqs_default() -> None:
    broker = Broker()
    user = broker.add_user("r", None, password_hash=auth.rabbit_hash("pw"))
    assert user.hashing_algorithm == auth.RABBIT_SHA256 and broker.authenticate("r", "pw") is user
    ours = broker.add_user("o", None, password_hash=auth.hash_password("pw", iterations=1000))
    assert ours.hashing_algorithm == auth.PBKDF2 and broker.authenticate("o", "pw") is ours


def test_permissions_decide_access_like_rabbitmq() -> None:
    broker = Broker()
    broker.add_user("u", "pw")
    assert not broker.may("u", "/", READ, "q")  # no entry: nothing
    broker.set_permissions("u", "/", "^conf-", "", "q")
    assert broker.may("u", "/", CONFIGURE, "conf-1") and not broker.may("u", "/", CONFIGURE, "x-conf-1")
    assert not broker.may("u", "/", WRITE, "anything") and broker.may("u", "/", WRITE, "")  # "" is ^$
    assert broker.may("u", "/", READ, "my-q-1")  # searched anywhere in the name, as re:run does
    with refused(ErrorKind.ACCESS_REFUSED, "access to queue 'x' in vhost '/' refused for user 'u'"):
        broker.check("u", "/", READ, "queue", "x")
    version = broker.access_version
    broker.clear_permissions("u", "/")
    assert broker.access_version > version and not broker.may("u", "/", CONFIGURE, "conf-1")
    with refused(ErrorKind.PRECONDITION_FAILED, "invalid permission pattern"):
        broker.set_permissions("u", "/", "(a", ".*", ".*")
    with refused(ErrorKind.NOT_FOUND):
        broker.set_permissions("u", "/nope", ".*", ".*", ".*")
    with refused(ErrorKind.NOT_FOUND):
        broker.set_permissions("nobody", "/", ".*", ".*", ".*")


def test_topic_permissions_apply_only_to_their_exchange() -> None:
    broker = Broker()
    broker.add_user("u", "pw")
    broker.set_permissions("u", "/", ".*", ".*", ".*")
    broker.set_topic_permissions("u", "/", "amq.topic", "^{username}\\.", "^public\\.")
    broker.check_topic("u", "/", WRITE, "amq.topic", "u.news")
    broker.check_topic("u", "/", WRITE, "other", "anything")
    with refused(ErrorKind.ACCESS_REFUSED, "write access to topic 'v.news' in exchange 'amq.topic'"):
        broker.check_topic("u", "/", WRITE, "amq.topic", "v.news")
    with refused(ErrorKind.ACCESS_REFUSED):
        broker.check_topic("u", "/", READ, "amq.topic", "u.news")
    broker.clear_topic_permissions("u", "/")
    broker.check_topic("u", "/", READ, "amq.topic", "u.news")


def test_vhosts_come_and_go_with_their_contents_and_sessions() -> None:
    broker = Broker()
    vh = broker.add_vhost("/dev", "development", ["test"])
    assert (vh.description, vh.tags) == ("development", ("test",)) and "amq.topic" in vh.exchanges
    assert broker.add_vhost("/dev", "again") is vh and vh.description == "again"
    broker.set_permissions("guest", "/dev", ".*", ".*", ".*")
    session = broker.open_session(broker.users["guest"], "/dev")
    reasons: list[str] = []
    session.on_forced_close = reasons.append
    q = vh.declare_queue(session, "q", durable=True)
    broker.delete_vhost("/dev")
    assert reasons == ["vhost '/dev' is deleted"] and session not in broker.sessions
    assert q.deleted and "/dev" not in broker.vhosts and ("guest", "/dev") not in broker.permissions
    with refused(ErrorKind.NOT_FOUND):
        broker.delete_vhost("/dev")


def test_open_session_refusals() -> None:
    broker = Broker()
    broker.add_vhost("/v")
    broker.add_user("u", "pw")
    with refused(ErrorKind.NOT_ALLOWED, "access to vhost '/v' refused for user 'u'"):
        broker.open_session(broker.users["u"], "/v")
    broker.set_permissions("u", "/v", "", "", "")  # any entry, even an empty one, opens the vhost
    broker.set_vhost_limits("/v", {"max-connections": 1})
    broker.open_session(broker.users["u"], "/v")
    broker.open_session(broker.users["u"], "/v", internal=True)  # the broker's own doors are not counted
    with refused(ErrorKind.NOT_ALLOWED, "access to vhost '/v' refused for user 'u': connection limit (1) is reached"):
        broker.open_session(broker.users["u"], "/v")
    broker.set_vhost_limits("/v", {"max-connections": -1})
    broker.open_session(broker.users["u"], "/v")


# ---------------------------------------------------------------------------------- durability


def test_access_changes_are_recorded_and_replayed() -> None:
    broker, log = recording()
    broker.add_vhost("/v", "desc", ["a"])
    broker.set_vhost_limits("/v", {"max-queues": 3})
    secret = "not base64!"  # a space and "!" can never appear inside a (base64) stored hash by chance
    broker.add_user("u", secret, ["management"])
    broker.add_user("r", None, password_hash=auth.rabbit_hash(secret))
    broker.set_permissions("u", "/v", "c", "w", "r")
    broker.set_topic_permissions("u", "/v", "amq.topic", "x", "y")
    broker.vhosts["/v"].declare_queue(None, "q", durable=True)
    assert secret not in repr(log.commands)
    after = restarted(log)
    assert canonical(after) == canonical(broker)
    assert after.permissions[("u", "/v")] == Permission("c", "w", "r")
    assert after.vhosts["/v"].limits == {"max-queues": 3} and "q" in after.vhosts["/v"].queues
    assert after.authenticate("u", secret) is not None and after.authenticate("r", secret) is not None


def test_departures_from_the_defaults_survive_replay_and_snapshot() -> None:
    broker, log = recording()
    broker.delete_user("guest")
    broker.delete_vhost("/")
    broker.add_vhost("/")  # back, but without guest's permission
    broker.add_user("admin", "pw", ["administrator"])
    for commands in (log.commands, broker.definitions()):
        replayed = ListLog()
        replayed.commands = list(commands)
        after = restarted(replayed)
        assert "guest" not in after.users and after.permissions == {}
        assert canonical(after) == canonical(broker)


def test_a_fresh_brokers_defaults_are_not_in_its_snapshot() -> None:
    broker = Broker()
    assert [c["op"] for c in broker.definitions()] == ["reserve_queue_uids"]
    assert broker.permissions == {("guest", "/"): FULL}
    broker.set_permissions("guest", "/", ".*", ".*", "^$")
    assert "set_permissions" in [c["op"] for c in broker.definitions()]


# ----------------------------------------------------------------------------- safe patterns

PATTERNS = [
    "^amq\\.gen",
    ".*",
    "^$",
    "^(a|b)*c$",
    "a{2,3}",
    "^q-[0-9]+$",
    "[^abc]x",
    "\\bfoo\\b",
    "^a.c$",
    "(?:ab|cd)+$",
    "[a\\-z]",
    "[]a]",
    "a|",
    "(a|)b",
    "\\d{3}-\\w+",
    "^[\\w.-]+$",
    "a$",
    "\\Afoo\\Z",
    "(?P<n>x)y?",
    "f{1,}o{0,1}",
    "a{3}",
]


@pytest.mark.parametrize("source", PATTERNS)
def test_safe_patterns_agree_with_python_re(source: str) -> None:
    rng = random.Random(source)
    compiled, reference = SafePattern(source), re.compile(source)
    for _ in range(2000):
        text = "".join(rng.choice("abcfoxyz019-._ \n") for _ in range(rng.randint(0, 9)))
        assert compiled.search(text) == bool(reference.search(text)), (source, text)


@pytest.mark.parametrize(
    "source", ["(a", "a)", "*a", "(?=a)", "(?!a)", "(?<=a)b", "\\1", "a**", "a*+", "[[:alpha:]]", "(?i)a", "a{300}"]
)
def test_unsupported_patterns_are_refused(source: str) -> None:
    with pytest.raises(ValueError):
        SafePattern(source)


@pytest.mark.parametrize("source", ["(a+)+$", "(a|a)*b", "(a*)*b", "(\\w+\\s?)+$", "(.*a){12}$"])
def test_pathological_patterns_match_in_linear_time(source: str) -> None:
    started = time.perf_counter()
    assert not SafePattern(source).search("a" * 250 + "!")
    assert time.perf_counter() - started < 0.5
