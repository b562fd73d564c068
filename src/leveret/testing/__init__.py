"""``leveret.testing``: a real Leveret broker for your test suite, without Docker.

Installed with Leveret, the pytest plugin (:mod:`leveret.testing.plugin`) is registered by entry point and
gives tests the ``leveret_broker``, ``leveret_url`` and ``leveret_prefix`` fixtures. :class:`LeveretBroker`
is the same broker for use outside pytest.
"""

from __future__ import annotations

from .broker import LeveretBroker

__all__ = ["LeveretBroker"]
