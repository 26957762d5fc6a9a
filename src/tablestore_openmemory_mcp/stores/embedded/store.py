"""The embedded store: the typed store port (:class:`~..memory.store_port.StorePort`) on one SQLite file.

Why it is built this way:

* **Plain SQLite, no extension** (many Pythons cannot load one). Vectors are float32 BLOBs,
  normalised at insert; similarity is a numpy product over an in-process cache (:mod:`.vectors`).
  Exact search is within 10-20% of faiss flat at 100k rows per scope, so no ANN index.
* **Many processes, one directory.** WAL lets any number of processes read while one writes;
  writers queue on ``busy_timeout``. Every write transaction bumps the collection's ``generation`` and
  logs the rowids it touched, so a process whose cache is behind replays just those rows. A scope's
  vectors are loaded outside the cache lock, so a big first load never stalls other users.
* **Scope fails closed.** Every method takes the caller's :class:`~..scope.Scope`; its user (and client,
  unless shared) go into the SQL (composite indexes), and a row read after a snapshot or a candidate
  selection is checked again (scope, state, :meth:`MemoryQuery.accepts`) before it is returned.
* **Exact duplicates** are atomic: the check and the insert run in one ``BEGIN IMMEDIATE``
  transaction, behind a UNIQUE ``(user_id, dedup_key)`` index.
* **Keyword search** matches with FTS5 and scores with per-scope BM25 statistics (:mod:`.keywords`).
* **Narrowed reads in SQL** (states, client, category, event time, tags: :mod:`.narrowing`): a selective
  filter reads about ``limit`` rows, not the scope, from the ``event_at`` and term indexes.
* **Rows are stored in 2.0.0's payload format** (:mod:`..row_format`), so older files keep working.
"""

from __future__ import annotations

import builtins
import functools
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConflictError, MemoryNotFound, StoreError, UserInputError
from ...memory.ports import ALL_STATES, State, StoredMemory
from ...memory.query_filters import EVERYTHING, MemoryQuery
from ...memory.store_port import KeywordHit, NewRow, RowChange, RowPage, StorePort, Tally
from ...scope import Scope
from .. import row_format
from ..sqlite_wal import use_wal
from ..tokenize import query_tokens
from . import narrowing, search, sync
from . import rows as R
from .keywords import ScopeStats, StatsDelta, doc_terms, scope_key, stats_keys
from .narrowing import event_at
from .pool import ConnectionPool
from .schema import META, Names, create_or_migrate, write_terms
from .vectors import F32, Identity, RowState, Slab, Snapshot, VectorCache

logger = logging.getLogger(__name__)

DB_FILENAME = "memories.sqlite3"
LOG_KEEP = 4096  # generations of change log kept for other processes to catch up from
_LOG_MAX_ROWS = 20_000  # rows one transaction may log; replaying more costs as much as a reload
_MAX_QUERY_TOKENS = 64
#: The readiness probe's user: no memory is ever stored under it (a valid Scope cannot name it).
_READY_USER = "\x00readiness-probe"


def validate_collection_name(name: str) -> str:
    """Return ``name`` if it is safe to use as a table name, else raise ``ValueError``."""
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name) or "__" in name:
        raise ValueError(
            f"invalid collection name {name!r}: use 1-64 letters, digits or underscores, not starting "
            "with a digit and without '__' (reserved for internal tables)"
        )
    return name


@dataclass
class _Tx:
    """What one write transaction changed: row states for the cache, statistics, row count."""

    states: list[RowState] = field(default_factory=list)
    stats: StatsDelta = field(default_factory=StatsDelta)
    delta: int = 0


#: The columns every write sets: the identity (from the payload), the vector, the payload and what is
#: indexed from it (:func:`_columns` gives their values in this order).
_WRITE_COLS = ("user_id", "agent_id", "vector", "payload", "created_at", "dedup_key", "state", "event_at")
_SET = ", ".join(f"{col} = ?" for col in _WRITE_COLS)


def _columns(payload: Mapping[str, Any], vector: F32, created_at: str, dedup_key: str | None) -> tuple[Any, ...]:
    ident = R.identity_of(payload)
    return (
        ident["user_id"],
        ident["agent_id"],
        vector.tobytes(),
        R.dumps(payload),
        created_at,
        dedup_key,
        R.state_of(payload),
        event_at(payload, created_at),
    )


