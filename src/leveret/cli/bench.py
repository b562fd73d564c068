"""``leveret bench``: placeholder replaced below."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub.add_parser("bench", help="AMQP load generator")


def run(args: argparse.Namespace) -> int:
    raise SystemExit("not yet")
