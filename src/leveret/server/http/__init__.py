"""The HTTP door: RabbitMQ-compatible management API, Prometheus metrics and the web UI."""

from .door import HttpDoor

__all__ = ["HttpDoor"]
