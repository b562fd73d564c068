"""Management API: vhosts, users, permissions, policies, parameters, definitions.

Users, vhosts and permissions belong to ``core.broker`` (the security layer): this module only
translates HTTP to its methods, so every change is journaled and takes effect as an AMQP one does.
"""

from __future__ import annotations

from typing import Any

from leveret import __version__
from leveret.core import rabbit_definitions

from . import auth, render
from .errors import HttpError, bad_request, not_found
from .listing import listing
from .router import API, Call

Json = dict[str, Any]


# -------------------------------------------------------------------------------------- vhosts


@API.add("GET", "/api/vhosts")
async def list_vhosts(call: Call) -> Any:
    vhosts = auth.visible_vhosts(call.broker, call.user)
    return listing(vhosts, call.query, render.vhost, lambda vh: vh.name)


@API.add("GET", "/api/vhosts/{vhost}")
async def get_vhost(call: Call) -> Json:
    return render.vhost(auth.vhost(call.broker, call.user, call.params["vhost"]))


@API.add("PUT", "/api/vhosts/{vhost}")
async def put_vhost(call: Call) -> None:
    auth.require_admin(call.user)
    body = await call.json()
    name = call.params["vhost"]
    existed = name in call.broker.vhosts
    tags = body.get("tags", ())
    if isinstance(tags, str):
        tags = [t for t in tags.split(",") if t]
    call.broker.add_vhost(name, str(body.get("description", "")), tags)
    if not existed:  # RabbitMQ (rabbit_mgmt_wm_vhost): whoever creates a vhost gets full permissions on it
        call.broker.set_permissions(call.user.name, name, ".*", ".*", ".*")
    call.status = 204 if existed else 201


@API.add("DELETE", "/api/vhosts/{vhost}")
async def delete_vhost(call: Call) -> None:
    auth.require_admin(call.user)
    if call.params["vhost"] not in call.broker.vhosts:
        raise not_found()
    call.broker.delete_vhost(call.params["vhost"])


@API.add("GET", "/api/vhosts/{vhost}/permissions")
async def vhost_permissions(call: Call) -> list[Json]:
    auth.require_admin(call.user)
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    return [render.permission(u, v, p) for (u, v), p in call.broker.permissions.items() if v == vh.name]


# --------------------------------------------------------------------------------------- users


@API.add("GET", "/api/users")
async def list_users(call: Call) -> Any:
    auth.require_admin(call.user)
    return listing(list(call.broker.users.values()), call.query, render.user, lambda u: u.name)


@API.add("GET", "/api/users/without-permissions")
async def users_without_permissions(call: Call) -> list[Json]:
    auth.require_admin(call.user)
    with_perms = {u for u, _ in call.broker.permissions}
    return [render.user(u) for u in call.broker.users.values() if u.name not in with_perms]


@API.add("GET", "/api/users/{name}")
async def get_user(call: Call) -> Json:
    auth.require_admin(call.user)
    user = call.broker.users.get(call.params["name"])
    if user is None:
        raise not_found()
    return render.user(user)


@API.add("PUT", "/api/users/{name}")
async def put_user(call: Call) -> None:
    """RabbitMQ's body: ``password`` or ``password_hash`` (+ ``hashing_algorithm``), ``tags``
    (a list or a comma-separated string). Neither password nor hash: the password is cleared, or
    kept when the user exists and only the tags change."""
    auth.require_admin(call.user)
    body = await call.json()
    name = call.params["name"]
    existing = call.broker.users.get(name)
    raw_tags = body.get("tags", "")
    tags = [t for t in raw_tags.split(",") if t] if isinstance(raw_tags, str) else [str(t) for t in raw_tags or ()]
    password = body.get("password")
    if password is not None:
        if not isinstance(password, str):
            raise bad_request("password must be a string")
        call.broker.add_user(name, password, tags)
    elif "password_hash" in body:
        algorithm = body.get("hashing_algorithm") or "rabbit_password_hashing_sha256"
        call.broker.add_user(name, None, tags, str(body["password_hash"]), str(algorithm))
    elif existing is not None:
        call.broker.set_user_tags(name, tags)
    else:
        call.broker.add_user(name, None, tags)
    call.status = 204 if existing is not None else 201


