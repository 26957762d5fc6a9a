"""The stores' common base: the typed port the repository uses, on each store's row methods.

Two levels, one class:

* **The typed port** (:class:`~..memory.store_port.StorePort`): ``put``, ``read``, ``page``, ``nearest``,
  ``keyword_hits``, ... take the caller's :class:`~..scope.Scope`, the states it may see and a
  :class:`~..memory.query_filters.MemoryQuery`, and return :class:`~..memory.ports.StoredMemory`. Rows are
  mapped by :mod:`.row_format`; the scope, states and query become the stores' own query (:mod:`.port`).
* **Row methods** (``insert``, ``search``, ``list_page``, ...): payload dicts (:mod:`.row_format`'s keys)
  and mem0's filter dialect (:mod:`.filters`), for the mem0 provider (:mod:`..mem0.vector_store`) and the
  store-level tests. Each takes the caller's identity as ``scope=`` (``{"user_id": u}`` or
  ``{"user_id": u, "agent_id": c}``); without it, the one :func:`scoped` opened (a test convenience).

**Scope fails closed.** No identity, or one without a user, raises
(:class:`~tablestore_openmemory_mcp.errors.ScopeMissing`) before any I/O, and a row outside the scope is
treated as absent, so a guessed or leaked id never reaches another user's memory.

**Exact duplicates** are found through ``dedup_key`` (scope + content hash), kept by the store on a
strongly consistent path (a unique index, or a conditional row), never by a lagging search index.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, NamedTuple

from pydantic import BaseModel

from tablestore_openmemory_mcp.errors import ConflictError, MemoryNotFound, ScopeMissing
from tablestore_openmemory_mcp.memory.ports import ALL_STATES, State, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery
from tablestore_openmemory_mcp.memory.store_port import KeywordHit, NewRow, RowChange, RowPage, Tally
from tablestore_openmemory_mcp.scope import Scope

from . import row_format
from .port import EVERYTHING, READY_USER, scope_filters, selection

#: Identity filters of the store call in progress, e.g. ``{"user_id": "u1", "agent_id": "cline"}``.
ACTIVE_SCOPE: ContextVar[dict[str, str] | None] = ContextVar("ACTIVE_SCOPE", default=None)


@contextmanager
def scoped(filters: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Run the enclosed store calls for one caller; ``filters`` must name at least the user."""
    if not filters.get("user_id"):
        raise ScopeMissing("a store scope needs a user_id")
    token = ACTIVE_SCOPE.set(dict(filters))
    try:
        yield dict(filters)
    finally:
        ACTIVE_SCOPE.reset(token)


#: The caller's identity a row method was given (``None``: the one :func:`scoped` opened).
Who = Mapping[str, str] | None


def require_scope(given: Who = None) -> dict[str, str]:
    """The caller's identity: ``given`` (the typed port passes it), else the one :func:`scoped` opened;
    raises :class:`ScopeMissing` when there is none or it names no user."""
    scope = dict(given) if given is not None else ACTIVE_SCOPE.get()
    if not scope or not scope.get("user_id"):
        raise ScopeMissing("store called without a caller scope (use stores.base.scoped)")
    return scope


class RowUpdate(NamedTuple):
    """One change for :meth:`MemoryStore.update_many` (the arguments of ``update``)."""

    id: str
    vector: Sequence[float] | None = None
    payload: Mapping[str, Any] | None = None
    expected_updated_at: str | None = None
    dedup_key: str | None = None


class OutputData(BaseModel):
    """One stored row: ``id``, ``score`` (higher is better; search only) and ``payload``."""

    id: str
    score: float | None = None
    payload: dict[str, Any] | None = None


def in_active_scope(payload: Mapping[str, Any] | None) -> bool:
    """True when ``payload`` belongs to the active scope; raises when no scope is active."""
    scope = require_scope()
    if not payload:
        return False
    return all(payload.get(key) == value for key, value in scope.items())


