"""Semantics model test across restarts (RELIABILITY.md, "Semantics model test"): a Hypothesis state
machine drives a real broker through pika (publish with and without confirms, persistent and
transient; consume + ack; get; ack / nack / reject with multiple and requeue; purge; channel close;
clean restart by SIGTERM and dirty restart by SIGKILL) and compares it with a simple model of one
durable queue.

The model is exact between restarts: every delivery is the lowest-numbered ready message (first
deliveries in publish order, requeued ones back at their original position), with ``redelivered``
set exactly when the message was delivered before or recovered by a restart; the ready count
matches after every step. Across a restart it bounds what may come back:

- clean restart: exactly the persistent messages the queue held (ready or unacked); transient ones
  are gone;
- dirty restart: at least the persistent messages it held that were confirmed (or had survived an
  earlier restart); at most those plus unconfirmed persistent ones and persistent ones removed
  (acked, rejected, purged) since the last restart, since a lost ack only means a redelivery;
  never a transient one, never one removed before the last restart.

After a restart the test takes an inventory (basic.get of everything, checking order and that every
recovered message is redelivered, then one nack-multiple-requeue puts them all back), so the model
is exact again.

Hypothesis runs derandomized (a fixed seed derived from the test), without an example database;
``LEVERET_FAULT_SEED=<n>`` runs seed n instead (printed on failure: replay with it).
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import pika
import pika.exceptions
import pytest
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.conftest import BrokerProcess
from tests.faults.checker import SEED_ENV

MIN_STEPS_BETWEEN_RESTARTS = 3


@pytest.fixture(scope="module")
def model_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(tmp_path_factory.mktemp("model") / "data")
    yield broker
    broker.stop()


class RestartModel(RuleBasedStateMachine):
    broker: BrokerProcess
    totals: ClassVar[dict[str, int]] = {}  # figures over all examples

    def __init__(self) -> None:
        super().__init__()
        self.queue = "model." + os.urandom(6).hex()
        self.next_id = 0
        self.persistent: set[int] = set()
        self.confirmed: set[int] = set()  # persistent, confirmed, or recovered by a restart
        self.ready: list[int] = []  # ascending: the order the broker delivers them
        self.unacked: dict[int, int] = {}  # delivery tag on the consumer channel -> message id
        self.flagged: set[int] = set()  # must be delivered with redelivered=True
        self.removed: set[int] = set()  # persistent ids removed since the last restart
        self.steps_since_restart = 0
        self.restarts = {"clean": 0, "dirty": 0}
        self.conn: Any = None
        self._connect()
        self.cch.queue_declare(self.queue, durable=True)

    # ------------------------------------------------------------------------------ plumbing

    def _connect(self) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(self.broker.url))
        self.confirm_ch = self.conn.channel()
        self.confirm_ch.confirm_delivery()
        self.plain_ch = self.conn.channel()
        self.cch = self.conn.channel()  # gets, consumes and settlements
        self.unacked.clear()

    def teardown(self) -> None:
        totals = RestartModel.totals
        totals["examples"] = totals.get("examples", 0) + 1
        totals["messages"] = totals.get("messages", 0) + self.next_id
        for kind, n in self.restarts.items():
            totals[kind] = totals.get(kind, 0) + n
        with contextlib.suppress(Exception):
            self.cch.queue_delete(self.queue)
            self.conn.close()

    def _take(self, message_id: int, redelivered: bool, what: str) -> None:
        """A delivery of ``message_id``: check it is the head of the ready list and its flag."""
        assert self.ready, f"{what}: delivered #{message_id} but the model's queue is empty"
        head = self.ready[0]
        assert message_id == head, f"{what}: delivered #{message_id}, expected #{head} (FIFO), ready={self.ready}"
        expect = head in self.flagged
        assert redelivered == expect, f"{what}: #{message_id} redelivered={redelivered}, expected {expect}"
        self.ready.pop(0)
        self.flagged.add(message_id)

    def _remove(self, message_id: int) -> None:
        if message_id in self.persistent:
            self.removed.add(message_id)

    def _requeue(self, message_id: int) -> None:
        bisect.insort(self.ready, message_id)

    @staticmethod
    def _id(body: bytes) -> int:
        return int(body.decode())

    # --------------------------------------------------------------------------------- rules

    @initialize()
    def start(self) -> None:
        pass

    @rule(n=st.integers(1, 4), confirm=st.booleans(), persistent=st.booleans())
    def publish(self, n: int, confirm: bool, persistent: bool) -> None:
        ch = self.confirm_ch if confirm else self.plain_ch
        props = pika.BasicProperties(delivery_mode=2 if persistent else 1)
        for _ in range(n):
            mid = self.next_id
            self.next_id += 1
            ch.basic_publish("", self.queue, str(mid).encode(), props)  # blocks until the ack if confirm
            self.ready.append(mid)
            if persistent:
                self.persistent.add(mid)
                if confirm:
                    self.confirmed.add(mid)
        if not confirm:
            ch.queue_declare(self.queue, passive=True)  # a round trip: the broker has taken them in
        self.steps_since_restart += 1

    @rule(ack=st.booleans())
    def get(self, ack: bool) -> None:
        method, _props, body = self.cch.basic_get(self.queue, auto_ack=False)
        if method is None:
            assert not self.ready, f"basic.get-empty but the model holds {self.ready}"
            return
        mid = self._id(body)
        self._take(mid, method.redelivered, "get")
        if ack:
            self.cch.basic_ack(method.delivery_tag)
            self._remove(mid)
        else:
            self.unacked[method.delivery_tag] = mid
        self.steps_since_restart += 1

    @rule(k=st.integers(1, 5))
    def consume_and_ack(self, k: int) -> None:
        expected = min(k, len(self.ready))
        got: list[tuple[int, int, bool]] = []

        def on_message(ch: Any, method: Any, _props: Any, body: bytes) -> None:
            got.append((method.delivery_tag, self._id(body), method.redelivered))

        self.cch.basic_qos(prefetch_count=k)
        tag = self.cch.basic_consume(self.queue, on_message)
        for _ in range(200):
            if len(got) >= expected:
                break
            self.conn.process_data_events(time_limit=0.01)
        self.cch.basic_cancel(tag)
        assert len(got) == expected, f"consume: {len(got)} deliveries, expected {expected}"
        for delivery_tag, mid, redelivered in got:
            self._take(mid, redelivered, "consume")
            self.cch.basic_ack(delivery_tag)
            self._remove(mid)
        self.steps_since_restart += 1

    @precondition(lambda self: bool(self.unacked))
    @rule(
        data=st.data(),
        kind=st.sampled_from(["ack", "nack", "reject"]),
        requeue=st.booleans(),
        multiple=st.booleans(),
    )
    def settle(self, data: st.DataObject, kind: str, requeue: bool, multiple: bool) -> None:
        tags = sorted(self.unacked)
        tag = data.draw(st.sampled_from(tags), label="delivery tag")
        if kind == "reject":
            multiple = False
        settled = [t for t in tags if t <= tag] if multiple else [tag]
        if kind == "ack":
            self.cch.basic_ack(tag, multiple=multiple)
        elif kind == "nack":
            self.cch.basic_nack(tag, multiple=multiple, requeue=requeue)
        else:
            self.cch.basic_reject(tag, requeue=requeue)
        for t in settled:
            mid = self.unacked.pop(t)
            if kind != "ack" and requeue:
                self._requeue(mid)
            else:
                self._remove(mid)
        self.steps_since_restart += 1

    @rule()
    def purge(self) -> None:
        count = self.cch.queue_purge(self.queue).method.message_count
        assert count == len(self.ready), f"purge removed {count}, the model holds {len(self.ready)}"
        for mid in self.ready:
            self._remove(mid)
        self.ready.clear()
        self.steps_since_restart += 1

    @rule()
    def close_consumer_channel(self) -> None:
        self.cch.close()  # its unacked messages go back to the queue, at their places
        for mid in self.unacked.values():
            self._requeue(mid)
        self.unacked.clear()
        self.cch = self.conn.channel()
        self.steps_since_restart += 1

    @precondition(lambda self: self.steps_since_restart >= MIN_STEPS_BETWEEN_RESTARTS)
    @rule(dirty=st.booleans())
    def restart(self, dirty: bool) -> None:
        held = set(self.ready) | set(self.unacked.values())
        persistent_held = held & self.persistent
        if dirty:
            must = persistent_held & self.confirmed
            may = persistent_held | self.removed
        else:
            must = may = persistent_held
        self.restarts["dirty" if dirty else "clean"] += 1
        with contextlib.suppress(Exception):
            self.conn.close()  # a clean stop must not count on this close: the broker closes it too
        self.broker.restart(kill=dirty)
        self._connect()
        present = self._inventory()
        assert must <= present, f"{'dirty' if dirty else 'clean'} restart lost {sorted(must - present)}"
        assert present <= may, f"{'dirty' if dirty else 'clean'} restart brought back {sorted(present - may)}"
        self.ready = sorted(present)
        self.flagged |= present
        self.confirmed |= present  # on disk now: the next restart must bring them back
        self.removed.clear()
        self.steps_since_restart = 0

    def _inventory(self) -> set[int]:
        """Every message now in the queue, checked for order and the redelivered flag, then all
        put back by one nack (multiple, requeue)."""
        seen: list[int] = []
        last_tag = 0
        while True:
            method, _props, body = self.cch.basic_get(self.queue, auto_ack=False)
            if method is None:
                break
            seen.append(self._id(body))
            last_tag = method.delivery_tag
            assert method.redelivered, f"recovered #{seen[-1]} delivered with redelivered=False"
        assert seen == sorted(seen), f"recovered messages out of order: {seen}"
        assert len(seen) == len(set(seen)), f"a recovered message came twice: {seen}"
        if last_tag:
            self.cch.basic_nack(last_tag, multiple=True, requeue=True)
        return set(seen)

    @invariant()
    def ready_count_matches(self) -> None:
        if self.conn is None:
            return
        count = self.plain_ch.queue_declare(self.queue, passive=True).method.message_count
        assert count == len(self.ready), f"broker holds {count} ready messages, the model {len(self.ready)}"


def test_restart_model(model_broker: BrokerProcess) -> None:
    """``LEVERET_FAULT_SEED`` replays (or explores) another seed; ``LEVERET_MODEL_EXAMPLES`` runs more
    examples (default 30, about 10 s)."""
    RestartModel.broker = model_broker
    replay = os.environ.get(SEED_ENV)
    if replay is not None:
        seed(int(replay))(RestartModel)
        print(f"hypothesis seed: {replay}")
    else:
        print(f"hypothesis: derandomized (its fixed seed); set {SEED_ENV} to try another")
    RestartModel.TestCase.settings = settings(
        max_examples=int(os.environ.get("LEVERET_MODEL_EXAMPLES", "30")),
        stateful_step_count=25,
        deadline=None,
        derandomize=replay is None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: each example restarts a real broker
        suppress_health_check=list(HealthCheck),
    )
    RestartModel.totals = {}
    RestartModel.TestCase().runTest()
    totals = RestartModel.totals
    print(f"restart model: {totals}")
    assert totals.get("clean", 0) >= 3 and totals.get("dirty", 0) >= 3, f"too few restarts to prove anything: {totals}"
