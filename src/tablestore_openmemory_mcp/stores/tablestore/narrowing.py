"""A search or list's narrowing (client, category, event time, tags) as search-index conditions.

Why: a selective filter checked only after a bounded over-fetch returns fewer than ``limit`` matches
when most of the nearest rows fail it. Pushed into the index, the top-k (or the page) is taken among
matching rows only.

Each memory row carries three derived columns, written with its payload (``narrowing_columns``):

* ``event_at``: the memory's event time, else its creation time (ISO 8601 UTC, a KEYWORD: ISO strings
  in one format sort as times);
* ``category_terms``: its categories, a KEYWORD array (a JSON array string, as the service reads array
  fields: https://www.alibabacloud.com/help/en/tablestore/array-and-nested-field-types "a row is
  returned if at least one of the values in the array meets the condition");
* ``tag_terms``: one ``key=value`` term per metadata tag (:func:`tag_term`), a KEYWORD array, so "every
  tag matches" is one TermQuery per tag and "any tag" one TermsQuery.

Rows written before these columns existed (2.0.0 and earlier) have no ``event_at``; every newer row has
one. So each condition is "the column matches, or the row is old" (``must_not exists event_at``), and
old rows are checked by the caller with :meth:`MemoryQuery.accepts`, as before (an old row may hold an event
time or tags in its payload from a version that did not index them). An index created by an
older version lacks the fields; then nothing is pushed and everything is checked after the read
(``Pushdown.exact`` is False).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tablestore import (
    BoolQuery,
    ExistsQuery,
    FieldSchema,
    FieldType,
    Query,
    RangeQuery,
    TermQuery,
    TermsQuery,
)

from tablestore_openmemory_mcp.memory.query_filters import EVENT_TIME_KEY, METADATA_KEY, MemoryQuery
from tablestore_openmemory_mcp.stores.row_format import tag_term as tag_term  # shared with the embedded store

COL_EVENT_AT = "event_at"
COL_CATEGORY_TERMS = "category_terms"
COL_TAG_TERMS = "tag_terms"
NARROWING_COLUMNS = (COL_EVENT_AT, COL_CATEGORY_TERMS, COL_TAG_TERMS)
CLIENT_FIELD = "agent_id"
#: The service rejects KEYWORD values above 4 KB in an index; longer terms are left to the post-check.
_MAX_TERM_BYTES = 4096


@dataclass(frozen=True)
class Pushdown:
    """An index condition (``None``: no restriction) and whether it decides every row by itself."""

    query: Query | None
    exact: bool


def index_fields() -> list[FieldSchema]:
    """The search-index fields the narrowing columns need (appended to the store's index schema)."""
    return [
        FieldSchema(COL_EVENT_AT, FieldType.KEYWORD, index=True, enable_sort_and_agg=True),
        FieldSchema(COL_CATEGORY_TERMS, FieldType.KEYWORD, index=True, is_array=True),
        FieldSchema(COL_TAG_TERMS, FieldType.KEYWORD, index=True, is_array=True),
    ]


def narrowing_columns(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The derived columns of one payload (always ``event_at``, so a row is known to carry them)."""
    event = payload.get(EVENT_TIME_KEY) or payload.get("created_at")
    cols: list[tuple[str, str]] = []
    if isinstance(event, str) and event:
        cols.append((COL_EVENT_AT, event))
    categories = [c for c in payload.get("categories") or () if isinstance(c, str) and _fits(c)]
    if categories:
        cols.append((COL_CATEGORY_TERMS, json.dumps(categories, ensure_ascii=False)))
    tags = payload.get(METADATA_KEY)
    if isinstance(tags, Mapping):
        terms = [t for t in (tag_term(str(k), v) for k, v in tags.items()) if _fits(t)]
        if terms:
            cols.append((COL_TAG_TERMS, json.dumps(terms, ensure_ascii=False)))
    return cols


def pushdown(query: MemoryQuery, indexed: frozenset[str]) -> Pushdown:
    """The index condition for ``query`` given the fields the index has (the scope is added by the caller)."""
    if not query:
        return Pushdown(None, True)
    parts: list[Query] = []
    exact = True
    if query.client:
        if CLIENT_FIELD in indexed:
            parts.append(TermQuery(CLIENT_FIELD, query.client))
        else:
            exact = False
    derived = all(name in indexed for name in NARROWING_COLUMNS)
    narrowing = bool(query.category or query.since or query.until or query.metadata)
    if narrowing and not derived:
        return Pushdown(_and(parts), False)
    if query.since or query.until:
        parts.append(_or_old(_range(COL_EVENT_AT, query)))
    if query.category:
        parts.append(_or_old(TermQuery(COL_CATEGORY_TERMS, query.category)))
    if query.metadata:
        terms = [tag_term(key, value) for key, value in query.metadata.items()]
        if query.match_any:
            tagged: Query = TermsQuery(COL_TAG_TERMS, terms)
        else:
            tagged = BoolQuery(must_queries=[TermQuery(COL_TAG_TERMS, t) for t in terms])
        parts.append(_or_old(tagged))
    # Old rows pass every narrowing condition above and are checked after the read.
    return Pushdown(_and(parts), exact and not narrowing)


def _fits(term: str) -> bool:
    return 0 < len(term.encode("utf-8")) <= _MAX_TERM_BYTES


def _range(field: str, query: MemoryQuery) -> Query:
    return RangeQuery(field, range_from=query.since, range_to=query.until, include_lower=True, include_upper=False)


def _or_old(condition: Query) -> Query:
    """``condition``, or a row without the derived columns (written before they existed; its payload may
    hold an event time or tags from a version that did not index them, so it is checked after the read)."""
    return BoolQuery(
        should_queries=[condition, BoolQuery(must_not_queries=[ExistsQuery(COL_EVENT_AT)])], minimum_should_match=1
    )


def _and(parts: list[Query]) -> Query | None:
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return BoolQuery(must_queries=parts)
