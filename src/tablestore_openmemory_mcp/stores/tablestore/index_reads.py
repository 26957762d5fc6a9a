"""Totals, the owner's pages by creation time and the owner's counts, answered by the search index.

Why: on Tablestore these read every row of the user (``list_memories``' total: a keys-only scan of the
scope on every page; REST browse, apps and stats: every payload), so their cost grew with the user. The
index answers each with one Search whatever the size: a total count (limit 0), a page sorted by
``(created_at, memory_id)`` with primary keys only, or nested group-bys (``aggregations``).

Correctness, in this order:

* **Lag.** The index trails the table by seconds. This process's own recent writes and deletes
  (``recent.touched``, kept ``WINDOW`` seconds) are reconciled: their current rows are read from the table
  (one BatchGetRow per 100) and the same Search that counts or pages excludes those ids (``must_not``), so
  the index's view and the table's never overlap even while the index catches up between two calls (two
  Searches, one for the index's view of our ids and one for the rest, double-counted rows the index synced
  in between: 200 archived memories counted 400).
  So a client sees its own adds, edits and deletes at once; other processes' writes show up once the index
  has them (99% within 3 s per the documentation). More than ``MAX_TOUCHED`` such rows of the user (a bulk
  import) are not reconciled but read from the table (None below): reconciling only some answered short.
* **Pages are checked against the table.** The page's ids are read back (BatchGetRow): a deleted row
  never comes back, an edited one comes back current.
* **Exact or nothing.** When the selection (:mod:`.selection`) cannot be evaluated exactly by the index (a
  field it lacks; rows older than the narrowing columns among a narrowed query's matches), the index is
  still initializing (a new index can need a minute; ``DescribeSearchIndex`` says when it is in its FULL
  phase), or it lacks ``created_day`` (an index made by an older version), each method answers None and the
  store takes the strongly consistent path (``ranges``: a count of the range, or every row read).

RPCs: total = 1 Search (+ 1 BatchGetRow per 100 rows this process wrote to the user in the last ``WINDOW``
seconds; more than ``MAX_TOUCHED``: the table's count instead); page = 1 Search + 1 BatchGetRow per 100 rows
(+ the same reconciliation); counts = 1 Search (+ the same reconciliation). Plus one DescribeSearchIndex per
index until it reports INCR.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tablestore import (
    BoolQuery,
    ColumnReturnType,
    ColumnsToGet,
    ExistsQuery,
    FieldSort,
    Query,
    RangeQuery,
    SearchQuery,
    Sort,
    SortOrder,
    TermsQuery,
)

from . import aggregations as agg
from .narrowing import COL_EVENT_AT
from .rows import Found, attr_dict
from .schema import COL_DAY, PK_ID
from .selection import Selection, Who, combine

if TYPE_CHECKING:
    from .store import TablestoreStore

logger = logging.getLogger(__name__)

#: Search's documented bounds: offset + limit <= 10,000; up to 1,000 rows when only keys come back.
MAX_OFFSET = 10_000
MAX_KEYS = 1000
#: Recent writes reconciled per call (a TermsQuery of their ids; BatchGetRow of 100 a call); with more, the
#: table answers.
MAX_TOUCHED = 500
#: How often an index still initializing is asked again.
RECHECK_SECONDS = 5.0
_PK_ONLY = ColumnsToGet(return_type=ColumnReturnType.NONE)


class IndexReads:
    """The search-index answers of one :class:`TablestoreStore` (see the module docstring)."""

    def __init__(self, store: TablestoreStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._ready: dict[str, tuple[bool, frozenset[str], float]] = {}  # index -> (ready, fields, checked at)

    # ------------------------------------------------------------------ plumbing

    def _state(self) -> tuple[bool, frozenset[str]]:
        """(the current index has left its initial full sync, the fields it has); cached once ready."""
        name = self.store.index_name
        with self._lock:
            known = self._ready.get(name)
        if known is not None and (known[0] or time.monotonic() - known[2] < RECHECK_SECONDS):
            return known[0], known[1]
        meta, sync = self.store._call(
            "DescribeSearchIndex",
            lambda: self.store.client.describe_search_index(self.store.collection_name, name, True),
        )
        phase = getattr(getattr(sync, "sync_phase", None), "name", None)
        fields = frozenset(f.field_name for f in (getattr(meta, "fields", None) or []))
        ready = phase != "FULL"
        if not ready:
            logger.info("search index %s is still initializing; totals and counts read the table", name)
        with self._lock:
            self._ready[name] = (ready, fields, time.monotonic())
        return ready, fields

    def search(self, search_query: SearchQuery, columns: ColumnsToGet = _PK_ONLY) -> Any:
        store = self.store
        return store._call(
            "Search",
            functools.partial(store.client.search, store.collection_name, store.index_name, search_query, columns),
        )

    @staticmethod
    def ids(response: Any) -> list[str]:
        out = []
        for row in response.rows or []:
            pk = row.primary_key if hasattr(row, "primary_key") else row[0]
            memory_id = attr_dict(pk).get(PK_ID)
            if isinstance(memory_id, str) and memory_id:
                out.append(memory_id)
        return out

    def _touched(self, who: Who, query: Query) -> tuple[Query, dict[str, Found]] | None:
        """For this process's recent writes: (``query`` without their ids, their rows in the table now), or
        None when there are too many to reconcile (the caller asks the table)."""
        store = self.store
        touched = store._recent.touched(who.user, MAX_TOUCHED)
        if touched is None:
            return None
        if not touched:
            return query, {}
        rest = BoolQuery(must_queries=[query], must_not_queries=[TermsQuery(PK_ID, touched)])
        return rest, store._by_id.rows(who, touched)

    # ------------------------------------------------------------------ a selection's exact index query

    def exact_query(self, sel: Selection, bounds: Sequence[Query] = ()) -> Query | None:
        """The index query of ``sel`` (with ``bounds``) when it decides every row exactly, else None (the
        index is still initializing, lacks a field, or old rows are among a narrowed query's matches: rows
        written before the narrowing columns pass every narrowing condition, so then the table answers)."""
        if not self._state()[0]:
            return None
        indexed = self.store._indexed
        query, exact = sel.index_query(indexed)
        query = combine(query, *bounds)
        assert query is not None  # the scope's terms at least
        if not exact and sel.query and sel.derived(indexed) and sel.state_query(indexed)[1]:
            old = BoolQuery(must_queries=[query], must_not_queries=[ExistsQuery(COL_EVENT_AT)])
            exact = not self.count_of(old)
        return query if exact else None

    def total(self, sel: Selection) -> int | None:
        """How many rows ``sel`` has (lag reconciled), or None: ask the table."""
        query = self.exact_query(sel)
        if query is None:
            return None
        return self.total_of(sel.who, query, lambda row: sel.keeps(row.memory))

    def created_page(
        self,
        sel: Selection,
        *,
        newest_first: bool,
        offset: int,
        limit: int,
        since: str | None,
        until: str | None,
    ) -> tuple[list[Found], int] | None:
        """An offset page of ``sel`` in (created_at, id) order and the total, or None: ask the table."""
        if offset < 0 or limit < 1:
            return [], 0
        bounds: list[Query] = []
        if since is not None or until is not None:
            bounds.append(
                RangeQuery("created_at", range_from=since, range_to=until, include_lower=True, include_upper=False)
            )
        query = self.exact_query(sel, bounds)
        if query is None:
            return None

        def keep(row: Found) -> bool:
            created = row.memory.created_at
            if (since is not None and created < since) or (until is not None and created >= until):
                return False
            return sel.keeps(row.memory)

        return self.created_page_of(sel.who, query, keep, newest_first=newest_first, offset=offset, limit=limit)

    def tally(self, sel: Selection) -> agg.Tally | None:
        """``sel``'s rows per (client, state, day created), lag reconciled, or None: ask the table."""
        query = self.exact_query(sel)
        if query is None or COL_DAY not in self._state()[1]:
            return None
        reconciled = self._touched(sel.who, query)
        if reconciled is None:
            return None
        rest, touched = reconciled
        counted = agg.read_tally(self.search(agg.tally_query(rest)))
        if counted is None:
            return None
        if not touched:
            return counted
        return agg.add(counted, agg.tally_rows(r.memory for r in touched.values() if sel.keeps(r.memory)))

    # ------------------------------------------------------------------ totals

    def total_of(self, who: Who, query: Query, keep: Callable[[Found], bool]) -> int | None:
        """How many rows an exact index ``query`` matches, this process's recent writes reconciled with ``keep``
        (None: too many of them, ask the table)."""
        reconciled = self._touched(who, query)
        if reconciled is None:
            return None
        rest, rows = reconciled
        response = self.search(SearchQuery(rest, limit=0, get_total_count=True))
        return int(response.total_count or 0) + sum(keep(r) for r in rows.values())

    def count_of(self, query: Query) -> int:
        """The index's count of ``query`` (1 Search, no reconciliation)."""
        return int(self.search(SearchQuery(query, limit=0, get_total_count=True)).total_count or 0)

    def ready(self) -> tuple[bool, frozenset[str]]:
        """(the index has left its initial full sync, the fields it has)."""
        return self._state()

    # ------------------------------------------------------------------ pages by creation time

    def created_page_of(
        self,
        who: Who,
        query: Query,
        keep: Callable[[Found], bool],
        *,
        newest_first: bool,
        offset: int,
        limit: int,
    ) -> tuple[list[Found], int] | None:
        """:meth:`created_page` for an index ``query`` that decides every row exactly, ``keep`` the same
        condition on a row in hand (this process's recent writes, re-read from the table); None: too many of
        those to reconcile, ask the table."""
        order = SortOrder.DESC if newest_first else SortOrder.ASC
        sort = Sort([FieldSort("created_at", order), FieldSort(PK_ID, order)])
        reconciled = self._touched(who, query)
        if reconciled is None:
            return None
        rest, touched = reconciled
        added = [r for r in touched.values() if keep(r)]
        # The index's order without our recent rows (``rest``), plus our rows as they are now (``added``):
        # a page of that view lies within this window of the index's order.
        start = max(0, offset - len(added))
        ids, total = self._page_ids(rest, sort, start, offset + limit - start)
        rows = self.store._by_id.rows(who, ids)
        window = [(rows.get(i), False) for i in ids]
        page = _view_page(window, added, [], start, offset, limit, newest_first, keep)
        return page, total + len(added)

    def _page_ids(self, query: Query, sort: Sort, offset: int, limit: int) -> tuple[list[str], int]:
        """Ids at [offset, offset + limit) and the total: one Search, or token pages past 10,000."""
        if offset + limit <= MAX_OFFSET and limit <= MAX_KEYS:
            response = self.search(SearchQuery(query, sort=sort, offset=offset, limit=limit, get_total_count=True))
            return self.ids(response), int(response.total_count or 0)
        ids: list[str] = []  # deep pages: keys only, 1,000 a call, the sort repeated with each token
        token: bytes | None = None
        total = 0
        while len(ids) < offset + limit:
            search_query = SearchQuery(
                query, sort=sort, limit=MAX_KEYS, next_token=token, get_total_count=token is None
            )
            response = self.search(search_query)
            if token is None:
                total = int(response.total_count or 0)
            ids += self.ids(response)
            token = response.next_token or None
            if not token:
                break
        return ids[offset : offset + limit], total


