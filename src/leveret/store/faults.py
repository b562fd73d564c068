"""Fault-injection hook for the power-loss tests: a record of what each fsync made durable.

When the environment variable ``LEVERET_FAULT_SYNC_LOG`` names a file (read once, at import),
every successful ``fsync`` of a data file (message segments, definitions journal) appends one line
to it::

    <path> <size> <inode>

``size`` is the file's size taken *before* the fsync started: every byte below it was written
before the fsync and is therefore on disk once it returns (bytes written by another thread while
it runs may or may not be). ``inode`` lets the test follow a file across a rename (the journal's
compaction fsyncs ``journal.log.tmp`` and then renames it). A test that kills the broker can then
cut each file back to its last fsynced size (plus a torn prefix of the rest), which is what a
power cut leaves, since ``kill -9`` alone lets the kernel write the page cache out.

With ``LEVERET_FAULT_FAIL_FSYNC_AFTER=N`` every fsync after the first N fails with EIO, to test that
the broker confirms nothing a failed fsync covered and stops.

When neither variable is set, ``fsync`` *is* ``os.fsync``: the hook costs nothing.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

SYNC_LOG_ENV = "LEVERET_FAULT_SYNC_LOG"
FAIL_AFTER_ENV = "LEVERET_FAULT_FAIL_FSYNC_AFTER"


def _recording_fsync(log_path: str) -> Callable[[int], None]:
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def fsync(fd: int) -> None:
        st = os.fstat(fd)  # before the fsync: only bytes already written are covered by it
        os.fsync(fd)
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = f"fd:{fd}"
        # One O_APPEND write per line: lines from the loop and the fsync thread never interleave.
        os.write(log_fd, f"{path} {st.st_size} {st.st_ino}\n".encode("utf-8", "surrogateescape"))

    return fsync


def _failing_fsync(after: int, inner: Callable[[int], None]) -> Callable[[int], None]:
    """Fail every fsync after the first ``after`` ones with EIO (a dying disk)."""
    done = [0]

    def fsync(fd: int) -> None:
        if done[0] >= after:
            raise OSError(errno.EIO, "injected fsync failure (LEVERET_FAULT_FAIL_FSYNC_AFTER)")
        done[0] += 1
        inner(fd)

    return fsync


def _fsync_helper() -> Callable[[int], None]:
    log_path = os.environ.get(SYNC_LOG_ENV)
    helper = _recording_fsync(log_path) if log_path else os.fsync
    fail_after = os.environ.get(FAIL_AFTER_ENV)
    return _failing_fsync(int(fail_after), helper) if fail_after else helper


fsync: Callable[[int], None] = _fsync_helper()
"""``os.fsync(fd)``, and, under ``LEVERET_FAULT_SYNC_LOG``, a line saying what it made durable."""
