"""Durable definitions in the core (``core.definitions`` and the vhost's recording): what is recorded,
what replay rebuilds, auto-delete cases, queue uids. Pure: the log is a list, no files."""

from __future__ import annotations

import random
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest

from leveret.core import definitions as defs
from leveret.core.broker import Broker, User
from leveret.core.errors import BrokerError
from leveret.core.session import Session
from leveret.store.journal import decode_command, encode_command

ROOT = "/"


class ListLog:
    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def record(self, command: Mapping[str, Any]) -> None:
        # Through the journal's encoding, as on disk: what replay sees is what was written.
        self.commands.append(decode_command(encode_command(command)))

    def ops(self) -> list[str]:
        return [c["op"] for c in self.commands if c["op"] != "reserve_queue_uids"]


def recording() -> tuple[Broker, ListLog]:
    broker = Broker()
    log = ListLog()
    broker.use_definitions_log(log)
    return broker, log


def session(broker: Broker) -> Session:
    return broker.open_session(User("guest", "guest"), ROOT)


def canonical(broker: Broker) -> list[bytes]:
    return sorted(encode_command(c) for c in broker.definitions())


def restarted(log: ListLog) -> Broker:
    fresh = Broker()
    report = fresh.replay_definitions(log.commands)
    assert report.failures == []
    return fresh


def assert_survives(broker: Broker, log: ListLog) -> Broker:
    after = restarted(log)
    assert canonical(after) == canonical(broker)
    return after


# --------------------------------------------------------------------------- what is recorded


def test_only_durable_definitions_are_recorded() -> None:
    broker, log = recording()
    vh = broker.vhosts[ROOT]
    s = session(broker)
    vh.declare_exchange("d", "topic", durable=True)
    vh.declare_exchange("t", "fanout")
    vh.declare_queue(None, "dq", durable=True)
    vh.declare_queue(None, "tq")
    vh.declare_queue(s, "xq", durable=True, exclusive=True)  # exclusive: never durable
    vh.bind_queue(None, "dq", "d", "a.#", {})
    vh.bind_queue(None, "tq", "d", "a.#", {})  # transient end
    vh.bind_queue(None, "dq", "t", "", {})  # transient end
    vh.bind_queue(s, "xq", "d", "", {})
    vh.bind_queue(None, "dq", "amq.direct", "k", {})  # a built-in exchange is durable
    vh.bind_exchange("d", "amq.topic", "#", {})
    assert log.ops() == ["declare_exchange", "declare_queue", "bind", "bind", "bind"]
    assert [c["source"] for c in log.commands if c["op"] == "bind"] == ["d", "amq.direct", "amq.topic"]
    assert log.commands[-1]["destination_kind"] == "exchange"


def test_redeclare_and_no_op_deletes_record_nothing() -> None:
    broker, log = recording()
    vh = broker.vhosts[ROOT]
    vh.declare_exchange("d", "direct", durable=True)
    vh.declare_queue(None, "q", durable=True)
    vh.bind_queue(None, "q", "d", "k", {})
    n = len(log.commands)
    vh.declare_exchange("d", "direct", durable=True)
    vh.declare_queue(None, "q", durable=True)
    vh.declare_queue(None, "q", passive=True)
    vh.bind_queue(None, "q", "d", "k", {})
    vh.unbind_queue(None, "q", "d", "other", {})
    vh.delete_exchange("missing")
    vh.delete_queue(None, "missing")
    with pytest.raises(BrokerError):
        vh.declare_queue(None, "q", durable=False)  # inequivalent: refused, nothing recorded
    assert len(log.commands) == n


def test_bindings_removed_with_their_queue_are_not_recorded_but_do_not_come_back() -> None:
    broker, log = recording()
    vh = broker.vhosts[ROOT]
    vh.declare_exchange("d", "direct", durable=True)
    vh.declare_queue(None, "q", durable=True)
    for key in "abc":
        vh.bind_queue(None, "q", "d", key, {})
    vh.delete_queue(None, "q")
    assert log.ops()[-1] == "delete_queue" and log.ops().count("unbind") == 0
    after = assert_survives(broker, log)
    assert "q" not in after.vhosts[ROOT].queues and not after.vhosts[ROOT].exchanges["d"].bindings


