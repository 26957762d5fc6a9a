"""Small pure helpers shared by the embedded store's modules: plans, payload text, cursors, vectors."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

from ...errors import ScopeMissing, UserInputError
from ..filters import IDENTITY_KEYS, matches, split_identity
from ..tokenize import tokens
from .vectors import F32

CHUNK = 500  # ids per "IN (...)" clause, well under SQLite's variable limit


class Plan(NamedTuple):
    """How to answer a filter inside the active scope.

    Vector and keyword search use ``identity`` (the cached slab / FTS scope terms) and check ``rest``
    per row; SQL reads (lists, counts) push ``where`` (identity + the ``state`` condition) into an
    index and check only ``sql_rest`` per row.
    """

    where: str  # " WHERE user_id = ? AND ... [AND state ...]"
    params: list[str]
    sql_rest: dict[str, Any]  # what SQL reads still check with filters.matches
    rest: dict[str, Any]  # what searches check per row (includes the state condition)
    identity: dict[str, str]
    scope: dict[str, str]

    @property
    def exact(self) -> bool:
        """Identity alone decides membership (searches need no per-row filter check)."""
        return not self.rest

    @property
    def sql_exact(self) -> bool:
        return not self.sql_rest


def plan(filters: Mapping[str, Any] | None, scope: Mapping[str, str]) -> Plan | None:
    """Plan a read within ``scope`` (the caller's identity); ``None`` when filters contradict it."""
    if not scope.get("user_id"):
        raise ScopeMissing("a store read needs the caller's user id")
    identity, rest = split_identity(filters)
    extra: dict[str, Any] = {}
    for key, value in scope.items():
        if key in IDENTITY_KEYS:
            if identity.setdefault(key, value) != value:
                return None
        else:
            extra[key] = value
    if extra:
        rest = {"AND": [rest, extra]} if rest else extra
    keys = sorted(identity)
    clauses = [f"{key} = ?" for key in keys]
    params = [identity[k] for k in keys]
    sql_rest = dict(rest)
    state = state_sql(rest["state"]) if "state" in rest else None
    if state is not None:
        clauses.append(state[0])
        params += state[1]
        del sql_rest["state"]
    return Plan(" WHERE " + " AND ".join(clauses), params, sql_rest, rest, identity, dict(scope))


def state_sql(cond: Any) -> tuple[str, list[str]] | None:
    """SQL on the ``state`` column equivalent to a filter condition on the payload's ``state``.

    The column holds the payload's ``state`` when it is a string, else NULL (treated as missing,
    exactly as :func:`..filters.matches` treats a missing key). ``None`` when not translatable.
    """
    if isinstance(cond, str):
        return ("state = ?", [cond]) if cond != "*" else None
    if not isinstance(cond, Mapping) or len(cond) != 1:
        return None
    ((op, value),) = cond.items()
    if op == "eq" and isinstance(value, str):
        return "state = ?", [value]
    if op == "ne" and isinstance(value, str):
        return "(state IS NULL OR state != ?)", [value]
    if op in ("in", "nin") and isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        marks = ",".join("?" * len(value))
        if op == "in":
            return f"state IN ({marks})", list(value)
        return f"(state IS NULL OR state NOT IN ({marks}))", list(value)
    return None


def state_of(payload: Mapping[str, Any]) -> str | None:
    value = payload.get("state")
    return value if isinstance(value, str) else None


def row_visible(p: Plan, ident: Mapping[str, str | None], payload: Mapping[str, Any]) -> bool:
    """True when a row (identity columns + payload) is in the plan's scope and matches its filters."""
    if any(ident.get(key) != value for key, value in p.identity.items()):
        return False
    return p.exact or matches(p.rest, payload)


def in_scope(scope: Mapping[str, str], ident: Mapping[str, str | None], payload: Mapping[str, Any]) -> bool:
    """True when a row belongs to ``scope`` (identity columns, other scope keys from the payload)."""
    for key, value in scope.items():
        actual = ident.get(key) if key in IDENTITY_KEYS else payload.get(key)
        if actual != value:
            return False
    return True


def identity_of(payload: Mapping[str, Any]) -> dict[str, str | None]:
    return {key: (v if isinstance(v := payload.get(key), str) else None) for key in IDENTITY_KEYS}


def scope_terms(identity: Mapping[str, str | None]) -> list[str]:
    """One FTS token per identity value: key initial + 20 hex digits of its SHA-1 (any id is safe)."""
    return [
        key[0] + hashlib.sha1(value.encode("utf-8")).hexdigest()[:20]
        for key in IDENTITY_KEYS
        if isinstance(value := identity.get(key), str)
    ]


def dumps(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, default=str, separators=(",", ":"))


def fts_text(payload: Mapping[str, Any]) -> str:
    """Tokens of ``data`` plus any extra tokens of ``text_lemmatized`` (mem0's BM25 text)."""
    data = payload.get("data")
    toks = tokens(data if isinstance(data, str) else None)
    lemmas = payload.get("text_lemmatized")
    if isinstance(lemmas, str) and lemmas:
        seen = set(toks)
        toks += [t for t in dict.fromkeys(tokens(lemmas)) if t not in seen]
    return " ".join(toks)


def utc_iso(value: Any) -> str:
    """ISO-8601 UTC with microseconds, so text order is time order; falls back to the raw string."""
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        return parsed.isoformat(timespec="microseconds") + "+00:00"
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "+00:00"


def encode_cursor(created_at: str, id_: str) -> str:
    raw = json.dumps([created_at, id_], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The (created_at, id) a page ended at; ``UserInputError`` for anything we did not hand out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, id_ = json.loads(raw)
    except (ValueError, TypeError, binascii.Error):
        raise UserInputError("invalid cursor: pass the next_cursor of the previous page unchanged") from None
    if not isinstance(created_at, str) or not isinstance(id_, str):
        raise UserInputError("invalid cursor: pass the next_cursor of the previous page unchanged")
    return created_at, id_


def chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def unit_vectors(vectors: Any, dims: int) -> F32:
    """Validate a batch of vectors and return them L2-normalised as float32 (k x dims)."""
    try:
        arr = np.asarray(vectors, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"vectors must be lists of {dims} numbers: {exc}") from None
    if arr.size == 0 and arr.ndim <= 2 and (arr.ndim < 2 or arr.shape[1] in (0, dims)):
        return np.empty((0, dims), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dims:
        got = arr.shape[1] if arr.ndim == 2 else f"shape {arr.shape}"
        raise ValueError(f"vector length must be {dims} (embedding_model_dims), got {got}")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise ValueError(f"vector {int(np.argmin(finite))} contains NaN or infinity")
    norms = np.linalg.norm(arr, axis=1)
    if (norms == 0).any():
        raise ValueError(f"vector {int(np.argmin(norms))} is all zeros and has no direction")
    out: F32 = (arr / norms[:, None]).astype(np.float32)
    return out