@API.add("DELETE", "/api/users/{name}")
async def delete_user(call: Call) -> None:
    auth.require_admin(call.user)
    if call.params["name"] not in call.broker.users:
        raise not_found()
    call.broker.delete_user(call.params["name"])


@API.add("POST", "/api/users/bulk-delete")
async def bulk_delete_users(call: Call) -> None:
    auth.require_admin(call.user)
    body = await call.json()
    for name in body.get("users", []):
        if name in call.broker.users:
            call.broker.delete_user(name)


@API.add("GET", "/api/users/{name}/permissions")
async def user_permissions(call: Call) -> list[Json]:
    auth.require_admin(call.user)
    if call.params["name"] not in call.broker.users:
        raise not_found()
    name = call.params["name"]
    return [render.permission(u, v, p) for (u, v), p in call.broker.permissions.items() if u == name]


# --------------------------------------------------------------------------------- permissions


@API.add("GET", "/api/permissions")
async def list_permissions(call: Call) -> list[Json]:
    auth.require_admin(call.user)
    return [render.permission(u, v, p) for (u, v), p in call.broker.permissions.items()]


@API.add("GET", "/api/permissions/{vhost}/{user}")
async def get_permission(call: Call) -> Json:
    auth.require_admin(call.user)
    perm = call.broker.permissions.get((call.params["user"], call.params["vhost"]))
    if perm is None:
        raise not_found()
    return render.permission(call.params["user"], call.params["vhost"], perm)


@API.add("PUT", "/api/permissions/{vhost}/{user}")
async def put_permission(call: Call) -> None:
    auth.require_admin(call.user)
    body = await call.json()
    vhost, user = call.params["vhost"], call.params["user"]
    if vhost not in call.broker.vhosts or user not in call.broker.users:
        raise bad_request(f"no user '{user}' or vhost '{vhost}'")
    existed = (user, vhost) in call.broker.permissions
    try:
        configure, write, read = (str(body[k]) for k in ("configure", "write", "read"))
    except KeyError as exc:
        raise bad_request(f"missing {exc}") from None
    call.broker.set_permissions(user, vhost, configure, write, read)
    call.status = 204 if existed else 201


@API.add("DELETE", "/api/permissions/{vhost}/{user}")
async def delete_permission(call: Call) -> None:
    auth.require_admin(call.user)
    if (call.params["user"], call.params["vhost"]) not in call.broker.permissions:
        raise not_found()
    call.broker.clear_permissions(call.params["user"], call.params["vhost"])


@API.add("GET", "/api/topic-permissions")
async def list_topic_permissions(call: Call) -> list[Json]:
    auth.require_admin(call.user)
    return [
        {"user": u, "vhost": v, "exchange": p.exchange, "write": p.write, "read": p.read}
        for (u, v, _), p in call.broker.topic_permissions.items()
    ]


@API.add("PUT", "/api/topic-permissions/{vhost}/{user}")
async def put_topic_permission(call: Call) -> None:
    auth.require_admin(call.user)
    body = await call.json()
    try:
        exchange, write, read = (str(body[k]) for k in ("exchange", "write", "read"))
    except KeyError as exc:
        raise bad_request(f"missing {exc}") from None
    call.broker.set_topic_permissions(call.params["user"], call.params["vhost"], exchange, write, read)
    call.status = 201


@API.add("DELETE", "/api/topic-permissions/{vhost}/{user}")
async def delete_topic_permission(call: Call) -> None:
    auth.require_admin(call.user)
    exchange = call.query.get("exchange")
    call.broker.clear_topic_permissions(call.params["user"], call.params["vhost"], exchange)


# ------------------------------------------------------------------------------------ policies


