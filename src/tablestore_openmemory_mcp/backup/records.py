"""One memory as a backup record, and back.

The record is OpenMemory's provider-agnostic line (``memories.jsonl.gz`` of its backup zip, version 1)::

    {"id", "content", "metadata", "created_at", "updated_at", "state", "app", "categories"}

plus what this server adds so a backup moves between stores without re-embedding or losing history:
``user_id``, ``history`` (the memory's events), ``embedding_model`` and ``vector``. OpenMemory's
``app`` is our client name. Unknown fields are ignored on import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tablestore_openmemory_mcp.memory.ports import ALL_STATES, HistoryRecord, StoredMemory

STATES = ALL_STATES
_HISTORY_FIELDS = {f.name for f in fields(HistoryRecord)}


class BadRecord(ValueError):
    """A record that cannot be imported; the message is the per-record skip reason."""


@dataclass(frozen=True, slots=True)
class BackupRecord:
    """A record as read from a backup, checked: what the importer needs and nothing else."""

    id: str | None
    content: str
    metadata: dict[str, Any]
    created_at: str | None
    updated_at: str | None
    state: str
    app: str | None
    categories: tuple[str, ...]
    user_id: str | None = None
    embedding_model: str | None = None
    vector: list[float] | None = None
    history: tuple[HistoryRecord, ...] = field(default_factory=tuple)


def to_record(
    memory: StoredMemory,
    *,
    vector: Sequence[float] | None = None,
    embedding_model: str | None = None,
    history: Sequence[HistoryRecord] = (),
) -> dict[str, Any]:
    """The export line of one memory (JSON-ready)."""
    record: dict[str, Any] = {
        "id": memory.id,
        "content": memory.text,
        "metadata": dict(memory.metadata),
        "created_at": memory.created_at or None,
        "updated_at": memory.updated_at or None,
        "state": memory.state,
        "app": memory.client,
        "categories": list(memory.categories),
        "user_id": memory.user_id,
    }
    if history:
        record["history"] = [{k: v for k, v in asdict(h).items() if v is not None} for h in history]
    if vector is not None:
        record["embedding_model"] = embedding_model
        # 8 decimals: below float32's resolution for unit vectors, half the text of full reprs
        record["vector"] = np.round(np.asarray(vector, dtype=np.float64), 8).tolist()
    return record


def _time(value: object) -> str | None:
    """An ISO 8601 time as UTC ISO (naive = UTC, ``Z`` accepted); None when absent or unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return parsed.isoformat()


def _vector(value: object) -> list[float] | None:
    """The record's vector as given (checked in one numpy pass); None when absent or all zeros (re-embedded)."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise BadRecord("vector is not a list of numbers")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadRecord("vector is not a list of numbers") from None
    if arr.ndim != 1:
        raise BadRecord("vector is not a list of numbers")
    if not np.isfinite(arr).all():
        raise BadRecord("vector has a non-finite number")
    if not arr.any():
        return None
    return value  # numbers, checked above; the store normalises


def _history(value: object, memory_id: str | None) -> tuple[HistoryRecord, ...]:
    if not value or memory_id is None:
        return ()
    if not isinstance(value, list):
        raise BadRecord("history is not a list")
    out = []
    for item in value:
        if not isinstance(item, Mapping) or not item.get("event") or not item.get("at"):
            raise BadRecord("a history event lacks event or at")
        kwargs = {k: v for k, v in item.items() if k in _HISTORY_FIELDS}
        kwargs["memory_id"] = memory_id
        for key, val in list(kwargs.items()):
            if val is not None and not isinstance(val, str):
                kwargs[key] = str(val)
        kwargs.setdefault("old_memory", None)
        kwargs.setdefault("new_memory", None)
        kwargs["source"] = "import"
        out.append(HistoryRecord(**kwargs))
    return tuple(out)


def from_record(raw: object) -> BackupRecord:
    """Check one parsed line; raise :class:`BadRecord` naming what is wrong."""
    if not isinstance(raw, Mapping):
        raise BadRecord("not a JSON object")
    content = raw.get("content")
    if content is None:
        content = raw.get("text", raw.get("memory"))
    if not isinstance(content, str) or not content.strip():
        raise BadRecord("no content")
    rid = raw.get("id")
    memory_id = str(rid) if isinstance(rid, str | int) and str(rid).strip() else None
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise BadRecord("metadata is not an object")
    state = raw.get("state") or "active"
    if state not in STATES:
        raise BadRecord(f"unknown state {str(state)[:20]!r}")
    categories = raw.get("categories") or []
    if not isinstance(categories, list):
        raise BadRecord("categories is not a list")
    user = raw.get("user_id")
    app = raw.get("app")
    model = raw.get("embedding_model")
    return BackupRecord(
        id=memory_id,
        content=content,
        metadata=dict(metadata),
        created_at=_time(raw.get("created_at")),
        updated_at=_time(raw.get("updated_at")),
        state=str(state),
        app=app if isinstance(app, str) and app else None,
        categories=tuple(str(c) for c in categories if c is not None),
        user_id=user if isinstance(user, str) and user else None,
        embedding_model=model if isinstance(model, str) and model else None,
        vector=_vector(raw.get("vector")),
        history=_history(raw.get("history"), memory_id),
    )


__all__ = ["STATES", "BackupRecord", "BadRecord", "from_record", "to_record"]
