"""Exchanges and routing through a ``VirtualHost``, pure: no broker process, no sockets.

Cases marked "RabbitMQ 3.10" were checked against a live RabbitMQ 3.10 node with pika.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

from leveret.core.broker import Broker
from leveret.core.errors import BrokerError, ErrorKind
from leveret.core.message import Message
from leveret.core.vhost import VirtualHost


@contextmanager
def refused(kind: ErrorKind) -> Iterator[None]:
    with pytest.raises(BrokerError) as info:
        yield
    assert info.value.kind is kind, info.value.text


class HeadersCodec:
    """A properties codec whose messages carry the given headers (and counts its decodes)."""

    def __init__(self, headers: Mapping[str, Any] | None) -> None:
        self.headers = headers
        self.calls: list[bytes] = []

    def peek(self, properties: bytes) -> None:
        return None

    def decode(self, properties: bytes) -> dict[str, Any]:
        self.calls.append(properties)
        return {} if self.headers is None else {"headers": self.headers}

    def encode(self, fields: Mapping[str, Any]) -> bytes:
        raise NotImplementedError


def message(exchange: str = "", routing_key: str = "", headers: Mapping[str, Any] | None = None) -> Message:
    return Message(exchange, routing_key, b"\x00\x00", b"body", codec=HeadersCodec(headers))


def routed(vh: VirtualHost, exchange: str, routing_key: str = "", headers: Mapping[str, Any] | None = None) -> set[str]:
    queues = vh.route(exchange, routing_key, message(exchange, routing_key, headers))
    names = [q.name for q in queues]
    assert len(names) == len(set(names)), f"a queue reached twice: {names}"
    return set(names)


@pytest.fixture
def vh() -> VirtualHost:
    return VirtualHost("/")


def queues(vh: VirtualHost, *names: str) -> None:
    for name in names:
        vh.declare_queue(None, name)


# -------------------------------------------------------------------------------- direct


def test_default_exchange_routes_by_queue_name(vh: VirtualHost) -> None:
    queues(vh, "q1")
    assert routed(vh, "", "q1") == {"q1"}
    assert routed(vh, "", "nope") == set()
    vh.delete_queue(None, "q1")
    assert routed(vh, "", "q1") == set()


def test_direct_exact_key(vh: VirtualHost) -> None:
    queues(vh, "q1", "q2", "q3")
    vh.declare_exchange("d", "direct")
    vh.bind_queue(None, "q1", "d", "k", {})
    vh.bind_queue(None, "q2", "d", "k", {})
    vh.bind_queue(None, "q3", "d", "other", {})
    assert routed(vh, "d", "k") == {"q1", "q2"}
    assert routed(vh, "d", "other") == {"q3"}
    assert routed(vh, "d", "k.x") == set()
    assert routed(vh, "d", "") == set()


def test_direct_same_queue_two_keys_and_two_argument_sets(vh: VirtualHost) -> None:
    queues(vh, "q")
    vh.declare_exchange("d", "direct")
    vh.bind_queue(None, "q", "d", "k", {})
    vh.bind_queue(None, "q", "d", "k", {"x-any": 1})  # a second binding (arguments are part of identity)
    vh.bind_queue(None, "q", "d", "j", {})
    assert len(vh.exchange("d").bindings) == 3
    assert routed(vh, "d", "k") == {"q"}
    vh.unbind_queue(None, "q", "d", "k", {})
    assert routed(vh, "d", "k") == {"q"}  # the other binding with key k remains
    vh.unbind_queue(None, "q", "d", "k", {"x-any": 1})
    assert routed(vh, "d", "k") == set()
    assert routed(vh, "d", "j") == {"q"}


def test_rebinding_is_idempotent(vh: VirtualHost) -> None:
    queues(vh, "q")
    vh.declare_exchange("d", "direct")
    vh.bind_queue(None, "q", "d", "k", {"a": {"b": [1, 2]}})
    vh.bind_queue(None, "q", "d", "k", {"a": {"b": [1, 2]}})
    assert len(vh.exchange("d").bindings) == 1
    vh.unbind_queue(None, "q", "d", "k", {"a": {"b": [1, 2]}})
    assert routed(vh, "d", "k") == set()


def test_unbind_missing_binding_succeeds(vh: VirtualHost) -> None:
    """RabbitMQ 3.10: queue.unbind of a binding that does not exist replies unbind-ok."""
    queues(vh, "q")
    vh.unbind_queue(None, "q", "amq.direct", "nokey", {})


def test_bind_errors(vh: VirtualHost) -> None:
    queues(vh, "q")
    with refused(ErrorKind.NOT_FOUND):
        vh.bind_queue(None, "q", "missing", "k", {})
    with refused(ErrorKind.NOT_FOUND):
        vh.bind_queue(None, "missing", "amq.direct", "k", {})
    with refused(ErrorKind.ACCESS_REFUSED):  # RabbitMQ 3.10: 403 on the default exchange
        vh.bind_queue(None, "q", "", "q", {})
    with refused(ErrorKind.NOT_FOUND):
        vh.bind_exchange("missing", "amq.direct", "k", {})
    with refused(ErrorKind.NOT_FOUND):
        vh.bind_exchange("amq.direct", "missing", "k", {})


# -------------------------------------------------------------------------------- fanout


def test_fanout_ignores_the_key(vh: VirtualHost) -> None:
    queues(vh, "q1", "q2")
    vh.declare_exchange("f", "fanout")
    vh.bind_queue(None, "q1", "f", "", {})
    vh.bind_queue(None, "q2", "f", "whatever", {})
    vh.bind_queue(None, "q2", "f", "another", {})  # two bindings to q2: still one copy
    assert routed(vh, "f", "x.y") == {"q1", "q2"}
    vh.unbind_queue(None, "q2", "f", "whatever", {})
    assert routed(vh, "f", "") == {"q1", "q2"}
    vh.unbind_queue(None, "q2", "f", "another", {})
    assert routed(vh, "f", "") == {"q1"}


def test_topic_exchange_routes_through_the_trie(vh: VirtualHost) -> None:
    queues(vh, "q1", "q2")
    vh.declare_exchange("t", "topic")
    vh.bind_queue(None, "q1", "t", "a.*", {})
    vh.bind_queue(None, "q1", "t", "#", {})
    vh.bind_queue(None, "q2", "t", "*.b", {})
    assert routed(vh, "t", "a.b") == {"q1", "q2"}
    assert routed(vh, "t", "") == {"q1"}
    vh.unbind_queue(None, "q1", "t", "#", {})
    assert routed(vh, "t", "") == set()
    assert routed(vh, "t", "a.c") == {"q1"}


# ------------------------------------------------------------------------------- headers

# (binding arguments, message headers, matched?) as RabbitMQ 3.10 answered them.
HEADERS_CASES: list[tuple[dict[str, Any], dict[str, Any] | None, bool]] = [
    ({"x-match": "all", "a": 1}, {"a": 1}, True),
    ({"x-match": "all", "a": 1}, {"a": 2}, False),
    ({"x-match": "all", "a": 1}, {"a": True}, False),  # a boolean is not the number 1
    ({"x-match": "all", "a": True}, {"a": 1}, False),
    ({"x-match": "all", "a": 0}, {"a": False}, False),
    ({"x-match": "all", "a": True}, {"a": True}, True),
    ({"x-match": "all"}, {"a": 1}, True),  # nothing to compare: all of nothing holds
    ({"x-match": "all"}, None, True),
    ({"x-match": "any"}, {"a": 1}, False),  # any of nothing does not
    ({"a": 1, "b": 2}, {"a": 1}, False),  # x-match defaults to all
    ({"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}, True),
    ({"x-match": "any", "a": 1, "b": 2}, {"a": 1}, True),
    ({"x-match": "any", "a": 1, "b": 2}, {"a": 9, "b": 9}, False),
    ({"x-match": "any", "a": 1}, None, False),
    ({"x-match": "any", "x-a": 1, "b": 2}, {"x-a": 1}, False),  # x- keys ignored by any
    ({"x-match": "any-with-x", "x-a": 1, "b": 2}, {"x-a": 1}, True),
    ({"x-match": "all", "x-k": 1}, {}, True),  # x- keys ignored by all
    ({"x-match": "all-with-x", "x-k": 1}, {}, False),
    ({"x-match": "all-with-x", "x-k": 1}, {"x-k": 1}, True),
    ({"x-match": "all", "a": None}, {"a": "zz"}, True),  # void: presence alone
    ({"x-match": "all", "a": None}, {"b": "zz"}, False),
    ({"x-match": "any", "a": None, "b": 5}, {"a": 1}, True),
    ({"x-match": "all", "a": "s"}, {"a": "s"}, True),
    ({"x-match": "all", "a": {"n": [1, 2]}}, {"a": {"n": [1, 2]}}, True),
]


@pytest.mark.parametrize(("arguments", "headers", "expected"), HEADERS_CASES)
def test_headers_exchange(vh: VirtualHost, arguments: dict[str, Any], headers: Any, expected: bool) -> None:
    queues(vh, "q")
    vh.declare_exchange("h", "headers")
    vh.bind_queue(None, "q", "h", "", arguments)
    assert routed(vh, "h", "ignored", headers) == ({"q"} if expected else set())


def test_headers_exchange_results_depend_on_the_message_not_the_cache(vh: VirtualHost) -> None:
    queues(vh, "q1", "q2")
    vh.declare_exchange("h", "headers")
    vh.bind_queue(None, "q1", "h", "", {"k": "one"})
    vh.bind_queue(None, "q2", "h", "", {"k": "two"})
    for _ in range(2):  # same exchange and routing key, different headers each time
        assert routed(vh, "h", "", {"k": "one"}) == {"q1"}
        assert routed(vh, "h", "", {"k": "two"}) == {"q2"}
        assert routed(vh, "h", "", {}) == set()


def test_headers_same_queue_two_bindings_one_copy(vh: VirtualHost) -> None:
    queues(vh, "q")
    vh.declare_exchange("h", "headers")
    vh.bind_queue(None, "q", "h", "", {"a": 1})
    vh.bind_queue(None, "q", "h", "", {"x-match": "any", "a": 1, "b": 2})
    assert routed(vh, "h", "", {"a": 1, "b": 2}) == {"q"}
    vh.unbind_queue(None, "q", "h", "", {"a": 1})
    assert routed(vh, "h", "", {"b": 2}) == {"q"}


def test_headers_invalid_x_match_refused(vh: VirtualHost) -> None:
    queues(vh, "q")
    vh.declare_exchange("h", "headers")
    with refused(ErrorKind.PRECONDITION_FAILED):
        vh.bind_queue(None, "q", "h", "", {"x-match": "some"})
    assert vh.exchange("h").bindings == {}


def test_headers_decoded_once_per_message(vh: VirtualHost) -> None:
    queues(vh, "q1", "q2")
    vh.declare_exchange("h", "headers")
    vh.bind_queue(None, "q1", "h", "", {"a": 1})
    vh.bind_queue(None, "q2", "h", "", {"b": 1})
    codec = HeadersCodec({"a": 1, "b": 1})
    msg = Message("h", "", b"\x00\x00", b"", codec=codec)
    assert {q.name for q in vh.route("h", "", msg)} == {"q1", "q2"}
    assert len(codec.calls) == 1


# -------------------------------------------------------------------- exchange to exchange


def test_exchange_to_exchange(vh: VirtualHost) -> None:
    queues(vh, "q1", "q2")
    vh.declare_exchange("src", "topic")
    vh.declare_exchange("mid", "direct")
    vh.bind_exchange("mid", "src", "a.*", {})
    vh.bind_queue(None, "q1", "mid", "a.b", {})
    vh.bind_queue(None, "q2", "src", "#", {})
    assert routed(vh, "src", "a.b") == {"q1", "q2"}
    assert routed(vh, "src", "a.c") == {"q2"}  # reaches mid, which has no binding for a.c
    assert routed(vh, "mid", "a.b") == {"q1"}
    vh.unbind_exchange("mid", "src", "a.*", {})
    assert routed(vh, "src", "a.b") == {"q2"}


def test_exchange_cycles_terminate_and_deliver_once(vh: VirtualHost) -> None:
    queues(vh, "qa", "qb", "shared")
    vh.declare_exchange("a", "fanout")
    vh.declare_exchange("b", "fanout")
    vh.bind_exchange("b", "a", "", {})
    vh.bind_exchange("a", "b", "", {})
    vh.bind_exchange("a", "a", "", {})  # bound to itself
    vh.bind_queue(None, "qa", "a", "", {})
    vh.bind_queue(None, "qb", "b", "", {})
    vh.bind_queue(None, "shared", "a", "", {})
    vh.bind_queue(None, "shared", "b", "", {})
    assert routed(vh, "a", "k") == {"qa", "qb", "shared"}
    assert routed(vh, "b", "k") == {"qa", "qb", "shared"}


def test_diamond_delivers_once(vh: VirtualHost) -> None:
    queues(vh, "q")
    for name in ("top", "left", "right"):
        vh.declare_exchange(name, "fanout")
    vh.bind_exchange("left", "top", "", {})
    vh.bind_exchange("right", "top", "", {})
    vh.bind_queue(None, "q", "left", "", {})
    vh.bind_queue(None, "q", "right", "", {})
    assert routed(vh, "top") == {"q"}


def test_internal_exchange_refuses_publish_but_routes_from_others(vh: VirtualHost) -> None:
    queues(vh, "q")
    vh.declare_exchange("inner", "fanout", internal=True)
    vh.declare_exchange("outer", "fanout")
    vh.bind_queue(None, "q", "inner", "", {})
    vh.bind_exchange("inner", "outer", "", {})
    with refused(ErrorKind.ACCESS_REFUSED):
        vh.route("inner", "", message("inner"))
    with refused(ErrorKind.ACCESS_REFUSED):  # twice: a refusal must not be cached as a route
        vh.route("inner", "", message("inner"))
    assert routed(vh, "outer") == {"q"}


def test_publish_to_missing_exchange_is_404(vh: VirtualHost) -> None:
    with refused(ErrorKind.NOT_FOUND):
        vh.route("missing", "k", message("missing", "k"))


# ------------------------------------------------------------------------- alternate exchange


def test_alternate_exchange_only_when_nothing_routed(vh: VirtualHost) -> None:
    queues(vh, "main", "alt")
    vh.declare_exchange("ae", "fanout")
    vh.bind_queue(None, "alt", "ae", "", {})
    vh.declare_exchange("x", "direct", arguments={"alternate-exchange": "ae"})
    vh.bind_queue(None, "main", "x", "k", {})
    assert routed(vh, "x", "k") == {"main"}
    assert routed(vh, "x", "other") == {"alt"}


def test_alternate_exchange_chain(vh: VirtualHost) -> None:
    queues(vh, "end", "mid")
    vh.declare_exchange("ae2", "fanout")
    vh.bind_queue(None, "end", "ae2", "", {})
    vh.declare_exchange("ae1", "direct", arguments={"alternate-exchange": "ae2"})
    vh.bind_queue(None, "mid", "ae1", "m", {})
    vh.declare_exchange("x", "direct", arguments={"alternate-exchange": "ae1"})
    assert routed(vh, "x", "m") == {"mid"}  # ae1 routed it: ae2 not consulted
    assert routed(vh, "x", "z") == {"end"}


def test_alternate_exchange_cycle_terminates(vh: VirtualHost) -> None:
    """RabbitMQ 3.10: a publish to an exchange whose AE cycle routes nowhere is simply unroutable."""
    vh.declare_exchange("a", "direct", arguments={"alternate-exchange": "b"})
    vh.declare_exchange("b", "direct", arguments={"alternate-exchange": "a"})
    vh.declare_exchange("c", "direct", arguments={"alternate-exchange": "c"})
    assert routed(vh, "a", "k") == set()
    assert routed(vh, "c", "k") == set()
    queues(vh, "q")
    vh.bind_queue(None, "q", "b", "k", {})
    assert routed(vh, "a", "k") == {"q"}
    assert routed(vh, "a", "other") == set()


def test_missing_alternate_exchange_is_ignored(vh: VirtualHost) -> None:
    vh.declare_exchange("x", "direct", arguments={"alternate-exchange": "nowhere"})
    assert routed(vh, "x", "k") == set()
    queues(vh, "q")
    vh.declare_exchange("nowhere", "fanout")
    vh.bind_queue(None, "q", "nowhere", "", {})
    assert routed(vh, "x", "k") == {"q"}


def test_alternate_exchange_not_used_when_routed_to_an_exchange_that_routes_nowhere(vh: VirtualHost) -> None:
    """RabbitMQ 3.10: an exchange's AE is consulted only when the exchange itself matched no binding;
    matching an exchange-to-exchange binding counts, even if that exchange then routes nowhere."""
    queues(vh, "alt")
    vh.declare_exchange("ae", "fanout")
    vh.bind_queue(None, "alt", "ae", "", {})
    vh.declare_exchange("x", "direct", arguments={"alternate-exchange": "ae"})
    vh.declare_exchange("e2", "direct")
    vh.bind_exchange("e2", "x", "k", {})
    assert routed(vh, "x", "k") == set()
    assert routed(vh, "x", "j") == {"alt"}


def test_alternate_exchange_not_used_when_its_queue_was_already_reached(vh: VirtualHost) -> None:
    """RabbitMQ 3.10: x fans out to q1 and e2; e2 routes to q1 too (already reached) and has an AE.
    e2 matched a binding, so its AE is not used."""
    queues(vh, "q1", "q2")
    vh.declare_exchange("ae", "fanout")
    vh.bind_queue(None, "q2", "ae", "", {})
    vh.declare_exchange("e2", "fanout", arguments={"alternate-exchange": "ae"})
    vh.bind_queue(None, "q1", "e2", "", {})
    vh.declare_exchange("x", "fanout")
    vh.bind_queue(None, "q1", "x", "", {})
    vh.bind_exchange("e2", "x", "", {})
    assert routed(vh, "x", "k") == {"q1"}


def test_alternate_exchange_of_a_downstream_exchange(vh: VirtualHost) -> None:
    """RabbitMQ 3.10: x -> e2 (no match in e2) -> e2's AE -> q."""
    queues(vh, "q")
    vh.declare_exchange("ae2", "fanout")
    vh.bind_queue(None, "q", "ae2", "", {})
    vh.declare_exchange("e2", "direct", arguments={"alternate-exchange": "ae2"})
    vh.declare_exchange("x", "direct")
    vh.bind_exchange("e2", "x", "k", {})
    assert routed(vh, "x", "k") == {"q"}
    assert routed(vh, "x", "j") == set()


