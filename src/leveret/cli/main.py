"""``leveret`` command line: ``serve`` (the broker), ``ctl`` (its HTTP API), ``publish`` and ``consume``
(AMQP from a shell), ``bench`` (the load generator), ``store check``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

from leveret.server.config import Config, build_config


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the broker",
        description="Run the broker. Every option can also be set as LEVERET_<NAME> in the environment "
        "(e.g. LEVERET_AMQP_PORT) or in a TOML file (--config); flags win over the environment, which wins "
        "over the file.",
    )
    p.add_argument("--config", default=os.environ.get("LEVERET_CONFIG"), help="TOML file with settings")
    p.add_argument(
        "--host",
        dest="hosts",
        action="append",
        help="address to listen on, repeat for several (default: 127.0.0.1 and ::1; env LEVERET_HOST, comma-separated)",
    )
    p.add_argument("--amqp-port", type=int, help="AMQP port (5672)")
    p.add_argument("--data-dir", help="data directory (./data)")
    p.add_argument("--http-port", type=int, help="management HTTP port: API, web UI, /metrics (15672; 0 = off)")
    p.add_argument("--stats-interval", type=float, help="seconds between flow-metric samples (5)")
    for name, port, what in (
        ("publish", 5555, "XSUB for zmq.PUB publishers"),
        ("subscribe", 5556, "XPUB for zmq.SUB subscribers"),
        ("push", 5557, "PULL for zmq.PUSH publishers"),
    ):
        p.add_argument(
            f"--zmq-{name}-port",
            type=int,
            help=f"ZeroMQ {what} ({port}; 0 = off)",
        )
    p.add_argument("--zmq-exchange", help="AMQP topic exchange the ZeroMQ door publishes into (leveret.events)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (INFO)")
    p.add_argument("--heartbeat", type=int, help="heartbeat interval the server proposes, seconds (60; 0 = off)")
    p.add_argument("--frame-max", type=int, help="largest frame the server accepts (131072)")
    p.add_argument("--channel-max", type=int, help="most channels per connection (2047)")
    p.add_argument("--max-message-size", type=int, help="largest message body in bytes (16 MiB)")
    _security_arguments(p)
    p.add_argument(
        "--memory-limit",
        type=int,
        help="memory limit in bytes (default 40%% of RAM); above half of it transient messages page out to disk",
    )


def _security_arguments(p: argparse.ArgumentParser) -> None:
    """TLS, limits, alarms (docs/architecture.md, "Security"); booleans default to None so the
    environment and the config file still apply when a flag is absent."""
    p.add_argument("--amqps-port", type=int, help="AMQP over TLS port, opened with --tls-cert and --tls-key (5671)")
    p.add_argument("--tls-cert", help="PEM certificate (chain) of the server")
    p.add_argument("--tls-key", help="PEM private key of the server")
    p.add_argument("--tls-ca", help="PEM CA bundle client certificates are verified against")
    p.add_argument("--https-port", type=int, help="management API and UI over TLS with --tls-cert/--tls-key (0 = off)")
    p.add_argument("--tls-verify-peer", action="store_true", default=None, help="ask clients for a certificate")
    p.add_argument(
        "--tls-fail-if-no-peer-cert",
        action="store_true",
        default=None,
        help="refuse TLS clients without a valid certificate",
    )
    p.add_argument("--max-connections", type=int, help="most open AMQP connections (0 = no limit)")
    p.add_argument("--max-queues-per-vhost", type=int, help="most queues in a vhost without its own limit (0 = none)")
    p.add_argument(
        "--loopback-users", help="users allowed to log in only from loopback addresses, comma-separated (guest)"
    )
    p.add_argument(
        "--memory-high-watermark", type=float, help="memory alarm at this fraction of RAM or cgroup limit (0.4)"
    )
    p.add_argument("--disk-free-limit", type=int, help="disk alarm below this many free bytes (50000000)")


def _store_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("store", help="inspect the data directory offline")
    actions = p.add_subparsers(dest="action", required=True)
    check = actions.add_parser(
        "check",
        help="verify every stored file (framing and CRCs) without changing anything",
        description="Verify the message log segments and the definitions journal of a data directory "
        "without changing anything. Exit status: 0 nothing corrupt (a torn tail is not corruption), "
        "1 corruption found, 2 no such directory.",
    )
    check.add_argument("--data-dir", default=os.environ.get("LEVERET_DATA_DIR", "./data"), help="(./data)")


def _events_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("events", help="run event handlers (leveret.events)")
    actions = p.add_subparsers(dest="action", required=True)
    run = actions.add_parser(
        "run",
        help="run the handlers of an EventBus until SIGINT/SIGTERM",
        description="Import module:bus (an leveret.events.EventBus), run its handlers until SIGINT or "
        "SIGTERM, then stop consuming, let in-flight handlers finish and exit.",
    )
    run.add_argument("bus", help="module:attribute of the EventBus, e.g. myapp.events:bus")
    run.add_argument("--url", help="AMQP URL (default: the URL the bus was created with)")


def _store(args: argparse.Namespace) -> int:
    from leveret.store.check import check_data_dir

    report = check_data_dir(args.data_dir)
    print(report)
    return report.status


def _config(args: argparse.Namespace) -> Config:
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    config = build_config(flags, os.environ, args.config)
    return replace(config, log_level=config.log_level.upper())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leveret", description="Leveret: message broker and event bus")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _store_parser(sub)
    _events_parser(sub)
    from leveret.cli import bench, ctl, messaging

    bench.add_parser(sub)
    ctl.add_parser(sub)
    messaging.add_parsers(sub)
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
            return serve(config)
        except KeyboardInterrupt:
            return 0
    if args.command == "bench":
        return bench.run(args)
    if args.command == "ctl":
        return ctl.run(args)
    if args.command == "publish":
        return messaging.run_publish(args)
    if args.command == "consume":
        return messaging.run_consume(args)
    if args.command == "store":
        return _store(args)
    if args.command == "events":
        from leveret.events.runner import run

        return run(args.bus, args.url)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
