"""Fault tests (RELIABILITY.md, "Fault scenarios"): kill -9 storms, power loss, restart model."""
