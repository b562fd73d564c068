"""Leveret: a message broker and event bus written in Python.

Layers (arrows point down, nothing imports upward; see docs/architecture.md):
``cli`` -> ``server`` -> ``amqp`` | ``core`` | ``store``.
"""

__version__ = "0.1.0"
