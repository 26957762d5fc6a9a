"""Translate mem0 filter dicts into Tablestore search-index queries (filter pushdown).

A filter is pushed down only when the index can evaluate it *exactly*; the rest stays behind for a
post-filter (``filters.matches``) over an over-fetched candidate set. Dropping a conjunct only
widens the result, so inside ``AND`` we push what we can; ``OR`` and ``NOT`` are pushed only when
every part is exact (a partial ``OR``/``NOT`` would wrongly narrow the result).

Pushable: string equality/``ne``/``in``/``nin``/ranges and ``"*"`` (exists) on the KEYWORD fields
(user_id, memory_id, agent_id, run_id, hash, actor_id, role, created_at, updated_at), and
``contains`` on those fields via a wildcard query when the needle is plain text of <= 30 UTF-8 bytes.
Not pushable (post-filtered): arbitrary metadata keys, non-string values, ``icontains``, and
``contains`` on ``data`` (the TEXT field is tokenized, so a substring test cannot be exact).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tablestore import (
    BoolQuery,
    ExistsQuery,
    Query,
    RangeQuery,
    TermQuery,
    TermsQuery,
    WildcardQuery,
)

from .schema import KEYWORD_FIELDS

_LOGICAL = {"AND": "AND", "OR": "OR", "NOT": "NOT", "$and": "AND", "$or": "OR", "$not": "NOT"}
_RANGE_OPS = {"gt", "gte", "lt", "lte"}
#: Tablestore limits a wildcard pattern to 32 (characters on one page, bytes on another: search-index-limits);
#: measured in UTF-8 bytes to be safe (a Chinese character is 3), two of them the ``*`` we add.
_MAX_WILDCARD = 30


@dataclass(frozen=True)
class Pushdown:
    """A query for the index (``None`` = no restriction) and whether it is the whole filter."""

    query: Query | None
    exact: bool


_EVERYTHING = Pushdown(None, True)
_UNPUSHABLE = Pushdown(None, False)


def build(filters: Mapping[str, Any] | None, indexed: frozenset[str] = KEYWORD_FIELDS) -> Pushdown:
    """The pushdown for a whole mem0 filter dict (its keys are ANDed).

    ``indexed``: the KEYWORD fields the index really has (an index created by an older version may
    lack newer ones; filters on those stay behind for the post-filter).
    """
    if not filters:
        return _EVERYTHING
    parts = [_clause(key, value, indexed) for key, value in filters.items()]
    return _and(parts)


def scope_query(scope: Mapping[str, str] | None) -> Query | None:
    """TermQuerys for the active scope; scope keys are identity fields, all indexed as KEYWORD."""
    if not scope:
        return None
    return build(dict(scope)).query


def combine(*queries: Query | None) -> Query | None:
    """AND several optional queries into one (``None`` when there is nothing to filter)."""
    qs = [q for q in queries if q is not None]
    if not qs:
        return None
    if len(qs) == 1:
        return qs[0]
    return BoolQuery(filter_queries=qs)


def _and(parts: list[Pushdown]) -> Pushdown:
    qs = [p.query for p in parts if p.query is not None]
    exact = all(p.exact for p in parts)
    if not qs:
        return Pushdown(None, exact)
    if len(qs) == 1:
        return Pushdown(qs[0], exact)
    return Pushdown(BoolQuery(filter_queries=qs), exact)


def _sub_filters(value: Any) -> list[Mapping[str, Any]] | None:
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, Mapping) for v in value):
        return list(value)
    return None


def _clause(key: str, value: Any, indexed: frozenset[str]) -> Pushdown:
    logical = _LOGICAL.get(key)
    if logical is not None:
        subs = _sub_filters(value)
        if subs is None:
            return _UNPUSHABLE
        parts = [build(s, indexed) for s in subs]
        if logical == "AND":
            return _and(parts)
        if not all(p.exact for p in parts):
            return _UNPUSHABLE
        if logical == "OR":
            if any(p.query is None for p in parts):  # one branch matches everything
                return _EVERYTHING
            return Pushdown(BoolQuery(should_queries=[p.query for p in parts], minimum_should_match=1), True)
        # NOT of several dicts: none of them may match (mem0/qdrant semantics).
        inner = [p.query for p in parts if p.query is not None]
        if len(inner) < len(parts):  # NOT(everything) matches nothing; leave it to the post-filter
            return _UNPUSHABLE
        return Pushdown(BoolQuery(must_not_queries=inner), True)
    if key not in indexed:
        return _UNPUSHABLE
    if value == "*":
        return Pushdown(ExistsQuery(key), True)
    if isinstance(value, Mapping):
        return _and([_operator(key, op, arg) for op, arg in value.items()])
    if isinstance(value, list | tuple):  # a bare list means "one of"
        return _operator(key, "in", value)
    return _operator(key, "eq", value)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, str) for v in value)


def _operator(field: str, op: str, arg: Any) -> Pushdown:
    if op in ("eq", "ne") and isinstance(arg, str):
        term = TermQuery(field, arg)
        return Pushdown(term if op == "eq" else BoolQuery(must_not_queries=[term]), True)
    if op in ("in", "nin") and _is_str_list(arg):
        terms = TermsQuery(field, list(arg))
        return Pushdown(terms if op == "in" else BoolQuery(must_not_queries=[terms]), True)
    if op in _RANGE_OPS and isinstance(arg, str):
        if op in ("gt", "gte"):
            return Pushdown(RangeQuery(field, range_from=arg, include_lower=op == "gte"), True)
        return Pushdown(RangeQuery(field, range_to=arg, include_upper=op == "lte"), True)
    if (
        op == "contains"
        and isinstance(arg, str)
        and 0 < len(arg.encode("utf-8")) <= _MAX_WILDCARD
        and not any(c in arg for c in "*?\\")
    ):
        return Pushdown(WildcardQuery(field, f"*{arg}*"), True)
    return _UNPUSHABLE
