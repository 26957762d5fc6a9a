"""mem0's filter dict, split into what the typed store port answers and what the provider checks itself.

Why here: the stores take a :class:`~..scope.Scope`, the states a caller may see and a
:class:`~..memory.query_filters.MemoryQuery`; they know nothing of mem0's filter dialect (:mod:`.filters`).
So the dialect is translated once, in mem0's package:

* ``user_id`` (a plain string) names the scope's user; ``agent_id`` (a plain string) the client (the
  provider makes it the scope's client, or the query's when the engine fixed the scope); ``state`` picks
  the states (rows paused, archived or deleted by the server are hidden unless a filter names ``state``);
  ``categories: {"contains": c}`` becomes the query's category. Each of these is exact, so a store's
  answer needs no second look for them.
* Everything else (``run_id``, the user's metadata keys, other operators, ``AND``/``OR``/``NOT``) is the
  *residual*: :meth:`Selection.accepts` checks it with :func:`.filters.matches` on each row the store returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tablestore_openmemory_mcp.errors import UserInputError
from tablestore_openmemory_mcp.memory.ports import ALL_STATES, State
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery
from tablestore_openmemory_mcp.scope import Scope

from .filters import OPERATORS, matches, split_identity

#: What mem0 sees when no filter names ``state``: the server's paused, archived and deleted rows stay hidden.
VISIBLE: tuple[State, ...] = ("active",)
_LOGICAL = frozenset({"AND", "OR", "NOT", "$and", "$or", "$not"})


def check_filters(filters: Mapping[str, Any] | None) -> None:
    """Refuse operators we do not evaluate (mem0 passes unknown ones through, which would match nothing)."""
    for key, cond in (filters or {}).items():
        if key in _LOGICAL:
            for sub in cond if isinstance(cond, list | tuple) else [cond]:
                check_filters(sub if isinstance(sub, Mapping) else None)
        elif isinstance(cond, Mapping):
            unknown = sorted(set(cond) - OPERATORS)
            if unknown:
                raise UserInputError(
                    f"unsupported filter operator(s) {unknown} on {key!r}; supported: {', '.join(sorted(OPERATORS))}, "
                    "AND, OR, NOT and '*'"
                )


@dataclass(frozen=True, slots=True)
class Selection:
    """One mem0 filter dict as the store port's arguments plus the residual the provider checks."""

    user_id: str | None
    client: str | None
    states: tuple[State, ...]
    query: MemoryQuery
    residual: dict[str, Any] = field(default_factory=dict)

    def accepts(self, payload: Mapping[str, Any], state: State) -> bool:
        """The residual on one row's payload (mem0's shape; ``state`` given, as active rows store none)."""
        return not self.residual or matches(self.residual, {**payload, "state": state})


def scope_filters(scope: Scope) -> dict[str, str]:
    """mem0's filters selecting ``scope``'s memories (mem0 calls the client ``agent_id``)."""
    if scope.shared:
        return {"user_id": scope.user_id}
    return {"user_id": scope.user_id, "agent_id": scope.client_name}


def select(filters: Mapping[str, Any] | None, scope_user: str | None = None) -> Selection:
    """Translate ``filters``; ``scope_user``: the user the caller's scope is already fixed to (the server's
    engine), whose ``user_id`` condition is then implied (another user's stays in the residual: no rows)."""
    check_filters(filters)
    identity, rest = split_identity(filters)
    user = identity.get("user_id")
    if user is not None and scope_user is not None and user != scope_user:
        rest["user_id"] = user
    if identity.get("run_id") is not None:
        rest["run_id"] = identity["run_id"]  # never a column: checked on the payload
    states = VISIBLE
    if "state" in rest:
        cond = rest.pop("state")
        states = tuple(s for s in ALL_STATES if matches({"state": cond}, {"state": s}))
    category = None
    wanted = rest.get("categories")
    if isinstance(wanted, Mapping) and set(wanted) == {"contains"} and isinstance(wanted["contains"], str):
        category = wanted["contains"] or None
        if category:
            del rest["categories"]
    client = identity.get("agent_id")
    if client == "":
        rest["agent_id"] = client  # an empty client narrows to nothing, never to everything
    return Selection(user, client or None, states, MemoryQuery(category=category), rest)
