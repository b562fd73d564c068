"""Topic matching with a trie of binding-key words (as RabbitMQ's topic trie).

Binding keys and routing keys are split on ``.``; ``*`` matches exactly one word and ``#`` zero or
more. An empty key has zero words (so ``#`` matches ``""`` and ``*`` does not), and ``a..b`` has an
empty middle word. Matching walks the trie once per (node, word position) pair, memoised, so bindings
full of ``#`` cost O(nodes x words) for one message, never a combinatorial blow-up. A ``#`` node
consumes words one at a time (a self-loop), not by trying every remaining position.
"""

from __future__ import annotations

from collections.abc import Hashable


def split_key(key: str) -> list[str]:
    return key.split(".") if key else []


class _Node:
    __slots__ = ("children", "destinations")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.destinations: dict[Hashable, int] = {}  # destination -> number of bindings ending here


class TopicTrie:
    def __init__(self) -> None:
        self._root = _Node()

    def add(self, binding_key: str, destination: Hashable) -> None:
        node = self._root
        for word in split_key(binding_key):
            node = node.children.setdefault(word, _Node())
        node.destinations[destination] = node.destinations.get(destination, 0) + 1

    def remove(self, binding_key: str, destination: Hashable) -> None:
        path = [self._root]
        words = split_key(binding_key)
        for word in words:
            nxt = path[-1].children.get(word)
            if nxt is None:
                return
            path.append(nxt)
        leaf = path[-1]
        count = leaf.destinations.get(destination, 0)
        if count <= 1:
            leaf.destinations.pop(destination, None)
        else:
            leaf.destinations[destination] = count - 1
        for depth in range(len(words), 0, -1):  # prune empty branches
            node = path[depth]
            if node.children or node.destinations:
                break
            del path[depth - 1].children[words[depth - 1]]

    def match(self, routing_key: str) -> list[Hashable]:
        words = split_key(routing_key)
        n = len(words)
        found: dict[Hashable, None] = {}
        seen: set[tuple[int, int]] = set()
        # (node, words consumed, node is a '#' node)
        stack: list[tuple[_Node, int, bool]] = [(self._root, 0, False)]
        while stack:
            node, i, is_hash = stack.pop()
            key = (id(node), i)
            if key in seen:
                continue
            seen.add(key)
            children = node.children
            hash_node = children.get("#")
            if hash_node is not None:
                stack.append((hash_node, i, True))  # '#' consuming zero words
            if i == n:
                for dest in node.destinations:
                    found[dest] = None
                continue
            if is_hash:
                stack.append((node, i + 1, True))  # '#' consuming one more word
            word_node = children.get(words[i])
            if word_node is not None and word_node is not hash_node:  # a literal '#' word: the self-loop
                stack.append((word_node, i + 1, False))
            star = children.get("*")
            if star is not None:
                stack.append((star, i + 1, False))
        return list(found)