class MemoryStore(ABC):
    """A store's row methods (inside :func:`scoped`) and, on them, the typed port
    (:class:`~..memory.store_port.StorePort`) the repository uses: scope, states and query as arguments."""

    # ------------------------------------------------------------------ the typed port

    def put(self, scope: Scope, rows: Sequence[NewRow]) -> list[str]:
        if not rows:
            return []
        return self.insert(
            [list(row.vector) for row in rows],
            [row_format.to_payload(row.memory) for row in rows],
            [row.memory.id for row in rows],
            [row.dedup_key for row in rows],
            scope=scope_filters(scope),
        )

    def read_one(self, scope: Scope, memory_id: str) -> StoredMemory | None:
        row = self.get(memory_id, scope=scope_filters(scope))
        return row_format.to_memory(row.id, row.payload) if row is not None else None

    def read(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, StoredMemory]:
        ids = list(dict.fromkeys(str(i) for i in memory_ids))
        if not ids:
            return {}
        rows = self.get_many(ids, scope=scope_filters(scope))
        return {key: row_format.to_memory(row.id, row.payload) for key, row in rows.items()}

    def read_vectors(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, list[float]]:
        if not memory_ids:
            return {}
        return self.get_vectors(list(memory_ids), scope=scope_filters(scope))

    def holder(self, scope: Scope, dedup_key: str) -> StoredMemory | None:
        row = self.find_by_dedup_key(dedup_key, scope=scope_filters(scope))
        return row_format.to_memory(row.id, row.payload) if row is not None else None

    def rewrite(self, scope: Scope, change: RowChange) -> None:
        self.update(
            change.memory_id,
            list(change.vector) if change.vector is not None else None,
            row_format.to_payload(change.memory) if change.memory is not None else None,
            expected_updated_at=change.expected_updated_at,
            dedup_key=change.dedup_key,
            scope=scope_filters(scope),
        )

    def rewrite_many(self, scope: Scope, changes: Sequence[RowChange]) -> list[str]:
        if not changes:
            return []
        updates = [
            RowUpdate(
                change.memory_id,
                list(change.vector) if change.vector is not None else None,
                row_format.to_payload(change.memory) if change.memory is not None else None,
                expected_updated_at=change.expected_updated_at,
                dedup_key=change.dedup_key,
            )
            for change in changes
        ]
        return self.update_many(updates, scope=scope_filters(scope))

    def remove(self, scope: Scope, memory_ids: Sequence[str]) -> list[str]:
        ids = list(dict.fromkeys(str(i) for i in memory_ids))
        if not ids:
            return []
        return self.delete_many(ids, scope=scope_filters(scope))

    def page(
        self,
        scope: Scope,
        *,
        states: Collection[State],
        query: MemoryQuery = EVERYTHING,
        limit: int,
        cursor: str | None = None,
    ) -> RowPage:
        rows, next_cursor = self.list_page(selection(scope, states, query), limit, cursor, scope=scope_filters(scope))
        return RowPage([row_format.to_memory(row.id, row.payload) for row in rows], next_cursor)

    def page_total(self, scope: Scope, *, states: Collection[State], query: MemoryQuery = EVERYTHING) -> int:
        return self.total(selection(scope, states, query), scope=scope_filters(scope))

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
    ) -> tuple[list[StoredMemory], int]:
        rows, total = self.created_page(
            selection(scope, states, query),
            newest_first=newest_first,
            offset=offset,
            limit=limit,
            since=since,
            until=until,
            scope=scope_filters(scope),
        )
        return [row_format.to_memory(row.id, row.payload) for row in rows], total

    def tallies(self, scope: Scope) -> Tally:
        return self.tally(selection(scope, ALL_STATES, EVERYTHING), scope=scope_filters(scope))

    def nearest(
        self,
        scope: Scope,
        vector: Sequence[float],
        limit: int,
        *,
        states: Collection[State],
        query: MemoryQuery = EVERYTHING,
    ) -> list[StoredMemory]:
        rows = self.search(
            "", list(vector), top_k=limit, filters=selection(scope, states, query), scope=scope_filters(scope)
        )
        return [row_format.to_memory(row.id, row.payload, row.score) for row in rows if row.payload]

    def keyword_hits(
        self,
        scope: Scope,
        text: str,
        limit: int,
        *,
        states: Collection[State],
        query: MemoryQuery = EVERYTHING,
        candidates: Sequence[str] | None = None,
    ) -> list[KeywordHit] | None:
        rows = self.keyword_search(
            text,
            top_k=limit,
            filters=selection(scope, states, query),
            candidates=candidates,
            scope=scope_filters(scope),
        )
        if rows is None:
            return None
        return [KeywordHit(str(row.id), float(row.score)) for row in rows if row.score and row.score > 0]

    def probe(self) -> None:
        """One scoped page read of a user no memory belongs to."""
        self.list_page({"user_id": READY_USER}, 1, None, scope={"user_id": READY_USER})

    # ------------------------------------------------------------------ row methods (payload dicts, filters)

    @abstractmethod
    def insert(
        self,
        vectors: Sequence[Sequence[float]],
        payloads: Sequence[Mapping[str, Any]],
        ids: Sequence[str],
        dedup_keys: Sequence[str | None] | None = None,
        *,
        scope: Who = None,
    ) -> list[str]:
        """Store rows; return, per row, the id that now holds it.

        Where ``dedup_keys[i]`` is set and a live row in scope already has that key, nothing is written
        for row ``i`` and that row's id is returned instead (atomic against concurrent inserts, in this
        process and in others). A failed call leaves nothing half-written.
        """

    @abstractmethod
    def search(
        self,
        query: str,
        vectors: Sequence[float],
        top_k: int = 5,
        filters: Mapping[str, Any] | None = None,
        *,
        scope: Who = None,
    ) -> list[OutputData]:
        """Nearest rows by cosine similarity (``score`` in [-1, 1]), current text, no deleted rows."""

    @abstractmethod
    def keyword_search(
        self,
        query: str,
        top_k: int = 5,
        filters: Mapping[str, Any] | None = None,
        candidates: Sequence[str] | None = None,
        *,
        scope: Who = None,
    ) -> list[OutputData] | None:
        """Keyword (BM25-like) matches with raw scores, statistics from the caller's scope only.

        With ``candidates`` (ids, e.g. the vector search's hits) only those rows are scored."""

    def get(self, vector_id: str, *, scope: Who = None) -> OutputData | None:
        """One row by id; None when missing or outside the scope."""
        return self.get_many([vector_id], scope=scope).get(str(vector_id))

    @abstractmethod
    def get_many(self, ids: Sequence[str], *, scope: Who = None) -> dict[str, OutputData]:
        """Rows by id (missing or out-of-scope ids are absent), strongly consistent."""

    def get_vectors(self, ids: Sequence[str], *, scope: Who = None) -> dict[str, list[float]]:
        """Stored vectors by id (for export and re-embedding); rows outside the scope are absent."""
        raise NotImplementedError(f"{type(self).__name__} cannot export vectors yet")

    @abstractmethod
    def find_by_dedup_key(self, key: str, *, scope: Who = None) -> OutputData | None:
        """The live row in scope holding ``key``, strongly consistent."""

    @abstractmethod
    def update(
        self,
        vector_id: str,
        vector: Sequence[float] | None = None,
        payload: Mapping[str, Any] | None = None,
        *,
        expected_updated_at: str | None = None,
        dedup_key: str | None = None,
        scope: Who = None,
    ) -> None:
        """Replace vector and/or payload. With ``expected_updated_at``, only if the row still has it
        (else :class:`~tablestore_openmemory_mcp.errors.ConflictError`). ``dedup_key`` moves the
        row's key (dropped when another live row holds it). A missing row raises ``MemoryNotFound``."""

    def update_many(self, changes: Sequence[RowUpdate], *, scope: Who = None) -> list[str]:
        """Several conditional updates; returns the ids updated (conflicting or missing rows are left out).

        Stores override this to batch the writes (Tablestore: one BatchWriteRow per 200 rows)."""
        updated: list[str] = []
        for change in changes:
            try:
                self.update(
                    change.id,
                    change.vector,
                    change.payload,
                    expected_updated_at=change.expected_updated_at,
                    dedup_key=change.dedup_key,
                    scope=scope,
                )
            except (ConflictError, MemoryNotFound):
                continue
            updated.append(change.id)
        return updated

    @abstractmethod
    def delete_many(self, ids: Iterable[str], *, scope: Who = None) -> list[str]:
        """Delete rows in scope; return exactly the ids that were deleted by this call (retries included)."""

    @abstractmethod
    def list_page(
        self, filters: Mapping[str, Any] | None, limit: int, cursor: str | None = None, *, scope: Who = None
    ) -> tuple[list[OutputData], str | None]:
        """One page of rows in scope in a stable order, and an opaque cursor for the next (None at the end).

        Strongly consistent; a row added or deleted between pages never makes another row repeat or vanish.
        """

    @abstractmethod
    def count(self, filters: Mapping[str, Any] | None = None, *, scope: Who = None) -> int: ...

    def total(self, filters: Mapping[str, Any] | None = None, *, scope: Who = None) -> int:
        """The total shown with a page of :meth:`list_page`: :meth:`count` unless the store has a cheaper
        answer (Tablestore: the search index's count, this process's own recent writes reconciled, so
        other processes' writes of the last seconds may be missing)."""
        return self.count(filters, scope=scope)

    def created_page(
        self,
        filters: Mapping[str, Any] | None,
        *,
        newest_first: bool,
        offset: int,
        limit: int,
        since: str | None = None,
        until: str | None = None,
        scope: Who = None,
    ) -> tuple[list[OutputData], int]:
        """One offset page of the rows in scope in (created_at, id) order, and how many rows match.

        ``since`` (inclusive) and ``until`` (exclusive) bound ``created_at`` as ISO strings. The owner's
        browser pages this way. This default reads every row; a store with an ordered index overrides it.
        """
        rows = [
            row
            for row in self._every_row(filters, scope)
            if (since is None or _created(row) >= since) and (until is None or _created(row) < until)
        ]
        rows.sort(key=lambda r: (_created(r), str(r.id)), reverse=newest_first)
        return rows[offset : offset + limit], len(rows)

    def tally(self, filters: Mapping[str, Any] | None, *, scope: Who = None) -> dict[tuple[str | None, str, str], int]:
        """How many rows in scope there are per (client, state, day created): the owner's app list and
        statistics. A row without a state is active. This default reads every row; a store with the
        columns at hand overrides it."""
        return self.tally_rows(self._every_row(filters, scope))

    @staticmethod
    def tally_rows(rows: Iterable[OutputData]) -> dict[tuple[str | None, str, str], int]:
        """:meth:`tally` of the given rows."""
        counts: Counter[tuple[str | None, str, str]] = Counter()
        for row in rows:
            payload = row.payload or {}
            client = payload.get("agent_id")
            state = str(payload.get("state") or "active")
            counts[(client if isinstance(client, str) else None, state, _created(row)[:10])] += 1
        return dict(counts)

    def _every_row(self, filters: Mapping[str, Any] | None, scope: Who = None) -> Iterator[OutputData]:
        """Every row in scope matching ``filters``, read through :meth:`list_page`."""
        cursor: str | None = None
        while True:
            page, cursor = self.list_page(filters, 1000, cursor, scope=scope)
            yield from page
            if cursor is None:
                return

    @abstractmethod
    def close(self) -> None: ...


def _created(row: OutputData) -> str:
    return str((row.payload or {}).get("created_at") or "")
