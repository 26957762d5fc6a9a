"""``SqliteHistoryLog``: memory history for the embedded store, in ``<data_dir>/history.sqlite3``.

Why this shape:

* **Its own table, beside mem0's.** Existing installs already have mem0's ``history`` table in this
  file (no scope column); ours is ``history_events`` so both coexist and
  :func:`~.history_mem0_import.import_mem0_history` can read the old one in place.
* **Scoped by construction.** ``user_id`` is a column of every row and every statement filters on
  it: another user's events are never returned or erased, whatever ids are asked for.
* **Many processes, one directory.** WAL lets readers run while one process writes; ``busy_timeout``
  queues writers instead of failing; every write is one ``BEGIN IMMEDIATE`` transaction.
  ``synchronous=NORMAL``: a committed append survives the process being killed.
* **Idempotent appends.** Event ids are deterministic (see :mod:`.history_events`) and unique per
  ``(user_id, memory_id)``, so re-appending a batch is ``INSERT OR IGNORE`` of rows that exist.
* **One connection per log**, behind a lock: history calls are few and small; the lock keeps the
  connection to one thread at a time.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tablestore_openmemory_mcp.errors import StoreError
from tablestore_openmemory_mcp.memory.ports import HistoryRecord

from .history_events import COLUMNS, check_user, event_ids, record_from, unique_ids
from .sqlite_wal import use_wal

logger = logging.getLogger(__name__)

DB_FILENAME = "history.sqlite3"
TABLE = "history_events"
_CHUNK = 500  # ids per "IN (...)": well under SQLite's variable limit
_COLS = ", ".join(COLUMNS)
_REQUIRED = frozenset({"event", "at", "source"})
_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
    "seq INTEGER PRIMARY KEY, user_id TEXT NOT NULL, memory_id TEXT NOT NULL, event_id TEXT NOT NULL, "
    + ", ".join(f"{c} TEXT NOT NULL" if c in _REQUIRED else f"{c} TEXT" for c in COLUMNS)
    + ")",
    f"CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_by_memory ON {TABLE} (user_id, memory_id, event_id)",
)
_INSERT = (
    f"INSERT OR IGNORE INTO {TABLE} (user_id, memory_id, event_id, {_COLS}) "
    f"VALUES (?, ?, ?, {', '.join('?' for _ in COLUMNS)})"
)
_SELECT = f"SELECT {_COLS} FROM {TABLE} WHERE user_id = ? AND memory_id = ? ORDER BY event_id, seq"


class SqliteHistoryLog:
    """:class:`~tablestore_openmemory_mcp.memory.ports.HistoryLog` on one SQLite file (see the module docstring)."""

    def __init__(self, data_dir: Path | str, *, busy_timeout_s: float = 30.0, filename: str = DB_FILENAME) -> None:
        directory = Path(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / filename
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            use_wal(self._db, busy_timeout_s, str(self.path))
            self._db.execute("PRAGMA synchronous = NORMAL")
            with self._transaction() as db:
                for statement in _SCHEMA:
                    db.execute(statement)
                have = {row[1] for row in db.execute(f"PRAGMA table_info({TABLE})")}
                for column in COLUMNS:  # a field added to HistoryRecord since this file was created
                    if column not in have:
                        db.execute(f"ALTER TABLE {TABLE} ADD COLUMN {column} TEXT")
        except sqlite3.Error as exc:
            if hasattr(self, "_db"):
                self._db.close()
            raise StoreError(f"cannot open the history database {self.path}: {exc}") from exc

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise RuntimeError("SqliteHistoryLog is closed")
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StoreError(f"history database {self.path} failed: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE takes the write lock up front, so it never deadlocks)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def append(self, user_id: str, records: Sequence[HistoryRecord]) -> None:
        """Record events in one transaction; re-appending the same records adds nothing."""
        user = check_user(user_id)
        ids = event_ids(records)
        if not records:
            return
        rows = [
            (user, r.memory_id, event_id, *(getattr(r, c) for c in COLUMNS))
            for r, event_id in zip(records, ids, strict=True)
        ]
        with self._connection(), self._transaction() as db:
            db.executemany(_INSERT, rows)

    def for_memory(self, user_id: str, memory_id: str) -> list[HistoryRecord]:
        """The user's events for one memory, oldest first; empty for another user's memory."""
        user = check_user(user_id)
        (memory,) = unique_ids([memory_id])
        with self._connection() as db:
            rows = db.execute(_SELECT, (user, memory)).fetchall()
        return [record_from(memory, dict(zip(COLUMNS, row, strict=True))) for row in rows]

    def for_memories(self, user_id: str, memory_ids: Sequence[str]) -> dict[str, list[HistoryRecord]]:
        """The user's events for several memories (export), oldest first each, in one query per 500 ids."""
        user = check_user(user_id)
        wanted = unique_ids(memory_ids)
        out: dict[str, list[HistoryRecord]] = {m: [] for m in wanted}
        with self._connection() as db:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ", ".join("?" for _ in chunk)
                sql = (
                    f"SELECT memory_id, {_COLS} FROM {TABLE} WHERE user_id = ? AND memory_id IN ({marks}) "
                    "ORDER BY memory_id, event_id, seq"
                )
                for memory, *values in db.execute(sql, (user, *chunk)):
                    out[memory].append(record_from(memory, dict(zip(COLUMNS, values, strict=True))))
        return out

    def erase(self, user_id: str, memory_ids: Sequence[str]) -> int:
        """Delete the user's events of these memories; returns how many events were deleted."""
        user = check_user(user_id)
        wanted = unique_ids(memory_ids)
        if not wanted:
            return 0
        erased = 0
        with self._connection(), self._transaction() as db:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ", ".join("?" for _ in chunk)
                cursor = db.execute(f"DELETE FROM {TABLE} WHERE user_id = ? AND memory_id IN ({marks})", (user, *chunk))
                erased += cursor.rowcount
        return erased

    def prune_before(self, cutoff: str) -> int:
        """Delete every event older than ``cutoff`` (ISO 8601); the access log's retention."""
        bound = f"{event_ids([HistoryRecord('x', 'X', None, None, cutoff)])[0][:17]}"
        with self._connection(), self._transaction() as db:
            return db.execute(f"DELETE FROM {TABLE} WHERE event_id < ?", (bound,)).rowcount

    def close(self) -> None:
        """Close the connection; later calls raise ``RuntimeError``. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()


__all__ = ["DB_FILENAME", "TABLE", "SqliteHistoryLog"]
