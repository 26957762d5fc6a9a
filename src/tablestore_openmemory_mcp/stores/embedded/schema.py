"""Tables of one collection in ``memories.sqlite3``, created or migrated in place at open.

One collection ``<name>`` is:

* ``<name>``: one row per memory (``rid`` rowid, ``id``, identity columns ``user_id`` and ``agent_id``,
  float32 ``vector``, JSON ``payload``, ``created_at``, ``dedup_key``, ``state`` copied from the payload;
  and an unused, never written ``run_id`` column, kept only so that 2.0.0, which selects it, can still open a
  file made by this version after a rollback). Composite indexes
  ``(user_id, agent_id, created_at, id, state)`` and ``(user_id, created_at, id, state)`` serve every
  scoped read, count and keyset page; a UNIQUE index on
  ``(user_id, dedup_key)`` makes exact-duplicate detection atomic across processes.
* ``event_at`` (the memory's event time, else ``created_at``) with indexes ``(user_id, [agent_id,]
  event_at, state)``, and ``<name>__terms(term, rid)``: ``category=<c>`` / ``tag=<key>=<value>`` terms
  (:mod:`.narrowing`), so a search or list narrowed by time, category or tags reads only matching rows.
* ``<name>__fts``: FTS5 over pre-tokenised text (for matching) and hashed scope terms.
* ``<name>__df`` / ``<name>__dl``: per-scope keyword statistics (document frequency per term; documents
  and total tokens per scope), so BM25 never uses another scope's rows.
* ``<name>__log``: ``(generation, rid)`` of recent writes, so another process's cache catches up
  incrementally instead of reloading.

``__collections`` holds each collection's vector size and write ``generation``; ``__schema`` the
schema version. A file from the previous release (no dedup column, single-column indexes, no
statistics) is migrated idempotently in one transaction; concurrent openers serialise on it. If a
previous release wrote to the file since (its rows are not counted), the statistics are rebuilt at open.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
from collections.abc import Mapping
from typing import Any

from tablestore_openmemory_mcp.memory.clock import now_iso

from .keywords import StatsDelta, doc_terms, stats_keys
from .narrowing import event_at, row_terms

logger = logging.getLogger(__name__)

META = "__collections"
SCHEMA = "__schema"
VERSION = 3  # 3: event_at column + term table (narrowing pushed into SQL)


class Names:
    """Quoted SQL names of one collection's tables and indexes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.table = f'"{name}"'
        self.fts = f'"{name}__fts"'
        self.df = f'"{name}__df"'
        self.dl = f'"{name}__dl"'
        self.log = f'"{name}__log"'
        self.terms = f'"{name}__terms"'


def create_or_migrate(conn: sqlite3.Connection, names: Names, dims: int, where: str) -> None:
    """Create the collection, or bring an older one up to :data:`VERSION`; one IMMEDIATE transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        _create(conn, names, dims, where)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _create(conn: sqlite3.Connection, n: Names, dims: int, where: str) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {META} (name TEXT PRIMARY KEY, dims INTEGER NOT NULL, "
        "generation INTEGER NOT NULL, created_at TEXT NOT NULL, rows INTEGER NOT NULL DEFAULT 0)"
    )
    conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA} (name TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    row = conn.execute(f"SELECT dims FROM {META} WHERE name = ?", (n.name,)).fetchone()
    if row is not None and row[0] != dims:
        raise ValueError(
            f"collection {n.name!r} in {where} holds {row[0]}-dimensional vectors but the embedder produces "
            f"{dims}; run `tablestore-openmemory-mcp reembed` to rebuild its vectors with the new embedder, or use "
            "the embedder it was made with, or another data directory (MEMORY_DATA_DIR)"
        )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {n.table} (rid INTEGER PRIMARY KEY AUTOINCREMENT, "
        "id TEXT NOT NULL UNIQUE, user_id TEXT, agent_id TEXT, run_id TEXT, "
        "vector BLOB NOT NULL, payload TEXT NOT NULL, created_at TEXT NOT NULL, dedup_key TEXT, state TEXT)"
    )
    columns = {r[1] for r in conn.execute(f"PRAGMA table_info({n.table})")}
    if "dedup_key" not in columns:  # a file from the previous release
        conn.execute(f"ALTER TABLE {n.table} ADD COLUMN dedup_key TEXT")
    if "state" not in columns:
        conn.execute(f"ALTER TABLE {n.table} ADD COLUMN state TEXT")
        _backfill_state(conn, n)
    if "event_at" not in columns:
        conn.execute(f"ALTER TABLE {n.table} ADD COLUMN event_at TEXT")
    # the first schema's single-column indexes (the planner picked them badly); a file's run_id column stays
    for key in ("user_id", "agent_id", "run_id"):
        conn.execute(f'DROP INDEX IF EXISTS "{n.name}__{key}"')
    # state trails: lists and counts filter on it from the index, in (created_at, id) order
    conn.execute(
        f'CREATE INDEX IF NOT EXISTS "{n.name}__scope_ua" ON {n.table} (user_id, agent_id, created_at, id, state)'
    )
    conn.execute(f'CREATE INDEX IF NOT EXISTS "{n.name}__scope_u" ON {n.table} (user_id, created_at, id, state)')
    conn.execute(
        f'CREATE UNIQUE INDEX IF NOT EXISTS "{n.name}__dedup" ON {n.table} (user_id, dedup_key) '
        "WHERE dedup_key IS NOT NULL"
    )
    conn.execute(f'CREATE INDEX IF NOT EXISTS "{n.name}__event_ua" ON {n.table} (user_id, agent_id, event_at, state)')
    conn.execute(f'CREATE INDEX IF NOT EXISTS "{n.name}__event_u" ON {n.table} (user_id, event_at, state)')
    # rows no event_at was written for (before this version, or by an older release since): backfilled below
    conn.execute(f'CREATE INDEX IF NOT EXISTS "{n.name}__unnarrowed" ON {n.table} (rid) WHERE event_at IS NULL')
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {n.terms} (term TEXT NOT NULL, rid INTEGER NOT NULL, "
        "PRIMARY KEY (term, rid)) WITHOUT ROWID"
    )
    conn.execute(f'CREATE INDEX IF NOT EXISTS "{n.name}__terms_rid" ON {n.terms} (rid)')
    backfill_narrowing(conn, n)
    conn.execute(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {n.fts} USING fts5(text, scope, "
        "tokenize = 'unicode61 remove_diacritics 0')"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {n.df} (scope TEXT NOT NULL, term TEXT NOT NULL, df INTEGER NOT NULL, "
        "PRIMARY KEY (scope, term)) WITHOUT ROWID"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {n.dl} (scope TEXT PRIMARY KEY, docs INTEGER NOT NULL, "
        "tokens INTEGER NOT NULL) WITHOUT ROWID"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {n.log} (gen INTEGER NOT NULL, rid INTEGER NOT NULL, "
        "PRIMARY KEY (gen, rid)) WITHOUT ROWID"
    )
    # A random start keeps a dropped-and-recreated collection from reusing old generations.
    conn.execute(
        f"INSERT OR IGNORE INTO {META} (name, dims, generation, created_at) VALUES (?, ?, ?, ?)",
        (n.name, dims, secrets.randbits(62), now_iso()),
    )
    version = conn.execute(f"SELECT version FROM {SCHEMA} WHERE name = ?", (n.name,)).fetchone()
    if version is None or version[0] < VERSION or not _stats_agree(conn, n):
        rebuild_stats(conn, n)
        conn.execute(
            f"INSERT INTO {SCHEMA} (name, version) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET version = ?",
            (n.name, VERSION, VERSION),
        )


def _stats_agree(conn: sqlite3.Connection, n: Names) -> bool:
    """Whether the statistics count every row (a previous release writing to this file does not)."""
    counted = conn.execute(
        f"SELECT COALESCE(SUM(docs), 0) FROM {n.dl} WHERE scope >= ? AND scope < ?", ("u\x1f", "u\x20")
    )
    rows = conn.execute(f"SELECT COUNT(*) FROM {n.table} WHERE user_id IS NOT NULL")
    return int(counted.fetchone()[0]) == int(rows.fetchone()[0])


def _backfill_state(conn: sqlite3.Connection, n: Names) -> None:
    """Copy each payload's ``state`` (when a string) into the ``state`` column."""
    updates = []
    for rid, payload in conn.execute(f"SELECT rid, payload FROM {n.table}"):
        if '"state"' in payload and isinstance(state := json.loads(payload).get("state"), str):
            updates.append((state, rid))
    conn.executemany(f"UPDATE {n.table} SET state = ? WHERE rid = ?", updates)


