"""``leveret ctl``: operate a broker through its management HTTP API (stdlib HTTP client only).

Lists are printed as tables (``--json`` for the raw API answer). Connection settings: ``--url``
(``LEVERET_HTTP_URL``, default http://127.0.0.1:15672), ``--user``/``--password``
(``LEVERET_USER``/``LEVERET_PASSWORD``, default guest/guest), ``--vhost`` (default ``/``).

``import`` sends big definition files in slices (users, vhosts, permissions and policies first,
then queues, exchanges and bindings 1000 at a time) and shows progress; every slice goes through
the same ``POST /api/definitions`` as a single upload would.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

from .messaging import Progress

DEFAULT_URL = "http://127.0.0.1:15672"
SLICE = 1000


class CtlError(Exception):
    pass


class Client:
    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url.rstrip("/")
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + "/api" + path, data=data, method=method)
        req.add_header("Authorization", self.auth)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                text = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read()).get("reason", exc.reason)
            except ValueError:
                reason = exc.reason
            raise CtlError(f"{method} {path}: {exc.code} {reason}") from None
        except OSError as exc:
            raise CtlError(f"cannot reach {self.url}: {exc}") from None
        return json.loads(text) if text else None


def q(name: str) -> str:
    return quote(name, safe="")


# --------------------------------------------------------------------------------------- tables


def _get(item: dict[str, Any], dotted: str) -> Any:
    value: Any = item
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if isinstance(value, dict | list):
        return json.dumps(value) if value else ""
    return str(value)


def table(items: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    rows = [[title for title, _ in columns]] + [[_cell(_get(i, key)) for _, key in columns] for i in items]
    widths = [max(len(r[c]) for r in rows) for c in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


LISTS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "queues": (
        "/queues/{vhost}",
        [
            ("name", "name"),
            ("type", "type"),
            ("ready", "messages_ready"),
            ("unacked", "messages_unacknowledged"),
            ("consumers", "consumers"),
            ("publish/s", "message_stats.publish_details.rate"),
            ("deliver/s", "message_stats.deliver_get_details.rate"),
            ("forecast", "leveret_forecast.text"),
        ],
    ),
    "exchanges": (
        "/exchanges/{vhost}",
        [("name", "name"), ("type", "type"), ("durable", "durable"), ("in/s", "message_stats.publish_in_details.rate")],
    ),
    "bindings": (
        "/bindings/{vhost}",
        [
            ("source", "source"),
            ("destination", "destination"),
            ("type", "destination_type"),
            ("routing_key", "routing_key"),
        ],
    ),
    "connections": (
        "/connections",
        [
            ("name", "name"),
            ("user", "user"),
            ("vhost", "vhost"),
            ("channels", "channels"),
            ("client", "client_properties.product"),
        ],
    ),
    "channels": (
        "/channels",
        [("name", "name"), ("user", "user"), ("consumers", "consumer_count"), ("unacked", "messages_unacknowledged")],
    ),
    "consumers": (
        "/consumers/{vhost}",
        [("queue", "queue.name"), ("tag", "consumer_tag"), ("ack", "ack_required"), ("prefetch", "prefetch_count")],
    ),
    "users": ("/users", [("name", "name"), ("tags", "tags")]),
    "vhosts": ("/vhosts", [("name", "name"), ("messages", "messages"), ("description", "description")]),
    "permissions": (
        "/permissions",
        [("user", "user"), ("vhost", "vhost"), ("configure", "configure"), ("write", "write"), ("read", "read")],
    ),
    "policies": (
        "/policies/{vhost}",
        [
            ("name", "name"),
            ("pattern", "pattern"),
            ("apply-to", "apply-to"),
            ("priority", "priority"),
            ("definition", "definition"),
        ],
    ),
}


# ------------------------------------------------------------------------------------- commands


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ctl", help="operate a broker through its HTTP API", description=__doc__.split("\n\n")[1])
    p.add_argument("--url", default=os.environ.get("LEVERET_HTTP_URL", DEFAULT_URL), help=f"({DEFAULT_URL})")
    p.add_argument("--user", "-u", dest="http_user", default=os.environ.get("LEVERET_USER", "guest"))
    p.add_argument("--password", "-p", dest="http_password", default=os.environ.get("LEVERET_PASSWORD", "guest"))
    p.add_argument("--vhost", default="/", help="virtual host (/)")
    p.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    actions = p.add_subparsers(dest="action", required=True)
    # --vhost is also accepted after the action (``leveret ctl list queues --vhost v``)
    here = argparse.ArgumentParser(add_help=False)
    here.add_argument("--vhost", default=argparse.SUPPRESS, help="virtual host (/)")
    add = functools.partial(actions.add_parser, parents=[here])
    ls = add("list", help="list objects as a table")
    ls.add_argument("what", choices=sorted(LISTS))
    ls.add_argument("--all-vhosts", action="store_true", help="every vhost, not only --vhost")
    purge = add("purge", help="purge a queue")
    purge.add_argument("queue")
    declare = add("declare", help="declare a queue or an exchange")
    declare.add_argument("kind", choices=("queue", "exchange"))
    declare.add_argument("name")
    declare.add_argument("--type", default="direct", help="exchange type (direct)")
    declare.add_argument("--transient", action="store_true", help="not durable")
    declare.add_argument("--arguments", default="{}", help="JSON object of arguments")
    delete = add("delete", help="delete a queue, exchange, user, vhost or policy")
    delete.add_argument("kind", choices=("queue", "exchange", "user", "vhost", "policy"))
    delete.add_argument("name")
    user = add("add-user", help="add (or replace) a user")
    user.add_argument("name")
    user.add_argument("new_password", metavar="password")
    user.add_argument("--tags", default="", help="comma-separated: administrator, monitoring, policymaker, management")
    vhost = add("add-vhost", help="add a virtual host")
    vhost.add_argument("name")
    vhost.add_argument("--description", default="")
    perms = add("set-permissions", help="set a user's permissions in --vhost")
    perms.add_argument("user")
    perms.add_argument("configure")
    perms.add_argument("write")
    perms.add_argument("read")
    policy = add("set-policy", help="set a policy in --vhost")
    policy.add_argument("name")
    policy.add_argument("pattern")
    policy.add_argument("definition", help='JSON object, e.g. {"max-length": 1000}')
    policy.add_argument("--priority", type=int, default=0)
    policy.add_argument("--apply-to", default="all", choices=("all", "queues", "exchanges"))
    export = add("export", help="write the definitions (RabbitMQ's JSON) to a file ('-' = stdout)")
    export.add_argument("file")
    imp = add("import", help="load definitions (RabbitMQ's JSON) from a file ('-' = stdin)")
    imp.add_argument("file")
    imp.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    client = Client(args.url, args.http_user, args.http_password)
    handler = COMMANDS[args.action]
    try:
        handler(client, args)
    except CtlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _list(client: Client, args: argparse.Namespace) -> None:
    path, columns = LISTS[args.what]
    path = path.replace("/{vhost}", "" if args.all_vhosts else "/" + q(args.vhost))
    items = client.request("GET", path)
    if args.json:
        print(json.dumps(items, indent=2))
        return
    if args.all_vhosts and "{vhost}" in LISTS[args.what][0]:
        columns = [("vhost", "vhost"), *columns]
    print(table(items, columns))


def _purge(client: Client, args: argparse.Namespace) -> None:
    client.request("DELETE", f"/queues/{q(args.vhost)}/{q(args.queue)}/contents")
    print(f"purged queue {args.queue}")


def _declare(client: Client, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"durable": not args.transient, "arguments": json.loads(args.arguments)}
    if args.kind == "exchange":
        body["type"] = args.type
    client.request("PUT", f"/{args.kind}s/{q(args.vhost)}/{q(args.name)}", body)
    print(f"declared {args.kind} {args.name}")


def _delete(client: Client, args: argparse.Namespace) -> None:
    paths = {
        "queue": f"/queues/{q(args.vhost)}/{q(args.name)}",
        "exchange": f"/exchanges/{q(args.vhost)}/{q(args.name)}",
        "user": f"/users/{q(args.name)}",
        "vhost": f"/vhosts/{q(args.name)}",
        "policy": f"/policies/{q(args.vhost)}/{q(args.name)}",
    }
    client.request("DELETE", paths[args.kind])
    print(f"deleted {args.kind} {args.name}")


def _add_user(client: Client, args: argparse.Namespace) -> None:
    client.request("PUT", f"/users/{q(args.name)}", {"password": args.new_password, "tags": args.tags})
    print(f"added user {args.name}")


def _add_vhost(client: Client, args: argparse.Namespace) -> None:
    client.request("PUT", f"/vhosts/{q(args.name)}", {"description": args.description})
    print(f"added vhost {args.name}")


def _set_permissions(client: Client, args: argparse.Namespace) -> None:
    body = {"configure": args.configure, "write": args.write, "read": args.read}
    client.request("PUT", f"/permissions/{q(args.vhost)}/{q(args.user)}", body)
    print(f"set permissions of {args.user} in {args.vhost}")


def _set_policy(client: Client, args: argparse.Namespace) -> None:
    body = {
        "pattern": args.pattern,
        "definition": json.loads(args.definition),
        "priority": args.priority,
        "apply-to": args.apply_to,
    }
    client.request("PUT", f"/policies/{q(args.vhost)}/{q(args.name)}", body)
    print(f"set policy {args.name} in {args.vhost}")


def _export(client: Client, args: argparse.Namespace) -> None:
    text = json.dumps(client.request("GET", "/definitions"), indent=2)
    if args.file == "-":
        print(text)
        return
    with open(args.file, "w") as fh:
        fh.write(text + "\n")
    print(f"exported definitions to {args.file}", file=sys.stderr)


def _import(client: Client, args: argparse.Namespace) -> None:
    if args.file == "-":
        data = json.load(sys.stdin)
    else:
        with open(args.file) as fh:
            data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError("definitions must be a JSON object")
    bulky = ("queues", "exchanges", "bindings")
    head = {k: v for k, v in data.items() if k not in bulky}
    total = sum(len(data.get(k) or []) for k in bulky) + sum(len(v) for v in head.values() if isinstance(v, list))
    progress = Progress("imported", total, quiet=args.quiet)
    done = sum(len(v) for v in head.values() if isinstance(v, list))
    client.request("POST", "/definitions", head)
    progress.update(done)
    for section in bulky:
        items = data.get(section) or []
        for start in range(0, len(items), SLICE):
            chunk = items[start : start + SLICE]
            client.request("POST", "/definitions", {section: chunk})
            done += len(chunk)
            progress.update(done)
    progress.update(done, final=True)


COMMANDS: dict[str, Callable[[Client, argparse.Namespace], None]] = {
    "list": _list,
    "purge": _purge,
    "declare": _declare,
    "delete": _delete,
    "add-user": _add_user,
    "add-vhost": _add_vhost,
    "set-permissions": _set_permissions,
    "set-policy": _set_policy,
    "export": _export,
    "import": _import,
}
