"""``TablestoreStore``: the memory store on Alibaba Cloud Tablestore, on the ``tablestore`` SDK.

It implements the typed store port (:class:`~...memory.store_port.StorePort`) natively. Layout (see
``schema``): primary key ``(user_id, memory_id)``, so one user's memories are one contiguous range. Every
decision is made on the table, which is strongly consistent; the search index, which lags writes by
seconds, only proposes candidates (or answers counts exactly when it can). Every call names the caller's
:class:`~...scope.Scope`: its user is the primary-key range, its client (unless shared) a column condition on
writes and a column filter or check on reads, so a row outside the scope behaves like a missing row
(:mod:`.selection` turns the scope, the states and the :class:`MemoryQuery` into those conditions).

The parts, one module each: writes (``writes``: dedup claims, conditional updates, exact deletes), the
range reads (``ranges``: pages, counts), the index reads (``narrowed``: search, keyword scores, narrowed
pages; ``index_reads``: totals, created-order pages, counts per day), startup (``startup``).

RPCs per operation (nothing failing):

* ``put`` = the dedup claims, then PutRow or BatchWriteRow (see ``writes``); ``rewrite`` = UpdateRow (+1
  PutRow for a new dedup key); ``rewrite_many`` = BatchWriteRow per 200 rows or 3.5 MB; ``remove`` = per
  200 ids BatchGetRow + BatchWriteRow (+ BatchWriteRow releasing their keys).
* ``read_one`` = GetRow; ``read``/``read_vectors`` = BatchGetRow per 100 ids; ``holder`` = 2 GetRow.
* ``page`` = GetRange (limit + 1 rows), or with a narrowing query 1 Search + BatchGetRow; ``page_total`` =
  1 Search (the index's count, this process's recent writes reconciled), or a keys-only GetRange scan.
* ``nearest`` = 1 Search (KNN, primary keys only, so up to 1000 hits in one page: no paging tokens) +
  1 BatchGetRow that checks the best hits against the table: deleted rows dropped, current text
  returned. This process's own writes of the last seconds (``recent``) join the candidates, so a search
  right after an add finds it. ``keyword_hits`` on the search's hits costs no RPC (``keyword``).

Every RPC goes through our own time-bounded retry (see ``retry``); the SDK's retry is disabled. Startup waits
until a new table and index can be used (see ``readiness``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tablestore_openmemory_mcp.memory.ports import ALL_STATES, State, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import EVERYTHING, MemoryQuery
from tablestore_openmemory_mcp.memory.store_port import KeywordHit, NewRow, RowChange, RowPage, StorePort, Tally
from tablestore_openmemory_mcp.scope import Scope

from .. import row_format
from . import aggregations as agg
from .batch import Batches, PrimaryKey
from .by_id import IdReads, row_ids
from .client import make_client
from .dedup import DedupKeys
from .dedup_sweep import sweep
from .index_reads import IndexReads
from .keyword import CandidateStash
from .narrowed import NarrowedReads
from .narrowing import NARROWING_COLUMNS
from .ranges import RangeReads
from .readiness import Readiness
from .recent import WINDOW, RecentWrites
from .retry import Retrier, TablestoreUnavailableError
from .schema import (
    COL_PAYLOAD,
    COL_VECTOR,
    KEYWORD_FIELDS,
    PK_ID,
    PK_USER,
    normalize_metric,
    validate_dimension,
    validate_name,
)
from .selection import Selection, Who
from .startup import ensure
from .switch_watch import OnSwitch, SwitchWatch
from .tables import close_client
from .vectors import read_vectors
from .writes import Change, Writes

T = TypeVar("T")

#: Seconds a readiness probe retries at most.
PROBE_SECONDS = 2.0


class TablestoreStore:
    """Memories on one Tablestore table plus one search index (see the module docstring)."""

    def __init__(
        self,
        collection_name: str = "mem0",
        endpoint: str | None = None,
        instance_name: str | None = None,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        sts_token: str | None = None,
        embedding_model_dims: int = 1536,
        index_name: str | None = None,
        metric: str = "cosine",
        region: str | None = None,
        timeout: float = 10.0,
        max_retries: int | None = None,
        max_connection: int = 32,
        recent_window: float = WINDOW,
        embedder_name: str | None = None,
        max_retry_seconds: float | None = None,
        ready_timeout: float | None = None,
        also_create: Sequence[tuple[str, Sequence[tuple[str, str]]]] = (),
        **_ignored: Any,
    ) -> None:
        self.collection_name = validate_name("table", collection_name)
        self.index_name = validate_name("index", index_name or f"{collection_name}_search_index")
        self.embedding_model_dims = validate_dimension(embedding_model_dims)
        self.metric = normalize_metric(metric)
        self.client = make_client(
            endpoint=endpoint,
            instance_name=instance_name,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            sts_token=sts_token,
            region=region,
            timeout=timeout,
            max_connection=max_connection,
            logger_name=f"{__name__}.sdk",
        )
        assert endpoint is not None
        self.endpoint = endpoint.rstrip("/")
        self.instance_name = instance_name
        self._retry = Retrier(self.endpoint, max_seconds=max_retry_seconds, attempts=max_retries)
        self._batches = Batches(self.client, self._retry)
        self._dedup = DedupKeys(self.client, self.collection_name, self._retry, self._batches)
        self._recent = RecentWrites(window=recent_window)
        self.readiness = Readiness(self.endpoint, ready_timeout)
        self._stash = CandidateStash()
        # the index's filterable fields, narrowed at startup when an older index lacks some
        self._indexed = KEYWORD_FIELDS | frozenset(NARROWING_COLUMNS)
        self.embedder_name = embedder_name  # recorded in the meta row; another one is refused (see reembed)
        self.vector_column = COL_VECTOR  # the meta row may name another (after a reembed)
        self._by_id = IdReads(self)  # rows by id, checked against the scope
        self._writes = Writes(self)  # claims, conditional updates, exact deletes
        self._ranges = RangeReads(self)  # pages and counts read from the user's range
        self._index_reads = IndexReads(self)  # totals, pages by time and counts from the index
        self._narrowed = NarrowedReads(self)  # search, keyword scores and narrowed pages from the index
        self._switch = SwitchWatch(self)  # a reembed switch is picked up while running
        ensure(self, also_create)  # the server's other tables (history logs) are created with a new table

    # ------------------------------------------------------------------ plumbing

    def _call(self, api: str, fn: Callable[[], T]) -> T:
        """One SDK call under our retry policy."""
        return self._retry.call(api, fn)

    @staticmethod
    def _pk(user: str, memory_id: Any) -> PrimaryKey:
        return [(PK_USER, user), (PK_ID, memory_id)]

    def close(self) -> None:
        """Release pooled connections."""
        close_client(self.client)

    def probe(self) -> None:
        """One GetRow outside every user's range, retried for at most 2 s: a readiness probe (``/ready``) must
        answer within seconds, not after the full retry budget of an operation."""
        seconds = min(PROBE_SECONDS, self._retry.max_seconds)
        quick = Retrier(self.endpoint, max_seconds=seconds, note=f"a readiness probe retries {seconds:g} s")
        key = [(PK_USER, "#ready"), (PK_ID, "probe")]
        quick.call("GetRow", lambda: self.client.get_row(self.collection_name, key, [COL_PAYLOAD], None, 1))

    # ------------------------------------------------------------------ writes (``writes``)

    def put(self, scope: Scope, rows: Sequence[NewRow]) -> list[str]:
        who = Who.of(scope)  # first: no user fails closed, whatever the call
        if not rows:
            return []
        return self._writes.insert(
            who,
            [row.memory.id for row in rows],
            [list(row.vector) for row in rows],
            [row_format.to_payload(row.memory) for row in rows],
            [row.dedup_key for row in rows],
        )

    def rewrite(self, scope: Scope, change: RowChange) -> None:
        self._writes.update(Who.of(scope), _change(change))

    def rewrite_many(self, scope: Scope, changes: Sequence[RowChange]) -> list[str]:
        who = Who.of(scope)
        return self._writes.update_many(who, [_change(c) for c in changes]) if changes else []

    def remove(self, scope: Scope, memory_ids: Sequence[str]) -> list[str]:
        who = Who.of(scope)
        ids = list(dict.fromkeys(str(i) for i in memory_ids))
        return self._writes.delete_many(who, ids) if ids else []

    # ------------------------------------------------------------------ reads by id

    def read_one(self, scope: Scope, memory_id: str) -> StoredMemory | None:
        found = self._by_id.one(Who.of(scope), str(memory_id))
        return found.memory if found is not None else None

    def read(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, StoredMemory]:
        who = Who.of(scope)
        ids = row_ids(memory_ids)
        return {key: row.memory for key, row in self._by_id.rows(who, ids).items()} if ids else {}

    def read_vectors(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, list[float]]:
        """Stored vectors by id (export): one BatchGetRow per 100 ids, rows outside the scope absent."""
        who = Who.of(scope)
        return read_vectors(self, memory_ids, who) if memory_ids else {}

    def holder(self, scope: Scope, dedup_key: str) -> StoredMemory | None:
        found = self._by_id.holder(Who.of(scope), dedup_key)
        return found.memory if found is not None else None

    # ------------------------------------------------------------------ pages, totals, counts

    def page(
        self,
        scope: Scope,
        *,
        states: Collection[State],
        query: MemoryQuery = EVERYTHING,
        limit: int,
        cursor: str | None = None,
    ) -> RowPage:
        """A narrowed page from the index (``narrowed``); else a GetRange page of the user's range (``ranges``)."""
        sel = Selection.of(scope, states, query)
        found = self._narrowed.page(sel, limit, cursor)
        if found is not None:
            return found
        rows, next_cursor = self._ranges.page(sel, limit, cursor)
        return RowPage([row.memory for row in rows], next_cursor)

    def page_total(self, scope: Scope, *, states: Collection[State], query: MemoryQuery = EVERYTHING) -> int:
        """The index's count with this process's recent writes reconciled (``index_reads``); a count of the range
        when the index cannot answer exactly, or right after a page that read the whole range."""
        sel = Selection.of(scope, states, query)
        if self._ranges.memo(sel.key()) is None:
            found = self._index_reads.total(sel)
            if found is not None:
                return found
        return self._ranges.count(sel)

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
        """The owner's page by creation time from the index (``index_reads``); else every row is read."""
        sel = Selection.of(scope, states, query)
        found = self._index_reads.created_page(
            sel, newest_first=newest_first, offset=offset, limit=limit, since=since, until=until
        )
        if found is None:
            created = [(row.memory.created_at, row) for row in self._ranges.every(sel)]
            rows = [row for at, row in created if (since is None or at >= since) and (until is None or at < until)]
            rows.sort(key=lambda r: (r.memory.created_at, r.id), reverse=newest_first)
            found = rows[offset : offset + limit], len(rows)
        return [row.memory for row in found[0]], found[1]

    def tallies(self, scope: Scope) -> Tally:
        """Counts per (client, state, day) from the index's group-bys (``aggregations``); else every row is read."""
        sel = Selection(Who.of(scope), frozenset(ALL_STATES))
        found = self._index_reads.tally(sel)
        return found if found is not None else agg.tally_rows(row.memory for row in self._ranges.every(sel))

    # ------------------------------------------------------------------ search (``narrowed``)

    def nearest(
        self,
        scope: Scope,
        vector: Sequence[float],
        limit: int,
        *,
        states: Collection[State],
        query: MemoryQuery = EVERYTHING,
    ) -> list[StoredMemory]:
        """KNN with the scope, states and query inside the vector query's filter: top-k among matching rows."""
        return [row.memory for row in self._narrowed.nearest(Selection.of(scope, states, query), vector, limit)]

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
        return self._narrowed.keyword_hits(Selection.of(scope, states, query), text, limit, candidates)

    # ------------------------------------------------------------------ maintenance

    def follow_switches(self, on_switch: OnSwitch, fresh: Callable[[], bool] | None = None) -> None:
        """Let a running server adopt a ``reembed`` switch (``switch_watch``): ``on_switch(meta)`` makes its
        embedder the one the meta row names (True when done); ``fresh()`` fences vectors embedded before."""
        self._switch.on_switch = on_switch
        self._switch.fresh = fresh

    def sweep_dedup(self, scope: Scope) -> int:
        """Remove the scope user's stale dedup rows (maintenance; see ``dedup_sweep``); returns how many."""
        return sweep(self, Who.of(scope).user)


if TYPE_CHECKING:

    def _is_a_store_port(store: TablestoreStore) -> StorePort:
        return store  # mypy checks the class against the port's protocol here


def _change(change: RowChange) -> Change:
    """A port change as the write path's: the memory as its stored payload."""
    payload = row_format.to_payload(change.memory) if change.memory is not None else None
    vector = list(change.vector) if change.vector is not None else None
    return Change(change.memory_id, vector, payload, change.expected_updated_at, change.dedup_key)


__all__ = ["TablestoreStore", "TablestoreUnavailableError"]