def _policy_json(vhost: str, p: Any) -> Json:
    return {
        "vhost": vhost,
        "name": p.name,
        "pattern": p.pattern,
        "apply-to": p.apply_to,
        "definition": render.jsonable(p.definition),
        "priority": p.priority,
    }


@API.add("GET", "/api/policies")
@API.add("GET", "/api/policies/{vhost}")
async def list_policies(call: Call) -> Any:
    if "vhost" in call.params:
        vhosts = [auth.vhost(call.broker, call.user, call.params["vhost"])]
    else:
        vhosts = auth.visible_vhosts(call.broker, call.user)
    items = [_policy_json(vh.name, p) for vh in vhosts for p in vh.policies.values()]
    return listing(items, call.query, lambda j: j, lambda j: j["name"])


@API.add("GET", "/api/policies/{vhost}/{name}")
async def get_policy(call: Call) -> Json:
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    p = vh.policies.get(call.params["name"])
    if p is None:
        raise not_found()
    return _policy_json(vh.name, p)


@API.add("PUT", "/api/policies/{vhost}/{name}")
async def put_policy(call: Call) -> None:
    auth.require_policymaker(call.user)
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    body = await call.json()
    definition = body.get("definition")
    if not isinstance(definition, dict):
        raise bad_request("definition must be a JSON object")
    try:
        priority = int(body.get("priority", 0))
    except (TypeError, ValueError):
        raise bad_request("priority must be an integer") from None
    existed = call.params["name"] in vh.policies
    pattern = body.get("pattern")
    if not isinstance(pattern, str):
        raise bad_request("pattern must be a string")
    call.broker.set_policy(
        vh.name, call.params["name"], pattern, definition, priority, str(body.get("apply-to", "all"))
    )
    call.status = 204 if existed else 201


@API.add("DELETE", "/api/policies/{vhost}/{name}")
async def delete_policy(call: Call) -> None:
    auth.require_policymaker(call.user)
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    if call.params["name"] not in vh.policies:
        raise not_found()
    call.broker.clear_policy(vh.name, call.params["name"])


@API.add("GET", "/api/operator-policies")
@API.add("GET", "/api/parameters")
@API.add("GET", "/api/global-parameters")
async def empty_list(call: Call) -> list[Json]:
    return []


@API.add("GET", "/api/vhost-limits")
async def vhost_limits(call: Call) -> list[Json]:
    return [
        {"vhost": vh.name, "value": dict(vh.limits)} for vh in auth.visible_vhosts(call.broker, call.user) if vh.limits
    ]


@API.add("PUT", "/api/vhost-limits/{vhost}/{name}")
async def put_vhost_limit(call: Call) -> None:
    auth.require_admin(call.user)
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    body = await call.json()
    try:
        value = int(body["value"])
    except (KeyError, TypeError, ValueError):
        raise bad_request("value must be an integer") from None
    call.broker.set_vhost_limits(vh.name, {**vh.limits, call.params["name"]: value})


# --------------------------------------------------------------------------------- definitions


@API.add("GET", "/api/definitions")
async def export_definitions(call: Call) -> Json:
    auth.require_admin(call.user)
    return rabbit_definitions.export(call.broker, __version__)


@API.add("GET", "/api/definitions/{vhost}")
async def export_vhost_definitions(call: Call) -> Json:
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    if not auth.is_admin(call.user):
        raise HttpError(401, "not_authorized", "Not administrator user")
    return rabbit_definitions.export(call.broker, __version__, vh.name)


@API.add("POST", "/api/definitions")
async def import_definitions(call: Call) -> Json:
    auth.require_admin(call.user)
    body = await call.json()
    report = rabbit_definitions.import_(call.broker, body)
    call.status = 201
    return {"imported": report.counts}


@API.add("POST", "/api/definitions/{vhost}")
async def import_vhost_definitions(call: Call) -> Json:
    auth.require_admin(call.user)
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    body = await call.json()
    report = rabbit_definitions.import_(call.broker, body, vh.name)
    call.status = 201
    return {"imported": report.counts}
