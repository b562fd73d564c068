"""``leveret`` command line: ``serve`` (the broker) and ``bench`` (the load generator)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from leveret.server.config import Config


def _env(name: str, default: str) -> str:
    return os.environ.get("LEVERET_" + name, default)


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the broker")
    p.add_argument(
        "--host",
        action="append",
        default=None,
        help="address to listen on; repeat for several (default: 127.0.0.1 and ::1, env LEVERET_HOST, comma-separated)",
    )
    p.add_argument("--amqp-port", type=int, default=int(_env("AMQP_PORT", "5672")), help="AMQP port (5672)")
    p.add_argument("--data-dir", default=_env("DATA_DIR", "./data"), help="data directory (./data)")
    p.add_argument(
        "--http-port",
        type=int,
        default=int(_env("HTTP_PORT", "15672")),
        help="management HTTP port (15672); accepted and ignored until the management door exists",
    )
    for name, port, what in (
        ("publish", 5555, "XSUB for zmq.PUB publishers"),
        ("subscribe", 5556, "XPUB for zmq.SUB subscribers"),
        ("push", 5557, "PULL for zmq.PUSH publishers"),
    ):
        p.add_argument(
            f"--zmq-{name}-port",
            type=int,
            default=int(_env(f"ZMQ_{name.upper()}_PORT", str(port))),
            help=f"ZeroMQ {what} ({port}); accepted and ignored until the event-bus door exists",
        )
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING, ERROR (INFO)")
    p.add_argument("--heartbeat", type=int, default=int(_env("HEARTBEAT", "60")), help="heartbeat proposed (60 s)")


def _config(args: argparse.Namespace) -> Config:
    hosts = args.host or [h.strip() for h in _env("HOST", "127.0.0.1,::1").split(",") if h.strip()]
    return Config(
        hosts=tuple(hosts),
        amqp_port=args.amqp_port,
        data_dir=args.data_dir,
        http_port=args.http_port,
        zmq_publish_port=args.zmq_publish_port,
        zmq_subscribe_port=args.zmq_subscribe_port,
        zmq_push_port=args.zmq_push_port,
        log_level=args.log_level.upper(),
        heartbeat=args.heartbeat,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leveret", description="Leveret: message broker and event bus")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    from leveret.cli import bench

    bench.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        config = _config(args)
        logging.basicConfig(
            level=getattr(logging, config.log_level, logging.INFO),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        os.makedirs(config.data_dir, exist_ok=True)
        from leveret.server.runtime import serve

        try:
            serve(config)
        except KeyboardInterrupt:
            pass
        return 0
    if args.command == "bench":
        return bench.run(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