def test_queue_bound_to_two_exchanges_with_the_same_key_leaves_no_binding_when_deleted() -> None:
    # Found by the random model below: the queue's own index of its bindings was keyed without the
    # source, so the second binding hid the first and deleting the queue left it routed to.
    broker, log = recording()
    vh = broker.vhosts[ROOT]
    vh.declare_exchange("a", "direct", durable=True)
    vh.declare_exchange("b", "direct", durable=True)
    vh.declare_queue(None, "q", durable=True)
    vh.bind_queue(None, "q", "a", "", {})
    vh.bind_queue(None, "q", "b", "", {})
    vh.delete_queue(None, "q")
    assert not vh.exchanges["a"].bindings and not vh.exchanges["b"].bindings
    assert_survives(broker, log)


def test_headers_and_exchange_to_exchange_bindings_with_awkward_arguments_survive() -> None:
    broker, log = recording()
    vh = broker.vhosts[ROOT]
    vh.declare_exchange("h", "headers", durable=True, arguments={"alternate-exchange": "ae"})
    vh.declare_exchange("ae", "fanout", durable=True, internal=True)
    vh.declare_exchange("src", "topic", durable=True)
    vh.declare_queue(None, "q", durable=True, arguments={"x-max-priority": 5, "x-message-ttl": 1000})
    args = {"x-match": "any", "b": b"\x00\x01", "d": Decimal("2.50"), "n": {"deep": [1, None]}}
    vh.bind_queue(None, "q", "h", "", args)
    vh.bind_exchange("h", "src", "a.*", {"weird": b"\xff"})
    after = assert_survives(broker, log)
    h = after.vhosts[ROOT].exchanges["h"]
    (binding,) = h.bindings.values()
    assert binding.arguments == args and binding.arguments["d"].as_tuple() == Decimal("2.50").as_tuple()
    assert h.alternate_exchange == "ae" and after.vhosts[ROOT].exchanges["ae"].internal
    assert after.vhosts[ROOT].queues["q"].arguments == {"x-max-priority": 5, "x-message-ttl": 1000}


# ------------------------------------------------------------------------------- auto-delete


def auto_delete_setup() -> tuple[Broker, ListLog]:
    broker, log = recording()
    vh = broker.vhosts[ROOT]
    vh.declare_exchange("ad", "direct", durable=True, auto_delete=True)
    vh.declare_queue(None, "dq", durable=True)
    vh.declare_queue(None, "tq")
    return broker, log


def test_auto_delete_exchange_losing_its_last_binding_with_a_durable_queue() -> None:
    broker, log = auto_delete_setup()
    vh = broker.vhosts[ROOT]
    vh.bind_queue(None, "dq", "ad", "k", {})
    vh.delete_queue(None, "dq")
    assert "ad" not in vh.exchanges
    assert log.ops()[-2:] == ["delete_queue", "delete_exchange"]
    assert "ad" not in assert_survives(broker, log).vhosts[ROOT].exchanges


def test_auto_delete_exchange_losing_its_last_binding_to_a_transient_queue() -> None:
    broker, log = auto_delete_setup()
    vh = broker.vhosts[ROOT]
    vh.bind_queue(None, "tq", "ad", "k", {})  # not recorded: the transient end
    vh.unbind_queue(None, "tq", "ad", "k", {})
    assert "ad" not in vh.exchanges
    assert log.ops()[-1] == "delete_exchange"  # replaying the cause could not reproduce this
    assert "ad" not in assert_survives(broker, log).vhosts[ROOT].exchanges


def test_auto_delete_exchange_keeping_transient_bindings_stays() -> None:
    broker, log = auto_delete_setup()
    vh = broker.vhosts[ROOT]
    vh.bind_queue(None, "dq", "ad", "k", {})
    vh.bind_queue(None, "tq", "ad", "k", {})
    vh.unbind_queue(None, "dq", "ad", "k", {})
    assert "ad" in vh.exchanges  # still bound to tq
    after = assert_survives(broker, log)  # RabbitMQ keeps it across a restart too (without bindings)
    assert "ad" in after.vhosts[ROOT].exchanges


def test_auto_delete_cascade_through_exchange_to_exchange_bindings() -> None:
    broker, log = recording()
    vh = broker.vhosts[ROOT]
    vh.declare_exchange("top", "fanout", durable=True, auto_delete=True)
    vh.declare_exchange("mid", "fanout", durable=True, auto_delete=True)
    vh.declare_queue(None, "q", durable=True)
    vh.bind_exchange("mid", "top", "", {})
    vh.bind_queue(None, "q", "mid", "", {})
    vh.delete_queue(None, "q")  # mid loses its last binding, then top loses its binding to mid
    assert "mid" not in vh.exchanges and "top" not in vh.exchanges
    assert log.ops()[-3:] == ["delete_queue", "delete_exchange", "delete_exchange"]
    after = assert_survives(broker, log)
    assert not {"top", "mid"} & set(after.vhosts[ROOT].exchanges)


