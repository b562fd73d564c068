"""Topic matching (``leveret.core.topic``), pure: no broker, no sockets.

The expected results in ``RABBITMQ_MATRIX`` were recorded from RabbitMQ 3.10: one queue per binding
key on a topic exchange, one message per routing key, and the bindings whose queue received it.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Hashable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leveret.core.topic import TopicTrie, split_key

BINDING_KEYS = ["*", "#", "", "a.*.b", "a.#.b", "#.#", "*.*", "a.*", "#.a.#", "*.#", "#.*"]

# routing key -> binding keys RabbitMQ 3.10 matched it with (recorded with pika against a live node).
RABBITMQ_MATRIX: dict[str, set[str]] = {
    "": {"#", "", "#.#"},
    "a": {"*", "#", "#.#", "#.a.#", "*.#", "#.*"},
    "a.b": {"#", "a.#.b", "#.#", "*.*", "a.*", "#.a.#", "*.#", "#.*"},
    "a..b": {"#", "a.*.b", "a.#.b", "#.#", "#.a.#", "*.#", "#.*"},
    ".": {"#", "#.#", "*.*", "*.#", "#.*"},
    "a.": {"#", "#.#", "*.*", "a.*", "#.a.#", "*.#", "#.*"},
    ".a": {"#", "#.#", "*.*", "#.a.#", "*.#", "#.*"},
    "a.x.y.b": {"#", "a.#.b", "#.#", "#.a.#", "*.#", "#.*"},
    "x.a.y": {"#", "#.#", "#.a.#", "*.#", "#.*"},
    "a.b.b": {"#", "a.*.b", "a.#.b", "#.#", "#.a.#", "*.#", "#.*"},
}


def trie_of(*keys: str) -> TopicTrie:
    trie = TopicTrie()
    for key in keys:
        trie.add(key, key)
    return trie


def matched(trie: TopicTrie, routing_key: str) -> set[Hashable]:
    result = trie.match(routing_key)
    assert len(result) == len(set(result)), f"duplicates in {result}"
    return set(result)


# ----------------------------------------------------------------------------- splitting


@pytest.mark.parametrize(
    ("key", "words"),
    [("", []), ("a", ["a"]), ("a.b", ["a", "b"]), ("a..b", ["a", "", "b"]), (".", ["", ""]), ("a.", ["a", ""])],
)
def test_split_key_as_rabbitmq(key: str, words: list[str]) -> None:
    assert split_key(key) == words


# ---------------------------------------------------------------------- RabbitMQ's answers


@pytest.mark.parametrize("routing_key", sorted(RABBITMQ_MATRIX))
def test_matches_what_rabbitmq_matched(routing_key: str) -> None:
    trie = trie_of(*BINDING_KEYS)
    assert matched(trie, routing_key) == RABBITMQ_MATRIX[routing_key]


@pytest.mark.parametrize(
    ("binding", "routing_key", "expected"),
    [
        ("*", "a", True),
        ("*", "a.b", False),
        ("*", "", False),  # the empty key has zero words
        ("#", "", True),
        ("", "", True),
        ("", "a", False),
        ("a", "", False),
        ("a.*", "a", False),  # '*' is exactly one word
        ("a.#", "a", True),  # '#' may be zero words
        ("a.#", "a.b.c.d", True),
        ("#.b", "b", True),
        ("#.b", "a.b.c", False),
        ("a.#.b", "a.b", True),
        ("a.#.b", "a.x.y.z.b", True),
        ("a.#.b", "a.x.y.z.c", False),
        ("#.a.#", "a", True),
        ("#.a.#", "b.a.c", True),
        ("#.a.#", "b.c", False),
        ("#.#", "a.b.c", True),
        ("#.#.#", "", True),
        ("*.*.*", "a.b", False),
        ("*.#.*", "a", False),
        ("*.#.*", "a.b", True),
        ("a..b", "a..b", True),  # an empty word is a word
        ("a..b", "a.b", False),
        ("a.*.b", "a..b", True),
        ("a#", "a#", True),  # '#' inside a word is a literal character
        ("a#", "ab", False),
        ("a*", "ab", False),
        ("a.b", "a.b.", False),
        ("a.b.*", "a.b.", True),  # trailing dot: an empty last word
    ],
)
def test_single_binding(binding: str, routing_key: str, expected: bool) -> None:
    assert (binding in matched(trie_of(binding), routing_key)) is expected


def test_literal_wildcard_words_in_the_routing_key() -> None:
    """A routing key's ``*`` and ``#`` are ordinary words."""
    trie = trie_of("a.b", "a.*", "#")
    assert matched(trie, "a.*") == {"a.*", "#"}
    assert matched(trie, "a.#") == {"a.*", "#"}


