"""The embedded default store: a durable mem0 vector store in one SQLite file.

Used when no Tablestore is configured. Design choices, and why:

* **Plain SQLite, no extension.** Many Pythons (this one included) cannot load SQLite extensions,
  so sqlite-vec is out. Vectors are float32 BLOBs (normalised at insert) and similarity search is a
  numpy matrix product over an in-process cache. 10,000 x 384 floats is 15 MB and one ``mat @ q``
  takes well under a millisecond, far below what an index would save at this scale.
* **Many processes, one directory.** Qdrant's local mode locks its folder; two MCP clients that each
  start a server on the same memory directory must both work. SQLite in WAL mode lets any number
  of processes read while one writes; ``busy_timeout`` (30 s) queues writers instead of failing.
* **Durable.** ``synchronous=NORMAL`` in WAL mode: a write returns only after its transaction is
  committed to the WAL, so it survives the process being killed (``kill -9``) at any point; an
  OS crash or power cut can lose at most the last few commits, never corrupt the file.
* **Cache coherence across processes.** Each collection has a ``generation`` counter in the
  ``__collections`` table that every write transaction increments. A reader compares it with the
  generation its cache reflects and reloads on mismatch. A writer that finds the counter moved
  by exactly its own increment patches the cache in place (append / remove rows) instead of
  reloading. This is ``PRAGMA data_version`` plus a write counter made exact: ``data_version`` is
  per connection and cannot tell this process's other pooled connections from another process.
* **Connections.** A small pool (default up to 8) rather than ``threading.local``: mem0 runs entity
  searches on a fresh ``ThreadPoolExecutor`` per call, so per-thread connections would leak.
* **Scope.** Every read ANDs :data:`~.base.ACTIVE_SCOPE` into its filters and every id-based call
  treats rows outside it as absent (see :mod:`.base`).
* **Keyword search.** FTS5 over text pre-tokenised by :mod:`.tokenize` (Chinese characters and
  bigrams, lowercased words); queries are tokenised the same way and every token is quoted, so no
  input can inject FTS5 syntax.

Names containing ``__`` are reserved for the store's own tables (``__collections``,
``<name>__fts``, index names).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import sqlite3
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .base import ACTIVE_SCOPE, MemoryStore, OutputData, in_active_scope
from .filters import IDENTITY_KEYS, matches, split_identity
from .tokenize import query_tokens, tokens

logger = logging.getLogger(__name__)

DB_FILENAME = "memories.sqlite3"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_META = "__collections"
_CHUNK = 500  # ids per "IN (...)" clause, well under SQLite's variable limit
_MAX_QUERY_TOKENS = 64
_PRUNE_MIN_ROWS = 1000
_Identity = tuple[tuple[str, str], ...]


def validate_collection_name(name: str) -> str:
    """Return ``name`` if it is safe to use as a table name, else raise ``ValueError``."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or "__" in name:
        raise ValueError(
            f"invalid collection name {name!r}: use 1-64 letters, digits or underscores, not starting "
            "with a digit and without '__' (reserved for internal tables)"
        )
    return name


@dataclass(frozen=True)
class _Change:
    """One row change made by this process, used to patch the vector cache after commit."""

    rid: int
    id: str | None = None
    identity: Mapping[str, str | None] | None = None  # None: the row was deleted
    vector: np.ndarray | None = None
    delta: int = 0  # +1 row created, -1 row deleted


