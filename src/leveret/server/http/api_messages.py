"""Publishing and getting messages over HTTP (for tests and operators, as RabbitMQ's API offers).

Both go through a core ``Session`` and ``Channel`` of their own, like an AMQP client's, so routing,
storage, TTL, dead-lettering and the flow counters behave exactly as for AMQP. A persistent message
routed to a durable queue is answered only once the store's fsync has covered it (the promise a
publisher confirm makes). ``get`` takes up to ``count`` messages, then settles them all at once as
``ackmode`` says, so ``ack_requeue_true`` shows each message once and puts it back (redelivered).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import TYPE_CHECKING, Any

from leveret.amqp.properties import WIRE_PROPERTIES, BasicProperties, encode_properties
from leveret.core.channel import Channel
from leveret.core.errors import BrokerError
from leveret.core.message import Message
from leveret.core.session import Session

from . import auth, render
from .errors import bad_request, not_found
from .router import API, Call

if TYPE_CHECKING:
    from leveret.core.broker import User
    from leveret.core.consumer import Consumer
    from leveret.core.vhost import VirtualHost

    from .door import HttpDoor

Json = dict[str, Any]
ACKMODES = ("ack_requeue_true", "ack_requeue_false", "reject_requeue_true", "reject_requeue_false")
MAX_GET = 10_000
_PROPERTY_NAMES = frozenset(BasicProperties.__dataclass_fields__)


class _NoDeliveries:
    """The HTTP door never consumes: nothing is ever delivered to its channels."""

    def deliver(self, consumer: Consumer, delivery_tag: int, redelivered: bool, message: Message) -> None:
        raise AssertionError("an HTTP channel has no consumers")

    def consumer_cancelled(self, consumer: Consumer) -> None:
        pass

    def channel_failed(self, error: BrokerError) -> None:
        pass


def _channel(vh: VirtualHost, user: User) -> Channel:
    return Channel(Session(vh, user, "http"), 1, _NoDeliveries())


def properties_from_json(raw: Any) -> bytes:
    if raw in (None, [], {}):
        return encode_properties(BasicProperties())
    if not isinstance(raw, dict):
        raise bad_request("properties must be a JSON object")
    unknown = set(raw) - _PROPERTY_NAMES
    if unknown:
        raise bad_request(f"unknown properties: {', '.join(sorted(unknown))}")
    fields = dict(raw)
    for key in ("delivery_mode", "priority", "timestamp"):
        if key in fields:
            try:
                fields[key] = int(fields[key])
            except (TypeError, ValueError):
                raise bad_request(f"property {key} must be an integer") from None
    if "headers" in fields and not isinstance(fields["headers"], dict):
        raise bad_request("headers must be a JSON object")
    try:
        return encode_properties(BasicProperties(**fields))
    except (TypeError, ValueError, OverflowError) as exc:
        raise bad_request(f"invalid properties: {exc}") from None


async def publish_message(
    door: HttpDoor, vh: VirtualHost, user: User, exchange: str, routing_key: str, body: bytes, props: Any
) -> bool:
    properties = properties_from_json(props)
    persistent = WIRE_PROPERTIES.decode(properties).get("delivery_mode") == 2
    message = Message(exchange, routing_key, properties, body, persistent, b"", WIRE_PROPERTIES)
    channel = _channel(vh, user)
    try:
        queues = channel.publish(exchange, routing_key, message, False)
    finally:
        channel.session.close()
    if message.location:
        await _durable(door, message.location)
    return bool(queues)


async def _durable(door: HttpDoor, location: int) -> None:
    committer = door.server.committer
    if committer is None or committer.durable > location:
        return
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    owner = object()

    def advanced(durable: int) -> None:
        if durable > location and not done.done():
            done.set_result(None)

    committer.listen(owner, advanced)
    try:
        committer.poke()
        await asyncio.wait_for(done, 30)
    finally:
        committer.unlisten(owner)


def take_messages(
    door: HttpDoor, vh: VirtualHost, user: User, queue: str, count: int, ackmode: str, encoding: str = "auto"
) -> list[Json]:
    channel = _channel(vh, user)
    out: list[Json] = []
    try:
        for _ in range(count):
            got = channel.get(queue, False)
            if got is None:
                break
            _tag, message, redelivered, left = got
            out.append(_message_json(message, redelivered, left, encoding))
        if out:
            if ackmode.startswith("ack_requeue_false"):
                channel.ack(0, True)
            else:
                channel.nack(0, True, ackmode.endswith("true"))
    finally:
        channel.session.close()
    return out


def _message_json(message: Message, redelivered: bool, left: int, encoding: str) -> Json:
    body = message.body or b""
    if encoding == "base64":
        payload, payload_encoding = base64.b64encode(body).decode("ascii"), "base64"
    else:
        try:
            payload, payload_encoding = body.decode("utf-8"), "string"
        except UnicodeDecodeError:
            payload, payload_encoding = base64.b64encode(body).decode("ascii"), "base64"
    return {
        "payload_bytes": len(body),
        "redelivered": redelivered,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "message_count": left,
        "properties": render.jsonable(WIRE_PROPERTIES.decode(message.properties)),
        "payload": payload,
        "payload_encoding": payload_encoding,
    }


@API.add("POST", "/api/exchanges/{vhost}/{name}/publish")
async def publish(call: Call) -> Json:
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    name = "" if call.params["name"] == "amq.default" else call.params["name"]
    if name not in vh.exchanges:
        raise not_found()
    body = await call.json()
    auth.check(call.broker, call.user, vh.name, "write", name, "exchange")
    payload = body.get("payload", "")
    if not isinstance(payload, str):
        raise bad_request("payload must be a string")
    encoding = body.get("payload_encoding", "string")
    if encoding == "base64":
        try:
            raw = base64.b64decode(payload, validate=True)
        except binascii.Error:
            raise bad_request("payload is not valid base64") from None
    elif encoding == "string":
        raw = payload.encode("utf-8")
    else:
        raise bad_request("payload_encoding must be 'string' or 'base64'")
    routing_key = body.get("routing_key", "")
    if not isinstance(routing_key, str):
        raise bad_request("routing_key must be a string")
    routed = await publish_message(call.door, vh, call.user, name, routing_key, raw, body.get("properties"))
    return {"routed": routed}


@API.add("POST", "/api/queues/{vhost}/{name}/get")
async def get(call: Call) -> list[Json]:
    vh = auth.vhost(call.broker, call.user, call.params["vhost"])
    name = call.params["name"]
    if name not in vh.queues:
        raise not_found()
    body = await call.json()
    auth.check(call.broker, call.user, vh.name, "read", name)
    try:
        count = int(body.get("count", 1))
    except (TypeError, ValueError):
        raise bad_request("count must be an integer") from None
    if not 1 <= count <= MAX_GET:
        raise bad_request(f"count must be between 1 and {MAX_GET}")
    ackmode = str(body.get("ackmode", "ack_requeue_true"))
    if ackmode not in ACKMODES:
        raise bad_request(f"ackmode must be one of {', '.join(ACKMODES)}")
    encoding = str(body.get("encoding", "auto"))
    if encoding not in ("auto", "base64"):
        raise bad_request("encoding must be 'auto' or 'base64'")
    return take_messages(call.door, vh, call.user, name, count, ackmode, encoding)