# ------------------------------------------------------- against a straightforward reference


@functools.cache
def reference(binding: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not binding:
        return not words
    head, rest = binding[0], binding[1:]
    if head == "#":
        return reference(rest, words) or (bool(words) and reference(binding, words[1:]))
    if not words:
        return False
    return (head in ("*", words[0])) and reference(rest, words[1:])


WORDS = st.sampled_from(["a", "b", "", "*", "#"])
KEYS = st.lists(WORDS, max_size=6).map(".".join)
ROUTING = st.lists(st.sampled_from(["a", "b", "", "#"]), max_size=7).map(".".join)


@settings(max_examples=300, deadline=None)
@given(bindings=st.lists(KEYS, min_size=1, max_size=8), routing_keys=st.lists(ROUTING, min_size=1, max_size=5))
def test_agrees_with_reference_matcher(bindings: list[str], routing_keys: list[str]) -> None:
    trie = trie_of(*bindings)
    for rk in routing_keys:
        expected = {b for b in bindings if reference(tuple(split_key(b)), tuple(split_key(rk)))}
        assert matched(trie, rk) == expected, rk


@settings(max_examples=150, deadline=None)
@given(
    bindings=st.lists(st.tuples(KEYS, st.integers(0, 3)), min_size=1, max_size=10),
    data=st.data(),
)
def test_removal_agrees_with_reference(bindings: list[tuple[str, int]], data: Any) -> None:
    """Add (key, destination) bindings, remove a random subset; the rest still match exactly."""
    trie = TopicTrie()
    for key, dest in bindings:
        trie.add(key, dest)
    removed = data.draw(st.lists(st.sampled_from(bindings), max_size=len(bindings), unique=True))
    live = list(bindings)
    for b in removed:
        trie.remove(*b)
        live.remove(b)
    for rk in data.draw(st.lists(ROUTING, min_size=1, max_size=4)):
        words = tuple(split_key(rk))
        expected = {dest for key, dest in live if reference(tuple(split_key(key)), words)}
        assert matched(trie, rk) == expected
    for b in live:
        trie.remove(*b)
    assert_pruned(trie)


# ------------------------------------------------------------------------- add and remove


def assert_pruned(trie: TopicTrie) -> None:
    root = trie._root
    assert root.children == {} and root.destinations == {}


def test_same_destination_with_several_keys_matches_once() -> None:
    trie = TopicTrie()
    for key in ("a.*", "#", "a.b", "*.b", "#.b"):
        trie.add(key, "q1")
    trie.add("a.b", "q2")
    result = trie.match("a.b")
    assert sorted(result) == ["q1", "q2"]  # type: ignore[type-var]


def test_remove_one_key_keeps_the_others() -> None:
    trie = TopicTrie()
    trie.add("a.*", "q")
    trie.add("#.b", "q")
    trie.remove("a.*", "q")
    assert matched(trie, "a.b") == {"q"}
    assert matched(trie, "a.c") == set()
    trie.remove("#.b", "q")
    assert matched(trie, "a.b") == set()
    assert_pruned(trie)


def test_binding_counted_twice_needs_two_removals() -> None:
    trie = TopicTrie()
    trie.add("a.#", "q")
    trie.add("a.#", "q")
    trie.remove("a.#", "q")
    assert matched(trie, "a.b") == {"q"}
    trie.remove("a.#", "q")
    assert matched(trie, "a.b") == set()
    assert_pruned(trie)


def test_prune_keeps_shared_prefixes() -> None:
    trie = TopicTrie()
    trie.add("a.b.c", "q1")
    trie.add("a.b", "q2")
    trie.add("a.b.d.e", "q3")
    trie.remove("a.b.d.e", "q3")
    assert set(trie._root.children["a"].children["b"].children) == {"c"}
    assert matched(trie, "a.b.c") == {"q1"}
    assert matched(trie, "a.b") == {"q2"}
    trie.remove("a.b", "q2")
    assert matched(trie, "a.b.c") == {"q1"}
    trie.remove("a.b.c", "q1")
    assert_pruned(trie)


def test_removing_unknown_bindings_is_harmless() -> None:
    trie = trie_of("a.b")
    trie.remove("a.b.c", "a.b")  # path does not exist
    trie.remove("a", "a.b")  # path exists, no destination there
    trie.remove("a.b", "other")  # leaf exists, other destination
    trie.remove("", "a.b")
    assert matched(trie, "a.b") == {"a.b"}
    trie.remove("a.b", "a.b")
    assert_pruned(trie)


def test_empty_binding_key_lives_at_the_root() -> None:
    trie = TopicTrie()
    trie.add("", "q")
    assert matched(trie, "") == {"q"}
    assert matched(trie, "a") == set()
    trie.remove("", "q")
    assert matched(trie, "") == set()
    assert_pruned(trie)


# ---------------------------------------------------------------------------- performance


class CountingDict(dict[str, Any]):
    """A trie node's ``children`` that counts lookups: the matcher's steps."""

    steps = 0

    def get(self, key: str, default: Any = None) -> Any:
        CountingDict.steps += 1
        return super().get(key, default)


def _count_lookups(node: Any) -> int:
    node.children = CountingDict(node.children)
    return 1 + sum(_count_lookups(child) for child in node.children.values())


def wildcard_trie(seed: int) -> tuple[TopicTrie, list[str]]:
    rng = random.Random(seed)
    keys = [".".join(rng.choice("#*") for _ in range(rng.randint(1, 12))) for _ in range(180)]
    keys += [".".join(["#"] * n) + ".z" for n in range(1, 21)]  # never match a key without 'z'
    trie = TopicTrie()
    for i, key in enumerate(keys):
        trie.add(key, i)
    return trie, keys


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_wildcard_heavy_bindings_route_in_polynomial_steps(seed: int) -> None:
    """200 bindings of '#' and '*' against a 30-word key: the matcher's work is bounded by
    (trie nodes) x (words + 1) x (a few lookups), never a combinatorial blow-up (which, for
    ``#.#.#...`` patterns, would be billions of steps)."""
    trie, keys = wildcard_trie(seed)
    nodes = _count_lookups(trie._root)
    routing_key = ".".join(f"w{i}" for i in range(30))
    CountingDict.steps = 0
    started = time.perf_counter()
    result = trie.match(routing_key)
    elapsed = time.perf_counter() - started
    words = tuple(split_key(routing_key))
    expected = {i for i, key in enumerate(keys) if reference(tuple(split_key(key)), words)}
    assert set(result) == expected
    assert 0 < CountingDict.steps <= nodes * 31 * 4, (CountingDict.steps, nodes)
    assert elapsed < 2.0  # typically a few ms; generous so a loaded machine cannot flake it


def test_reference_matcher_itself() -> None:
    """The reference used above must be right on the RabbitMQ-recorded matrix."""
    for rk, expected in RABBITMQ_MATRIX.items():
        got = {b for b in BINDING_KEYS if reference(tuple(split_key(b)), tuple(split_key(rk)))}
        assert got == expected, rk