def test_durable_auto_delete_queue_deleted_by_the_broker_stays_deleted() -> None:
    broker, log = recording()
    vh = broker.vhosts[ROOT]
    q = vh.declare_queue(None, "adq", durable=True, auto_delete=True)
    vh.remove_queue(q)  # what the channel does when its last consumer goes
    assert log.ops()[-1] == "delete_queue"
    assert "adq" not in assert_survives(broker, log).vhosts[ROOT].queues


# ------------------------------------------------------------------------------------- uids


def test_uids_are_unique_never_reused_and_restored() -> None:
    broker, log = recording()
    vh = broker.vhosts[ROOT]
    a = vh.declare_queue(None, "a", durable=True)
    t = vh.declare_queue(None, "t")
    vh.delete_queue(None, "a")
    a2 = vh.declare_queue(None, "a", durable=True)
    assert len({a.uid, t.uid, a2.uid}) == 3 and 0 not in {a.uid, t.uid, a2.uid}
    after = restarted(log)
    assert after.vhosts[ROOT].queues["a"].uid == a2.uid
    b = after.vhosts[ROOT].declare_queue(None, "b")
    assert b.uid > max(a.uid, t.uid, a2.uid)


def test_uids_survive_compaction_and_restart_without_reuse() -> None:
    broker, log = recording()
    vh = broker.vhosts[ROOT]
    used = {vh.declare_queue(None, f"q{i}", durable=i % 2 == 0).uid for i in range(10)}
    for i in range(10):
        vh.delete_queue(None, f"q{i}")
    compacted = ListLog()
    compacted.commands = broker.definitions()  # what compaction writes: the deleted queues are gone
    again = Broker()
    again.replay_definitions(compacted.commands)
    fresh = again.vhosts[ROOT].declare_queue(None, "new", durable=True)
    assert fresh.uid not in used and fresh.uid > max(used)


def test_uid_reservations_are_recorded_once_per_block() -> None:
    broker, log = recording()
    vh = broker.vhosts[ROOT]
    for i in range(defs.UID_BLOCK + 1):
        vh.declare_queue(None, f"t{i}")  # transient queues take uids too
    reservations = [c for c in log.commands if c["op"] == "reserve_queue_uids"]
    assert [c["below"] for c in reservations] == [1 + defs.UID_BLOCK, 1 + 2 * defs.UID_BLOCK]


def test_uids_are_unique_across_vhosts() -> None:
    broker = Broker()
    from leveret.core.vhost import VirtualHost

    broker.vhosts["other"] = VirtualHost("other", broker.uids)
    a = broker.vhosts[ROOT].declare_queue(None, "q")
    b = broker.vhosts["other"].declare_queue(None, "q")
    assert a.uid != b.uid


# ----------------------------------------------------------------------------------- replay


def test_server_named_durable_queue_comes_back() -> None:
    broker, log = recording()
    q = broker.vhosts[ROOT].declare_queue(None, "", durable=True)
    assert q.name.startswith("amq.gen-")
    after = assert_survives(broker, log)
    assert after.vhosts[ROOT].queues[q.name].uid == q.uid


def test_replay_records_nothing_and_reports_failures_without_stopping() -> None:
    log = ListLog()
    target = Broker()
    target.use_definitions_log(log)
    commands = [
        {"op": "declare_exchange", "vhost": ROOT, "name": "e", "type": "direct", "durable": True,
         "auto_delete": False, "internal": False, "arguments": {}},
        {"op": "bind", "vhost": ROOT, "source": "e", "destination": "missing", "destination_kind": "queue",
         "routing_key": "", "arguments": {}},
        {"op": "declare_queue", "vhost": "nope", "name": "q", "uid": 3, "durable": True, "auto_delete": False,
         "arguments": {}},
        {"op": "mystery", "vhost": ROOT},
        {"op": "declare_queue", "vhost": ROOT, "name": "q", "uid": 3, "durable": True, "auto_delete": False,
         "arguments": {}},
    ]  # fmt: skip
    report = target.replay_definitions(commands)
    assert report.applied == 2 and len(report.failures) == 3
    assert (report.exchanges, report.queues, report.bindings) == (1, 1, 0)
    assert log.commands == []  # nothing recorded during replay
    target.vhosts[ROOT].declare_exchange("after", "direct", durable=True)
    assert log.ops() == ["declare_exchange"]  # recording is back on afterwards