def test_alternate_exchange_may_be_internal(vh: VirtualHost) -> None:
    queues(vh, "q")
    vh.declare_exchange("ae", "fanout", internal=True)
    vh.bind_queue(None, "q", "ae", "", {})
    vh.declare_exchange("x", "direct", arguments={"alternate-exchange": "ae"})
    assert routed(vh, "x", "k") == {"q"}


# ------------------------------------------------------------------------------ auto-delete


def test_auto_delete_exchange_goes_with_its_last_binding(vh: VirtualHost) -> None:
    queues(vh, "q1", "q2")
    vh.declare_exchange("ad", "direct", auto_delete=True)
    vh.bind_queue(None, "q1", "ad", "k", {})
    vh.bind_queue(None, "q2", "ad", "k", {})
    vh.unbind_queue(None, "q1", "ad", "k", {})
    assert "ad" in vh.exchanges
    vh.unbind_queue(None, "q2", "ad", "k", {})
    assert "ad" not in vh.exchanges
    with refused(ErrorKind.NOT_FOUND):
        vh.route("ad", "k", message("ad", "k"))


def test_auto_delete_exchange_without_bindings_stays(vh: VirtualHost) -> None:
    vh.declare_exchange("ad", "fanout", auto_delete=True)
    vh.unbind_queue(None, vh.declare_queue(None, "q").name, "ad", "", {})  # no such binding
    assert "ad" in vh.exchanges


