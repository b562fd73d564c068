"""A Hypothesis stateful test of one queue and its channels against a simple model.

The machine drives the real core (``Broker`` -> ``Session`` -> ``Channel``) with random publishes,
consumers with prefetch, basic.get, ack/nack/reject (multiple, requeue), recover, purge, qos changes,
cancels and channel closes. The model knows, for each message, whether it is ready (and in which
order), unacked on which channel under which tag, or gone (acked, discarded, purged). It does not
predict which consumer the round robin picks; instead every delivery the core makes is checked:

- it is the head of the model's ready list (FIFO; requeued messages back at their original place),
- its redelivered flag is true iff the message was delivered before,
- its delivery tag is the channel's next one, and its consumer had prefetch credit,
- after every step, no consumer with credit is left idle while messages are ready,
- every published message is in exactly one of ready / unacked / gone (none lost or duplicated),
  and the core's counters agree with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from leveret.core.broker import Broker
from leveret.core.channel import Channel
from leveret.core.consumer import Consumer
from leveret.core.errors import BrokerError, ErrorKind
from leveret.core.message import Message

QUEUE = "model-q"
MAX_CHANNELS = 2
MAX_CONSUMERS = 3


@dataclass(frozen=True)
class Delivery:
    channel: int
    consumer: str | None  # None: basic.get
    tag: int
    redelivered: bool
    msg: int


class Log:
    """One delivery log shared by every channel's sink, so the global dispatch order is kept."""

    def __init__(self) -> None:
        self.entries: list[Delivery] = []


class Sink:
    def __init__(self, log: Log, number: int) -> None:
        self.log = log
        self.number = number
        self.cancelled: list[str] = []

    def deliver(self, consumer: Consumer, delivery_tag: int, redelivered: bool, message: Message) -> None:
        body = int(message.body)
        self.log.entries.append(Delivery(self.number, consumer.tag, delivery_tag, redelivered, body))

    def consumer_cancelled(self, consumer: Consumer) -> None:
        self.cancelled.append(consumer.tag)


@dataclass
class ModelConsumer:
    tag: str
    channel: int
    no_ack: bool
    prefetch: int
    unacked: int = 0


@dataclass
class ModelChannel:
    number: int
    next_tag: int = 1
    global_prefetch: int = 0
    consumer_prefetch: int = 0
    consumer_unacked: int = 0  # consumer deliveries not settled (gets excluded)
    unacked: dict[int, tuple[int, str | None]] = field(default_factory=dict)  # tag -> (msg, consumer tag)


class QueueModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.broker = Broker()
        self.session = self.broker.open_session(self.broker.users["guest"], "/")
        self.vh = self.session.vhost
        self.queue = self.vh.declare_queue(self.session, QUEUE)
        self.log = Log()
        self.channels: dict[int, Channel] = {}
        self.next_channel = 1
        # the model
        self.mchannels: dict[int, ModelChannel] = {}
        self.consumers: dict[str, ModelConsumer] = {}
        self.published = 0
        self.ready: list[int] = []  # in delivery order
        self.position: dict[int, int] = {}  # msg -> place in the order of first deliveries
        self.delivered_before: set[int] = set()
        self.gone: set[int] = set()
        self.last_first_delivery = -1
        self.next_consumer = 1
        self._open_channel()

    # ------------------------------------------------------------------------ model helpers

    def _open_channel(self) -> int:
        number = self.next_channel
        self.next_channel += 1
        self.channels[number] = self.session.open_channel(number, Sink(self.log, number))
        self.mchannels[number] = ModelChannel(number)
        return number

    def _requeue(self, msgs: list[int]) -> None:
        for m in msgs:
            assert m in self.position, "only delivered messages come back"
        merged = [m for m in self.ready if m in self.position] + msgs
        merged.sort(key=self.position.__getitem__)
        fresh = [m for m in self.ready if m not in self.position]
        self.ready = merged + fresh

    def _has_credit(self, c: ModelConsumer) -> bool:
        if c.no_ack:
            return True
        ch = self.mchannels[c.channel]
        if c.prefetch and c.unacked >= c.prefetch:
            return False
        return not ch.global_prefetch or ch.consumer_unacked < ch.global_prefetch

    def _take_head(self, d: Delivery) -> None:
        assert self.ready, f"delivered {d} but the model has nothing ready"
        assert d.msg == self.ready[0], f"delivered {d.msg}, expected the head {self.ready[0]} of {self.ready}"
        self.ready.pop(0)
        assert d.redelivered == (d.msg in self.delivered_before), d
        if d.msg not in self.delivered_before:
            assert d.msg > self.last_first_delivery, "first deliveries out of publish order"
            self.last_first_delivery = d.msg
            self.position[d.msg] = len(self.position)
        self.delivered_before.add(d.msg)
        ch = self.mchannels[d.channel]
        assert d.tag == ch.next_tag, f"tag {d.tag}, expected {ch.next_tag}"
        ch.next_tag += 1

    def _record(self, d: Delivery, no_ack: bool) -> None:
        if no_ack:
            self.gone.add(d.msg)
        else:
            self.mchannels[d.channel].unacked[d.tag] = (d.msg, d.consumer)

    def _absorb_deliveries(self) -> None:
        entries, self.log.entries = self.log.entries, []
        for d in entries:
            assert d.consumer is not None
            c = self.consumers.get(d.consumer)
            assert c is not None and c.channel == d.channel, f"delivery to unknown consumer {d}"
            assert self._has_credit(c), f"{d} to a consumer without credit {c}"
            self._take_head(d)
            self._record(d, c.no_ack)
            if not c.no_ack:
                c.unacked += 1
                self.mchannels[d.channel].consumer_unacked += 1

    def _settle(self, number: int, tags: list[int], requeue: bool | None) -> None:
        ch = self.mchannels[number]
        back = []
        for tag in tags:
            msg, ctag = ch.unacked.pop(tag)
            if ctag is not None:
                ch.consumer_unacked -= 1
                if ctag in self.consumers:
                    self.consumers[ctag].unacked -= 1
            if requeue:
                back.append(msg)
            else:
                self.gone.add(msg)
        self._requeue(back)

    def _tags_for(self, number: int, tag: int, multiple: bool) -> list[int]:
        unacked = self.mchannels[number].unacked
        return [t for t in unacked if t <= tag] if multiple else [tag]

    def _pick_channel(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(sorted(self.channels)))

    def _pick_tag(self, data: st.DataObject, number: int) -> int | None:
        tags = sorted(self.mchannels[number].unacked)
        return data.draw(st.sampled_from(tags)) if tags else None

    # -------------------------------------------------------------------------------- rules

    @rule(count=st.integers(1, 4), data=st.data())
    def publish(self, count: int, data: st.DataObject) -> None:
        channel = self.channels[self._pick_channel(data)]
        for _ in range(count):
            msg = self.published
            self.published += 1
            self.ready.append(msg)
            reached = channel.publish("", QUEUE, Message("", QUEUE, b"\x00\x00", str(msg).encode()), False)
            assert reached == [self.queue]
        self._absorb_deliveries()

    @rule(count=st.integers(0, 3), global_=st.booleans(), data=st.data())
    def qos(self, count: int, global_: bool, data: st.DataObject) -> None:
        number = self._pick_channel(data)
        self.channels[number].qos(0, count, global_)
        ch = self.mchannels[number]
        if global_:
            ch.global_prefetch = count
        else:  # RabbitMQ: the per-consumer form lifts an earlier channel-wide limit
            ch.global_prefetch = 0
            ch.consumer_prefetch = count
        self._absorb_deliveries()

    @precondition(lambda self: len(self.consumers) < MAX_CONSUMERS)
    @rule(no_ack=st.booleans(), data=st.data())
    def consume(self, no_ack: bool, data: st.DataObject) -> None:
        number = self._pick_channel(data)
        tag = f"c{self.next_consumer}"
        self.next_consumer += 1
        channel = self.channels[number]
        consumer = channel.consume(QUEUE, tag, no_ack, False)
        self.consumers[tag] = ModelConsumer(tag, number, no_ack, self.mchannels[number].consumer_prefetch)
        assert self.log.entries == []  # nothing before start (consume-ok goes first)
        channel.start(consumer)
        self._absorb_deliveries()

    @precondition(lambda self: bool(self.consumers))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        tag = data.draw(st.sampled_from(sorted(self.consumers)))
        c = self.consumers.pop(tag)
        assert self.channels[c.channel].cancel(tag) is not None
        self._absorb_deliveries()

    @rule(no_ack=st.booleans(), data=st.data())
    def get(self, no_ack: bool, data: st.DataObject) -> None:
        number = self._pick_channel(data)
        got = self.channels[number].get(QUEUE, no_ack)
        if got is None:
            assert self.ready == []
            return
        tag, message, redelivered, left = got
        d = Delivery(number, None, tag, redelivered, int(message.body))
        self._take_head(d)
        self._record(d, no_ack)
        assert left == len(self.ready)
        self._absorb_deliveries()

    @rule(multiple=st.booleans(), data=st.data())
    def ack(self, multiple: bool, data: st.DataObject) -> None:
        number = self._pick_channel(data)
        tag = self._pick_tag(data, number)
        if tag is None:
            return
        tags = self._tags_for(number, tag, multiple)
        self.channels[number].ack(tag, multiple)
        self._settle(number, tags, None)
        self._absorb_deliveries()

    @rule(multiple=st.booleans(), requeue=st.booleans(), data=st.data())
    def nack(self, multiple: bool, requeue: bool, data: st.DataObject) -> None:
        """basic.nack, and basic.reject when ``multiple`` is false."""
        number = self._pick_channel(data)
        tag = self._pick_tag(data, number)
        if tag is None:
            return
        tags = self._tags_for(number, tag, multiple)
        self.channels[number].nack(tag, multiple, requeue)
        self._settle(number, tags, requeue)
        self._absorb_deliveries()

    @rule(data=st.data())
    def ack_everything(self, data: st.DataObject) -> None:
        number = self._pick_channel(data)
        tags = list(self.mchannels[number].unacked)
        self.channels[number].ack(0, True)
        self._settle(number, tags, None)
        self._absorb_deliveries()

    @rule(data=st.data(), multiple=st.booleans())
    def bad_ack(self, data: st.DataObject, multiple: bool) -> None:
        """An unknown tag is 406 and settles nothing; the door then closes the channel."""
        number = self._pick_channel(data)
        ch = self.mchannels[number]
        settled = sorted(set(range(1, ch.next_tag)) - set(ch.unacked))
        candidates = [*settled, ch.next_tag + 5]
        tag = data.draw(st.sampled_from(candidates))
        before = list(self.channels[number].unacked)
        with pytest.raises(BrokerError) as info:
            self.channels[number].ack(tag, multiple)
        assert info.value.kind is ErrorKind.PRECONDITION_FAILED
        assert list(self.channels[number].unacked) == before
        self.close_channel_number(number)

    @rule(data=st.data())
    def recover(self, data: st.DataObject) -> None:
        number = self._pick_channel(data)
        tags = list(self.mchannels[number].unacked)
        self.channels[number].recover(True)
        self._settle(number, tags, True)
        self._absorb_deliveries()

    @rule()
    def purge(self) -> None:
        assert self.vh.purge_queue(self.session, QUEUE) == len(self.ready)
        self.gone.update(self.ready)
        self.ready = []
        self._absorb_deliveries()

    @rule(data=st.data())
    def close_channel(self, data: st.DataObject) -> None:
        self.close_channel_number(self._pick_channel(data))

    def close_channel_number(self, number: int) -> None:
        for tag in [t for t, c in self.consumers.items() if c.channel == number]:
            del self.consumers[tag]
        tags = list(self.mchannels[number].unacked)
        self._settle(number, tags, True)
        self.session.close_channel(number)
        del self.channels[number]
        del self.mchannels[number]
        self._absorb_deliveries()
        if not self.channels:
            self._open_channel()

    @precondition(lambda self: len(self.channels) < MAX_CHANNELS)
    @rule()
    def open_channel(self) -> None:
        self._open_channel()

    # --------------------------------------------------------------------------- invariants

    @invariant()
    def nothing_lost_or_duplicated(self) -> None:
        unacked = [m for ch in self.mchannels.values() for m, _ in ch.unacked.values()]
        everything = self.ready + unacked + sorted(self.gone)
        assert sorted(everything) == list(range(self.published)), "lost or duplicated"

    @invariant()
    def core_agrees_with_model(self) -> None:
        assert self.log.entries == []
        assert self.queue.message_count() == len(self.ready)
        assert self.queue.unacked == sum(len(ch.unacked) for ch in self.mchannels.values())
        assert self.queue.consumer_count() == len(self.consumers)
        for number, channel in self.channels.items():
            model = self.mchannels[number]
            assert list(channel.unacked) == sorted(model.unacked)
            assert [d.message.body for d in channel.unacked.values()] == [
                str(model.unacked[t][0]).encode() for t in sorted(model.unacked)
            ]
            assert channel.consumer_unacked == model.consumer_unacked
            assert sorted(channel.consumers) == sorted(t for t, c in self.consumers.items() if c.channel == number)
        for tag, c in self.consumers.items():
            assert self.channels[c.channel].consumers[tag].unacked == c.unacked

    @invariant()
    def no_idle_consumer_while_messages_wait(self) -> None:
        if self.ready:
            idle = [c for c in self.consumers.values() if self._has_credit(c)]
            assert not idle, f"{idle} could take one of {self.ready}"

    @invariant()
    def no_broker_cancels(self) -> None:
        assert all(not ch.sink.cancelled for ch in self.channels.values())  # type: ignore[attr-defined]


QueueModel.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_queue_model = QueueModel.TestCase
