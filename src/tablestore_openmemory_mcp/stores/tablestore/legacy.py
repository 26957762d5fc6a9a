"""The row methods of ``stores.base.MemoryStore`` (payload dicts, mem0's filter dialect, ``scope=`` dicts).

Transitional: kept only until the mem0 provider and the store tests call the typed port; then deleted.
Each is a thin layer over the store's native code (``writes``, ``ranges``, ``narrowed``, ``index_reads``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tablestore import INF_MIN, BoolQuery, KnnVectorQuery, MatchQuery

from tablestore_openmemory_mcp.errors import UserInputError

from ..base import MemoryStore, OutputData, RowUpdate, require_scope
from ..base import Who as WhoDict
from ..filters import matches, split_identity
from ..tokenize import tokens
from . import query as qb
from .aggregations import Tally
from .batch import GET_ROWS
from .colfilter import range_filter
from .keyword import bm25, filters_key
from .ranges import decode_cursor, encode_cursor, row_parts
from .rows import Found, attr_dict, decode
from .schema import COL_PAYLOAD, DEDUP_SUFFIX, PK_ID
from .selection import Who
from .vectors import read_vectors
from .writes import Change

if TYPE_CHECKING:
    from .store import TablestoreStore

_MAX_TOP_K = 1000


def _out(row: Found) -> OutputData:
    return OutputData(id=row.id, score=row.score, payload=row.payload)


def _who(given: WhoDict) -> tuple[dict[str, str], Who]:
    scope = require_scope(given)
    user = scope["user_id"]
    if user.endswith(DEDUP_SUFFIX):
        raise UserInputError(f"a user id cannot end with {DEDUP_SUFFIX!r}")
    for key in scope:
        if key not in ("user_id", "agent_id"):
            raise UserInputError(f"scope key {key!r} is not supported; scope by user_id/agent_id")
    return scope, Who(user, scope.get("agent_id"))


class RowMethods(MemoryStore):
    """The row methods, on a :class:`TablestoreStore`'s native parts."""

    def _me(self) -> TablestoreStore:
        return self  # type: ignore[return-value]

    def _legacy_who(self) -> Who:
        return _who(None)[1]

    def insert(
        self,
        vectors: Sequence[Sequence[float]],
        payloads: Sequence[Mapping[str, Any]],
        ids: Sequence[str],
        dedup_keys: Sequence[str | None] | None = None,
        *,
        scope: WhoDict = None,
    ) -> list[str]:
        _, who = _who(scope)
        return self._me()._writes.insert(who, ids, vectors, payloads, dedup_keys)

    def update(
        self,
        vector_id: str,
        vector: Sequence[float] | None = None,
        payload: Mapping[str, Any] | None = None,
        *,
        expected_updated_at: str | None = None,
        dedup_key: str | None = None,
        scope: WhoDict = None,
    ) -> None:
        _, who = _who(scope)
        self._me()._writes.update(who, Change(str(vector_id), vector, payload, expected_updated_at, dedup_key))

    def update_many(self, changes: Sequence[RowUpdate], *, scope: WhoDict = None) -> list[str]:
        _, who = _who(scope)
        return self._me()._writes.update_many(who, [Change(*c) for c in changes])

    def delete_many(self, ids: Iterable[str], *, scope: WhoDict = None) -> list[str]:
        _, who = _who(scope)
        return self._me()._writes.delete_many(who, ids)

    def get(self, vector_id: str, *, scope: WhoDict = None) -> OutputData | None:
        _, who = _who(scope)
        found = self._me()._by_id.one(who, str(vector_id))
        return _out(found) if found is not None else None

    def get_many(self, ids: Sequence[str], *, scope: WhoDict = None) -> dict[str, OutputData]:
        _, who = _who(scope)
        return {key: _out(row) for key, row in self._me()._by_id.rows(who, ids).items()}

    def get_vectors(self, ids: Sequence[str], *, scope: WhoDict = None) -> dict[str, list[float]]:
        _, who = _who(scope)
        return read_vectors(self._me(), ids, who)

    def find_by_dedup_key(self, key: str, *, scope: WhoDict = None) -> OutputData | None:
        _, who = _who(scope)
        found = self._me()._by_id.holder(who, key)
        return _out(found) if found is not None else None

    # ------------------------------------------------------------------ filter-dict reads

    def _range_user(self, filters: Mapping[str, Any] | None, who: Who) -> str | None:
        identity, _ = split_identity(dict(filters or {}))
        wanted = identity.get("user_id")
        return None if wanted is not None and wanted != who.user else who.user

    @staticmethod
    def _keeps(who: Who, filters: Mapping[str, Any] | None, found: Found) -> bool:
        return who.owns(found.memory) and (not filters or matches(dict(filters), found.payload))

    def list_page(
        self, filters: Mapping[str, Any] | None, limit: int, cursor: str | None = None, *, scope: WhoDict = None
    ) -> tuple[list[OutputData], str | None]:
        store = self._me()
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UserInputError("limit must be a positive integer")
        store._ranges.forget()
        scope_dict, who = _who(scope)
        user = self._range_user(filters, who)
        start: Any = decode_cursor(cursor) if cursor else INF_MIN
        if user is None:
            return [], None
        rf = range_filter(scope_dict, filters)
        columns = [COL_PAYLOAD, *rf.columns]
        page: list[OutputData] = []
        while start is not None:
            rows, start = store._ranges.get_range(user, start, limit - len(page) + 1, rf.condition, columns)
            for row in rows:
                found = decode(row_parts(row))
                if found is None or not self._keeps(who, filters, found):
                    continue
                if len(page) == limit:
                    return page, encode_cursor(found.id)
                page.append(_out(found))
        if cursor is None:
            store._ranges._local.count = (filters_key(filters, scope_dict), len(page))
        return page, None

    def count(self, filters: Mapping[str, Any] | None = None, *, scope: WhoDict = None) -> int:
        store = self._me()
        scope_dict, who = _who(scope)
        known = store._ranges.memo(filters_key(filters, scope_dict))
        store._ranges.forget()
        if known is not None:
            return known
        user = self._range_user(filters, who)
        if user is None:
            return 0
        rf = range_filter(scope_dict, filters)
        total = 0
        start: Any = INF_MIN
        if not rf.exact:
            while start is not None:
                rows, start = store._ranges.get_range(user, start, None, rf.condition, [COL_PAYLOAD, *rf.columns])
                for row in rows:
                    found = decode(row_parts(row))
                    total += found is not None and self._keeps(who, filters, found)
            return total
        while start is not None:
            rows, start = store._ranges.get_range(user, start, None, rf.condition, [PK_ID, *rf.checks])
            total += sum(matches(rf.checks, attr_dict(row_parts(row)[1])) for row in rows)
        return total

    def total(self, filters: Mapping[str, Any] | None = None, *, scope: WhoDict = None) -> int:
        store = self._me()
        scope_dict, _ = _who(scope)
        if store._ranges.memo(filters_key(filters, scope_dict)) is None:
            found = store._index_reads.total(scope_dict, filters)
            if found is not None:
                return found
        return self.count(filters, scope=scope_dict)

    def created_page(
        self,
        filters: Mapping[str, Any] | None,
        *,
        newest_first: bool,
        offset: int,
        limit: int,
        since: str | None = None,
        until: str | None = None,
        scope: WhoDict = None,
    ) -> tuple[list[OutputData], int]:
        scope_dict, _ = _who(scope)
        found = self._me()._index_reads.created_page(
            scope_dict, filters, newest_first=newest_first, offset=offset, limit=limit, since=since, until=until
        )
        if found is not None:
            return [_out(r) for r in found[0]], found[1]
        return super().created_page(
            filters, newest_first=newest_first, offset=offset, limit=limit, since=since, until=until, scope=scope_dict
        )

    def tally(self, filters: Mapping[str, Any] | None, *, scope: WhoDict = None) -> Tally:
        scope_dict, _ = _who(scope)
        found = self._me()._index_reads.tally(scope_dict, filters)
        return found if found is not None else super().tally(filters, scope=scope_dict)

    # ------------------------------------------------------------------ filter-dict search

    def _verified(
        self, who: Who, ranked: Sequence[tuple[str, float | None]], k: int, filters: Mapping[str, Any] | None
    ) -> list[Found]:
        store = self._me()
        out: list[Found] = []
        pending = list(ranked)
        while pending:
            size = (
                min(GET_ROWS, (k - len(out)) + max(2, k // 4)) if not out and len(pending) == len(ranked) else GET_ROWS
            )
            chunk, pending = pending[:size], pending[size:]
            rows = store._by_id.in_order(who, [mid for mid, _ in chunk])
            for (_, score), row in zip(chunk, rows, strict=True):
                if row is not None and (not filters or matches(dict(filters), row.payload)):
                    out.append(row.scored(score))
                    if len(out) == k:
                        return out
        return out

    def search(
        self,
        query: str,
        vectors: Sequence[float],
        top_k: int = 5,
        filters: Mapping[str, Any] | None = None,
        *,
        scope: WhoDict = None,
    ) -> list[OutputData]:
        store = self._me()
        scope_dict, who = _who(scope)
        store._narrowed.settled()
        store._switch.check()
        k = min(5 if top_k is None else int(top_k), _MAX_TOP_K)
        if k < 1:
            raise UserInputError("top_k must be at least 1")
        vector = [float(x) for x in vectors]
        if len(vector) != store.embedding_model_dims:
            raise ValueError(
                f"query vector has {len(vector)} dimensions, the index expects {store.embedding_model_dims}"
            )
        push = qb.build(filters, store._indexed)
        fetch = min(k if push.exact else max(k * 4, k + 50), _MAX_TOP_K)
        knn = KnnVectorQuery(
            store.vector_column,
            top_k=fetch,
            float32_query_vector=vector,
            filter=qb.combine(qb.scope_query(scope_dict), push.query),
        )
        scores: dict[str, float | None] = {
            mid: store._narrowed.score(raw) for mid, raw in store._narrowed.search_hits(knn, fetch)
        }
        for mid, similarity in store._recent.nearest(who.user, vector, max(fetch, GET_ROWS)):
            scores[mid] = similarity
        ranked = sorted(scores.items(), key=lambda kv: kv[1] if kv[1] is not None else float("-inf"), reverse=True)
        results = self._verified(who, ranked, k, filters)
        if isinstance(query, str):
            store._stash.put(filters_key(filters, scope_dict), query, results)
        return [_out(r) for r in results]

    def keyword_search(
        self,
        query: str,
        top_k: int = 5,
        filters: Mapping[str, Any] | None = None,
        candidates: Sequence[str] | None = None,
        *,
        scope: WhoDict = None,
    ) -> list[OutputData] | None:
        store = self._me()
        scope_dict, who = _who(scope)
        k = max(1, int(top_k or 5))
        key = filters_key(filters, scope_dict)
        if candidates is not None:
            known = store._stash.rows(key)
            wanted = [str(c) for c in dict.fromkeys(candidates)]
            missing = [c for c in wanted if c not in known]
            fetched = store._by_id.rows(who, missing) if missing else {}
            rows = [r for c in wanted if (r := known.get(c) or fetched.get(c)) is not None]
            rows = [r for r in rows if not filters or matches(dict(filters), r.payload)]
            return [_out(r) for r in bm25(query, rows, k)]
        stashed = store._stash.take(key, query) if isinstance(query, str) else None
        if stashed is not None:
            return [_out(r) for r in bm25(query, stashed, k)]
        if not isinstance(query, str) or not tokens(query):
            return []
        push = qb.build(filters, store._indexed)
        fetch = min(k if push.exact else max(k * 4, k + 50), _MAX_TOP_K)
        flt = qb.combine(qb.scope_query(scope_dict), push.query)
        match = MatchQuery("data", query)
        full = BoolQuery(must_queries=[match], filter_queries=[flt]) if flt is not None else match
        hits = dict.fromkeys([mid for mid, _ in store._narrowed.search_hits(full, fetch)])
        hits.update(dict.fromkeys(store._recent.ids(who.user)[:GET_ROWS]))
        rows = self._verified(who, [(mid, None) for mid in hits], len(hits), filters)
        return [_out(r) for r in bm25(query, rows, k)]


__all__ = ["RowMethods"]