def test_auto_delete_exchange_goes_when_its_queue_is_deleted(vh: VirtualHost) -> None:
    queues(vh, "q")
    vh.declare_exchange("ad", "fanout", auto_delete=True)
    vh.bind_queue(None, "q", "ad", "", {})
    vh.delete_queue(None, "q")
    assert "ad" not in vh.exchanges


def test_auto_delete_counts_only_bindings_where_it_is_the_source(vh: VirtualHost) -> None:
    """RabbitMQ 3.10: unbinding an auto-delete exchange as an e2e *destination* keeps it; removing
    its last binding as a *source* deletes it."""
    vh.declare_exchange("x", "fanout")
    vh.declare_exchange("ad", "fanout", auto_delete=True)
    vh.bind_exchange("ad", "x", "", {})
    vh.unbind_exchange("ad", "x", "", {})
    assert "ad" in vh.exchanges
    vh.bind_exchange("x", "ad", "", {})
    vh.unbind_exchange("x", "ad", "", {})
    assert "ad" not in vh.exchanges


def test_auto_delete_cascades_when_destination_exchange_is_deleted(vh: VirtualHost) -> None:
    vh.declare_exchange("ad", "fanout", auto_delete=True)
    vh.declare_exchange("dest", "fanout")
    vh.bind_exchange("dest", "ad", "", {})
    vh.delete_exchange("dest")
    assert "ad" not in vh.exchanges


