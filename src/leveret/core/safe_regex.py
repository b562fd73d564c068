"""Regular expressions matched in linear time: permission patterns that cannot backtrack forever.

RabbitMQ's permissions are PCRE patterns searched in resource names (``re:run``). A backtracking
engine (PCRE, Python's ``re``) takes exponential time on patterns such as ``(a+)+$`` or ``(a|a)*b``,
and a permission pattern is checked on every declare, bind, publish, consume. So Leveret parses the
regular subset of the syntax itself and matches with a Thompson NFA simulation (a "Pike VM" without
captures): time O(len(name) x len(program)), whatever the pattern.

Supported: literals, ``.``, classes ``[a-z_]`` ``[^...]``, ``\\d \\D \\w \\W \\s \\S``, escaped
punctuation, ``\\t \\n \\r \\f \\v \\xhh``, groups ``(...)``, ``(?:...)``, ``(?P<n>...)``,
alternation, quantifiers ``* + ? {m} {m,} {m,n}`` (greedy or lazy: the same for a yes/no search),
anchors ``^ $ \\A \\z \\Z \\b \\B`` (no multiline: ``$`` matches at the end or before a final
newline, as in PCRE and Python). Refused with ``ValueError`` because they are not regular or change
the answer in ways this engine does not model: back-references, look-around, possessive
quantifiers, atomic groups, inline flags, POSIX classes, and programs larger than ``MAX_PROGRAM``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MAX_PATTERN = 1024  # characters
MAX_PROGRAM = 4096  # instructions, after expanding counted repeats
MAX_COUNT = 255  # the largest {m,n} bound (names are at most 255 characters anyway)

CharTest = Callable[[str], bool]


def _word(c: str) -> bool:
    return c.isalnum() or c == "_"


_CLASSES: dict[str, CharTest] = {
    "d": str.isdigit,
    "D": lambda c: not c.isdigit(),
    "w": _word,
    "W": lambda c: not _word(c),
    "s": lambda c: c in " \t\n\r\f\v",
    "S": lambda c: c not in " \t\n\r\f\v",
}
_CONTROL = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "v": "\v", "e": "\x1b", "a": "\x07"}
_ANCHORS = {"A": "start", "z": "end", "Z": "end_nl", "b": "boundary", "B": "not_boundary"}


# ---------------------------------------------------------------------------------- syntax tree


@dataclass(frozen=True, slots=True)
class Char:
    test: CharTest


@dataclass(frozen=True, slots=True)
class Assert:
    kind: str  # start, end, end_nl, boundary, not_boundary


@dataclass(frozen=True, slots=True)
class Seq:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Alt:
    options: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Repeat:
    node: Node
    low: int
    high: int | None  # None: unbounded


Node = Char | Assert | Seq | Alt | Repeat


def _in_range(low: str, high: str) -> CharTest:
    return lambda ch: low <= ch <= high


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.i = 0

    def fail(self, why: str) -> ValueError:
        return ValueError(f"{why} at position {self.i} of pattern {self.p!r}")

    def peek(self) -> str:
        return self.p[self.i] if self.i < len(self.p) else ""

    def take(self) -> str:
        c = self.peek()
        if not c:
            raise self.fail("unexpected end")
        self.i += 1
        return c

    def parse(self) -> Node:
        node = self.alternation()
        if self.i != len(self.p):
            raise self.fail("unbalanced ')'")
        return node

    def alternation(self) -> Node:
        options = [self.sequence()]
        while self.peek() == "|":
            self.i += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else Alt(tuple(options))

    def sequence(self) -> Node:
        items: list[Node] = []
        while self.peek() not in ("", "|", ")"):
            atom = self.atom()
            items.append(self.quantified(atom))
        return items[0] if len(items) == 1 else Seq(tuple(items))

    def quantified(self, atom: Node) -> Node:
        c = self.peek()
        bounds: tuple[int, int | None] | None = None
        if c in ("*", "+", "?"):
            self.i += 1
            bounds = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        elif c == "{":
            bounds = self.counted()
        if bounds is None:
            return atom
        if isinstance(atom, Assert):
            raise self.fail("quantified anchor")
        if self.peek() == "+":
            raise self.fail("possessive quantifier not supported")
        if self.peek() == "?":
            self.i += 1  # lazy: the same answer for a search
        node = Repeat(atom, *bounds)
        if self.peek() in ("*", "+", "?") or (self.peek() == "{" and self._counted_ahead()):
            raise self.fail("multiple repeat")
        return node

    def _counted_ahead(self) -> bool:
        start = self.i
        try:
            return self.counted() is not None
        finally:
            self.i = start

    def counted(self) -> tuple[int, int | None] | None:
        """``{m}``, ``{m,}``, ``{m,n}``; anything else after ``{`` is a literal (as in PCRE)."""
        end = self.p.find("}", self.i)
        body = self.p[self.i + 1 : end] if end > 0 else ""
        low, comma, high = body.partition(",")
        if not low.isdigit() or (high and not high.isdigit()):
            return None
        lo, hi = int(low), (int(high) if high else (None if comma else int(low)))
        if lo > MAX_COUNT or (hi is not None and (hi > MAX_COUNT or hi < lo)):
            raise self.fail("repeat count out of range")
        self.i = end + 1
        return lo, hi

    def atom(self) -> Node:
        c = self.take()
        if c == "(":
            return self.group()
        if c == "[":
            return Char(self.char_class())
        if c == ".":
            return Char(lambda ch: ch != "\n")
        if c == "^":
            return Assert("start")
        if c == "$":
            return Assert("end_nl")
        if c == "\\":
            return self.escape(in_class=False)
        if c in ("*", "+", "?"):
            raise self.fail("nothing to repeat")
        return Char(c.__eq__)

    def group(self) -> Node:
        if self.peek() == "?":
            self.i += 1
            kind = self.take()
            named = (kind == "P" and self.peek() == "<") or (kind == "<" and self.peek() not in ("=", "!"))
            if named:
                end = self.p.find(">", self.i)
                if end < 0:
                    raise self.fail("unterminated group name")
                self.i = end + 1
            elif kind != ":":
                raise self.fail(f"group construct '(?{kind}' not supported")
        node = self.alternation()
        if self.take() != ")":
            raise self.fail("missing ')'")
        return node

    def escape(self, in_class: bool) -> Node:
        c = self.take()
        if c in _CLASSES:
            return Char(_CLASSES[c])
        if c in _CONTROL:
            return Char(_CONTROL[c].__eq__)
        if c == "x":
            digits = self.p[self.i : self.i + 2]
            if len(digits) != 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.fail("bad \\x escape")
            self.i += 2
            return Char(chr(int(digits, 16)).__eq__)
        if not in_class and c in _ANCHORS:
            return Assert(_ANCHORS[c])
        if c.isalnum():
            raise self.fail(f"escape '\\{c}' not supported")
        return Char(c.__eq__)

    def char_class(self) -> CharTest:
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        tests: list[CharTest] = []
        first = True
        while True:
            c = self.take()
            if c == "]" and not first:
                break
            first = False
            if c == "[" and self.peek() in (":", "=", "."):
                raise self.fail("POSIX classes not supported")
            if c == "\\":
                node = self.escape(in_class=True)
                assert isinstance(node, Char)
                single = self._single(node.test)
                if single is None or self.peek() != "-":
                    tests.append(node.test)
                    continue
                c = single
            if self.peek() == "-" and self.p[self.i + 1 : self.i + 2] not in ("]", ""):
                self.i += 1
                hi = self.take()
                if hi == "\\":
                    hi_node = self.escape(in_class=True)
                    assert isinstance(hi_node, Char)
                    hi = self._single(hi_node.test) or ""
                if len(hi) != 1 or hi < c:
                    raise self.fail("bad character range")
                tests.append(_in_range(c, hi))
            else:
                tests.append(c.__eq__)
        members = tuple(tests)
        if negate:
            return lambda ch: not any(t(ch) for t in members)
        return lambda ch: any(t(ch) for t in members)

    @staticmethod
    def _single(test: CharTest) -> str | None:
        """The one character an escape stands for, if it is a single character."""
        hits = [chr(i) for i in range(128) if test(chr(i))]
        return hits[0] if len(hits) == 1 else None


# -------------------------------------------------------------------------------------- program

# Instructions: ("char", test), ("split", a, b), ("jmp", a), ("assert", kind), ("match",)
Instr = tuple[object, ...]


def _emit(node: Node, out: list[Instr]) -> None:
    if len(out) > MAX_PROGRAM:
        raise ValueError(f"pattern too large (over {MAX_PROGRAM} instructions)")
    if isinstance(node, Char):
        out.append(("char", node.test))
    elif isinstance(node, Assert):
        out.append(("assert", node.kind))
    elif isinstance(node, Seq):
        for item in node.items:
            _emit(item, out)
    elif isinstance(node, Alt):
        _emit_alt(node.options, out)
    else:
        _emit_repeat(node, out)


def _emit_alt(options: tuple[Node, ...], out: list[Instr]) -> None:
    jumps = []
    for option in options[:-1]:
        split = len(out)
        out.append(("split", split + 1, -1))
        _emit(option, out)
        jumps.append(len(out))
        out.append(("jmp", -1))
        out[split] = ("split", split + 1, len(out))
    _emit(options[-1], out)
    for j in jumps:
        out[j] = ("jmp", len(out))


def _emit_repeat(node: Repeat, out: list[Instr]) -> None:
    for _ in range(node.low):
        _emit(node.node, out)
    if node.high is None:
        split = len(out)
        out.append(("split", split + 1, -1))
        _emit(node.node, out)
        out.append(("jmp", split))
        out[split] = ("split", split + 1, len(out))
        return
    holes = []
    for _ in range(node.high - node.low):
        holes.append(len(out))
        out.append(("split", len(out) + 1, -1))
        _emit(node.node, out)
    for h in holes:
        out[h] = ("split", h + 1, len(out))


def _holds(kind: object, text: str, i: int) -> bool:
    n = len(text)
    if kind == "start":
        return i == 0
    if kind == "end":
        return i == n
    if kind == "end_nl":
        return i == n or (i == n - 1 and text[i] == "\n")
    before = i > 0 and _word(text[i - 1])
    after = i < n and _word(text[i])
    return (before != after) == (kind == "boundary")


class SafePattern:
    """A compiled pattern: ``search(text)`` says whether it matches anywhere in ``text``."""

    __slots__ = ("pattern", "program")

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN:
            raise ValueError(f"pattern longer than {MAX_PATTERN} characters")
        program: list[Instr] = []
        _emit(_Parser(pattern).parse(), program)
        program.append(("match",))
        if len(program) > MAX_PROGRAM:
            raise ValueError(f"pattern too large (over {MAX_PROGRAM} instructions)")
        self.pattern = pattern
        self.program = program

    def search(self, text: str) -> bool:
        program = self.program
        threads: list[int] = []  # program counters to expand at position i
        for i in range(len(text) + 1):
            waiting: list[int] = []  # "char" instructions reached at position i
            seen: set[int] = set()
            threads.append(0)  # a new thread at every position: an unanchored search
            for pc in threads:
                if self._closure(pc, text, i, waiting, seen):
                    return True
            if i == len(text):
                return False
            c = text[i]
            threads = [pc + 1 for pc in waiting if program[pc][1](c)]  # type: ignore[operator]
        return False

    def _closure(self, start: int, text: str, i: int, out: list[int], seen: set[int]) -> bool:
        """Follow epsilon moves from ``start`` at position ``i``; char states go to ``out``."""
        program = self.program
        stack = [start]
        while stack:
            pc = stack.pop()
            if pc in seen:
                continue
            seen.add(pc)
            op = program[pc]
            kind = op[0]
            if kind == "match":
                return True
            if kind == "char":
                out.append(pc)
            elif kind == "jmp":
                stack.append(op[1])  # type: ignore[arg-type]
            elif kind == "split":
                stack.extend((op[2], op[1]))  # type: ignore[arg-type]
            elif _holds(op[1], text, i):
                stack.append(pc + 1)
        return False
