"""Evaluate mem0 2.x filter dicts against one payload, in Python.

The mem0 provider (:mod:`.vector_store`) turns what the typed store port can express (the user, the
client, the states, a category) into the store's query (:mod:`.selection`) and checks everything else
with :func:`matches` over each row's payload (:func:`~..stores.row_format.to_payload`, mem0's shape).

Grammar (mem0 2.x, no ``$`` prefixes; ``$and``/``$or``/``$not`` are accepted as aliases)::

    {"k": v}                          equality (a list value means "one of")
    {"k": "*"}                        k is present and not None
    {"k": {"eq"|"ne"|"in"|"nin"|"gt"|"gte"|"lt"|"lte"|"contains"|"icontains": v, ...}}
    {"AND": [f, ...]}  {"OR": [f, ...]}  {"NOT": [f, ...]}   (NOT = none of them match)

Top-level keys are ANDed. A key may be a dotted path (``"metadata.topic"``) when the payload has no
such top-level key. Semantics chosen where mem0 leaves room:

* a missing field never equals anything, is never ``in``/``gt``/``contains`` anything, but *is*
  ``ne`` any value and ``nin`` any list (like Qdrant's ``must_not``);
* ``in``/``nin``/``contains`` against a list-valued field test membership of its elements;
* comparisons between incomparable types (``"a" > 3``) are simply false.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

IDENTITY_KEYS: tuple[str, ...] = ("user_id", "agent_id", "run_id")
OPERATORS = frozenset({"eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "contains", "icontains"})
_LOGICAL = {"AND": "AND", "OR": "OR", "NOT": "NOT", "$and": "AND", "$or": "OR", "$not": "NOT"}
_MISSING = object()


def matches(filters: Mapping[str, Any] | None, payload: Mapping[str, Any] | None) -> bool:
    """True when ``payload`` satisfies every condition in ``filters`` (``None``/``{}`` match all)."""
    if not filters:
        return True
    payload = payload or {}
    for key, cond in filters.items():
        logical = _LOGICAL.get(key)
        if logical is not None:
            subs = _as_filter_list(key, cond)
            if logical == "AND":
                ok = all(matches(sub, payload) for sub in subs)
            elif logical == "OR":
                ok = any(matches(sub, payload) for sub in subs)
            else:
                ok = not any(matches(sub, payload) for sub in subs)
        else:
            ok = _match_field(_lookup(payload, key), cond)
        if not ok:
            return False
    return True


def split_identity(filters: Mapping[str, Any] | None) -> tuple[dict[str, str], dict[str, Any]]:
    """Pull plain-string equality on ``user_id``/``agent_id``/``run_id`` out of ``filters``.

    Returns ``(identity, rest)``: ``identity`` can be pushed into an index lookup (SQL ``WHERE``,
    Tablestore primary key), ``rest`` must still be checked with :func:`matches`. Only top-level
    conditions are pulled; ``"*"`` and operators other than a lone ``eq`` stay in ``rest``.
    """
    identity: dict[str, str] = {}
    rest: dict[str, Any] = {}
    for key, cond in (filters or {}).items():
        if key in IDENTITY_KEYS:
            value = cond
            if isinstance(cond, Mapping) and set(cond) == {"eq"}:
                value = cond["eq"]
            if isinstance(value, str) and value != "*":
                identity[key] = value
                continue
        rest[key] = cond
    return identity, rest


def _as_filter_list(key: str, cond: Any) -> list[Mapping[str, Any]]:
    if isinstance(cond, Mapping):
        return [cond]
    if isinstance(cond, list | tuple) and all(isinstance(sub, Mapping) for sub in cond):
        return list(cond)
    raise ValueError(f"filter {key!r} needs a list of filter dicts, got {cond!r}")


def _lookup(payload: Mapping[str, Any], key: str) -> Any:
    if key in payload:
        return payload[key]
    if "." in key:
        node: Any = payload
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return _MISSING
            node = node[part]
        return node
    return _MISSING


def _match_field(actual: Any, cond: Any) -> bool:
    if isinstance(cond, str) and cond == "*":
        return actual is not _MISSING and actual is not None
    if isinstance(cond, Mapping) and cond and any(op in OPERATORS for op in cond):
        unknown = set(cond) - OPERATORS
        if unknown:
            raise ValueError(f"unsupported filter operator(s): {sorted(unknown)}")
        return all(_apply(op, actual, value) for op, value in cond.items())
    if isinstance(cond, list | tuple):
        return _apply("in", actual, cond) or (actual is not _MISSING and actual == list(cond))
    return actual is not _MISSING and actual == cond


def _apply(op: str, actual: Any, value: Any) -> bool:
    present = actual is not _MISSING
    if op == "eq":
        return present and actual == value
    if op == "ne":
        return not present or actual != value
    if op in ("in", "nin"):
        if not isinstance(value, list | tuple | set | frozenset):
            raise ValueError(f"filter operator {op!r} needs a list, got {value!r}")
        found = present and _member(actual, value)
        return found if op == "in" else not found
    if op in ("gt", "gte", "lt", "lte"):
        if not present or actual is None or value is None:
            return False
        try:
            if op == "gt":
                return bool(actual > value)
            if op == "gte":
                return bool(actual >= value)
            if op == "lt":
                return bool(actual < value)
            return bool(actual <= value)
        except TypeError:
            return False
    if op == "contains":
        if isinstance(actual, str):
            return isinstance(value, str) and value in actual
        return isinstance(actual, list | tuple) and value in actual
    # icontains
    if not isinstance(value, str):
        return False
    needle = value.casefold()
    if isinstance(actual, str):
        return needle in actual.casefold()
    if isinstance(actual, list | tuple):
        return any(isinstance(item, str) and item.casefold() == needle for item in actual)
    return False


def _member(actual: Any, values: Any) -> bool:
    """``actual in values``; for a list-valued field, any element in ``values``."""
    if isinstance(actual, list | tuple):
        return any(_safe_in(item, values) for item in actual)
    return _safe_in(actual, values)


def _safe_in(item: Any, values: Any) -> bool:
    try:
        return item in values
    except TypeError:  # unhashable item tested against a set
        return any(item == value for value in values)