# ------------------------------------------------------------------------ exchange declare


def test_declare_exchange_and_equivalence(vh: VirtualHost) -> None:
    ex = vh.declare_exchange("e", "topic", durable=True)
    assert vh.declare_exchange("e", "topic", durable=True) is ex
    assert vh.declare_exchange("e", "direct", passive=True) is ex  # passive ignores the rest
    for kwargs in ({"durable": False}, {"auto_delete": True}, {"internal": True}):
        with refused(ErrorKind.PRECONDITION_FAILED):
            vh.declare_exchange("e", "topic", **{"durable": True, **kwargs})  # type: ignore[arg-type]
    with refused(ErrorKind.PRECONDITION_FAILED):
        vh.declare_exchange("e", "fanout", durable=True)
    with refused(ErrorKind.PRECONDITION_FAILED):
        vh.declare_exchange("e", "topic", durable=True, arguments={"alternate-exchange": "ae"})


def test_declare_exchange_errors(vh: VirtualHost) -> None:
    with refused(ErrorKind.NOT_FOUND):
        vh.declare_exchange("missing", "direct", passive=True)
    with refused(ErrorKind.COMMAND_INVALID):
        vh.declare_exchange("e", "no-such-type")
    with refused(ErrorKind.ACCESS_REFUSED):
        vh.declare_exchange("", "direct")
    with refused(ErrorKind.ACCESS_REFUSED):
        vh.declare_exchange("amq.custom", "direct")
    assert "e" not in vh.exchanges and "amq.custom" not in vh.exchanges


