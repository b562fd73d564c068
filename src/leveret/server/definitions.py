"""Boot and run-time wiring of the definitions journal (``store.journal``) into the broker.

Boot: open ``<data-dir>/defs/journal.log`` (a torn tail is truncated, a damaged journal quarantined),
replay its commands into the broker, compact if the journal has grown well past the live definitions,
then record every durable definition change from then on. What was restored, and how long it took, is
logged. A failed journal write or fsync stops the broker (``on_fatal``): the client that asked for the
change gets a connection error (541), never an OK for a change that is not on disk.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from leveret.core.broker import Broker
from leveret.core.errors import BrokerError, ErrorKind
from leveret.core.ports import NullDefinitionsLog
from leveret.store.journal import DefinitionsJournal, JournalError

log = logging.getLogger("leveret")

DEFS_DIR = "defs"


class JournalLog:
    """The broker's ``DefinitionsLog``: records into the journal; a failure is fatal."""

    def __init__(self, journal: DefinitionsJournal, on_fatal: Callable[[BaseException], None]) -> None:
        self.journal = journal
        self._on_fatal = on_fatal

    def record(self, command: Mapping[str, Any]) -> None:
        try:
            self.journal.record(command)
        except (OSError, JournalError) as exc:
            log.critical("definitions journal write failed, stopping: %r", exc)
            self._on_fatal(exc)
            raise BrokerError(ErrorKind.INTERNAL, "definitions journal write failed") from exc


def restore_definitions(
    broker: Broker, data_dir: str, on_fatal: Callable[[BaseException], None], compact_after: int = 1000
) -> DefinitionsJournal:
    """Replay the journal into ``broker`` and make it record from now on."""
    started = time.monotonic()
    journal = DefinitionsJournal(os.path.join(data_dir, DEFS_DIR), compact_after)
    commands = journal.open()
    report = journal.report
    if report.damage or report.quarantined:
        log.error("definitions journal damaged: %s", report.summary())
    elif report.truncated_bytes or report.removed_tmp:
        log.warning("definitions journal recovered: %s", report.summary())
    result = broker.replay_definitions(commands)
    for command, reason in result.failures:
        log.error("definitions journal: could not replay %s: %s", command, reason)
    journal.attach(broker.definitions)
    compacted = journal.maybe_compact()
    broker.use_definitions_log(JournalLog(journal, on_fatal))
    log.info(
        "definitions: %d exchanges, %d queues, %d bindings restored from %d journal records in %.3f s%s",
        result.exchanges,
        result.queues,
        result.bindings,
        len(commands),
        time.monotonic() - started,
        " (compacted)" if compacted else "",
    )
    return journal


def stop_recording(broker: Broker, journal: DefinitionsJournal | None) -> None:
    """Clean stop, once the connections' sessions have closed: what their closing deleted is recorded
    first. That is RabbitMQ 3.10's behaviour (checked): a clean stop deletes a durable auto-delete
    queue that has consumers (they go with their connections), a kill -9 leaves it."""
    broker.use_definitions_log(NullDefinitionsLog())
    if journal is not None:
        journal.close()