# ------------------------------------------------------------------------------ random model


def random_changes(rng: random.Random, broker: Broker, steps: int) -> None:
    vh = broker.vhosts[ROOT]
    sessions = [session(broker) for _ in range(2)]
    exchanges = [f"e{i}" for i in range(4)]
    queues = [f"q{i}" for i in range(5)]
    for _ in range(steps):
        action = rng.randrange(9)
        e, e2, q = rng.choice(exchanges), rng.choice(exchanges), rng.choice(queues)
        key = rng.choice(["", "a", "b"])
        try:
            if action == 0:
                kind = rng.choice(["direct", "fanout", "topic", "headers"])
                vh.declare_exchange(e, kind, durable=rng.random() < 0.7, auto_delete=rng.random() < 0.3)
            elif action == 1:
                vh.delete_exchange(e)
            elif action == 2:
                s = rng.choice([None, *sessions])
                vh.declare_queue(s, q, durable=rng.random() < 0.7, exclusive=s is not None and rng.random() < 0.3,
                                 auto_delete=rng.random() < 0.2)  # fmt: skip
            elif action == 3:
                vh.delete_queue(None, q)
            elif action in (4, 5):
                vh.bind_queue(None, q, e, key, {"x-match": "any", "k": b"v"} if rng.random() < 0.3 else {})
            elif action == 6:
                vh.unbind_queue(None, q, e, key, {})
            elif action == 7:
                (vh.bind_exchange if rng.random() < 0.7 else vh.unbind_exchange)(e, e2, key, {})
            else:
                s = sessions.pop(rng.randrange(len(sessions)))
                broker.close_session(s)  # its exclusive queues go, auto-delete exchanges may follow
                sessions.append(session(broker))
        except BrokerError:
            pass


@pytest.mark.parametrize("seed", range(40))
def test_random_changes_replay_to_the_same_durable_state(seed: int) -> None:
    broker, log = recording()
    random_changes(random.Random(seed), broker, 150)
    after = assert_survives(broker, log)
    compacted = Broker()  # and the compacted form rebuilds it too
    compacted.replay_definitions(broker.definitions())
    assert canonical(compacted) == canonical(broker)
    assert {q.uid for q in after.vhosts[ROOT].queues.values()} == {
        q.uid for q in broker.vhosts[ROOT].queues.values() if q.durable
    }


@pytest.mark.parametrize("compact_after", [0, 3])
@pytest.mark.parametrize("seed", range(12))
def test_random_changes_through_a_compacting_journal(tmp_path: Any, seed: int, compact_after: int) -> None:
    """The journal compacts inside ``record()`` from a snapshot of the live definitions, so every
    change must be applied before it is recorded (else the snapshot misses it and the compaction
    drops it). compact_after=0 compacts on nearly every record."""
    from leveret.server.definitions import restore_definitions

    broker = Broker()
    journal = restore_definitions(broker, str(tmp_path), pytest.fail, compact_after)
    handed_out: list[int] = []
    allocate = broker.uids.allocate

    def tracking_allocate() -> int:
        handed_out.append(allocate())
        return handed_out[-1]

    broker.uids.allocate = tracking_allocate  # type: ignore[method-assign]
    random_changes(random.Random(seed), broker, 150)
    assert journal.compactions > 0
    journal.close()
    after = Broker()
    restore_definitions(after, str(tmp_path), pytest.fail, compact_after)
    assert canonical(after) == canonical(broker)
    assert after.vhosts[ROOT].declare_queue(None, "fresh").uid > max(handed_out)  # transient ones too


def test_uid_reservation_survives_a_compaction_inside_its_own_record(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leveret.server.definitions import restore_definitions

    monkeypatch.setattr(defs, "UID_BLOCK", 4)
    broker = Broker()
    journal = restore_definitions(broker, str(tmp_path), pytest.fail, compact_after=0)
    taken = [broker.vhosts[ROOT].declare_queue(None, f"t{i}").uid for i in range(10)]
    assert journal.compactions >= 2  # a reservation record is one past the live definitions
    journal.close()
    after = Broker()
    restore_definitions(after, str(tmp_path), pytest.fail)
    assert after.vhosts[ROOT].declare_queue(None, "fresh").uid > max(taken)