def test_unknown_type_is_checked_before_the_name(vh: VirtualHost) -> None:
    """RabbitMQ 3.10: an unknown type is a 503 connection error even for reserved names."""
    with refused(ErrorKind.COMMAND_INVALID):
        vh.declare_exchange("amq.custom", "no-such-type")
    with refused(ErrorKind.COMMAND_INVALID):
        vh.declare_exchange("", "no-such-type")


def test_passive_declare_of_the_default_exchange_is_refused(vh: VirtualHost) -> None:
    """RabbitMQ 3.10: exchange.declare(passive) of '' is 403 'operation not permitted on the default
    exchange'."""
    with refused(ErrorKind.ACCESS_REFUSED):
        vh.declare_exchange("", "direct", passive=True)


def test_redeclare_of_existing_amq_exchange(vh: VirtualHost) -> None:
    """RabbitMQ 3.10: declaring an existing ``amq.*`` exchange with its own properties succeeds; with
    other properties it is 406 inequivalent (the reserved-prefix 403 applies to new names only)."""
    assert vh.declare_exchange("amq.direct", "direct", durable=True) is vh.exchange("amq.direct")
    assert vh.declare_exchange("amq.topic", "topic", durable=True) is vh.exchange("amq.topic")
    with refused(ErrorKind.PRECONDITION_FAILED):
        vh.declare_exchange("amq.direct", "fanout", durable=True)
    with refused(ErrorKind.PRECONDITION_FAILED):
        vh.declare_exchange("amq.direct", "direct", durable=False)


