"""Durability (message log, definitions journal, recovery): arrives with the storage issue."""