class _Slab:
    """Cached ids and unit vectors of every row matching one identity (e.g. one user's rows).

    Readers take a snapshot (list refs + a matrix view of the first ``n`` rows) under the cache lock
    and compute without it. Appends write past ``n`` into spare capacity, which existing snapshots
    never look at; removals and vector replacements build new arrays, so snapshots stay valid.
    """

    __slots__ = ("identity", "ids", "mat", "n", "pos", "rids")

    def __init__(self, identity: _Identity, rids: list[int], ids: list[str], mat: np.ndarray) -> None:
        self.identity = identity
        self.rids = rids
        self.ids = ids
        self.mat = mat
        self.n = len(ids)
        self.pos = {rid: i for i, rid in enumerate(rids)}

    def covers(self, identity: Mapping[str, str | None]) -> bool:
        return all(identity.get(key) == value for key, value in self.identity)

    def snapshot(self) -> tuple[list[str], list[int], np.ndarray]:
        return self.ids, self.rids, self.mat[: self.n]

    def append(self, rid: int, id_: str, vector: np.ndarray) -> None:
        if self.n == self.mat.shape[0]:
            grown = np.empty((max(64, 2 * self.n), self.mat.shape[1]), dtype=np.float32)
            grown[: self.n] = self.mat[: self.n]
            self.mat = grown
        self.mat[self.n] = vector
        self.rids.append(rid)
        self.ids.append(id_)
        self.pos[rid] = self.n
        self.n += 1

    def replace(self, rid: int, vector: np.ndarray) -> None:
        mat = self.mat.copy()
        mat[self.pos[rid]] = vector
        self.mat = mat

    def remove(self, rids: set[int]) -> None:
        keep = [i for i in range(self.n) if self.rids[i] not in rids]
        self.mat = self.mat[np.asarray(keep, dtype=np.intp)] if keep else self.mat[:0].copy()
        self.rids = [self.rids[i] for i in keep]
        self.ids = [self.ids[i] for i in keep]
        self.n = len(keep)
        self.pos = {rid: i for i, rid in enumerate(self.rids)}


