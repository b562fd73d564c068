"""Generate src/leveret/amqp/methods.py from the compact AMQP 0-9-1 method table below.

Run: python tools/gen_methods.py > src/leveret/amqp/methods.py
The table is the spec's (amqp0-9-1.xml) plus RabbitMQ's extensions (exchange.bind/unbind,
basic.nack, confirm.*, connection.blocked/unblocked/update-secret).
"""

# class name, class id, [(method name, method id, synchronous, has_content, [fields], [responses])]
SPEC = [
    (
        "connection",
        10,
        [
            (
                "start",
                10,
                True,
                False,
                "version_major:octet=0 version_minor:octet=9 server_properties:table mechanisms:longstr=b'PLAIN' locales:longstr=b'en_US'",
                ["start-ok"],
            ),
            (
                "start-ok",
                11,
                False,
                False,
                "client_properties:table mechanism:shortstr='PLAIN' response:longstr=b'' locale:shortstr='en_US'",
                [],
            ),
            ("secure", 20, True, False, "challenge:longstr=b''", ["secure-ok"]),
            ("secure-ok", 21, False, False, "response:longstr=b''", []),
            ("tune", 30, True, False, "channel_max:short=0 frame_max:long=0 heartbeat:short=0", ["tune-ok"]),
            ("tune-ok", 31, False, False, "channel_max:short=0 frame_max:long=0 heartbeat:short=0", []),
            (
                "open",
                40,
                True,
                False,
                "virtual_host:shortstr='/' capabilities:shortstr='' insist:bit=False",
                ["open-ok"],
            ),
            ("open-ok", 41, False, False, "known_hosts:shortstr=''", []),
            (
                "close",
                50,
                True,
                False,
                "reply_code:short=0 reply_text:shortstr='' class_id:short=0 method_id:short=0",
                ["close-ok"],
            ),
            ("close-ok", 51, False, False, "", []),
            ("blocked", 60, False, False, "reason:shortstr=''", []),
            ("unblocked", 61, False, False, "", []),
            ("update-secret", 70, True, False, "new_secret:longstr=b'' reason:shortstr=''", ["update-secret-ok"]),
            ("update-secret-ok", 71, False, False, "", []),
        ],
    ),
    (
        "channel",
        20,
        [
            ("open", 10, True, False, "out_of_band:shortstr=''", ["open-ok"]),
            ("open-ok", 11, False, False, "channel_id:longstr=b''", []),
            ("flow", 20, True, False, "active:bit=True", ["flow-ok"]),
            ("flow-ok", 21, False, False, "active:bit=True", []),
            (
                "close",
                40,
                True,
                False,
                "reply_code:short=0 reply_text:shortstr='' class_id:short=0 method_id:short=0",
                ["close-ok"],
            ),
            ("close-ok", 41, False, False, "", []),
        ],
    ),
    (
        "access",
        30,
        [
            (
                "request",
                10,
                True,
                False,
                "realm:shortstr='/data' exclusive:bit=False passive:bit=True active:bit=True write:bit=True read:bit=True",
                ["request-ok"],
            ),
            ("request-ok", 11, False, False, "ticket:short=1", []),
        ],
    ),
    (
        "exchange",
        40,
        [
            (
                "declare",
                10,
                True,
                False,
                "ticket:short=0 exchange:shortstr='' type:shortstr='direct' passive:bit=False durable:bit=False auto_delete:bit=False internal:bit=False nowait:bit=False arguments:table",
                ["declare-ok"],
            ),
            ("declare-ok", 11, False, False, "", []),
            (
                "delete",
                20,
                True,
                False,
                "ticket:short=0 exchange:shortstr='' if_unused:bit=False nowait:bit=False",
                ["delete-ok"],
            ),
            ("delete-ok", 21, False, False, "", []),
            (
                "bind",
                30,
                True,
                False,
                "ticket:short=0 destination:shortstr='' source:shortstr='' routing_key:shortstr='' nowait:bit=False arguments:table",
                ["bind-ok"],
            ),
            ("bind-ok", 31, False, False, "", []),
            (
                "unbind",
                40,
                True,
                False,
                "ticket:short=0 destination:shortstr='' source:shortstr='' routing_key:shortstr='' nowait:bit=False arguments:table",
                ["unbind-ok"],
            ),
            ("unbind-ok", 51, False, False, "", []),
        ],
    ),
    (
        "queue",
        50,
        [
            (
                "declare",
                10,
                True,
                False,
                "ticket:short=0 queue:shortstr='' passive:bit=False durable:bit=False exclusive:bit=False auto_delete:bit=False nowait:bit=False arguments:table",
                ["declare-ok"],
            ),
            ("declare-ok", 11, False, False, "queue:shortstr='' message_count:long=0 consumer_count:long=0", []),
            (
                "bind",
                20,
                True,
                False,
                "ticket:short=0 queue:shortstr='' exchange:shortstr='' routing_key:shortstr='' nowait:bit=False arguments:table",
                ["bind-ok"],
            ),
            ("bind-ok", 21, False, False, "", []),
            ("purge", 30, True, False, "ticket:short=0 queue:shortstr='' nowait:bit=False", ["purge-ok"]),
            ("purge-ok", 31, False, False, "message_count:long=0", []),
            (
                "delete",
                40,
                True,
                False,
                "ticket:short=0 queue:shortstr='' if_unused:bit=False if_empty:bit=False nowait:bit=False",
                ["delete-ok"],
            ),
            ("delete-ok", 41, False, False, "message_count:long=0", []),
            (
                "unbind",
                50,
                True,
                False,
                "ticket:short=0 queue:shortstr='' exchange:shortstr='' routing_key:shortstr='' arguments:table",
                ["unbind-ok"],
            ),
            ("unbind-ok", 51, False, False, "", []),
        ],
    ),
    (
        "basic",
        60,
        [
            ("qos", 10, True, False, "prefetch_size:long=0 prefetch_count:short=0 global_:bit=False", ["qos-ok"]),
            ("qos-ok", 11, False, False, "", []),
            (
                "consume",
                20,
                True,
                False,
                "ticket:short=0 queue:shortstr='' consumer_tag:shortstr='' no_local:bit=False no_ack:bit=False exclusive:bit=False nowait:bit=False arguments:table",
                ["consume-ok"],
            ),
            ("consume-ok", 21, False, False, "consumer_tag:shortstr=''", []),
            ("cancel", 30, True, False, "consumer_tag:shortstr='' nowait:bit=False", ["cancel-ok"]),
            ("cancel-ok", 31, False, False, "consumer_tag:shortstr=''", []),
            (
                "publish",
                40,
                False,
                True,
                "ticket:short=0 exchange:shortstr='' routing_key:shortstr='' mandatory:bit=False immediate:bit=False",
                [],
            ),
            (
                "return",
                50,
                False,
                True,
                "reply_code:short=0 reply_text:shortstr='' exchange:shortstr='' routing_key:shortstr=''",
                [],
            ),
            (
                "deliver",
                60,
                False,
                True,
                "consumer_tag:shortstr='' delivery_tag:longlong=0 redelivered:bit=False exchange:shortstr='' routing_key:shortstr=''",
                [],
            ),
            ("get", 70, True, False, "ticket:short=0 queue:shortstr='' no_ack:bit=False", ["get-ok", "get-empty"]),
            (
                "get-ok",
                71,
                False,
                True,
                "delivery_tag:longlong=0 redelivered:bit=False exchange:shortstr='' routing_key:shortstr='' message_count:long=0",
                [],
            ),
            ("get-empty", 72, False, False, "cluster_id:shortstr=''", []),
            ("ack", 80, False, False, "delivery_tag:longlong=0 multiple:bit=False", []),
            ("reject", 90, False, False, "delivery_tag:longlong=0 requeue:bit=True", []),
            ("recover-async", 100, False, False, "requeue:bit=False", []),
            ("recover", 110, True, False, "requeue:bit=False", ["recover-ok"]),
            ("recover-ok", 111, False, False, "", []),
            ("nack", 120, False, False, "delivery_tag:longlong=0 multiple:bit=False requeue:bit=True", []),
        ],
    ),
    (
        "confirm",
        85,
        [
            ("select", 10, True, False, "nowait:bit=False", ["select-ok"]),
            ("select-ok", 11, False, False, "", []),
        ],
    ),
    (
        "tx",
        90,
        [
            ("select", 10, True, False, "", ["select-ok"]),
            ("select-ok", 11, False, False, "", []),
            ("commit", 20, True, False, "", ["commit-ok"]),
            ("commit-ok", 21, False, False, "", []),
            ("rollback", 30, True, False, "", ["rollback-ok"]),
            ("rollback-ok", 31, False, False, "", []),
        ],
    ),
]

