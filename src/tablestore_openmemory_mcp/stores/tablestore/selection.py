"""Who a call serves and which rows it may see, as the table's and the search index's own conditions.

Why: the port names the caller's :class:`~...scope.Scope`, the states it may see and a
:class:`~...memory.query_filters.MemoryQuery`; this module turns them into what Tablestore evaluates:

* the **primary-key range** of the scope's user (``Who.user``): every read and write of a user stays in it;
* **column conditions** for the client (unless the scope is shared) on writes, and a GetRange **column
  filter** for the client and the states on scans (:meth:`Selection.column_filter`);
* a **search-index query**: the user and client terms, the states and the query's narrowing
  (:func:`.narrowing.pushdown`) (:meth:`Selection.index_query`);
* the same condition on a row in hand (:meth:`Selection.keeps`): scope, ``memory.state in states`` and
  :meth:`MemoryQuery.accepts`, applied to every row read, since the index lags and old rows pass it.

Two documented rules shape the column filter (help/en/tablestore/developer-reference/filter-by-using-python-sdk):
at most :data:`MAX_CONDITIONS` sub-conditions, and the columns a filter references must be among the columns
read, or the service cannot see their values and (``pass_if_missing=False``) filters every row out: readers add
:attr:`ColumnFilter.columns`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tablestore import (
    BoolQuery,
    ComparatorType,
    CompositeColumnCondition,
    Condition,
    LogicalOperator,
    Query,
    SingleColumnCondition,
    TermQuery,
    TermsQuery,
)

from tablestore_openmemory_mcp.errors import ScopeMissing, UserInputError
from tablestore_openmemory_mcp.memory.ports import ALL_STATES, State, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import EVERYTHING, MemoryQuery
from tablestore_openmemory_mcp.scope import Scope

from .narrowing import CLIENT_FIELD, NARROWING_COLUMNS, pushdown
from .schema import DEDUP_SUFFIX, PK_USER

#: Tablestore's limit on the sub-conditions of one column filter (leaf conditions, all levels).
MAX_CONDITIONS = 10
STATE_FIELD = "state"


@dataclass(frozen=True, slots=True)
class Who:
    """The caller: the user whose primary-key range is read and written, and the client (None: shared)."""

    user: str
    client: str | None = None

    @classmethod
    def of(cls, scope: Scope) -> Who:
        """The caller of ``scope``; scope fails closed (no user: :class:`ScopeMissing`)."""
        if not scope.user_id:
            raise ScopeMissing("a store call needs the caller's user id")
        return cls.named(scope.user_id, None if scope.shared else scope.client_name)

    @classmethod
    def named(cls, user: str, client: str | None = None) -> Who:
        if not user:
            raise ScopeMissing("a store call needs the caller's user id")
        if user.endswith(DEDUP_SUFFIX):
            raise UserInputError(f"a user id cannot end with {DEDUP_SUFFIX!r}")
        return cls(user, client)

    def owns(self, memory: StoredMemory) -> bool:
        """Whether ``memory`` belongs to this caller (its user and, unless shared, its client)."""
        return memory.user_id == self.user and (self.client is None or memory.client == self.client)

    def conditions(self) -> list[SingleColumnCondition]:
        """Column conditions a write checks on the row: the client's (the user is the primary key)."""
        if self.client is None:
            return []
        return [SingleColumnCondition(CLIENT_FIELD, self.client, ComparatorType.EQUAL, pass_if_missing=False)]

    def terms(self) -> list[Query]:
        """The scope as index terms (the user and, unless shared, the client: both always indexed)."""
        parts: list[Query] = [TermQuery(PK_USER, self.user)]
        if self.client is not None:
            parts.append(TermQuery(CLIENT_FIELD, self.client))
        return parts


def condition(expectation: str, conds: Sequence[Any]) -> Condition:
    """A row condition: ``expectation`` plus every one of ``conds`` (ANDed)."""
    if not conds:
        return Condition(expectation)
    return Condition(expectation, all_of(list(conds), LogicalOperator.AND))


def all_of(conds: list[Any], op: LogicalOperator) -> Any:
    """``conds`` combined with ``op`` (one condition stays itself)."""
    if len(conds) == 1:
        return conds[0]
    combined = CompositeColumnCondition(op)
    for c in conds:
        combined.add_sub_condition(c)
    return combined


def combine(*queries: Query | None) -> Query | None:
    """AND several optional index queries into one (``None`` when there is nothing to filter)."""
    qs = [q for q in queries if q is not None]
    if not qs:
        return None
    if len(qs) == 1:
        return qs[0]
    return BoolQuery(filter_queries=qs)


