"""Small pure helpers shared by the embedded store's modules: rows and their typed check, payload text, cursors,
vectors."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ...errors import UserInputError
from ...memory.ports import State, StoredMemory
from ...memory.query_filters import MemoryQuery
from ...scope import Scope
from .. import row_format
from ..tokenize import tokens
from .vectors import F32

CHUNK = 500  # ids per "IN (...)" clause, well under SQLite's variable limit
#: The identity columns of a row, filled from its payload. A mem0 app's ``run_id`` stays in the payload (the
#: mem0 provider checks it there); files written by 2.0.0 and earlier keep a ``run_id`` column nothing reads.
IDENTITY_KEYS = ("user_id", "agent_id")
_ROW_NAMES = ("rid", "id", "payload", "user_id", "agent_id")
#: The columns :func:`row_of` reads, in its order; :data:`ROW_WIDTH` of them (columns selected after them follow).
ROW_COLS = ", ".join(_ROW_NAMES)
ROW_WIDTH = len(_ROW_NAMES)


@dataclass(frozen=True)
class Row:
    """One stored row: rowid, id, payload (:mod:`..row_format`'s keys) and identity columns."""

    rid: int
    id: str
    payload: dict[str, Any]
    ident: dict[str, str | None]


def row_of(raw: Sequence[Any]) -> Row:
    """A row from the :data:`ROW_COLS` of a SELECT."""
    rid, id_, payload, user_id, agent_id = raw
    return Row(int(rid), str(id_), json.loads(payload), {"user_id": user_id, "agent_id": agent_id})


def owned(scope: Scope, user_id: str | None, client: str | None) -> bool:
    """Whether a row (or a memory to write) with this user and client belongs to ``scope``."""
    return user_id == scope.user_id and (scope.shared or client == scope.client_name)


@dataclass(frozen=True, slots=True)
class Visible:
    """The typed check of a row read after its selection (a write may have changed it since): in the
    caller's scope, in one of ``states``, accepted by ``query``; the row as a memory, else None."""

    scope: Scope
    states: frozenset[State]
    query: MemoryQuery

    def __call__(self, row: Row, score: float | None = None) -> StoredMemory | None:
        if not owned(self.scope, row.ident["user_id"], row.ident["agent_id"]):
            return None
        memory = row_format.to_memory(row.id, row.payload, score)
        return memory if memory.state in self.states and self.query.accepts(memory) else None


def identity_of(payload: Mapping[str, Any]) -> dict[str, str | None]:
    """A payload's identity columns (None where it has no string)."""
    return {key: (v if isinstance(v := payload.get(key), str) else None) for key in IDENTITY_KEYS}


def state_of(payload: Mapping[str, Any]) -> str | None:
    """The ``state`` column of a payload: its state when a string (absent = active = NULL)."""
    value = payload.get("state")
    return value if isinstance(value, str) else None


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
