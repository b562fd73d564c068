"""Long lists as RabbitMQ's management API serves them: filtering, sorting, pagination, columns.

``?name=x`` keeps items whose name contains x (``use_regex=true``: x is a regex searched in the name);
``?sort=key`` (a dotted path, e.g. ``message_stats.publish``) and ``sort_reverse=true``; with
``?page=n`` (and ``page_size``, at most 500) the answer is an object with ``items`` and the counts
RabbitMQ gives; without it, a plain list. ``?columns=a,b.c`` keeps only those (dotted) keys.

Filtering and sorting by name happen on the objects, before rendering: a page of 100 out of 100k
queues renders 100 queues.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from .errors import bad_request

T = TypeVar("T")
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100

Json = dict[str, Any]


def listing(
    items: Sequence[T],
    query: Mapping[str, str],
    render: Callable[[T], Json],
    name_of: Callable[[T], str],
) -> Any:
    items = _filter(items, query, name_of)
    sort = query.get("sort", "")
    reverse = query.get("sort_reverse", "false") == "true"
    rendered: list[Json] | None = None
    if sort in ("", "name"):
        items = sorted(items, key=name_of, reverse=reverse)
    else:
        rendered = sorted((render(i) for i in items), key=lambda j: _sort_key(_path(j, sort)), reverse=reverse)
    page = query.get("page")
    if page is None:
        out = rendered if rendered is not None else [render(i) for i in items]
        return _columns(out, query)
    number, size = _int(page, "page"), _int(query.get("page_size", str(DEFAULT_PAGE_SIZE)), "page_size")
    if size > MAX_PAGE_SIZE:
        raise bad_request(f"page size ({size}) is too large: the maximum is {MAX_PAGE_SIZE}")
    count = len(items) if rendered is None else len(rendered)
    page_count = max(1, math.ceil(count / size))
    if number > page_count and count:
        raise bad_request(f"page out of range: {number} of {page_count}")
    start = (number - 1) * size
    chosen = [render(i) for i in items[start : start + size]] if rendered is None else rendered[start : start + size]
    return {
        "filtered_count": count,
        "item_count": len(chosen),
        "items": _columns(chosen, query),
        "page": number,
        "page_count": page_count,
        "page_size": size,
        "total_count": query.get("_total_count", count),
    }


def _filter(items: Sequence[T], query: Mapping[str, str], name_of: Callable[[T], str]) -> Sequence[T]:
    pattern = query.get("name")
    if not pattern:
        return items
    if query.get("use_regex", "false") == "true":
        try:
            rx = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise bad_request(f"invalid regex: {exc}") from None
        return [i for i in items if rx.search(name_of(i))]
    low = pattern.lower()
    return [i for i in items if low in name_of(i).lower()]


def _int(raw: str, what: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{what} must be a positive integer") from None
    if value < 1:
        raise bad_request(f"{what} must be a positive integer")
    return value


def _path(item: Json, dotted: str) -> Any:
    value: Any = item
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float):
        return (1, value)
    return (2, str(value))


def _columns(items: list[Json], query: Mapping[str, str]) -> list[Json]:
    cols = query.get("columns")
    if not cols:
        return items
    paths = [c.strip() for c in cols.split(",") if c.strip()]
    return [_pick(item, paths) for item in items]


def _pick(item: Json, paths: list[str]) -> Json:
    out: Json = {}
    for dotted in paths:
        parts = dotted.split(".")
        value = _path(item, dotted)
        if value is None and _path(item, parts[0]) is None:
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out