def leaves(cond: Any) -> int:
    """How many single-column conditions ``cond`` holds (what the sub-condition limit counts)."""
    if cond is None:
        return 0
    subs = getattr(cond, "sub_conditions", None)
    if subs is None:
        return 1
    return sum(leaves(c) for c in subs)


@dataclass(frozen=True)
class ColumnFilter:
    """A GetRange column filter (None: none), the columns it references (read them too) and whether it
    decides every row by itself (else each row is checked with :meth:`Selection.keeps`)."""

    condition: Any
    columns: tuple[str, ...]
    exact: bool


@dataclass(frozen=True)
class Selection:
    """One read's rows: the caller's, in ``states``, accepted by ``query``."""

    who: Who
    states: frozenset[State]
    query: MemoryQuery = EVERYTHING

    @classmethod
    def of(cls, scope: Scope, states: Collection[State], query: MemoryQuery = EVERYTHING) -> Selection:
        return cls(Who.of(scope), frozenset(states), query)

    @property
    def every_state(self) -> bool:
        return self.states >= frozenset(ALL_STATES)

    def keeps(self, memory: StoredMemory) -> bool:
        """The whole condition on a memory in hand (a row without a state is active)."""
        return self.who.owns(memory) and memory.state in self.states and self.query.accepts(memory)

    def key(self) -> str:
        """A stable key of this selection (the candidate stash's, the count memo's)."""
        who = [self.who.user, self.who.client]
        return json.dumps([who, sorted(self.states), asdict(self.query)], sort_keys=True, default=str)

    # ------------------------------------------------------------------ the states

    def _other_states(self) -> list[str]:
        return [s for s in ALL_STATES if s not in self.states]

    def state_query(self, indexed: frozenset[str]) -> tuple[Query | None, bool]:
        """The states as an index condition, and whether it is exact (the index has a ``state`` field).
        Active rows have no state column: "active and others" is "none of the states left out"."""
        if self.every_state:
            return None, True
        if STATE_FIELD not in indexed or not self.states:
            return None, False
        if "active" in self.states:
            return BoolQuery(must_not_queries=[TermsQuery(STATE_FIELD, self._other_states())]), True
        return TermsQuery(STATE_FIELD, sorted(self.states)), True

    def _state_condition(self) -> Any | None:
        if "active" in self.states:  # a missing column is active: NOT_EQUAL passes it
            others = self._other_states()
            conds = [SingleColumnCondition(STATE_FIELD, s, ComparatorType.NOT_EQUAL, True) for s in others]
            return all_of(conds, LogicalOperator.AND)
        conds = [SingleColumnCondition(STATE_FIELD, s, ComparatorType.EQUAL, False) for s in sorted(self.states)]
        return all_of(conds, LogicalOperator.OR)

    # ------------------------------------------------------------------ the index and the table

    def index_query(self, indexed: frozenset[str]) -> tuple[Query | None, bool]:
        """The search-index query (scope, states, narrowing) and whether it decides every row exactly
        (fields an older index lacks, and rows older than the narrowing columns, are checked after the read)."""
        by_state, state_exact = self.state_query(indexed)
        push = pushdown(self.query, indexed)
        return combine(*self.who.terms(), by_state, push.query), state_exact and push.exact

    def derived(self, indexed: frozenset[str]) -> bool:
        """Every narrowing field is in the index (an index made by an older version may lack them)."""
        return all(name in indexed for name in NARROWING_COLUMNS)

    def column_filter(self) -> ColumnFilter:
        """The GetRange column filter of a scan of the user's range: the client and the states.

        The query's narrowing is checked on the rows read (its fields live in the payload)."""
        conds: list[Any] = []
        columns: list[str] = []
        exact = not self.query
        if self.who.client is not None:
            conds.append(SingleColumnCondition(CLIENT_FIELD, self.who.client, ComparatorType.EQUAL, False))
            columns.append(CLIENT_FIELD)
        if not self.every_state:
            state = self._state_condition() if self.states else None
            if state is None or leaves(state) + len(conds) > MAX_CONDITIONS:
                exact = False
            else:
                conds.append(state)
                columns.append(STATE_FIELD)
        return ColumnFilter(all_of(conds, LogicalOperator.AND) if conds else None, tuple(columns), exact)

    def columns_pass(self, attrs: Mapping[str, Any]) -> bool:
        """The column filter's condition on the columns read (a keys-only count re-checks them)."""
        if self.who.client is not None and attrs.get(CLIENT_FIELD) != self.who.client:
            return False
        if self.every_state:
            return True
        state = attrs.get(STATE_FIELD)
        return (state if isinstance(state, str) and state else "active") in self.states


__all__ = ["ColumnFilter", "Selection", "Who", "combine", "condition"]
