"""The ``leveret`` command line."""