def write_narrowing(conn: sqlite3.Connection, n: Names, rid: int, payload: Mapping[str, Any], created_at: str) -> None:
    """Set one row's ``event_at`` and replace its terms (backfill; inside its transaction)."""
    conn.execute(f"UPDATE {n.table} SET event_at = ? WHERE rid = ?", (event_at(payload, created_at), rid))
    write_terms(conn, n, rid, payload)


def write_terms(conn: sqlite3.Connection, n: Names, rid: int, payload: Mapping[str, Any], fresh: bool = False) -> None:
    """Replace one row's terms (every write of a payload; ``fresh``: a new rowid, nothing to replace)."""
    if not fresh:
        conn.execute(f"DELETE FROM {n.terms} WHERE rid = ?", (rid,))
    terms = row_terms(payload)
    if terms:
        conn.executemany(f"INSERT OR IGNORE INTO {n.terms} (term, rid) VALUES (?, ?)", [(t, rid) for t in terms])


def backfill_narrowing(conn: sqlite3.Connection, n: Names) -> None:
    """``event_at`` and terms for the rows without them (idempotent: the partial index lists exactly those)."""
    todo = conn.execute(f"SELECT rid, payload, created_at FROM {n.table} WHERE event_at IS NULL").fetchall()
    for rid, payload, created_at in todo:
        parsed = json.loads(payload)
        write_narrowing(conn, n, int(rid), parsed if isinstance(parsed, dict) else {}, str(created_at))
    if todo:
        logger.info("indexed event times, categories and tags of %d memories in %s", len(todo), n.name)


def rebuild_stats(conn: sqlite3.Connection, n: Names) -> None:
    """Recompute every scope's keyword statistics from the rows (migration; inside a transaction)."""
    conn.execute(f"DELETE FROM {n.df}")
    conn.execute(f"DELETE FROM {n.dl}")
    delta = StatsDelta()
    rows = 0
    sql = f"SELECT t.user_id, t.agent_id, f.text FROM {n.table} t JOIN {n.fts} f ON f.rowid = t.rid"
    for user_id, agent_id, text in conn.execute(sql):
        delta.add(stats_keys(user_id, agent_id), doc_terms(text), +1)
        rows += 1
    delta.flush(conn, n.df, n.dl)
    total = conn.execute(f"SELECT COUNT(*) FROM {n.table}").fetchone()[0]
    conn.execute(f"UPDATE {META} SET rows = ? WHERE name = ?", (total, n.name))
    if rows:
        logger.info("built per-scope keyword statistics for %d memories in %s", rows, n.name)


__all__ = [
    "META",
    "Names",
    "backfill_narrowing",
    "create_or_migrate",
    "rebuild_stats",
    "write_narrowing",
    "write_terms",
]