class EmbeddedStore(MemoryStore):
    """mem0 vector store on one SQLite file, ``<path>/memories.sqlite3``; one table per collection.

    Built by mem0's factory as ``EmbeddedStore(**config)``; unknown config keys are ignored.
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
        self._busy_timeout_s = busy_timeout_s
        self._cache_bytes = cache_bytes
        self._table = f'"{self.collection_name}"'
        self._fts = f'"{self.collection_name}__fts"'

        self._pool_lock = threading.Lock()
        self._pool_slots = threading.BoundedSemaphore(max(1, max_connections))
        self._idle: list[sqlite3.Connection] = []
        self._max_idle = max(1, max_connections)
        self._closed = False

        self._cache_lock = threading.Lock()
        self._slabs: OrderedDict[_Identity, _Slab] = OrderedDict()
        self._gen: int | None = None  # generation the cached slabs reflect

        with self._conn() as conn:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("SQLite WAL mode unavailable at %s (got %s); concurrency will suffer", self.path, mode)
            self._create(conn, self.collection_name, embedding_model_dims)

    # ------------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._db_path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        """Borrow a pooled connection (autocommit mode; callers BEGIN/COMMIT explicitly)."""
        self._pool_slots.acquire()
        try:
            with self._pool_lock:
                if self._closed:
                    raise RuntimeError("EmbeddedStore is closed")
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                with self._pool_lock:
                    if not self._closed and len(self._idle) < self._max_idle:
                        self._idle.append(conn)
                        conn = None
                if conn is not None:
                    conn.close()
        finally:
            self._pool_slots.release()

    def close(self) -> None:
        """Close pooled connections; further calls raise ``RuntimeError``. Idempotent."""
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        with self._cache_lock:
            self._slabs.clear()
            self._gen = None

    # ------------------------------------------------------------------ collections

    def _create(self, conn: sqlite3.Connection, name: str, dims: int) -> None:
        table, fts = f'"{name}"', f'"{name}__fts"'
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_META} (name TEXT PRIMARY KEY, dims INTEGER NOT NULL, "
                "generation INTEGER NOT NULL, created_at TEXT NOT NULL, rows INTEGER NOT NULL DEFAULT 0)"
            )
            row = conn.execute(f"SELECT dims FROM {_META} WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] != dims:
                raise ValueError(
                    f"collection {name!r} in {self.path} holds {row[0]}-dimensional vectors but the "
                    f"embedder produces {dims}; use another collection name or reset this one"
                )
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (rid INTEGER PRIMARY KEY AUTOINCREMENT, "
                "id TEXT NOT NULL UNIQUE, user_id TEXT, agent_id TEXT, run_id TEXT, "
                "vector BLOB NOT NULL, payload TEXT NOT NULL, created_at TEXT NOT NULL)"
            )
            for key in IDENTITY_KEYS:
                conn.execute(f'CREATE INDEX IF NOT EXISTS "{name}__{key}" ON {table} ({key})')
            conn.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5(text, scope, "
                "tokenize = 'unicode61 remove_diacritics 0')"
            )
            conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS \"{name}__vocab\" USING fts5vocab({fts}, 'row')")
            # A random start keeps a dropped-and-recreated collection from reusing old generations.
            conn.execute(
                f"INSERT OR IGNORE INTO {_META} (name, dims, generation, created_at) VALUES (?, ?, ?, ?)",
                (name, dims, secrets.randbits(62), datetime.now(UTC).isoformat()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def create_col(self, name: str | None = None, vector_size: int | None = None, distance: str = "cosine") -> None:
        """Create collection ``name`` (default: this store's) if missing. Only cosine is supported."""
        if distance and str(distance).lower() not in ("cosine", "cos"):
            raise ValueError(f"EmbeddedStore supports cosine distance only, not {distance!r}")
        with self._conn() as conn:
            self._create(
                conn,
                validate_collection_name(name or self.collection_name),
                vector_size or self.embedding_model_dims,
            )

    def list_cols(self) -> list[str]:
        with self._conn() as conn:
            return [row[0] for row in conn.execute(f"SELECT name FROM {_META} ORDER BY name")]

    def delete_col(self) -> None:
        """Drop this collection (rows, keyword index, metadata)."""
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(f'DROP TABLE IF EXISTS "{self.collection_name}__vocab"')
                conn.execute(f"DROP TABLE IF EXISTS {self._fts}")
                conn.execute(f"DROP TABLE IF EXISTS {self._table}")
                conn.execute(f"DELETE FROM {_META} WHERE name = ?", (self.collection_name,))
                with self._cache_lock:
                    conn.execute("COMMIT")
                    self._slabs.clear()
                    self._gen = None
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def reset(self) -> None:
        """Delete and recreate this collection."""
        self.delete_col()
        self.create_col(self.collection_name, self.embedding_model_dims)

    def col_info(self) -> dict[str, Any]:
        with self._conn() as conn:
            count = conn.execute(f"SELECT COUNT(*) FROM {self._table}").fetchone()[0]
        return {
            "name": self.collection_name,
            "dims": self.embedding_model_dims,
            "distance": "cosine",
            "count": count,
            "path": self._db_path,
        }

    # ------------------------------------------------------------------ writes

    @contextmanager
    def _write(self) -> Iterator[tuple[sqlite3.Connection, list[_Change]]]:
        """One IMMEDIATE transaction; bumps the generation and patches the cache when rows changed."""
        with self._conn() as conn:
            conn.execute("BEGIN IMMEDIATE")
            changes: list[_Change] = []
            try:
                yield conn, changes
                new_gen = None
                if changes:
                    rows = conn.execute(
                        f"UPDATE {_META} SET generation = generation + 1, rows = rows + ? WHERE name = ? "
                        "RETURNING generation",
                        (sum(c.delta for c in changes), self.collection_name),
                    ).fetchall()
                    if not rows:
                        raise RuntimeError(f"collection {self.collection_name!r} was deleted")
                    new_gen = rows[0][0]
                with self._cache_lock:
                    conn.execute("COMMIT")
                    if new_gen is not None:
                        if self._gen is not None and new_gen == self._gen + 1:
                            self._apply(changes)
                            self._gen = new_gen
                        else:  # another writer got in between: reload lazily
                            self._slabs.clear()
                            self._gen = None
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _apply(self, changes: Sequence[_Change]) -> None:
        """Patch cached slabs with this process's committed changes (caller holds the cache lock)."""
        for slab in self._slabs.values():
            removed: set[int] = set()
            for change in changes:
                present = change.rid in slab.pos and change.rid not in removed
                wanted = change.identity is not None and slab.covers(change.identity)
                if present and not wanted:
                    removed.add(change.rid)
                elif present and change.vector is not None:
                    slab.replace(change.rid, change.vector)
                elif wanted and not present:
                    if change.rid in removed:  # re-added in the same batch
                        slab.remove(removed)
                        removed.clear()
                    assert change.vector is not None and change.id is not None
                    slab.append(change.rid, change.id, change.vector)
            if removed:
                slab.remove(removed)

    def insert(
        self,
        vectors: Sequence[Sequence[float]],
        payloads: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Insert (or overwrite by id) a batch in one transaction: all rows are written or none.

        Raises ``ValueError`` for a vector of the wrong length, with NaN/inf or all zeros, for
        mismatched list lengths, duplicate ids, a payload outside the active scope, or an id that
        already belongs to a row outside the active scope. Returns the ids written.
        """
        mat = self._unit_vectors(vectors)
        count = len(mat)
        payload_list = [dict(p or {}) for p in payloads] if payloads is not None else [{} for _ in range(count)]
        id_list = [str(i) for i in ids] if ids is not None else [str(uuid.uuid4()) for _ in range(count)]
        if len(payload_list) != count or len(id_list) != count:
            raise ValueError(
                f"insert needs one payload and one id per vector: {count} vectors, "
                f"{len(payload_list)} payloads, {len(id_list)} ids"
            )
        if len(set(id_list)) != count:
            raise ValueError("insert got the same id twice in one batch")
        for payload in payload_list:
            if not in_active_scope(payload):
                raise ValueError("insert: payload is outside the active scope (user/agent/run ids differ)")
        if not count:
            return []
        rows = [(_identity_of(p), _dumps(p), _fts_text(p), _utc_iso(p.get("created_at"))) for p in payload_list]

        with self._write() as (conn, changes):
            existing: dict[str, tuple[int, str]] = {}
            for chunk in _chunks(id_list):
                marks = ",".join("?" * len(chunk))
                for rid, id_, payload in conn.execute(
                    f"SELECT rid, id, payload FROM {self._table} WHERE id IN ({marks})", chunk
                ):
                    existing[id_] = (rid, payload)
            if ACTIVE_SCOPE.get() is not None:
                for id_, (_, payload) in existing.items():
                    if not in_active_scope(json.loads(payload)):
                        raise ValueError(f"insert: id {id_!r} conflicts with an existing memory")
            for id_, vec, (ident, payload_json, text, created) in zip(id_list, mat, rows, strict=True):
                values = (
                    ident["user_id"],
                    ident["agent_id"],
                    ident["run_id"],
                    vec.tobytes(),
                    payload_json,
                    created,
                )
                if id_ in existing:
                    rid = existing[id_][0]
                    conn.execute(
                        f"UPDATE {self._table} SET user_id = ?, agent_id = ?, run_id = ?, vector = ?, "
                        "payload = ?, created_at = ? WHERE rid = ?",
                        (*values, rid),
                    )
                    conn.execute(f"DELETE FROM {self._fts} WHERE rowid = ?", (rid,))
                else:
                    cur = conn.execute(
                        f"INSERT INTO {self._table} (id, user_id, agent_id, run_id, vector, payload, "
                        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (id_, *values),
                    )
                    rid = int(cur.lastrowid or 0)
                conn.execute(
                    f"INSERT INTO {self._fts} (rowid, text, scope) VALUES (?, ?, ?)", (rid, text, _scope_text(ident))
                )
                changes.append(_Change(rid, id_, ident, vec, delta=0 if id_ in existing else 1))
        return id_list

    def update(
        self, vector_id: str, vector: Sequence[float] | None = None, payload: Mapping[str, Any] | None = None
    ) -> bool:
        """Replace the vector and/or the whole payload of one row.

        Returns False (and changes nothing) when the id is missing or outside the active scope.
        Raises ``ValueError`` for an invalid vector or a new payload outside the active scope.
        """
        new_vec = self._unit_vectors([vector])[0] if vector is not None else None
        new_payload = dict(payload) if payload is not None else None
        if new_payload is not None and not in_active_scope(new_payload):
            raise ValueError("update: the new payload is outside the active scope")
        with self._write() as (conn, changes):
            row = conn.execute(
                f"SELECT rid, vector, payload, created_at FROM {self._table} WHERE id = ?", (str(vector_id),)
            ).fetchone()
            if row is None:
                return False
            rid, blob, old_json, old_created = row
            old_payload = json.loads(old_json)
            if not in_active_scope(old_payload):
                return False
            final = new_payload if new_payload is not None else old_payload
            ident = _identity_of(final)
            vec = new_vec if new_vec is not None else np.frombuffer(blob, dtype=np.float32)
            created = _utc_iso(final.get("created_at")) if final.get("created_at") else old_created
            conn.execute(
                f"UPDATE {self._table} SET user_id = ?, agent_id = ?, run_id = ?, vector = ?, payload = ?, "
                "created_at = ? WHERE rid = ?",
                (
                    ident["user_id"],
                    ident["agent_id"],
                    ident["run_id"],
                    vec.tobytes(),
                    _dumps(final),
                    created,
                    rid,
                ),
            )
            if new_payload is not None:  # text or identity may have changed
                conn.execute(f"DELETE FROM {self._fts} WHERE rowid = ?", (rid,))
                conn.execute(
                    f"INSERT INTO {self._fts} (rowid, text, scope) VALUES (?, ?, ?)",
                    (rid, _fts_text(final), _scope_text(ident)),
                )
            identity_moved = _identity_of(old_payload) != ident
            changes.append(_Change(rid, str(vector_id), ident, vec if new_vec is not None or identity_moved else None))
        return True

    def delete(self, vector_id: str) -> bool:
        """Delete one row; False when it is missing or outside the active scope."""
        return self.delete_many([vector_id]) == 1

    def delete_many(self, ids: Iterable[str]) -> int:
        """Delete many rows in one transaction, skipping ids outside the active scope; returns the count."""
        id_list = list(dict.fromkeys(str(i) for i in ids))
        if not id_list:
            return 0
        scoped = ACTIVE_SCOPE.get() is not None
        with self._write() as (conn, changes):
            targets: list[int] = []
            for chunk in _chunks(id_list):
                marks = ",".join("?" * len(chunk))
                for rid, payload in conn.execute(
                    f"SELECT rid, payload FROM {self._table} WHERE id IN ({marks})", chunk
                ):
                    if not scoped or in_active_scope(json.loads(payload)):
                        targets.append(rid)
            for chunk in _chunks(targets):
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM {self._table} WHERE rid IN ({marks})", chunk)
                conn.execute(f"DELETE FROM {self._fts} WHERE rowid IN ({marks})", chunk)
            changes.extend(_Change(rid, delta=-1) for rid in targets)
        return len(targets)

    # ------------------------------------------------------------------ reads

    def get(self, vector_id: str) -> OutputData | None:
        """The row with this id, or None when missing or outside the active scope."""
        with self._conn() as conn:
            row = conn.execute(f"SELECT id, payload FROM {self._table} WHERE id = ?", (str(vector_id),)).fetchone()
        if row is None:
            return None
        payload = json.loads(row[1])
        return OutputData(id=row[0], score=None, payload=payload) if in_active_scope(payload) else None

    def list(self, filters: Mapping[str, Any] | None = None, top_k: int | None = None) -> list[list[OutputData]]:
        """``[rows]`` (wrapped once, as mem0 expects) in scope, oldest first; ``top_k=None`` = all."""
        plan = _plan(filters)
        if plan is None or (top_k is not None and top_k <= 0):
            return [[]]
        where, params, rest, exact, _ = plan
        sql = f"SELECT id, payload FROM {self._table}{where} ORDER BY created_at, id"
        if exact and top_k is not None:
            sql += f" LIMIT {int(top_k)}"
        out: list[OutputData] = []
        with self._conn() as conn:
            for id_, payload_json in conn.execute(sql, params):
                payload = json.loads(payload_json)
                if exact or (matches(rest, payload) and in_active_scope(payload)):
                    out.append(OutputData(id=id_, score=None, payload=payload))
                    if top_k is not None and len(out) >= top_k:
                        break
        return [out]

    def count(self, filters: Mapping[str, Any] | None = None) -> int:
        """Number of rows in scope matching ``filters``."""
        plan = _plan(filters)
        if plan is None:
            return 0
        where, params, rest, exact, _ = plan
        with self._conn() as conn:
            if exact:
                return int(conn.execute(f"SELECT COUNT(*) FROM {self._table}{where}", params).fetchone()[0])
            return sum(
                1
                for (payload_json,) in conn.execute(f"SELECT payload FROM {self._table}{where}", params)
                if matches(rest, p := json.loads(payload_json)) and in_active_scope(p)
            )

    def search(
        self,
        query: str | None,
        vectors: Sequence[float],
        top_k: int | None = 5,
        filters: Mapping[str, Any] | None = None,
    ) -> list[OutputData]:
        """Nearest rows by cosine similarity, best first; scores clipped to [0, 1] as mem0 prefers."""
        plan = _plan(filters)
        if plan is None or (top_k is not None and top_k <= 0):
            return []
        identity, rest, exact = plan.identity, plan.rest, plan.exact
        q = self._unit_vectors(np.asarray(vectors, dtype=np.float64).reshape(1, -1))[0]
        with self._conn() as conn:
            ids, rids, mat = self._snapshot(conn, identity)
            n = len(mat)
            if not n:
                return []
            scores = _dot(mat, q)
            want = n if top_k is None else min(top_k, n)
            if exact and want < n:
                top = np.argpartition(-scores, want - 1)[:want]
                order = top[np.argsort(-scores[top], kind="stable")]
            else:
                order = np.argsort(-scores, kind="stable")
            out: list[OutputData] = []
            step = want if exact else max(4 * want, 64)
            for start in range(0, len(order), step):
                batch = order[start : start + step]
                payloads = self._payloads(conn, [rids[i] for i in batch])
                for i in batch:
                    payload_json = payloads.get(rids[i])
                    if payload_json is None:  # deleted by another process since the snapshot
                        continue
                    payload = json.loads(payload_json)
                    if (exact or matches(rest, payload)) and in_active_scope(payload):
                        out.append(OutputData(id=ids[i], score=max(0.0, float(scores[i])), payload=payload))
                        if len(out) >= want:
                            return out
        return out

    def keyword_search(
        self, query: str, top_k: int | None = 5, filters: Mapping[str, Any] | None = None
    ) -> list[OutputData]:
        """BM25 keyword search (FTS5), best first; score is ``-bm25()``, so positive, higher = better.

        Query tokens are ORed: a row matching more (and rarer) tokens ranks higher. The identity part
        of the scope is matched inside FTS5 (hashed tokens in the ``scope`` column, weight 0), so
        ranking only ever touches the caller's rows, however many other users share the table.
        """
        plan = _plan(filters)
        toks = query_tokens(query, limit=_MAX_QUERY_TOKENS)
        if plan is None or not toks or (top_k is not None and top_k <= 0):
            return []
        with self._conn() as conn:
            toks = self._informative(conn, toks)
        if not toks:
            return []
        match = "text : (" + " OR ".join('"' + tok.replace('"', '""') + '"' for tok in toks) + ")"
        for term in _scope_terms(plan.identity):
            match += f' AND scope : "{term}"'
        fts = self._fts
        sql = f"SELECT rowid, -bm25({fts}, 1.0, 0.0) FROM {fts} WHERE {fts} MATCH ? ORDER BY bm25({fts}, 1.0, 0.0)"
        if plan.exact and top_k is not None:
            sql += f" LIMIT {int(top_k)}"
        step = (top_k or 64) if plan.exact else max(4 * (top_k or 16), 64)
        out: list[OutputData] = []
        with self._conn() as conn:
            cur = conn.execute(sql, (match,))
            while batch := cur.fetchmany(step):
                rows = self._rows(conn, [rid for rid, _ in batch])
                for rid, score in batch:
                    row = rows.get(rid)
                    if row is None:
                        continue
                    id_, payload_json, ident = row
                    if any(ident.get(k) != v for k, v in plan.identity.items()):
                        continue  # hash collision in the scope column: never leak
                    payload = json.loads(payload_json)
                    if (plan.exact or matches(plan.rest, payload)) and in_active_scope(payload):
                        out.append(OutputData(id=id_, score=float(score), payload=payload))
                        if top_k is not None and len(out) >= top_k:
                            return out
        return out

    # ------------------------------------------------------------------ vector cache

    def _snapshot(
        self, conn: sqlite3.Connection, identity: Mapping[str, str]
    ) -> tuple[list[str], list[int], np.ndarray]:
        """Ids, rowids and unit-vector matrix of all rows with ``identity``, current as of now."""
        key: _Identity = tuple(sorted(identity.items()))
        with self._cache_lock:
            conn.execute("BEGIN")
            try:
                row = conn.execute(f"SELECT generation FROM {_META} WHERE name = ?", (self.collection_name,)).fetchone()
                gen = row[0] if row else None
                if gen is None or gen != self._gen:
                    self._slabs.clear()
                    self._gen = gen
                slab = self._slabs.get(key)
                if slab is None:
                    slab = self._load(conn, key)
                    self._slabs[key] = slab
                    self._evict(keep=key)
                else:
                    self._slabs.move_to_end(key)
                return slab.snapshot()
            finally:
                conn.execute("COMMIT")

    def _load(self, conn: sqlite3.Connection, key: _Identity) -> _Slab:
        where = " AND ".join(f"{k} = ?" for k, _ in key)
        sql = f"SELECT rid, id, vector FROM {self._table}" + (f" WHERE {where}" if where else "") + " ORDER BY rid"
        rids: list[int] = []
        ids: list[str] = []
        blobs: list[bytes] = []
        for rid, id_, blob in conn.execute(sql, [v for _, v in key]):
            rids.append(rid)
            ids.append(id_)
            blobs.append(blob)
        dims = self.embedding_model_dims
        mat = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), dims).copy()
        logger.debug("loaded %d vectors for %s %s", len(ids), self.collection_name, dict(key))
        return _Slab(key, rids, ids, mat)

    def _evict(self, keep: _Identity) -> None:
        total = sum(s.mat.nbytes for s in self._slabs.values())
        for key in list(self._slabs):
            if total <= self._cache_bytes:
                break
            if key != keep:
                total -= self._slabs.pop(key).mat.nbytes

    def _informative(self, conn: sqlite3.Connection, toks: list[str]) -> list[str]:
        """Drop tokens found in more than half of all rows.

        FTS5's BM25 gives them an IDF of ~0 (clamped to 1e-6), so they cannot change the ranking, but
        scoring every row that contains them dominates query time (a word in all 10k rows: ~20 ms).
        """
        row = conn.execute(f"SELECT rows FROM {_META} WHERE name = ?", (self.collection_name,)).fetchone()
        total = row[0] if row else 0
        if total < _PRUNE_MIN_ROWS:  # small tables are fast anyway; keep every possible match
            return toks
        marks = ",".join("?" * len(toks))
        df = dict(conn.execute(f'SELECT term, doc FROM "{self.collection_name}__vocab" WHERE term IN ({marks})', toks))
        return [tok for tok in toks if df.get(tok, 0) > 0 and df[tok] * 2 <= total]

    def _rows(self, conn: sqlite3.Connection, rids: Sequence[int]) -> dict[int, tuple[str, str, dict[str, str]]]:
        """``rid -> (id, payload_json, identity)`` for the rows that still exist."""
        out: dict[int, tuple[str, str, dict[str, str]]] = {}
        for chunk in _chunks(list(rids)):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT rid, id, payload, user_id, agent_id, run_id FROM {self._table} WHERE rid IN ({marks})"
            for rid, id_, payload, *ident in conn.execute(sql, chunk):
                out[rid] = (id_, payload, dict(zip(IDENTITY_KEYS, ident, strict=True)))
        return out

    def _payloads(self, conn: sqlite3.Connection, rids: Sequence[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        for chunk in _chunks(list(rids)):
            marks = ",".join("?" * len(chunk))
            out.update(conn.execute(f"SELECT rid, payload FROM {self._table} WHERE rid IN ({marks})", chunk))
        return out

    def _unit_vectors(self, vectors: Any) -> np.ndarray:
        """Validate a batch of vectors and return them L2-normalised as float32 (k x dims)."""
        dims = self.embedding_model_dims
        try:
            arr = np.asarray(vectors, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"vectors must be lists of {dims} numbers: {exc}") from None
        if arr.size == 0 and arr.ndim <= 2 and (arr.ndim < 2 or arr.shape[1] in (0, dims)):
            return np.empty((0, dims), dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != dims:
            got = arr.shape[1] if arr.ndim == 2 else f"shape {arr.shape}"
            raise ValueError(f"vector length must be {dims} (embedding_model_dims), got {got}")
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            raise ValueError(f"vector {int(np.argmin(finite))} contains NaN or infinity")
        norms = np.linalg.norm(arr, axis=1)
        if (norms == 0).any():
            raise ValueError(f"vector {int(np.argmin(norms))} is all zeros and has no direction")
        return (arr / norms[:, None]).astype(np.float32)


# ---------------------------------------------------------------------- helpers


def _scope_identity(filters: Mapping[str, Any] | None) -> tuple[dict[str, str] | None, dict[str, Any]]:
    """Identity equality from ``filters`` merged with ACTIVE_SCOPE; ``None`` when they contradict."""
    identity, rest = split_identity(filters)
    for key, value in (ACTIVE_SCOPE.get() or {}).items():
        if key in IDENTITY_KEYS and isinstance(value, str) and identity.setdefault(key, value) != value:
            return None, rest
    return identity, rest


class _Plan(NamedTuple):
    """How to answer a filter: identity pushed into SQL, the rest checked in Python."""

    where: str  # " WHERE user_id = ? AND ..." or ""
    params: list[str]
    rest: dict[str, Any]  # still to check with filters.matches
    exact: bool  # SQL alone decides membership (no rest, scope fully pushed down)
    identity: dict[str, str]


def _plan(filters: Mapping[str, Any] | None, alias: str = "") -> _Plan | None:
    """Plan a read under ACTIVE_SCOPE; ``None`` when filters and scope contradict (no rows)."""
    identity, rest = _scope_identity(filters)
    if identity is None:
        return None
    scope = ACTIVE_SCOPE.get() or {}
    fully_pushed = all(key in identity for key in scope)
    where = " AND ".join(f"{alias}{key} = ?" for key in sorted(identity))
    params = [identity[key] for key in sorted(identity)]
    return _Plan((f" WHERE {where}" if where else ""), params, rest, not rest and fully_pushed, identity)


def _identity_of(payload: Mapping[str, Any]) -> dict[str, str | None]:
    return {key: (v if isinstance(v := payload.get(key), str) else None) for key in IDENTITY_KEYS}


def _dot(mat: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``mat @ q`` in row blocks small enough that OpenBLAS stays single-threaded.

    Measured on a busy 2-CPU host: one multi-threaded sgemv over 10k x 384 took 0.4 ms when idle but
    8-40 ms under load (its threads spin-wait for cores); 512-row blocks take ~1.1 ms regardless, and
    the server gets its parallelism from concurrent requests anyway.
    """
    out = np.empty(len(mat), dtype=np.float32)
    step = max(64, 196_608 // max(1, mat.shape[1]))
    for start in range(0, len(mat), step):
        np.matmul(mat[start : start + step], q, out=out[start : start + step])
    return out


def _scope_terms(identity: Mapping[str, str | None]) -> list[str]:
    """One FTS token per identity value: key initial + 20 hex digits of its SHA-1 (any id is safe)."""
    return [
        key[0] + hashlib.sha1(value.encode("utf-8")).hexdigest()[:20]
        for key in IDENTITY_KEYS
        if isinstance(value := identity.get(key), str)
    ]


def _scope_text(identity: Mapping[str, str | None]) -> str:
    return " ".join(_scope_terms(identity))


def _dumps(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, default=str, separators=(",", ":"))


def _fts_text(payload: Mapping[str, Any]) -> str:
    """Tokens of ``data`` plus any extra tokens of mem0's ``text_lemmatized`` (its BM25 text)."""
    data = payload.get("data")
    toks = tokens(data if isinstance(data, str) else None)
    lemmas = payload.get("text_lemmatized")
    if isinstance(lemmas, str) and lemmas:
        seen = set(toks)
        toks += [t for t in dict.fromkeys(tokens(lemmas)) if t not in seen]
    return " ".join(toks)


def _utc_iso(value: Any) -> str:
    """ISO-8601 UTC with microseconds, so text order is time order; falls back to the raw string."""
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        return parsed.isoformat(timespec="microseconds") + "+00:00"
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "+00:00"


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