def test_default_exchanges_exist(vh: VirtualHost) -> None:
    expected = {
        "": "direct",
        "amq.direct": "direct",
        "amq.fanout": "fanout",
        "amq.topic": "topic",
        "amq.headers": "headers",
        "amq.match": "headers",
    }
    assert {name: ex.type for name, ex in vh.exchanges.items()} == expected
    assert all(ex.durable for ex in vh.exchanges.values())


# ------------------------------------------------------------------------- exchange delete


def test_delete_exchange(vh: VirtualHost) -> None:
    queues(vh, "q")
    vh.declare_exchange("e", "fanout")
    vh.bind_queue(None, "q", "e", "", {})
    with refused(ErrorKind.PRECONDITION_FAILED):
        vh.delete_exchange("e", if_unused=True)
    vh.delete_exchange("e")
    assert "e" not in vh.exchanges
    assert vh.queue("q").bindings == {}
    vh.delete_exchange("e")  # RabbitMQ: deleting a missing exchange succeeds
    vh.declare_exchange("e", "direct")  # and the name is free for another type
    assert vh.exchange("e").type == "direct"


def test_delete_exchange_if_unused_counts_source_bindings_only(vh: VirtualHost) -> None:
    vh.declare_exchange("src", "fanout")
    vh.declare_exchange("e", "fanout")
    vh.bind_exchange("e", "src", "", {})  # e is only a destination
    vh.delete_exchange("e", if_unused=True)
    assert "e" not in vh.exchanges
    assert vh.exchange("src").bindings == {}


