"""Read mem0's ``history`` table (its SQLite history.db) as :class:`HistoryRecord` s, for migration.

mem0's table has no user column, so this yields ``(memory_id, record)`` and the caller maps each
memory to its owner before appending to a :class:`~..memory.ports.HistoryLog`.

How mem0's rows are mapped, and why:

* **Order is insertion order** (SQLite ``rowid``), not mem0's ``ORDER BY created_at``: mem0 stores
  a memory's *creation* time as ``created_at`` of UPDATE and DELETE rows too, and older versions wrote
  DELETE rows with no times at all, so its own order can put a DELETE first.
* **Event time** (``at``): ``updated_at`` for UPDATE/DELETE, else ``created_at``, else the other one,
  normalised to UTC ISO 8601. A row with no usable time, or one earlier than the row before it,
  gets the previous event's time + 1 µs, so each memory's events stay strictly increasing and sort
  the same way in every store.
* ``source="migration"``; ``actor_id``/``role`` have no field of their own and are dropped; events are
  upper-cased (mem0 writes ADD/UPDATE/DELETE).

The file is opened read-only and mem0 is not imported. Rows are streamed one memory at a time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tablestore_openmemory_mcp.memory.ports import HistoryLog, HistoryRecord

#: Records per append: one BatchWriteRow on Tablestore.
BATCH = 200
_MAX_HELD = 10 * BATCH
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STEP = timedelta(microseconds=1)
_QUERY = (
    "SELECT memory_id, old_memory, new_memory, event, created_at, updated_at FROM history "
    "WHERE memory_id IS NOT NULL AND memory_id != '' ORDER BY memory_id, rowid"
)


def _parse(value: object) -> datetime | None:
    """A mem0 timestamp (ISO 8601 with or without offset; naive = UTC) as aware UTC, else None."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _event_time(event: str, created_at: object, updated_at: object) -> datetime | None:
    first, second = (updated_at, created_at) if event in ("UPDATE", "DELETE") else (created_at, updated_at)
    return _parse(first) or _parse(second)


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def import_mem0_history(db_path: Path) -> Iterator[tuple[str, HistoryRecord]]:
    """Yield ``(memory_id, record)`` for every row of mem0's history table, each memory's oldest first.

    A file without a ``history`` table yields nothing; a missing file raises ``FileNotFoundError``
    (a wrong path should not look like "no history").
    """
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"no mem0 history database at {path}")
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'history'").fetchone()
        if found is None:
            return
        current: str | None = None
        previous = _EPOCH - _STEP
        for memory_id, old, new, event, created_at, updated_at in db.execute(_QUERY):
            memory = str(memory_id)
            if memory != current:
                current, previous = memory, _EPOCH - _STEP
            name = (_text(event) or "UNKNOWN").strip().upper() or "UNKNOWN"
            at = _event_time(name, created_at, updated_at)
            if at is None or at <= previous:
                at = previous + _STEP
            previous = at
            record = HistoryRecord(
                memory_id=memory,
                event=name,
                old_memory=_text(old),
                new_memory=_text(new),
                at=at.isoformat(),
                source="migration",
            )
            yield memory, record
    finally:
        db.close()


def migrate_mem0_history(db_path: Path, owner_of: Callable[[str], str | None], log: HistoryLog) -> tuple[int, int]:
    """Copy mem0's history into ``log``; returns (records copied, records skipped for want of an owner).

    ``owner_of(memory_id)`` names the memory's user, or None when unknown (mem0 kept no owner for a
    deleted memory, so its history cannot be scoped and is skipped). Safe to run again: event ids are
    deterministic, so a second run rewrites the same rows.
    """
    pending: dict[str, list[HistoryRecord]] = {}
    held = copied = skipped = 0
    current: tuple[str, str | None] | None = None

    def flush(user: str) -> int:
        batch = pending.pop(user, [])
        if batch:
            log.append(user, batch)
        return len(batch)

    for memory_id, record in import_mem0_history(db_path):
        if current is None or current[0] != memory_id:  # rows come grouped by memory
            current = (memory_id, owner_of(memory_id))
        user = current[1]
        if not user:
            skipped += 1
            continue
        pending.setdefault(user, []).append(record)
        held += 1
        if len(pending[user]) >= BATCH:
            n = flush(user)
            copied, held = copied + n, held - n
        if held >= _MAX_HELD:  # many users with short histories: bound memory use
            for name in list(pending):
                copied += flush(name)
            held = 0
    for name in list(pending):
        copied += flush(name)
    return copied, skipped


__all__ = ["import_mem0_history", "migrate_mem0_history"]
