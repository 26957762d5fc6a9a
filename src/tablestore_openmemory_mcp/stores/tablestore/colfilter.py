"""Scope and simple filters as a GetRange column filter, so the table skips rows we would drop anyway.

Why: list and count read a user's whole range. The scope's client (``agent_id``) and the usual state
filter (``{"state": {"nin": [...]}}``) are columns of their own, so the table can filter them and a count
can read primary keys only. Translated: top-level equality, ``eq``/``ne``/``in``/``nin`` on string values
of columns in ``KEYWORD_COLUMNS``. A missing column behaves like a missing payload key in
``filters.matches``: it never equals anything, is ``ne`` anything and ``nin`` any list. Anything else is
left to the caller's post-filter (``exact`` is then False).

Two documented rules shape it (help/en/tablestore/developer-reference/filter-by-using-python-sdk): a filter
may have at most :data:`MAX_CONDITIONS` sub-conditions, so clauses past that stay with the post-filter; and
the columns a filter references must be among the columns read, or the service cannot see their values and
(with ``pass_if_missing=False``) filters every row out: readers add :attr:`RangeFilter.columns`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tablestore import ComparatorType, CompositeColumnCondition, LogicalOperator, SingleColumnCondition

from .schema import KEYWORD_COLUMNS

#: Tablestore's limit on the sub-conditions of one column filter (leaf conditions, all levels).
MAX_CONDITIONS = 10


@dataclass(frozen=True)
class RangeFilter:
    """The column filter (None = none), the clauses it covers (to re-check the returned columns with
    ``filters.matches``), and whether it is the whole filter."""

    condition: Any
    checks: Mapping[str, Any]
    exact: bool

    @property
    def columns(self) -> list[str]:
        """The columns the filter references: a read using it must ask for them too."""
        return list(self.checks)


def leaves(cond: Any) -> int:
    """How many single-column conditions ``cond`` holds (what the sub-condition limit counts)."""
    if cond is None:
        return 0
    subs = getattr(cond, "sub_conditions", None)
    if subs is None:
        return 1
    return sum(leaves(c) for c in subs)


def _all(conds: list[Any], op: LogicalOperator) -> Any:
    if len(conds) == 1:
        return conds[0]
    combined = CompositeColumnCondition(op)
    for c in conds:
        combined.add_sub_condition(c)
    return combined


def _clause(key: str, value: Any) -> Any | None:
    """One filter clause as a column condition, or None when it cannot be one exactly."""
    if key not in KEYWORD_COLUMNS:
        return None
    if isinstance(value, str) and value != "*":
        return SingleColumnCondition(key, value, ComparatorType.EQUAL, pass_if_missing=False)
    if not isinstance(value, Mapping) or len(value) != 1:
        return None
    op, arg = next(iter(value.items()))
    if op in ("eq", "ne") and isinstance(arg, str):
        comparator = ComparatorType.EQUAL if op == "eq" else ComparatorType.NOT_EQUAL
        return SingleColumnCondition(key, arg, comparator, pass_if_missing=op == "ne")
    if op in ("in", "nin") and isinstance(arg, list | tuple) and arg and all(isinstance(a, str) for a in arg):
        if op == "in":
            eq = [SingleColumnCondition(key, a, ComparatorType.EQUAL, pass_if_missing=False) for a in arg]
            return _all(eq, LogicalOperator.OR)
        ne = [SingleColumnCondition(key, a, ComparatorType.NOT_EQUAL, pass_if_missing=True) for a in arg]
        return _all(ne, LogicalOperator.AND)
    return None


def range_filter(scope: Mapping[str, str], filters: Mapping[str, Any] | None) -> RangeFilter:
    """The column filter for a scan of the scope user's range (``user_id`` is the range itself)."""
    conds: list[Any] = []
    checks: dict[str, Any] = {}
    exact = True
    merged: dict[str, Any] = {k: v for k, v in scope.items() if k != "user_id"}
    for key, value in (filters or {}).items():
        if key == "user_id" and value == scope.get("user_id"):
            continue
        if key in merged and merged[key] == value:
            continue
        if key in merged:  # two conditions on one key: let the post-filter decide
            exact = False
            continue
        merged[key] = value
    used = 0
    for key, value in merged.items():
        cond = _clause(key, value)
        if cond is None or used + leaves(cond) > MAX_CONDITIONS:  # the post-filter checks it instead
            exact = False
            continue
        used += leaves(cond)
        conds.append(cond)
        checks[key] = value
    return RangeFilter(_all(conds, LogicalOperator.AND) if conds else None, checks, exact)