def test_delete_reserved_exchanges_refused(vh: VirtualHost) -> None:
    for name in ("", "amq.direct", "amq.missing"):
        with refused(ErrorKind.ACCESS_REFUSED):
            vh.delete_exchange(name)
    assert "amq.direct" in vh.exchanges


# ------------------------------------------------------------------------------ route cache


def test_route_cache_follows_bind_unbind_and_deletes(vh: VirtualHost) -> None:
    queues(vh, "q1", "q2")
    vh.declare_exchange("t", "topic")
    assert routed(vh, "t", "a.b") == set()  # an empty result is cached too
    vh.bind_queue(None, "q1", "t", "a.*", {})
    assert routed(vh, "t", "a.b") == {"q1"}
    vh.bind_queue(None, "q2", "t", "#", {})
    assert routed(vh, "t", "a.b") == {"q1", "q2"}
    vh.unbind_queue(None, "q1", "t", "a.*", {})
    assert routed(vh, "t", "a.b") == {"q2"}
    vh.delete_queue(None, "q2")
    assert routed(vh, "t", "a.b") == set()
    vh.bind_queue(None, "q1", "t", "a.b", {})
    assert routed(vh, "t", "a.b") == {"q1"}
    vh.delete_exchange("t")
    with refused(ErrorKind.NOT_FOUND):
        vh.route("t", "a.b", message("t", "a.b"))
    vh.declare_exchange("t", "fanout")
    assert routed(vh, "t", "a.b") == set()
    vh.bind_queue(None, "q1", "t", "", {})
    assert routed(vh, "t", "zzz") == {"q1"}


def test_route_cache_follows_e2e_and_alternate_exchange_changes(vh: VirtualHost) -> None:
    queues(vh, "q", "alt")
    vh.declare_exchange("x", "direct", arguments={"alternate-exchange": "ae"})
    vh.declare_exchange("y", "direct")
    assert routed(vh, "x", "k") == set()
    vh.declare_exchange("ae", "fanout")
    vh.bind_queue(None, "alt", "ae", "", {})
    assert routed(vh, "x", "k") == {"alt"}
    vh.bind_exchange("y", "x", "k", {})
    vh.bind_queue(None, "q", "y", "k", {})
    assert routed(vh, "x", "k") == {"q"}
    vh.delete_exchange("y")
    assert routed(vh, "x", "k") == {"alt"}
    vh.delete_exchange("ae")
    assert routed(vh, "x", "k") == set()


def test_route_cache_follows_auto_delete_of_an_alternate_exchange(vh: VirtualHost) -> None:
    queues(vh, "alt")
    vh.declare_exchange("ae", "fanout", auto_delete=True)
    vh.bind_queue(None, "alt", "ae", "", {})
    vh.declare_exchange("x", "direct", arguments={"alternate-exchange": "ae"})
    assert routed(vh, "x", "k") == {"alt"}
    vh.delete_queue(None, "alt")  # last binding of ae gone: ae goes too
    assert "ae" not in vh.exchanges
    assert routed(vh, "x", "k") == set()


def test_route_results_reach_channel_publish() -> None:
    broker = Broker()
    session = broker.open_session(broker.users["guest"], "/")

    class Sink:
        def deliver(self, *args: Any) -> None: ...

        def consumer_cancelled(self, *args: Any) -> None: ...

    channel = session.open_channel(1, Sink())
    vh = session.vhost
    vh.declare_queue(session, "q")
    vh.declare_exchange("internal", "fanout", internal=True)
    reached = channel.publish("", "q", message("", "q"), mandatory=False)
    assert reached is not None and [q.name for q in reached] == ["q"]
    assert vh.queue("q").message_count() == 1
    with refused(ErrorKind.ACCESS_REFUSED):
        channel.publish("internal", "", message("internal"), mandatory=False)
    with refused(ErrorKind.NOT_FOUND):
        channel.publish("missing", "", message("missing"), mandatory=False)
    assert channel.publish("amq.direct", "x", message("amq.direct", "x"), mandatory=True) == []