class EmbeddedStore:
    """Memories of every scope in ``<path>/memories.sqlite3``, collection ``collection_name``.

    Unknown keyword arguments are ignored (it is built from a config dict).
    """

    def __init__(
        self,
        collection_name: str = "mem0",
        path: str | None = None,
        embedding_model_dims: int | None = None,
        *,
        max_connections: int = 8,
        cache_bytes: int = 512 * 1024 * 1024,
        busy_timeout_s: float = 30.0,
        **_ignored: Any,
    ) -> None:
        if not path:
            raise ValueError("EmbeddedStore needs 'path', the directory that holds memories.sqlite3")
        if not isinstance(embedding_model_dims, int) or embedding_model_dims <= 0:
            raise ValueError(f"embedding_model_dims must be a positive int, got {embedding_model_dims!r}")
        self.collection_name = validate_collection_name(collection_name)
        self.embedding_model_dims = embedding_model_dims
        self.path = str(path)
        Path(self.path).mkdir(parents=True, exist_ok=True)
        self._db_path = str(Path(self.path) / DB_FILENAME)
        self._n = Names(self.collection_name)
        self._pool = ConnectionPool(self._db_path, max_connections, busy_timeout_s)
        self._cache = VectorCache(cache_bytes)
        #: Rows whose payload searches read and vectors they scored (tests count them; never reset).
        self.reads: Counter[str] = Counter()
        with self._pool.connection() as conn:
            use_wal(conn, busy_timeout_s, self._db_path)
            create_or_migrate(conn, self._n, embedding_model_dims, self._db_path)

    def close(self) -> None:
        """Close pooled connections; further calls raise ``RuntimeError``. Idempotent."""
        self._pool.close()
        with self._cache.lock:
            self._cache.clear()

    # ------------------------------------------------------------------ writes (one transaction each)

    @contextmanager
    def _write(self) -> Iterator[tuple[sqlite3.Connection, _Tx]]:
        """One IMMEDIATE transaction; logs changed rows, bumps the generation, patches this cache."""
        n = self._n
        with self._pool.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            tx = _Tx()
            try:
                yield conn, tx
                new_gen = None
                if tx.states:
                    tx.stats.flush(conn, n.df, n.dl)
                    got = conn.execute(
                        f"UPDATE {META} SET generation = generation + 1, rows = rows + ? WHERE name = ? AND dims = ? "
                        "RETURNING generation",
                        (tx.delta, n.name, self.embedding_model_dims),
                    ).fetchall()
                    if not got:  # deleted, or re-embedded with another dimension since this process opened it
                        raise StoreError(
                            f"the memory store {self._db_path} was deleted or re-embedded with another embedder "
                            "(tablestore-openmemory-mcp reembed); restart the server with the new embedder settings"
                        )
                    new_gen = int(got[0][0])
                    rids = {(new_gen, s.rid) for s in tx.states}
                    if len(rids) <= _LOG_MAX_ROWS:  # a bigger batch is left out: readers reload instead
                        conn.executemany(f"INSERT OR IGNORE INTO {n.log} (gen, rid) VALUES (?, ?)", sorted(rids))
                    if new_gen % 256 == 0:
                        conn.execute(f"DELETE FROM {n.log} WHERE gen <= ?", (new_gen - LOG_KEEP,))
                with self._cache.lock:
                    conn.execute("COMMIT")
                    cache = self._cache
                    if new_gen is not None and cache.gen is not None and new_gen == cache.gen + 1:
                        cache.apply(tx.states)
                        cache.gen = new_gen
                    # otherwise another writer got in between: the next read replays the log
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _old_terms(self, conn: sqlite3.Connection, rids: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for chunk in R.chunks(list(rids)):
            marks = ",".join("?" * len(chunk))
            for rid, text in conn.execute(f"SELECT rowid, text FROM {self._n.fts} WHERE rowid IN ({marks})", chunk):
                out[int(rid)] = doc_terms(text)
        return out

    def _index_text(
        self, conn: sqlite3.Connection, tx: _Tx, rid: int, payload: Mapping[str, Any], ident: Mapping[str, Any]
    ) -> None:
        text = R.fts_text(payload)
        conn.execute(
            f"INSERT INTO {self._n.fts} (rowid, text, scope) VALUES (?, ?, ?)",
            (rid, text, " ".join(R.scope_terms(ident))),
        )
        tx.stats.add(stats_keys(ident.get("user_id"), ident.get("agent_id")), doc_terms(text), +1)

    def _unindex_text(
        self, conn: sqlite3.Connection, tx: _Tx, rid: int, ident: Mapping[str, Any], terms: list[str] | None
    ) -> None:
        conn.execute(f"DELETE FROM {self._n.fts} WHERE rowid = ?", (rid,))
        if terms is not None:
            tx.stats.add(stats_keys(ident.get("user_id"), ident.get("agent_id")), terms, -1)

    # ------------------------------------------------------------------ the port: writes

    def put(self, scope: Scope, rows: Sequence[NewRow]) -> builtins.list[str]:
        """Write a batch in one transaction (all rows or none); per row, the id now holding it.

        A row whose ``dedup_key`` is already held by a row in scope (or earlier in the batch) is not
        written; that row's id is returned instead. An existing id in scope is overwritten. Raises
        ``ValueError`` for a bad vector, the same id twice, a memory outside the scope or an id owned by
        another scope; ``ConflictError`` for a dedup key held outside the scope.
        """
        who = narrowing.identity(scope)
        if not rows:
            return []
        mat = R.unit_vectors([list(row.vector) for row in rows], self.embedding_model_dims)
        ids = [str(row.memory.id) for row in rows]
        if len(set(ids)) != len(ids):
            raise ValueError("put got the same id twice in one batch")
        if not all(R.owned(scope, row.memory.user_id, row.memory.client) for row in rows):
            raise ValueError("put: a memory is outside the caller's scope (its user or client differs)")
        payloads = [row_format.to_payload(row.memory) for row in rows]
        t = self._n.table
        out: list[str] = []
        try:
            with self._write() as (conn, tx):
                existing: dict[str, R.Row] = {}
                for chunk in R.chunks(ids):
                    marks = ",".join("?" * len(chunk))
                    for raw in conn.execute(f"SELECT {R.ROW_COLS} FROM {t} WHERE id IN ({marks})", chunk):
                        row = R.row_of(raw)
                        if not R.owned(scope, row.ident["user_id"], row.ident["agent_id"]):
                            raise ValueError(f"put: id {row.id!r} conflicts with an existing memory")
                        existing[row.id] = row
                old_terms = self._old_terms(conn, [r.rid for r in existing.values()])
                held: dict[str, str] = {}
                for id_, vec, payload, new in zip(ids, mat, payloads, rows, strict=True):
                    key = new.dedup_key
                    if key is not None:
                        holder = held.get(key) or self._holder_id(conn, scope, who["user_id"], key)
                        if holder is not None:
                            out.append(holder)
                            continue
                        held[key] = id_
                    ident = R.identity_of(payload)
                    values = _columns(payload, vec, R.utc_iso(payload.get("created_at")), key)
                    old = existing.get(id_)
                    if old is not None:
                        conn.execute(f"UPDATE {t} SET {_SET} WHERE rid = ?", (*values, old.rid))
                        self._unindex_text(conn, tx, old.rid, old.ident, old_terms.get(old.rid))
                        rid = old.rid
                    else:
                        marks = ", ".join("?" * (1 + len(_WRITE_COLS)))
                        cur = conn.execute(
                            f"INSERT INTO {t} (id, {', '.join(_WRITE_COLS)}) VALUES ({marks})", (id_, *values)
                        )
                        rid = int(cur.lastrowid or 0)
                        tx.delta += 1
                    write_terms(conn, self._n, rid, payload, fresh=old is None)
                    self._index_text(conn, tx, rid, payload, ident)
                    tx.states.append(RowState(rid, id_, ident, vec))
                    out.append(id_)
        except sqlite3.IntegrityError as exc:
            raise ConflictError(f"put: a memory with the same key already exists ({exc})") from None
        return out

    def _holder_id(self, conn: sqlite3.Connection, scope: Scope, user_id: str, key: str) -> str | None:
        """The id of the row holding dedup ``key`` for this user; a holder outside the scope is a conflict."""
        raw = conn.execute(
            f"SELECT {R.ROW_COLS} FROM {self._n.table} WHERE user_id = ? AND dedup_key = ?", (user_id, key)
        ).fetchone()
        if raw is None:
            return None
        row = R.row_of(raw)
        if not R.owned(scope, row.ident["user_id"], row.ident["agent_id"]):
            raise ConflictError("put: this dedup key is held by a memory outside the caller's scope")
        return row.id

    def rewrite(self, scope: Scope, change: RowChange) -> None:
        """Replace the vector and/or the memory of one row in scope (see the port)."""
        narrowing.identity(scope)
        memory = change.memory
        if memory is not None and not R.owned(scope, memory.user_id, memory.client):
            raise ValueError("rewrite: the new memory is outside the caller's scope")
        vector = change.vector
        new_vec = R.unit_vectors([list(vector)], self.embedding_model_dims)[0] if vector is not None else None
        new_payload = row_format.to_payload(memory) if memory is not None else None
        t = self._n.table
        with self._write() as (conn, tx):
            found = conn.execute(
                f"SELECT {R.ROW_COLS}, vector, created_at, dedup_key FROM {t} WHERE id = ?", (str(change.memory_id),)
            ).fetchone()
            row = R.row_of(found[: R.ROW_WIDTH]) if found is not None else None
            if row is None or not R.owned(scope, row.ident["user_id"], row.ident["agent_id"]):
                raise MemoryNotFound(f"No memory with id {change.memory_id} exists among your memories")
            blob, old_created, old_key = found[R.ROW_WIDTH :]
            expected = change.expected_updated_at
            if expected is not None and row.payload.get("updated_at") != expected:
                raise ConflictError(f"memory {change.memory_id} was changed by someone else; re-read it and retry")
            final = new_payload if new_payload is not None else row.payload
            ident = R.identity_of(final)
            vec: F32 = new_vec if new_vec is not None else np.frombuffer(blob, dtype=np.float32)
            created = R.utc_iso(final["created_at"]) if final.get("created_at") else old_created
            key = old_key
            if change.dedup_key == "":  # the row gives its key up (e.g. it is no longer active)
                key = None
            elif change.dedup_key is not None:
                other = conn.execute(
                    f"SELECT 1 FROM {t} WHERE user_id = ? AND dedup_key = ? AND rid != ?",
                    (ident["user_id"], change.dedup_key, row.rid),
                ).fetchone()
                key = None if other else change.dedup_key
            conn.execute(f"UPDATE {t} SET {_SET} WHERE rid = ?", (*_columns(final, vec, created, key), row.rid))
            if new_payload is not None:  # text, identity, categories or tags may have changed
                write_terms(conn, self._n, row.rid, final)
                old_terms = self._old_terms(conn, [row.rid]).get(row.rid)
                self._unindex_text(conn, tx, row.rid, row.ident, old_terms)
                self._index_text(conn, tx, row.rid, final, ident)
            moved = row.ident != ident
            tx.states.append(RowState(row.rid, row.id, ident, vec if new_vec is not None or moved else None))

    def rewrite_many(self, scope: Scope, changes: Sequence[RowChange]) -> builtins.list[str]:
        """Each change in its own transaction; the ids changed (conflicting or missing rows left out)."""
        done: list[str] = []
        for change in changes:
            try:
                self.rewrite(scope, change)
            except (ConflictError, MemoryNotFound):
                continue
            done.append(change.memory_id)
        return done

    def remove(self, scope: Scope, memory_ids: Sequence[str]) -> builtins.list[str]:
        """Erase rows in scope in one transaction; the ids this call erased, in the order given."""
        ids = list(dict.fromkeys(str(i) for i in memory_ids))
        if not ids:
            narrowing.identity(scope)
            return []
        with self._write() as (conn, tx):
            targets = {row.id: row for row in map(R.row_of, self._by_ids(conn, R.ROW_COLS, ids, scope))}
            rids = [r.rid for r in targets.values()]
            old_terms = self._old_terms(conn, rids)
            for chunk in R.chunks(rids):
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM {self._n.table} WHERE rid IN ({marks})", chunk)
                conn.execute(f"DELETE FROM {self._n.fts} WHERE rowid IN ({marks})", chunk)
                conn.execute(f"DELETE FROM {self._n.terms} WHERE rid IN ({marks})", chunk)
            for row in targets.values():
                tx.stats.add(stats_keys(row.ident["user_id"], row.ident["agent_id"]), old_terms.get(row.rid, []), -1)
                tx.states.append(RowState(row.rid))
            tx.delta -= len(targets)
        return [i for i in ids if i in targets]

    # ------------------------------------------------------------------ the port: reads by id

    def _by_ids(
        self, conn: sqlite3.Connection, columns: str, ids: Sequence[str], scope: Scope
    ) -> Iterator[Sequence[Any]]:
        """``columns`` of the rows with these ids in ``scope`` (the scope's identity is in the SQL)."""
        cond, values = narrowing.scope_clause(scope)
        for chunk in R.chunks(ids):
            marks = ",".join("?" * len(chunk))
            yield from conn.execute(
                f"SELECT {columns} FROM {self._n.table} WHERE id IN ({marks}) AND {cond}", (*chunk, *values)
            )

    def read_one(self, scope: Scope, memory_id: str) -> StoredMemory | None:
        return self.read(scope, [memory_id]).get(str(memory_id))

    def read(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, StoredMemory]:
        """Rows by id, every state; missing and out-of-scope ids are absent."""
        ids = list(dict.fromkeys(str(i) for i in memory_ids))
        with self._pool.connection() as conn:
            found = self._by_ids(conn, "id, payload", ids, scope)
            return {str(id_): row_format.to_memory(id_, json.loads(payload)) for id_, payload in found}

    def read_vectors(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, builtins.list[float]]:
        """Stored unit vectors by id (export, re-embedding); missing and out-of-scope ids are absent."""
        ids = list(dict.fromkeys(str(i) for i in memory_ids))
        with self._pool.connection() as conn:
            found = self._by_ids(conn, "id, vector", ids, scope)
            return {str(id_): np.frombuffer(blob, dtype=np.float32).tolist() for id_, blob in found}

    def holder(self, scope: Scope, dedup_key: str) -> StoredMemory | None:
        """The row in scope holding ``dedup_key`` (the unique ``(user_id, dedup_key)`` index)."""
        cond, values = narrowing.scope_clause(scope)
        with self._pool.connection() as conn:
            raw = conn.execute(
                f"SELECT id, payload FROM {self._n.table} WHERE {cond} AND dedup_key = ?", (*values, str(dedup_key))
            ).fetchone()
        return row_format.to_memory(raw[0], json.loads(raw[1])) if raw is not None else None

    # ------------------------------------------------------------------ the port: lists

    def page(
        self,
        scope: Scope,
        *,
        states: Collection[State],
        query: MemoryQuery = EVERYTHING,
        limit: int,
        cursor: str | None = None,
    ) -> RowPage:
        """One keyset page of exactly the matching rows in (created_at, id) order (no repeats, no gaps)."""
        if not isinstance(limit, int) or limit <= 0:
            raise UserInputError("limit must be a positive integer")
        after = R.decode_cursor(cursor) if cursor else None
        where, values = narrowing.where(scope, states, query, self._n.terms, by_terms=False)
        if after is not None:
            where += " AND (created_at, id) > (?, ?)"
            values += list(after)
        sql = f"SELECT id, payload, created_at FROM {self._n.table}{where} ORDER BY created_at, id LIMIT ?"
        with self._pool.connection() as conn:
            raws = conn.execute(sql, (*values, limit + 1)).fetchall()
        more = len(raws) > limit
        raws = raws[:limit]
        memories = [row_format.to_memory(id_, json.loads(payload)) for id_, payload, _ in raws]
        return RowPage(memories, R.encode_cursor(raws[-1][2], raws[-1][0]) if more else None)

    def page_total(self, scope: Scope, *, states: Collection[State], query: MemoryQuery = EVERYTHING) -> int:
        """The matching rows, counted by SQLite (exact: the WHERE clause is the whole condition)."""
        where, values = narrowing.where(scope, states, query, self._n.terms)
        with self._pool.connection() as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM {self._n.table}{where}", values).fetchone()[0])

    def created_window(
        self,
        scope: Scope,
        *,
        states: Collection[State],
        newest_first: bool,
        offset: int,
        limit: int,
        since: str | None = None,
        until: str | None = None,
        query: MemoryQuery = EVERYTHING,
    ) -> tuple[builtins.list[StoredMemory], int]:
        """The owner's offset page and its total from one SQL snapshot, straight from the
        ``(user_id, [agent_id,] created_at, id, state)`` index (100k memories took 2 s read in Python)."""
        where, values = narrowing.where(scope, states, query, self._n.terms)
        if since is not None:  # the column holds UTC with microseconds (R.utc_iso); compare like with like
            where += " AND created_at >= ?"
            values.append(R.utc_iso(since))
        if until is not None:
            where += " AND created_at < ?"
            values.append(R.utc_iso(until))
        order = "DESC" if newest_first else "ASC"
        table = self._n.table
        with self._pool.connection() as conn:
            conn.execute("BEGIN")  # page and total from one snapshot
            try:
                total = int(conn.execute(f"SELECT COUNT(*) FROM {table}{where}", values).fetchone()[0])
                sql = f"SELECT id, payload FROM {table}{where} ORDER BY created_at {order}, id {order} LIMIT ? OFFSET ?"
                raws = conn.execute(sql, (*values, limit, offset)).fetchall()
            finally:
                conn.execute("COMMIT")
        return [row_format.to_memory(id_, json.loads(payload)) for id_, payload in raws], total

    def tallies(self, scope: Scope) -> Tally:
        """Counted by SQLite from the scope index (100k rows: ~2 s when every row was read in Python).

        The day is the indexed ``created_at`` column: UTC, and the insert time for a payload without one."""
        where, values = narrowing.where(scope, ALL_STATES, EVERYTHING, self._n.terms)
        sql = (
            f"SELECT agent_id, COALESCE(state, 'active'), substr(created_at, 1, 10), COUNT(*) "
            f"FROM {self._n.table}{where} GROUP BY 1, 2, 3"
        )
        with self._pool.connection() as conn:
            return {(client, str(state), str(day)): int(n) for client, state, day, n in conn.execute(sql, values)}

    def probe(self) -> None:
        """One indexed read of a user no memory belongs to: the file opens and answers."""
        with self._pool.connection() as conn:
            conn.execute(f"SELECT 1 FROM {self._n.table} WHERE user_id = ? LIMIT 1", (_READY_USER,)).fetchall()

    # ------------------------------------------------------------------ the port: search

    def nearest(
        self,
        scope: Scope,
        vector: Sequence[float],
        limit: int,
        *,
        states: Collection[State],
        query: MemoryQuery = EVERYTHING,
    ) -> builtins.list[StoredMemory]:
        """Nearest rows by cosine similarity, best first (score clipped to [0, 1]).

        Narrowed: the indexes give the candidate rowids (:func:`.narrowing.candidates`), only those of
        the caller's cached vectors are scored, and payloads are read best first until ``limit`` pass every
        check; so a selective filter reads ~``limit`` rows and still returns ``limit`` matches when that many
        exist. Unnarrowed (or a filter matching most of the scope): the whole slab."""
        who = narrowing.identity(scope)
        if limit <= 0:
            return []
        visible = R.Visible(scope, frozenset(states), query)
        q = R.unit_vectors(np.asarray(vector, dtype=np.float64).reshape(1, -1), self.embedding_model_dims)[0]
        with self._pool.connection() as conn:
            read = functools.partial(self._rows_by_rid, conn)
            if query:
                sql, values = narrowing.candidates(scope, states, query, self._n.table, self._n.terms)
                # Past a quarter of the scope, scoring every vector and checking rows best first reads ~4x
                # limit rows anyway and skips reading the candidates (10k rows, 99% match: 6.3 vs 1.3 ms).
                cap = max(4 * limit, len(self._snapshot(conn, who).mat) // 4)
                rids = [int(rid) for (rid,) in conn.execute(f"{sql} LIMIT ?", (*values, cap + 1))]
                if not rids:
                    return []
                if len(rids) <= cap:
                    return search.nearest_among(self._snapshot(conn, who, rids), q, visible, limit, read, self.reads)
            return search.nearest_all(self._snapshot(conn, who), q, visible, limit, read, self.reads)

    def keyword_hits(
        self,
        scope: Scope,
        text: str,
        limit: int,
        *,
        states: Collection[State],
        query: MemoryQuery = EVERYTHING,
        candidates: Sequence[str] | None = None,
    ) -> builtins.list[KeywordHit] | None:
        """BM25 matches in scope, best first; statistics from the caller's scope only (score > 0).

        With ``candidates`` (ids, e.g. the vector hits) only those rows are scored; otherwise FTS5 finds
        the rows of the scope that contain a query token (narrowed: only among the rows the SQL selects).
        """
        who = narrowing.identity(scope)
        terms = query_tokens(text, limit=_MAX_QUERY_TOKENS)
        if not terms or limit <= 0:
            return []
        cand = list(dict.fromkeys(str(c) for c in candidates)) if candidates is not None else None
        if cand is not None and not cand:
            return []
        visible = R.Visible(scope, frozenset(states), query)
        n = self._n
        with self._pool.connection() as conn:
            conn.execute("BEGIN")  # statistics and rows from one snapshot
            try:
                stats = ScopeStats.read(conn, n.df, n.dl, scope_key(who), terms)
                terms = [t for t in terms if t in stats.df]
                if not terms:
                    return []
                if cand is None:
                    narrowed = narrowing.where(scope, states, query, n.terms) if query else None
                    read = functools.partial(self._rows_by_rid, conn)
                    return search.keyword_matches(conn, n, who, terms, stats, limit, narrowed, visible, read)
                rows: dict[int, R.Row] = {}
                for chunk in R.chunks(cand):
                    marks = ",".join("?" * len(chunk))
                    sql = f"SELECT {R.ROW_COLS} FROM {n.table} WHERE id IN ({marks})"
                    rows.update((r.rid, r) for r in map(R.row_of, conn.execute(sql, chunk)))
                shown = [r for r in rows.values() if visible(r) is not None]
                texts = self._old_terms(conn, [r.rid for r in shown])
            finally:
                conn.execute("COMMIT")
        return search.best([KeywordHit(r.id, stats.score(terms, texts.get(r.rid, []))) for r in shown], limit)

    def _rows_by_rid(self, conn: sqlite3.Connection, rids: Sequence[int]) -> dict[int, R.Row]:
        out: dict[int, R.Row] = {}
        self.reads["rows"] += len(rids)
        for chunk in R.chunks(list(rids)):
            marks = ",".join("?" * len(chunk))
            for raw in conn.execute(f"SELECT {R.ROW_COLS} FROM {self._n.table} WHERE rid IN ({marks})", chunk):
                row = R.row_of(raw)
                out[row.rid] = row
        return out

    # ------------------------------------------------------------------ vector cache

    def _snapshot(
        self, conn: sqlite3.Connection, identity: Mapping[str, str], only: Sequence[int] | None = None
    ) -> Snapshot:
        """A consistent view of the vectors of ``identity``, caught up with every committed write
        (with ``only``, rowids: also where those rows' vectors are, :attr:`Snapshot.only`).

        A missing slab is loaded *outside* the cache lock (other scopes' searches and every write go on
        meanwhile), then caught up from the change log to the current generation before it is cached.
        """
        key: Identity = tuple(sorted(identity.items()))
        cache = self._cache
        loaded: tuple[Slab, int | None] | None = None
        for attempt in range(4):
            with cache.lock:
                conn.execute("BEGIN")
                try:
                    gen = self._generation(conn)
                    if gen != cache.gen:
                        self._catch_up(conn, gen)
                    slab = cache.slabs.get(key)
                    if slab is None and loaded is not None:
                        fresh, at = loaded
                        if at == gen or (at is not None and gen is not None and self._replay(conn, [fresh], at, gen)):
                            cache.put(fresh)
                            slab = fresh
                    if slab is None and attempt == 3:  # the log kept moving past us: load under the lock
                        slab = self._load(conn, key)
                        cache.put(slab)
                    if slab is not None:
                        cache.slabs.move_to_end(key)
                        return slab.snapshot(only)
                finally:
                    conn.execute("COMMIT")
            conn.execute("BEGIN")
            try:
                loaded = (self._load(conn, key), self._generation(conn))
            finally:
                conn.execute("COMMIT")
        raise AssertionError("unreachable: the last attempt loads under the lock")

    def _generation(self, conn: sqlite3.Connection) -> int | None:
        return sync.generation(conn, self._n)

    def _catch_up(self, conn: sqlite3.Connection, gen: int | None) -> None:
        """Bring every cached slab to ``gen`` from the change log; drop them when the log cannot tell."""
        cache = self._cache
        old = cache.gen
        if gen is None or old is None or not cache.slabs or not self._replay(conn, cache.slabs.values(), old, gen):
            cache.clear(gen)
            return
        cache.gen = gen

    def _replay(self, conn: sqlite3.Connection, slabs: Iterable[Slab], old: int, gen: int) -> bool:
        return sync.replay(conn, self._n, slabs, old, gen, LOG_KEEP)

    def _load(self, conn: sqlite3.Connection, key: Identity) -> Slab:
        return sync.load_slab(conn, self._n, key, self.embedding_model_dims)


#: mypy checks here that the store offers the whole port (a Protocol, satisfied structurally).
_PORT: type[StorePort] = EmbeddedStore
