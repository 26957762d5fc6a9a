"""The typed store port (:class:`~..memory.store_port.StorePort`) on a store's row methods.

Why a bridge: the stores' row methods still take payload dicts and a filter dict and read the caller's
scope from :data:`~.base.ACTIVE_SCOPE`; the repository and everything above speak only the typed port. This
mixin is the one place that turns (Scope, states, MemoryQuery) into those (a store may override any port
method with a native one), and the row format into memories (:mod:`.row_format`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from tablestore_openmemory_mcp.errors import ScopeMissing
from tablestore_openmemory_mcp.memory.ports import ALL_STATES, State
from tablestore_openmemory_mcp.memory.query_filters import EVENT_TIME_KEY, METADATA_KEY, MemoryQuery
from tablestore_openmemory_mcp.scope import Scope

#: The readiness probe's user: no memory is ever stored under it.
READY_USER = "\x00readiness-probe"
EVERYTHING = MemoryQuery()


def state_filter(states: Collection[State]) -> dict[str, Any]:
    """The stores' condition on the ``state`` payload key; rows written before states existed (no key) are active."""
    wanted = set(states)
    if "active" in wanted:
        return {"state": {"nin": [s for s in ALL_STATES if s not in wanted]}} if wanted != set(ALL_STATES) else {}
    return {"state": {"in": sorted(wanted)}}


def query_filter(query: MemoryQuery) -> dict[str, Any]:
    """A :class:`MemoryQuery` in the stores' filter dialect (ANDed with the scope's and the states')."""
    out: list[dict[str, Any]] = []
    if query.client:
        out.append({"agent_id": query.client})
    if query.category:
        out.append({"categories": {"contains": query.category}})
    for op, bound in (("gte", query.since), ("lt", query.until)):
        if bound:
            out.append(
                {
                    "OR": [
                        {EVENT_TIME_KEY: {op: bound}},
                        {"AND": [{"NOT": [{EVENT_TIME_KEY: "*"}]}, {"created_at": {op: bound}}]},
                    ]
                }
            )
    if query.metadata:
        terms = [{f"{METADATA_KEY}.{key}": value} for key, value in query.metadata.items()]
        out.append({"OR": terms} if query.match_any else {"AND": terms})
    return {"AND": out} if out else {}


def scope_filters(scope: Scope) -> dict[str, str]:
    """The row identity a scope sees (the stores' ``user_id``/``agent_id`` columns)."""
    if not scope.user_id:
        raise ScopeMissing("a store call needs the caller's user id")
    if scope.shared:
        return {"user_id": scope.user_id}
    return {"user_id": scope.user_id, "agent_id": scope.client_name}


def selection(scope: Scope, states: Collection[State], query: MemoryQuery) -> dict[str, Any]:
    return {**scope_filters(scope), **state_filter(states), **query_filter(query)}
