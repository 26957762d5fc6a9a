"""A search or list's narrowing (states, client, category, event time, tags) as SQL on the embedded file.

Why: checked in Python after a bounded read, a selective filter either reads the whole scope or returns
fewer than ``limit`` matches. Here (Scope, states, MemoryQuery) become one WHERE clause on the memory table,
served by its indexes: ``event_at`` (the memory's event time, else its creation time; ``(user_id,
[agent_id,] event_at)``) and the term table ``<name>__terms(rid, term)`` (``(term, rid)``) holding
``category=<c>`` and ``tag=<key>=<value>`` (:func:`..row_format.tag_term`, the terms the Tablestore index
holds too). Isolation: a term row carries no identity; :func:`where` always also names the caller's
``user_id`` (and client) on the memory row itself, and :func:`candidates` (rowids for a vector search) is
only a superset: the search scores only the caller's own cached vectors and checks each row it reads, so
another user's term never selects anything.

Pure: builds SQL text and values, no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from tablestore_openmemory_mcp.errors import ScopeMissing
from tablestore_openmemory_mcp.memory.ports import ALL_STATES, State
from tablestore_openmemory_mcp.memory.query_filters import EVENT_TIME_KEY, METADATA_KEY, MemoryQuery
from tablestore_openmemory_mcp.scope import Scope

from ..row_format import tag_term
from .rows import utc_iso


def identity(scope: Scope) -> dict[str, str]:
    """The identity columns a scope sees: its user, and its client unless the scope is shared."""
    if not scope.user_id:
        raise ScopeMissing("a store call needs the caller's user id")
    if scope.shared:
        return {"user_id": scope.user_id}
    return {"user_id": scope.user_id, "agent_id": scope.client_name}


def scope_clause(scope: Scope) -> tuple[str, list[str]]:
    """``user_id = ? [AND agent_id = ?]`` (without WHERE) and its values: the rows ``scope`` sees."""
    who = identity(scope)
    keys = sorted(who)
    return " AND ".join(f"{key} = ?" for key in keys), [who[key] for key in keys]


def state_clause(states: Collection[State]) -> tuple[str, list[str]] | None:
    """The condition on the ``state`` column (None: every state). The column is NULL for rows written
    before states existed, which are active."""
    wanted = set(states)
    if not wanted:
        return "0", []
    if "active" in wanted:
        others: list[str] = [s for s in ALL_STATES if s not in wanted]
        if not others:
            return None
        return f"(state IS NULL OR state NOT IN ({','.join('?' * len(others))}))", others
    return f"state IN ({','.join('?' * len(wanted))})", sorted(wanted)


def row_terms(payload: Mapping[str, Any]) -> list[str]:
    """The term rows of one payload: its categories and its metadata tags."""
    terms: list[str] = []
    categories = payload.get("categories")
    if isinstance(categories, list | tuple):
        terms += [f"category={c}" for c in categories if isinstance(c, str)]
    tags = payload.get(METADATA_KEY)
    if isinstance(tags, Mapping):
        terms += ["tag=" + tag_term(str(key), value) for key, value in tags.items()]
    return list(dict.fromkeys(terms))


def event_at(payload: Mapping[str, Any], created_at: str) -> str:
    """The event time a since/until compares (UTC, microseconds, like the ``created_at`` column)."""
    event = payload.get(EVENT_TIME_KEY)
    return utc_iso(str(event)) if event else created_at


def term_selects(query: MemoryQuery, terms: str) -> list[tuple[str, list[str]]]:
    """``SELECT rid`` from the term table per condition of ``query`` (its category; its tags, one select each,
    or one for all of them with ``match_any``), each with its values; a row matches when every select has it."""
    selects: list[tuple[str, list[str]]] = []
    if query.category:
        selects.append((f"SELECT rid FROM {terms} WHERE term = ?", [f"category={query.category}"]))
    tags = ["tag=" + tag_term(key, value) for key, value in query.metadata.items()]
    if tags and query.match_any:
        selects.append((f"SELECT DISTINCT rid FROM {terms} WHERE term IN ({','.join('?' * len(tags))})", tags))
    else:
        selects += [(f"SELECT rid FROM {terms} WHERE term = ?", [tag]) for tag in tags]
    return selects


def candidates(
    scope: Scope, states: Collection[State], query: MemoryQuery, table: str, terms: str
) -> tuple[str, list[Any]]:
    """``SELECT rid ...`` of a superset of the matching rows, from indexes alone (no memory row is read).

    With a category or tag: the term index's rowids (ANDed with INTERSECT), intersected with the
    ``(user_id, [agent_id,] event_at)`` index when a time bound or a client is given; the caller keeps only
    rows of the caller's own cached vectors and checks every row it reads (state, client, time).
    Without: exactly :func:`where` (a covering index).
    """
    if not (query.category or query.metadata):
        clause, values = where(scope, states, query, terms)
        return f"SELECT rid FROM {table}{clause}", values
    selects = term_selects(query, terms)
    parts = [sql for sql, _ in selects]
    values = [value for _, more in selects for value in more]
    if query.since or query.until or query.client:
        timed = MemoryQuery(client=query.client, since=query.since, until=query.until)
        clause, more = where(scope, states, timed, terms)
        parts.append(f"SELECT rid FROM {table}{clause}")
        values += more
    return " INTERSECT ".join(parts), values


def where(
    scope: Scope, states: Collection[State], query: MemoryQuery, terms: str, *, by_terms: bool = True
) -> tuple[str, list[Any]]:
    """`` WHERE ...`` over the memory table (unaliased) and its values; ``terms`` is the term table's name.

    ``by_terms=False`` leaves the planner free to walk the user's ordered index instead (a keyset page
    stops after ``limit`` matches, however common the term)."""
    clauses: list[str] = []
    values: list[Any] = []
    who = identity(scope)
    if query.client and who.setdefault("agent_id", query.client) != query.client:
        return " WHERE 0", []  # a client scope asked for another client's memories
    # With a term, the term index drives (a category or tag is usually far more selective than the
    # user's whole range); SQLite's unary "+" keeps the planner off the (user_id, ...) indexes.
    col = "+" if by_terms and (query.category or query.metadata) else ""
    for key in sorted(who):
        clauses.append(f"{col}{key} = ?")
        values.append(who[key])
    state = state_clause(states)
    if state is not None:
        clauses.append(state[0])
        values += state[1]
    if query.since:
        clauses.append(f"{col}event_at >= ?")
        values.append(query.since)
    if query.until:
        clauses.append(f"{col}event_at < ?")
        values.append(query.until)
    for sql, more in term_selects(query, terms):
        clauses.append(f"rid IN ({sql})")
        values += more
    return " WHERE " + " AND ".join(clauses), values
