"""Exchanges and their bindings. One class per exchange type; all share the binding bookkeeping.

A destination is a queue or another exchange (exchange-to-exchange bindings, a RabbitMQ extension).
A binding is identified by (destination, routing key, arguments), as in RabbitMQ: the same queue
bound twice with different arguments has two bindings.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import precondition_failed
from .message import Message
from .topic import TopicTrie

if TYPE_CHECKING:
    pass


def freeze(value: Any) -> Hashable:
    """A hashable, order-insensitive form of a field-table value (for binding identity)."""
    if isinstance(value, Mapping):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value  # type: ignore[no-any-return]


class Binding:
    __slots__ = ("arguments", "destination", "key", "routing_key", "source")

    def __init__(self, source: Exchange, destination: Any, routing_key: str, arguments: Mapping[str, Any]) -> None:
        self.source = source
        self.destination = destination
        self.routing_key = routing_key
        self.arguments = dict(arguments)
        self.key: Hashable = (id(destination), routing_key, freeze(arguments))


class Exchange:
    TYPE: ClassVar[str] = ""

    def __init__(
        self,
        name: str,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.internal = internal
        self.arguments: dict[str, Any] = dict(arguments or {})
        self.bindings: dict[Hashable, Binding] = {}
        self.alternate_exchange: str | None = None
        self.policy: Any = None
        self.decodes_headers = False
        self.stats_in = 0  # messages published into it, and of those routed to a queue (flow metrics)
        self.stats_out = 0
        self.configure()

    def configure(self, policy: Any = None) -> None:
        """The alternate exchange: from the arguments, else from the policy (``core.policies``)."""
        self.policy = policy
        ae = self.arguments.get("alternate-exchange")
        if ae is None and policy is not None:
            ae = policy.definition.get("alternate-exchange")
        self.alternate_exchange = ae if isinstance(ae, str) else None

    @property
    def type(self) -> str:
        return self.TYPE

    def add_binding(self, binding: Binding) -> bool:
        if binding.key in self.bindings:
            return False
        self.bindings[binding.key] = binding
        self._added(binding)
        return True

    def remove_binding(self, key: Hashable) -> Binding | None:
        binding = self.bindings.pop(key, None)
        if binding is not None:
            self._removed(binding)
        return binding

    def bindings_to(self, destination: Any) -> list[Binding]:
        return [b for b in self.bindings.values() if b.destination is destination]

    def route(self, routing_key: str, message: Message) -> Iterable[Any]:
        raise NotImplementedError

    def _added(self, binding: Binding) -> None:
        raise NotImplementedError

    def _removed(self, binding: Binding) -> None:
        raise NotImplementedError


class DirectExchange(Exchange):
    TYPE = "direct"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._by_key: dict[str, dict[Any, int]] = {}

    def route(self, routing_key: str, message: Message) -> Iterable[Any]:
        return self._by_key.get(routing_key, ())

    def _added(self, binding: Binding) -> None:
        dests = self._by_key.setdefault(binding.routing_key, {})
        dests[binding.destination] = dests.get(binding.destination, 0) + 1

    def _removed(self, binding: Binding) -> None:
        dests = self._by_key.get(binding.routing_key)
        if dests is None:
            return
        count = dests.get(binding.destination, 0) - 1
        if count > 0:
            dests[binding.destination] = count
        else:
            dests.pop(binding.destination, None)
            if not dests:
                del self._by_key[binding.routing_key]


class FanoutExchange(Exchange):
    TYPE = "fanout"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dests: dict[Any, int] = {}

    def route(self, routing_key: str, message: Message) -> Iterable[Any]:
        return self._dests

    def _added(self, binding: Binding) -> None:
        self._dests[binding.destination] = self._dests.get(binding.destination, 0) + 1

    def _removed(self, binding: Binding) -> None:
        count = self._dests.get(binding.destination, 0) - 1
        if count > 0:
            self._dests[binding.destination] = count
        else:
            self._dests.pop(binding.destination, None)


class TopicExchange(Exchange):
    TYPE = "topic"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trie = TopicTrie()

    def route(self, routing_key: str, message: Message) -> Iterable[Any]:
        return self._trie.match(routing_key)

    def _added(self, binding: Binding) -> None:
        self._trie.add(binding.routing_key, binding.destination)

    def _removed(self, binding: Binding) -> None:
        self._trie.remove(binding.routing_key, binding.destination)


_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")


class HeadersExchange(Exchange):
    """x-match all/any (and RabbitMQ's all-with-x/any-with-x). Keys starting ``x-`` are ignored by
    all/any. A binding value of void matches on the key's presence alone."""

    TYPE = "headers"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decodes_headers = True

    @staticmethod
    def validate_arguments(arguments: Mapping[str, Any]) -> None:
        mode = arguments.get("x-match", "all")
        if mode not in _MATCH_MODES:
            raise precondition_failed(
                f"Invalid x-match field value {mode!r}; expected all, any, all-with-x, or any-with-x"
            )

    def route(self, routing_key: str, message: Message) -> Iterable[Any]:
        headers = message.headers()
        found: dict[Any, None] = {}
        for binding in self.bindings.values():
            if binding.destination not in found and _headers_match(binding.arguments, headers):
                found[binding.destination] = None
        return found

    def _added(self, binding: Binding) -> None:
        pass

    def _removed(self, binding: Binding) -> None:
        pass


def _headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    mode = arguments.get("x-match", "all")
    with_x = mode.endswith("-with-x") if isinstance(mode, str) else False
    want_all = not (isinstance(mode, str) and mode.startswith("any"))
    matched_any = False
    for key, expected in arguments.items():
        if key == "x-match" or (key.startswith("x-") and not with_x):
            continue
        ok = key in headers and (expected is None or _field_equal(headers[key], expected))
        if want_all and not ok:
            return False
        if ok:
            matched_any = True
            if not want_all:
                return True
    return want_all or matched_any


def _field_equal(value: Any, expected: Any) -> bool:
    """Erlang's ``==`` as RabbitMQ compares header values: 1 == 1.0, but a boolean is never a number."""
    if isinstance(value, bool) is not isinstance(expected, bool):
        return False
    return bool(value == expected)


EXCHANGE_TYPES: dict[str, type[Exchange]] = {
    cls.TYPE: cls for cls in (DirectExchange, FanoutExchange, TopicExchange, HeadersExchange)
}