def _created(row: Found) -> str:
    return str((row.payload or {}).get("created_at") or "")


def _key(row: Found) -> tuple[str, str]:
    return _created(row), row.id


def _view_page(
    window: list[tuple[Found | None, bool]],
    added: list[Found],
    removed: list[tuple[str, str]],
    start: int,
    offset: int,
    limit: int,
    newest_first: bool,
    keep: Callable[[Found], bool],
) -> list[Found]:
    """The rows at [offset, offset + limit) of (the index's order - ``removed`` + ``added``).

    ``window`` is the index's order from position ``start`` (each row as the table has it now, None when
    gone, and whether it is one of ours the index still has). A row's position in the view is its position
    in the index, minus the removed rows before it, plus the added rows before it; an added row's position
    is the number of index rows before it (counted in the window), minus removed, plus added rows before it.
    The window spans ``len(added)`` rows before the page and ``len(removed)`` after, so every row that can
    land on the page is in it, and every row outside it lands outside the page."""

    def before(a: tuple[str, str], b: tuple[str, str]) -> bool:
        return a > b if newest_first else a < b

    def shift(k: tuple[str, str]) -> int:
        return sum(before(a, k) for a in added_keys) - sum(before(r, k) for r in removed)

    added_keys = [_key(r) for r in added]
    placed: list[tuple[int, Found]] = []
    known: list[tuple[int, tuple[str, str]]] = []  # (index position, key) of the window rows still there
    for j, (row, ours) in enumerate(window):
        if row is None:  # deleted by another process since the index saw it
            continue
        k = _key(row)
        known.append((start + j, k))
        if not ours and keep(row):
            placed.append((start + j + shift(k), row))
    for row in added:
        k = _key(row)
        index_before = next((pos for pos, w in known if not before(w, k)), start + len(window))
        placed.append((index_before + shift(k), row))
    placed.sort(key=lambda p: p[0])
    return [row for pos, row in placed if offset <= pos < offset + limit]
