"""``leveret events run module:bus``: run a bus's handlers like a worker until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys

from .bus import EventBus

log = logging.getLogger(__name__)


def load_bus(spec: str) -> EventBus:
    """Import ``module:attribute`` (the current directory first on the path) and check it is a bus."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    bus = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(bus, EventBus):
        raise TypeError(f"{spec} is a {type(bus).__name__}, not an EventBus")
    return bus


async def run_bus(bus: EventBus) -> None:
    """Connect, handle events until SIGINT/SIGTERM, then close gracefully (in-flight handlers finish)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await bus.connect()
    groups = ", ".join(f"{s.group} ({s.pattern})" for s in bus.specs) or "none"
    log.info("leveret events: ready on exchange %s, groups: %s", bus.exchange_name, groups)
    try:
        await stop.wait()
    finally:
        log.info("leveret events: stopping")
        await bus.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("leveret events: stopped; metrics %s", bus.metrics)


def run(spec: str, url: str | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        bus = load_bus(spec)
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        print(f"leveret events run: {exc}", file=sys.stderr)
        return 2
    if url:
        bus.url = url
    asyncio.run(run_bus(bus))
    return 0
