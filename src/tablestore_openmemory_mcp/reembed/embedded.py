"""Re-embedding the embedded store (``memories.sqlite3``) without stopping a server that uses it.

New vectors go to a side table ``<collection>__reembed`` (rowid, hash of the text it embedded, vector),
committed a batch at a time: the side table is the progress marker, so an interrupted run continues and
a text changed meanwhile (a server on the old embedder keeps writing) is embedded again. The switch is
one IMMEDIATE transaction that checks every row has a fresh new vector, copies them over, sets the
collection's dimension and bumps its generation (every cache reloads); ``__reembed`` records the
switch in the same transaction, so ``embedder.json`` is written even if the run dies right after it.
A server still on the old embedder then refuses to write (its dimension no longer matches) until restarted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from tablestore_openmemory_mcp.embedders.guard import MARKER
from tablestore_openmemory_mcp.reembed.summary import ReembedSummary
from tablestore_openmemory_mcp.stores.embedded.maintenance import DB_FILENAME, META, Names, unit_vectors
from tablestore_openmemory_mcp.stores.row_format import text_of

logger = logging.getLogger(__name__)

STATE = "__reembed"  # (collection, embedder, dims, state): the run in progress or just switched
_BATCH = 256
_SWITCH_ROUNDS = 3  # catch-up rounds before the last one embeds while holding the write lock

Progress = Callable[[int, int | None], None]


class Embedder(Protocol):
    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]: ...


def _text(payload_json: str) -> str:
    payload = json.loads(payload_json)
    return (text_of(payload) if isinstance(payload, dict) else None) or ""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def recorded_embedder(data_dir: Path) -> tuple[str | None, int | None]:
    """(name, dimension) from ``embedder.json``; (None, None) when there is none."""
    try:
        got = json.loads((data_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    dim = got.get("dimension")
    return str(got.get("embedder")), dim if isinstance(dim, int) else None


def write_marker(data_dir: Path, name: str, dimension: int) -> None:
    """Record the store's embedder in ``embedder.json`` (atomic replace)."""
    marker = data_dir / MARKER
    tmp = marker.with_name(f".{MARKER}.{os.getpid()}")
    tmp.write_text(json.dumps({"embedder": name, "dimension": dimension}) + "\n", encoding="utf-8")
    os.replace(tmp, marker)


