"""``/api/leveret/handlers``: the handler groups of the events runtime and their h(t) (Leveret's own).

What the broker knows of them comes from their reports (``handlers.HandlerMonitor``), on the vhost
``/``: a user who may not see ``/`` sees no groups. ``?flow=true`` adds each group's h(t) history.
"""

from __future__ import annotations

from typing import Any

from . import auth
from .errors import not_found
from .listing import listing
from .router import API, Call

Json = dict[str, Any]


def _visible(call: Call) -> bool:
    return "/" in call.broker.vhosts and auth.has_vhost(call.broker, call.user, "/")


def _render(call: Call, group: Json) -> Json:
    out = dict(group, vhost="/")
    if call.query.get("flow") == "true":
        history = call.door.handlers.group_history(group["group"])
        if history is not None:
            out["leveret_flow"] = history
    return out


@API.add("GET", "/api/leveret/handlers")
async def list_handlers(call: Call) -> Any:
    groups = list(call.door.handlers.groups().values()) if _visible(call) else []
    return listing(groups, call.query, lambda g: _render(call, g), lambda g: str(g["group"]))


@API.add("GET", "/api/leveret/handlers/{group}")
async def get_handler(call: Call) -> Json:
    group = call.door.handlers.groups().get(call.params["group"]) if _visible(call) else None
    if group is None:
        raise not_found()
    return _render(call, group)
