"""The pytest plugin (entry point ``pytest11``: ``leveret``): a real Leveret broker for your tests.

Fixtures:

- ``leveret_broker`` (session): one broker per test session (per xdist worker), started on first use
  on 127.0.0.1 on a port of its own, its data in a session temporary directory, stopped cleanly at
  the end; ``.url``, ``.host``, ``.port``, ``.data_dir``, ``.startup_seconds``.
- ``leveret_prefix`` (per test): a name prefix unique to the test (``<test name>.<random>.``).
- ``leveret_url`` (per test): the AMQP URL to give pika, aio-pika or kombu.

Isolation, honestly: every test talks to the same broker and the same vhost (``/``); Leveret cannot
create vhosts at run time yet. Tests stay apart by naming what they declare with ``leveret_prefix``:
after each test that used the prefix, every queue and exchange whose name starts with it is deleted.
What a test declares under other names (including server-named ``amq.gen-*`` queues that are not
exclusive) outlives it, and publishing to a shared exchange such as ``amq.topic`` reaches every
queue bound to it, whichever test bound it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from .broker import LeveretBroker


@pytest.fixture(scope="session")
def leveret_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeveretBroker]:
    """A real Leveret broker, started once per test session."""
    broker = LeveretBroker.start(tmp_path_factory.mktemp("leveret"))
    yield broker
    broker.stop()


@pytest.fixture
def leveret_prefix(request: pytest.FixtureRequest, leveret_broker: LeveretBroker) -> Iterator[str]:
    """A name prefix unique to this test; queues and exchanges named with it are deleted afterwards."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:40].strip("-")
    prefix = f"{name}.{os.urandom(4).hex()}."
    yield prefix
    leveret_broker.cleanup(prefix)


@pytest.fixture
def leveret_url(leveret_broker: LeveretBroker, leveret_prefix: str) -> str:
    """The broker's AMQP URL (``amqp://guest:guest@127.0.0.1:<port>/``); name things with ``leveret_prefix``."""
    return leveret_broker.url