# Methods a server accepts from a client (the spec's chassis "server", as RabbitMQ implements it:
# RabbitMQ never sends channel.flow, so it refuses flow-ok). Any other method from a client is
# answered with 503 COMMAND_INVALID "unimplemented method", as RabbitMQ does.
FROM_CLIENT = {
    "connection.start-ok",
    "connection.secure-ok",
    "connection.tune-ok",
    "connection.open",
    "connection.close",
    "connection.close-ok",
    "connection.update-secret",
    "channel.open",
    "channel.flow",
    "channel.close",
    "channel.close-ok",
    "access.request",
    "exchange.declare",
    "exchange.delete",
    "exchange.bind",
    "exchange.unbind",
    "queue.declare",
    "queue.bind",
    "queue.purge",
    "queue.delete",
    "queue.unbind",
    "basic.qos",
    "basic.consume",
    "basic.cancel",
    "basic.publish",
    "basic.get",
    "basic.ack",
    "basic.reject",
    "basic.recover-async",
    "basic.recover",
    "basic.nack",
    "confirm.select",
    "tx.select",
    "tx.commit",
    "tx.rollback",
}

PYTYPE = {
    "octet": "int",
    "short": "int",
    "long": "int",
    "longlong": "int",
    "shortstr": "str",
    "longstr": "bytes",
    "bit": "bool",
    "table": "FieldTable",
    "timestamp": "int",
}


