"""Broker semantics: vhosts, exchanges, queues, consumers. Synchronous and protocol-free."""
