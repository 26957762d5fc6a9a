"""The typed port's reads with a :class:`MemoryQuery` pushed into the search index (issue 23).

Why: the filter-dict row methods could not push a category, an event-time window or tags into the index,
so a narrowed search took a bounded over-fetch of the nearest rows and filtered it: a selective filter
whose matches are far from the query returned fewer than ``limit`` of them. Here the query's conditions
(:mod:`.narrowing`) go into the index query itself — inside the KNN query's filter, so top-k is taken
among matching rows only — and every result is still read back from the table and checked
(:meth:`MemoryQuery.accepts`, the states, the scope), because the index lags and rows written before the
narrowing columns existed pass every narrowing condition.

No fixed over-fetch: a search asks for ``limit`` hits and, only when the check drops some (index lag, old
rows, an index without the narrowing fields) and the index had more, asks again with a larger ``top_k``
(up to the documented 1,000). Pages walk the index in primary-key order (the order of the unfiltered
GetRange pages, with the same cursor) until a page is full. Totals and the owner's created-order pages
use the index's count when it is exact for the query (no old row among the matches); otherwise each
method answers ``None`` and the caller takes the strongly consistent path of before.

RPCs (nothing lagging, no old rows): search = 1 Search + 1 BatchGetRow of about ``limit`` rows; page =
1 Search + 1 BatchGetRow per 100 rows; total = 2 Searches (matches, old rows); created window = 2 Searches
+ 1 BatchGetRow; each plus the reconciliation of this process's recent writes (``index_reads``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from tablestore import (
    BoolQuery,
    ColumnReturnType,
    ColumnsToGet,
    ExistsQuery,
    FieldSort,
    KnnVectorQuery,
    MatchQuery,
    Query,
    RangeQuery,
    SearchQuery,
    Sort,
    SortOrder,
    TermsQuery,
)

from tablestore_openmemory_mcp.errors import UserInputError
from tablestore_openmemory_mcp.memory.ports import State, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery
from tablestore_openmemory_mcp.memory.store_port import KeywordHit, RowPage
from tablestore_openmemory_mcp.scope import Scope

from .. import row_format
from ..base import OutputData
from ..filters import matches
from ..port import scope_filters, selection, state_filter
from ..tokenize import tokens
from . import query as qb
from .batch import GET_ROWS
from .index_reads import MAX_TOUCHED
from .keyword import bm25, filters_key
from .narrowing import COL_EVENT_AT, NARROWING_COLUMNS, pushdown
from .schema import PK_ID

if TYPE_CHECKING:
    from .store import TablestoreStore

#: KnnVectorQuery's documented top_k maximum, and Search's limit when only primary keys are returned.
MAX_TOP_K = 1000
#: How much a search widens when the check against the table dropped some of its hits.
_WIDEN = 4
_PK_ONLY = ColumnsToGet(return_type=ColumnReturnType.NONE)
_BY_ID = Sort([FieldSort(PK_ID, SortOrder.ASC)])
Keep = Callable[[OutputData], bool]


class Plan:
    """One narrowed read: the index query (scope, states, query) and the same condition on a row in hand."""

    def __init__(self, store: TablestoreStore, scope: Scope, states: Collection[State], query: MemoryQuery) -> None:
        self.who = scope_filters(scope)
        self.filters = selection(scope, states, query)  # the key of the search's candidate stash
        wanted_states = state_filter(states)
        by_state = qb.build(wanted_states, store._indexed)
        push = pushdown(query, store._indexed)
        self.query = qb.combine(qb.scope_query(self.who), by_state.query, push.query)
        self.exact = by_state.exact and push.exact
        #: every narrowing field is in the index (an index made by an older version may lack them)
        self.derived = all(name in store._indexed for name in NARROWING_COLUMNS)

        def keep(row: OutputData) -> bool:
            payload = row.payload or {}
            if wanted_states and not matches(wanted_states, payload):
                return False
            return query.accepts(row_format.to_memory(row.id, payload))

        self.keep: Keep = keep


class NarrowedReads:
    """The port reads of one :class:`TablestoreStore` that push a :class:`MemoryQuery` (module docstring)."""

    def __init__(self, store: TablestoreStore) -> None:
        self.store = store

    # ------------------------------------------------------------------ search

    def nearest(
        self, scope: Scope, vector: Sequence[float], limit: int, states: Collection[State], query: MemoryQuery
    ) -> list[StoredMemory]:
        store = self.store
        plan = Plan(store, scope, states, query)
        _, user = store._user(plan.who)
        store._index_settled()
        store._switch.check()  # a reembed switch is followed, or refused in one line (switch_watch)
        k = min(int(limit), MAX_TOP_K)
        if k < 1:
            raise UserInputError("top_k must be at least 1")
        wanted = [float(x) for x in vector]
        if len(wanted) != store.embedding_model_dims:
            dims = store.embedding_model_dims
            raise ValueError(f"query vector has {len(wanted)} dimensions, the index expects {dims}")
        # This process's recent writes: the index may lack them (or their new vector); checked like the rest.
        recent = dict(store._recent.nearest(user, wanted, max(k, GET_ROWS)))
        checked: dict[str, OutputData | None] = {}
        fetch = k
        while True:
            knn = KnnVectorQuery(store.vector_column, top_k=fetch, float32_query_vector=wanted, filter=plan.query)
            hits = store._search_hits(knn, fetch)
            scores: dict[str, float | None] = {mid: store._score(raw) for mid, raw in hits}
            scores.update(recent)
            ranked = sorted(scores.items(), key=lambda kv: kv[1] if kv[1] is not None else float("-inf"), reverse=True)
            found = self._checked(plan, ranked, k, checked)
            if len(found) >= k or len(hits) < fetch or fetch >= MAX_TOP_K:
                break
            fetch = min(MAX_TOP_K, fetch * _WIDEN)  # the check dropped some: the index has more candidates
        store._stash.put(filters_key(plan.filters, plan.who), "", found)
        return [row_format.to_memory(row.id, row.payload, row.score) for row in found if row.payload]

    def keyword_hits(
        self,
        scope: Scope,
        text: str,
        limit: int,
        states: Collection[State],
        query: MemoryQuery,
        candidates: Sequence[str] | None,
    ) -> list[KeywordHit]:
        store = self.store
        plan = Plan(store, scope, states, query)
        _, user = store._user(plan.who)
        k = max(1, int(limit or 5))
        key = filters_key(plan.filters, plan.who)
        if candidates is not None:  # the preceding search's rows when it has them, else one BatchGetRow
            known = store._stash.rows(key)
            wanted = [str(c) for c in dict.fromkeys(candidates)]
            missing = [c for c in wanted if c not in known]
            fetched = store.get_many(missing, scope=plan.who) if missing else {}
            rows = [r for c in wanted if (r := known.get(c) or fetched.get(c)) is not None and plan.keep(r)]
            return _hits(bm25(text, rows, k))
        if not tokens(text):
            return []
        match = MatchQuery("data", text)
        full: Query = BoolQuery(must_queries=[match], filter_queries=[plan.query]) if plan.query is not None else match
        mine = [(mid, None) for mid in store._recent.ids(user)[:GET_ROWS]]
        checked: dict[str, OutputData | None] = {}
        fetch = k
        while True:
            hits = store._search_hits(full, fetch)
            ranked = list(dict.fromkeys([*((mid, None) for mid, _ in hits), *mine]))
            found = self._checked(plan, ranked, len(ranked), checked)
            if len(found) >= k or len(hits) < fetch or fetch >= MAX_TOP_K:
                break
            fetch = min(MAX_TOP_K, fetch * _WIDEN)
        return _hits(bm25(text, found, k))

    def _checked(
        self,
        plan: Plan,
        ranked: Sequence[tuple[str, float | None]],
        k: int,
        checked: dict[str, OutputData | None],
    ) -> list[OutputData]:
        """The first ``k`` candidates (in order) that exist, are in scope and match, read from the table
        (BatchGetRow: about what is still needed first, then 100 at a time); ``checked`` keeps the rows read
        by an earlier, narrower try."""
        store = self.store
        _, user = store._user(plan.who)
        out: list[OutputData] = []
        position = 0
        while position < len(ranked) and len(out) < k:
            todo: list[str] = []
            cursor = position
            need = k - len(out)
            size = min(GET_ROWS, need + max(2, need // 4))
            while cursor < len(ranked) and len(todo) < size:
                mid = ranked[cursor][0]
                if mid not in checked:
                    todo.append(mid)
                cursor += 1
            if todo:
                raws = store._batches.get(store.collection_name, [store._pk(user, mid) for mid in todo], ["payload"])
                for mid, raw in zip(todo, raws, strict=True):
                    checked[mid] = store._output(plan.who, raw)
            for mid, score in ranked[position:cursor]:
                row = checked.get(mid)
                if row is not None and plan.keep(row):
                    out.append(row.model_copy(update={"score": score}))
                    if len(out) == k:
                        break
            position = cursor
        return out

    # ------------------------------------------------------------------ pages, totals, created order

    def page(
        self, scope: Scope, states: Collection[State], query: MemoryQuery, limit: int, cursor: str | None
    ) -> RowPage | None:
        """A page in primary-key order (the GetRange pages' order and cursor), or None: ask the table."""
        from .store import _decode_cursor, _encode_cursor

        store = self.store
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UserInputError("limit must be a positive integer")
        plan = Plan(store, scope, states, query)
        if not query or not plan.derived or not store._index_reads.ready()[0]:
            return None
        start = _decode_cursor(cursor) if cursor else None
        _, user = store._user(plan.who)
        touched = store._recent.touched(user, MAX_TOUCHED)
        ours = store.get_many(touched, scope=plan.who) if touched else {}
        mine = sorted(
            (r for r in ours.values() if plan.keep(r) and (start is None or r.id >= start)), key=lambda r: r.id
        )
        found: dict[str, OutputData] = {}
        lower, inclusive = start, True
        while True:
            parts = [plan.query]
            if lower is not None:
                parts.append(RangeQuery(PK_ID, range_from=lower, include_lower=inclusive))
            index_query: Query | None = qb.combine(*parts)
            if touched:  # the index's view of our recent rows is replaced by the table's (``mine``)
                index_query = BoolQuery(
                    must_queries=[index_query] if index_query is not None else [],
                    must_not_queries=[TermsQuery(PK_ID, touched)],
                )
            want = min(MAX_TOP_K, limit + 1 - len(found))
            response = store._index_reads._search(SearchQuery(index_query, sort=_BY_ID, limit=want))
            ids = store._index_reads._ids(response)
            rows = store.get_many(ids, scope=plan.who) if ids else {}
            found.update((mid, row) for mid in ids if (row := rows.get(mid)) is not None and plan.keep(row))
            bound = ids[-1] if len(ids) == want else None  # every index row up to here has been seen
            merged = sorted([*found.values(), *(r for r in mine if bound is None or r.id <= bound)], key=lambda r: r.id)
            if len(merged) > limit:
                items = merged[:limit]
                return RowPage([_memory(r) for r in items], _encode_cursor(merged[limit].id))
            if bound is None:
                return RowPage([_memory(r) for r in merged], None)
            lower, inclusive = bound, False

    def page_total(self, scope: Scope, states: Collection[State], query: MemoryQuery) -> int | None:
        """How many rows match (the index's count, recent writes reconciled), or None: ask the table."""
        plan = self._exact_plan(scope, states, query, ())
        if plan is None or plan.query is None:
            return None
        return self.store._index_reads.total_of(plan.who, plan.query, plan.keep)

    def created_window(
        self,
        scope: Scope,
        states: Collection[State],
        query: MemoryQuery,
        *,
        newest_first: bool,
        offset: int,
        limit: int,
        since: str | None,
        until: str | None,
    ) -> tuple[list[StoredMemory], int] | None:
        """An offset page in (created_at, id) order and the total, or None: ask the table."""
        if offset < 0 or limit < 1:
            return [], 0
        bounds: tuple[Query, ...] = ()
        if since is not None or until is not None:
            created = RangeQuery("created_at", since, until, include_lower=True, include_upper=False)
            bounds = (created,)
        plan = self._exact_plan(scope, states, query, bounds)
        if plan is None or plan.query is None:
            return None

        def keep(row: OutputData) -> bool:
            created = str((row.payload or {}).get("created_at") or "")
            if (since is not None and created < since) or (until is not None and created >= until):
                return False
            return plan.keep(row)

        rows, total = self.store._index_reads.created_page_of(
            plan.who, plan.query, keep, newest_first=newest_first, offset=offset, limit=limit
        )
        return [_memory(r) for r in rows], total

    def _exact_plan(
        self, scope: Scope, states: Collection[State], query: MemoryQuery, bounds: Sequence[Query]
    ) -> Plan | None:
        """A plan whose index query (with ``bounds``) decides every row, or None (no narrowing query, an
        index without the fields, still initializing, or old rows among the matches: the table answers)."""
        store = self.store
        plan = Plan(store, scope, states, query)
        if not query or not plan.derived or not store._index_reads.ready()[0]:
            return None
        plan.query = qb.combine(plan.query, *bounds)
        if not plan.exact:  # old rows pass every narrowing condition: exact only when none is among them
            assert plan.query is not None
            old = BoolQuery(must_queries=[plan.query], must_not_queries=[ExistsQuery(COL_EVENT_AT)])
            if store._index_reads.count_of(old):
                return None
        if not qb.build(state_filter(states), store._indexed).exact:
            return None
        return plan


def _memory(row: OutputData) -> StoredMemory:
    return row_format.to_memory(row.id, row.payload, row.score)


def _hits(rows: Sequence[OutputData]) -> list[KeywordHit]:
    return [KeywordHit(str(row.id), float(row.score)) for row in rows if row.score and row.score > 0]


__all__ = ["NarrowedReads", "Plan"]
