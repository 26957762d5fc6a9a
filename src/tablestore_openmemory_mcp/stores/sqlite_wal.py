"""Switching a SQLite file to WAL, also when several processes open a new file at the same moment.

Why: ``PRAGMA journal_mode = WAL`` on a file that another connection is creating or converting can
answer "database is locked" at once, without waiting in SQLite's busy handler. Two processes starting
on a fresh data directory (two servers, or a server and a maintenance command) then failed to open it;
seen when two processes opened one new history file together. The switch is retried until the busy
timeout, like any other locked write.
"""

from __future__ import annotations

import logging
import sqlite3
import time

logger = logging.getLogger(__name__)


def use_wal(conn: sqlite3.Connection, busy_timeout_s: float, path: str) -> None:
    """Put ``conn``'s database in WAL mode (readers beside one writer); warn when the filesystem refuses."""
    deadline = time.monotonic() + busy_timeout_s
    pause = 0.005
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(pause)  # back-off while the other process finishes its switch
            pause = min(2 * pause, 0.1)
    if str(mode).lower() != "wal":
        logger.warning("SQLite WAL mode unavailable for %s (got %s); concurrency will suffer", path, mode)
