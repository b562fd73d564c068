"""Durability: the message log, the definitions journal, recovery and the offline checker."""