class EmbeddedReembed:
    """Rebuild every vector of one collection with ``embedder`` (``name``, ``dimension``)."""

    def __init__(
        self,
        data_dir: Path,
        embedder: Embedder,
        name: str,
        dimension: int,
        collection: str = "memories",
        batch: int = _BATCH,
    ) -> None:
        self.data_dir, self.embedder, self.name, self.dimension = data_dir, embedder, name, dimension
        self.n = Names(collection)
        self.side = f'"{collection}__reembed"'
        self.batch = max(1, batch)
        self.label = f"embedded({data_dir / DB_FILENAME})"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.data_dir / DB_FILENAME), timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    def run(self, dry_run: bool = False, progress: Progress | None = None) -> ReembedSummary:
        summary = ReembedSummary(self.label, self.name, self.dimension)
        if not (self.data_dir / DB_FILENAME).exists():
            summary.state = "empty"
            if not dry_run:
                write_marker(self.data_dir, self.name, self.dimension)
            return summary
        conn = self._connect()
        try:
            return self._run(conn, summary, dry_run, progress)
        finally:
            conn.close()

    def _run(
        self, conn: sqlite3.Connection, summary: ReembedSummary, dry_run: bool, progress: Progress | None
    ) -> ReembedSummary:
        dims = conn.execute(f"SELECT dims FROM {META} WHERE name = ?", (self.n.name,)).fetchone()
        summary.total = int(conn.execute(f"SELECT COUNT(*) FROM {self.n.table}").fetchone()[0]) if dims else 0
        state = self._state(conn)
        if state is not None and state[:3] == (self.name, self.dimension, "switched"):  # died before the marker
            summary.state = "already"
            if not dry_run:
                write_marker(self.data_dir, self.name, self.dimension)
                self._forget(conn)
            return summary
        recorded = recorded_embedder(self.data_dir)
        if dims is None or (recorded == (self.name, self.dimension) and int(dims[0]) == self.dimension):
            summary.state = "already" if dims is not None else "empty"
            if not dry_run and recorded != (self.name, self.dimension):
                write_marker(self.data_dir, self.name, self.dimension)
            return summary
        if dry_run:
            summary.state = "dry-run"
            summary.reused = (
                self._fresh_count(conn) if state is not None and state[:2] == (self.name, self.dimension) else 0
            )
            return summary
        self._begin(conn, state)
        self._backfill(conn, summary, progress)
        self._switch(conn, summary)
        write_marker(self.data_dir, self.name, self.dimension)
        self._forget(conn)
        return summary

    # -- progress marker ------------------------------------------------------------------------
    def _state(self, conn: sqlite3.Connection) -> tuple[str, int, str] | None:
        try:
            row = conn.execute(f"SELECT embedder, dims, state FROM {STATE} WHERE name = ?", (self.n.name,)).fetchone()
        except sqlite3.OperationalError:  # no run ever started here
            return None
        return (str(row[0]), int(row[1]), str(row[2])) if row else None

    def _begin(self, conn: sqlite3.Connection, state: tuple[str, int, str] | None) -> None:
        """Start (or continue) a run for this embedder; a run for another embedder is thrown away."""
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {STATE} (name TEXT PRIMARY KEY, embedder TEXT NOT NULL, "
            "dims INTEGER NOT NULL, state TEXT NOT NULL)"
        )
        if state is not None and state[:2] != (self.name, self.dimension):
            logger.info("discarding an unfinished re-embedding with %s (%d)", state[0], state[1])
            conn.execute(f"DROP TABLE IF EXISTS {self.side}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.side} (rid INTEGER PRIMARY KEY, digest TEXT NOT NULL, "
            "vector BLOB NOT NULL)"
        )
        conn.execute(
            f"INSERT INTO {STATE} (name, embedder, dims, state) VALUES (?, ?, ?, 'building') "
            "ON CONFLICT(name) DO UPDATE SET embedder = excluded.embedder, dims = excluded.dims, state = 'building'",
            (self.n.name, self.name, self.dimension),
        )

    def _forget(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"DELETE FROM {STATE} WHERE name = ?", (self.n.name,))

    def _fresh_count(self, conn: sqlite3.Connection) -> int:
        try:
            rows = conn.execute(
                f"SELECT t.payload, s.digest FROM {self.n.table} t JOIN {self.side} s ON s.rid = t.rid"
            ).fetchall()
        except sqlite3.OperationalError:  # no side table yet
            return 0
        return sum(1 for payload, digest in rows if _digest(_text(payload)) == digest)

    # -- backfill -------------------------------------------------------------------------------
    def _stale(self, conn: sqlite3.Connection, after: int, limit: int | None) -> tuple[list[tuple[int, str]], int, int]:
        """Rows after rowid ``after`` lacking a fresh new vector: ([(rid, text)], rows seen, last rid)."""
        sql = (
            f"SELECT t.rid, t.payload, s.digest FROM {self.n.table} t LEFT JOIN {self.side} s ON s.rid = t.rid "
            "WHERE t.rid > ? ORDER BY t.rid"
        )
        params: tuple[int, ...] = (after,)
        if limit is not None:
            sql += " LIMIT ?"
            params = (after, limit)
        stale: list[tuple[int, str]] = []
        seen, last = 0, after
        for rid, payload, digest in conn.execute(sql, params):
            seen, last = seen + 1, int(rid)
            text = _text(payload)
            if digest != _digest(text):
                stale.append((int(rid), text))
        return stale, seen, last

    def _embed(self, conn: sqlite3.Connection, stale: Sequence[tuple[int, str]]) -> None:
        if not stale:
            return
        vectors = self.embedder.embed_batch([text for _, text in stale], "add")
        mat = unit_vectors(vectors, self.dimension)
        rows = [(rid, _digest(text), vec.tobytes()) for (rid, text), vec in zip(stale, mat, strict=True)]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(f"INSERT OR REPLACE INTO {self.side} (rid, digest, vector) VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _backfill(self, conn: sqlite3.Connection, summary: ReembedSummary, progress: Progress | None) -> None:
        after, done = 0, 0
        while True:
            stale, seen, after = self._stale(conn, after, self.batch)
            if not seen:
                return
            self._embed(conn, stale)
            summary.embedded += len(stale)
            summary.reused += seen - len(stale)
            done += seen
            if progress is not None:
                progress(done, summary.total)

    # -- switch ---------------------------------------------------------------------------------
    def _switch(self, conn: sqlite3.Connection, summary: ReembedSummary) -> None:
        """Copy the new vectors over in one transaction, once every row has a fresh one."""
        for attempt in range(_SWITCH_ROUNDS + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                stale, _, _ = self._stale(conn, 0, None)
                if stale and attempt < _SWITCH_ROUNDS:
                    conn.execute("ROLLBACK")  # written meanwhile by a running server: embed, then try again
                    self._embed(conn, stale)
                    summary.embedded += len(stale)
                    continue
                if stale:  # the last round embeds under the lock, so writers cannot outrun it
                    mat = unit_vectors(self.embedder.embed_batch([t for _, t in stale], "add"), self.dimension)
                    conn.executemany(
                        f"INSERT OR REPLACE INTO {self.side} (rid, digest, vector) VALUES (?, ?, ?)",
                        [(rid, _digest(t), v.tobytes()) for (rid, t), v in zip(stale, mat, strict=True)],
                    )
                    summary.embedded += len(stale)
                self._apply(conn)
                conn.execute("COMMIT")
                return
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _apply(self, conn: sqlite3.Connection) -> None:
        n = self.n
        conn.execute(f"UPDATE {n.table} SET vector = (SELECT s.vector FROM {self.side} s WHERE s.rid = {n.table}.rid)")
        # no change-log entry for this generation: every process's cache reloads instead of replaying
        conn.execute(
            f"UPDATE {META} SET dims = ?, generation = generation + 1 WHERE name = ?", (self.dimension, n.name)
        )
        conn.execute(f"UPDATE {STATE} SET state = 'switched' WHERE name = ?", (n.name,))
        conn.execute(f"DROP TABLE {self.side}")


def reembed_embedded(data_dir: Path, embedder: Any, dimension: int, **kwargs: Any) -> EmbeddedReembed:
    """The re-embedding of the store in ``data_dir`` with ``embedder`` (its ``name`` is recorded)."""
    name = str(getattr(embedder, "name", type(embedder).__name__))
    return EmbeddedReembed(data_dir, embedder, name, dimension, **kwargs)
