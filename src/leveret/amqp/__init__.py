"""Sans-I/O AMQP 0-9-1: codec, frames, connection and channel state machines (stdlib only)."""
