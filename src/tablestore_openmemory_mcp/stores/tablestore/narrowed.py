"""The store's reads through the search index: search, keyword scores and narrowed pages (issue 23).

Why: a selective filter checked only after a bounded over-fetch of the nearest rows returns fewer than
``limit`` matches when the matches are far from the query. Here the selection (:mod:`.selection`: the scope,
the states and the query's narrowing, :mod:`.narrowing`) goes into the index query itself — inside the KNN
query's filter, so top-k is taken among matching rows only — and every result is still read back from the
table and checked (:meth:`.selection.Selection.keeps`), because the index lags and rows written before the
narrowing columns existed pass every narrowing condition.

No fixed over-fetch: a search asks for ``limit`` hits and, only when the check drops some (index lag, old
rows, an index without the narrowing fields) and the index had more, asks again with a larger ``top_k``
(up to the documented 1,000). Narrowed pages walk the index in primary-key order (the order of the
unfiltered GetRange pages, with the same cursor) until a page is full; without a narrowing query, or with an
index that cannot narrow, or more recent writes of the user than it can merge in (``MAX_TOUCHED``),
:meth:`NarrowedReads.page` answers None and the store reads its range (``ranges``).
Totals and created-order pages are ``index_reads``'.

RPCs (nothing lagging, no old rows): search = 1 Search + 1 BatchGetRow of about ``limit`` rows; keyword
scores of the search's rows = none; page = 1 Search + 1 BatchGetRow per 100 rows; each plus this process's
recent writes (``recent``), read back from the table.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tablestore import (
    BoolQuery,
    ColumnReturnType,
    ColumnsToGet,
    FieldSort,
    KnnVectorQuery,
    MatchQuery,
    Query,
    RangeQuery,
    ScoreSort,
    SearchQuery,
    Sort,
    SortOrder,
    TermsQuery,
)

from tablestore_openmemory_mcp.errors import UserInputError
from tablestore_openmemory_mcp.memory.store_port import KeywordHit, RowPage

from ..tokenize import tokens
from .batch import GET_ROWS
from .index_reads import MAX_TOUCHED
from .keyword import bm25
from .ranges import check_limit, decode_cursor, encode_cursor, row_parts
from .readiness import index_initialized
from .rows import Found, attr_dict
from .schema import PK_ID
from .selection import Selection, combine

if TYPE_CHECKING:
    from .store import TablestoreStore

#: KnnVectorQuery's documented top_k maximum, and Search's limit when only primary keys are returned.
MAX_TOP_K = 1000
#: How much a search widens when the check against the table dropped some of its hits.
_WIDEN = 4
_BY_ID = Sort([FieldSort(PK_ID, SortOrder.ASC)])
_SCORE_DESC = Sort([ScoreSort(SortOrder.DESC)])
_PK_ONLY = ColumnsToGet(return_type=ColumnReturnType.NONE)
logger = logging.getLogger(__name__)


class NarrowedReads:
    """The index reads of one :class:`TablestoreStore` that push a selection (module docstring)."""

    def __init__(self, store: TablestoreStore) -> None:
        self.store = store

    # ------------------------------------------------------------------ search

    def score(self, raw: float | None) -> float | None:
        """The index's score as cosine similarity in [-1, 1] (stored vectors are unit vectors).

        Tablestore scores cosine and dot product as (1 + s) / 2 and euclidean as 1 / (1 + d^2).
        """
        if raw is None:
            return None
        if self.store.metric == "euclidean":
            d2 = (1.0 / raw - 1.0) if raw > 0 else 4.0
            similarity = 1.0 - d2 / 2.0
        else:
            similarity = 2.0 * raw - 1.0
        return max(-1.0, min(1.0, similarity))

    def settled(self) -> None:
        """While the index is still initializing (startup stopped waiting), ask at most every few seconds
        whether it is done; then this process's writes expire from ``recent`` as usual."""
        store = self.store
        if not store._recent.held() or not store._recent.recheck_due():
            return
        try:
            _, sync = store._call(
                "DescribeSearchIndex",
                lambda: store.client.describe_search_index(store.collection_name, store.index_name, True),
            )
        except Exception:  # the search itself reports a real outage
            logger.debug("index state check failed", exc_info=True)
            return
        if index_initialized(sync):
            logger.info("Tablestore search index %s has initialized", store.index_name)
            store._recent.release()

    def search_hits(self, query: Query, want: int, sort: Sort | None = _SCORE_DESC) -> list[tuple[str, float | None]]:
        """Up to ``want`` (id, raw score) pairs, primary keys only: one Search RPC for up to 1000 hits.

        Later pages (only past 1000) repeat the query and its sort with the token, as Tablestore requires.
        """
        store = self.store
        pairs: list[tuple[str, float | None]] = []
        token: bytes | None = None
        while len(pairs) < want:
            limit = min(MAX_TOP_K, want - len(pairs))
            search_query = SearchQuery(query, sort=sort, limit=limit, next_token=token, get_total_count=False)
            response = store._call(
                "Search",
                functools.partial(store.client.search, store.collection_name, store.index_name, search_query, _PK_ONLY),
            )
            hits = response.search_hits or []
            page = [(h.row, h.score) for h in hits] if hits else [(r, None) for r in response.rows or []]
            for row, score in page:
                memory_id = str(attr_dict(row_parts(row)[0]).get(PK_ID, ""))
                if memory_id:
                    pairs.append((memory_id, score))
            token = response.next_token or None
            if not token or not page:
                break
        return pairs[:want]

    def nearest(self, sel: Selection, vector: Sequence[float], limit: int) -> list[Found]:
        """The ``limit`` nearest rows of ``sel``, checked against the table, best first."""
        store = self.store
        user = sel.who.user
        self.settled()
        store._switch.check()  # a reembed switch is followed, or refused in one line (switch_watch)
        k = min(int(limit), MAX_TOP_K)
        if k < 1:
            raise UserInputError("top_k must be at least 1")
        wanted = [float(x) for x in vector]
        if len(wanted) != store.embedding_model_dims:
            dims = store.embedding_model_dims
            raise ValueError(f"query vector has {len(wanted)} dimensions, the index expects {dims}")
        index_query, _ = sel.index_query(store._indexed)
        # This process's recent writes: the index may lack them (or their new vector); checked like the rest.
        recent = dict(store._recent.nearest(user, wanted, max(k, GET_ROWS)))
        checked: dict[str, Found | None] = {}
        fetch = k
        while True:
            knn = KnnVectorQuery(store.vector_column, top_k=fetch, float32_query_vector=wanted, filter=index_query)
            hits = self.search_hits(knn, fetch)
            scores: dict[str, float | None] = {mid: self.score(raw) for mid, raw in hits}
            scores.update(recent)
            ranked = sorted(scores.items(), key=lambda kv: kv[1] if kv[1] is not None else float("-inf"), reverse=True)
            found = self._checked(sel, ranked, k, checked)
            if len(found) >= k or len(hits) < fetch or fetch >= MAX_TOP_K:
                break
            fetch = min(MAX_TOP_K, fetch * _WIDEN)  # the check dropped some: the index has more candidates
        store._stash.put(sel.key(), found)
        return found

    def keyword_hits(self, sel: Selection, text: str, limit: int, candidates: Sequence[str] | None) -> list[KeywordHit]:
        """BM25 over ``sel``'s rows matching ``text`` (or over ``candidates``), statistics from those rows."""
        store = self.store
        k = max(1, int(limit or 5))
        if candidates is not None:  # the preceding search's rows when it has them, else one BatchGetRow
            known = store._stash.rows(sel.key())
            wanted = [str(c) for c in dict.fromkeys(candidates)]
            missing = [c for c in wanted if c not in known]
            fetched = store._by_id.rows(sel.who, missing) if missing else {}
            rows = [r for c in wanted if (r := known.get(c) or fetched.get(c)) is not None and sel.keeps(r.memory)]
            return _hits(bm25(text, rows, k))
        if not tokens(text):
            return []
        index_query, _ = sel.index_query(store._indexed)
        match = MatchQuery("data", text)
        full: Query = BoolQuery(must_queries=[match], filter_queries=[index_query]) if index_query else match
        mine = [(mid, None) for mid in store._recent.ids(sel.who.user)[:GET_ROWS]]
        checked: dict[str, Found | None] = {}
        fetch = k
        while True:
            hits = self.search_hits(full, fetch)
            ranked = list(dict.fromkeys([*((mid, None) for mid, _ in hits), *mine]))
            found = self._checked(sel, ranked, len(ranked), checked)
            if len(found) >= k or len(hits) < fetch or fetch >= MAX_TOP_K:
                break
            fetch = min(MAX_TOP_K, fetch * _WIDEN)
        return _hits(bm25(text, found, k))

    def _checked(
        self,
        sel: Selection,
        ranked: Sequence[tuple[str, float | None]],
        k: int,
        checked: dict[str, Found | None],
    ) -> list[Found]:
        """The first ``k`` candidates (in order) that exist and are kept, read from the table (BatchGetRow:
        about what is still needed first, then 100 at a time); ``checked`` keeps the rows read by an earlier,
        narrower try."""
        store = self.store
        out: list[Found] = []
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
                for mid, row in zip(todo, store._by_id.in_order(sel.who, todo), strict=True):
                    checked[mid] = row
            for mid, score in ranked[position:cursor]:
                row = checked.get(mid)
                if row is not None and sel.keeps(row.memory):
                    out.append(row.scored(score))
                    if len(out) == k:
                        break
            position = cursor
        return out

    # ------------------------------------------------------------------ pages

    def page(self, sel: Selection, limit: int, cursor: str | None) -> RowPage | None:
        """A narrowed page in primary-key order (the GetRange pages' order and cursor), or None: ask the table."""
        store = self.store
        check_limit(limit)
        if not sel.query or not sel.derived(store._indexed) or not store._index_reads.ready()[0]:
            return None
        index_base, _ = sel.index_query(store._indexed)
        start = decode_cursor(cursor) if cursor else None
        touched = store._recent.touched(sel.who.user, MAX_TOUCHED)
        if touched is None:  # too many of this process's recent writes to merge in: the range answers
            return None
        ours = store._by_id.rows(sel.who, touched) if touched else {}
        mine = sorted(
            (r for r in ours.values() if sel.keeps(r.memory) and (start is None or r.id >= start)), key=lambda r: r.id
        )
        found: dict[str, Found] = {}
        lower, inclusive = start, True
        while True:
            parts = [index_base]
            if lower is not None:
                parts.append(RangeQuery(PK_ID, range_from=lower, include_lower=inclusive))
            index_query: Query | None = combine(*parts)
            if touched:  # the index's view of our recent rows is replaced by the table's (``mine``)
                index_query = BoolQuery(
                    must_queries=[index_query] if index_query is not None else [],
                    must_not_queries=[TermsQuery(PK_ID, touched)],
                )
            want = min(MAX_TOP_K, limit + 1 - len(found))
            response = store._index_reads.search(SearchQuery(index_query, sort=_BY_ID, limit=want))
            ids = store._index_reads.ids(response)
            rows = store._by_id.rows(sel.who, ids) if ids else {}
            found.update((mid, row) for mid in ids if (row := rows.get(mid)) is not None and sel.keeps(row.memory))
            bound = ids[-1] if len(ids) == want else None  # every index row up to here has been seen
            merged = sorted([*found.values(), *(r for r in mine if bound is None or r.id <= bound)], key=lambda r: r.id)
            if len(merged) > limit:
                return RowPage([r.memory for r in merged[:limit]], encode_cursor(merged[limit].id))
            if bound is None:
                return RowPage([r.memory for r in merged], None)
            lower, inclusive = bound, False


def _hits(rows: Sequence[Found]) -> list[KeywordHit]:
    return [KeywordHit(str(row.id), float(row.score)) for row in rows if row.score and row.score > 0]


__all__ = ["NarrowedReads"]