def camel(*parts: str) -> str:
    return "".join(p.capitalize() for part in parts for p in part.split("-"))


def main() -> None:
    out = []
    w = out.append
    w('"""AMQP 0-9-1 methods (with RabbitMQ\'s extensions): one frozen-free slotted dataclass per method.')
    w("")
    w("GENERATED by tools/gen_methods.py from its method table; edit the table, not this file.")
    w("Each class knows its ids, its fields and their wire types, whether it is synchronous, whether it")
    w("carries content, and which methods answer it. Encoding and decoding are generic over ``FIELDS``")
    w("(see ``leveret.amqp.codec``); the hot path (publish, deliver, ack) has hand-written fast paths.")
    w('"""')
    w("")
    w("from __future__ import annotations")
    w("")
    w("from dataclasses import dataclass, field")
    w("from typing import ClassVar")
    w("")
    w("from .wire import FieldTable")
    w("")
    w("")
    w("class Method:")
    w('    """Base of every method class."""')
    w("")
    w("    __slots__ = ()")
    w("    CLASS_ID: ClassVar[int]")
    w("    METHOD_ID: ClassVar[int]")
    w("    NAME: ClassVar[str]")
    w("    FIELDS: ClassVar[tuple[tuple[str, str], ...]]")
    w("    SYNCHRONOUS: ClassVar[bool]")
    w("    HAS_CONTENT: ClassVar[bool]")
    w("    FROM_CLIENT: ClassVar[bool]")
    w('    """True if a server accepts it from a client (spec chassis "server")."""')
    w("    RESPONSES: ClassVar[tuple[str, ...]]")
    w("")
    registry = []
    for cname, cid, methods in SPEC:
        for mname, mid, sync, content, fields, responses in methods:
            cls = camel(cname, mname)
            registry.append(((cid, mid), cls))
            w("")
            w("@dataclass(slots=True)")
            w(f"class {cls}(Method):")
            w(f"    CLASS_ID: ClassVar[int] = {cid}")
            w(f"    METHOD_ID: ClassVar[int] = {mid}")
            w(f'    NAME: ClassVar[str] = "{cname}.{mname}"')
            fl = []
            for spec in fields.split():
                name, rest = spec.split(":")
                typ, _, default = rest.partition("=")
                fl.append((name, typ, default))
            tup = ", ".join(f'("{n}", "{t}")' for n, t, _ in fl)
            w(f"    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = ({tup}{',' if len(fl) == 1 else ''})")
            w(f"    SYNCHRONOUS: ClassVar[bool] = {sync}")
            w(f"    HAS_CONTENT: ClassVar[bool] = {content}")
            w(f"    FROM_CLIENT: ClassVar[bool] = {f'{cname}.{mname}' in FROM_CLIENT}")
            rt = ", ".join(f'"{cname}.{r}"' for r in responses)
            w(f"    RESPONSES: ClassVar[tuple[str, ...]] = ({rt}{',' if len(responses) == 1 else ''})")
            for n, t, d in fl:
                if t == "table":
                    w(f"    {n}: FieldTable = field(default_factory=dict)")
                else:
                    w(f"    {n}: {PYTYPE[t]} = {d}")
            w("")
    w("")
    w("METHODS: dict[tuple[int, int], type[Method]] = {")
    for key, cls in registry:
        w(f"    {key}: {cls},")
    w("}")
    w('"""Every method class by ``(class_id, method_id)``."""')
    w("")
    w("BY_NAME: dict[str, type[Method]] = {cls.NAME: cls for cls in METHODS.values()}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
