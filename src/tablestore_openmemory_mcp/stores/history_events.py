"""What both history logs share: input checks, the event id, and record <-> column mapping.

**Event ids are deterministic**, derived from the record itself, so appending the same batch again
(a retry after a timeout whose write actually landed) rewrites the same rows instead of adding
duplicates. An id is ``<microseconds since epoch of record.at, 17 digits>-<n, 4 digits>-<digest>``:

* the timestamp prefix makes ids sort oldest first (both stores list a memory's events by id);
* ``n`` counts earlier records in the same batch with the same ``at``, so events recorded in one
  call at one instant keep the caller's order;
* the digest (64 bits of SHA-256 over every field) keeps distinct events at one instant distinct.

A caller that wants two *identical* events (same fields, same ``at``) recorded twice must put them
in one batch; across batches they are one event. ``at`` is the caller's clock: events are ordered by
when they happened, not by when they were written (imports of old history sort into place).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from tablestore_openmemory_mcp.errors import ScopeMissing, UserInputError
from tablestore_openmemory_mcp.memory.ports import HistoryRecord

#: Tablestore's limit for a primary-key string; applied to both stores so they accept the same input.
MAX_KEY_BYTES = 1024
#: Record fields stored as columns (``memory_id`` is part of the key).
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(HistoryRecord) if f.name != "memory_id")
_OPTIONAL = frozenset(c for c in COLUMNS if c not in ("event", "at", "source"))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def check_user(user_id: object) -> str:
    """The user id, or :class:`ScopeMissing`: history is never read or written without an owner."""
    if not isinstance(user_id, str) or not user_id:
        raise ScopeMissing("history needs a non-empty user_id")
    _check_key("user_id", user_id)
    return user_id


def check_memory_id(memory_id: object) -> str:
    """A usable memory id, else :class:`UserInputError`."""
    if not isinstance(memory_id, str) or not memory_id:
        raise UserInputError("a history record needs a non-empty memory_id")
    _check_key("memory_id", memory_id)
    return memory_id


def _check_key(name: str, value: str) -> None:
    if len(value.encode("utf-8")) > MAX_KEY_BYTES:
        raise UserInputError(f"{name} is longer than {MAX_KEY_BYTES} bytes")


def parse_at(at: object) -> datetime:
    """``at`` as an aware UTC datetime (naive means UTC); :class:`UserInputError` if not ISO 8601."""
    if not isinstance(at, str):
        raise UserInputError(f"history time must be an ISO 8601 string, got {type(at).__name__}")
    try:
        parsed = datetime.fromisoformat(at.strip())
    except ValueError:
        raise UserInputError(f"history time {at!r} is not ISO 8601") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def micros(at: str) -> int:
    """Microseconds since 1970 (clamped at 0) of an ISO 8601 time."""
    return max(0, (parse_at(at) - _EPOCH) // _MICRO)


def check_record(record: HistoryRecord) -> None:
    """Reject a record neither store could write faithfully (bad key, time, or column types)."""
    check_memory_id(record.memory_id)
    if not isinstance(record.event, str) or not record.event:
        raise UserInputError("a history record needs an event name")
    if not isinstance(record.source, str):
        raise UserInputError("a history record's source must be a string")
    parse_at(record.at)
    for name in _OPTIONAL:
        value = getattr(record, name)
        if value is not None and not isinstance(value, str):
            raise UserInputError(f"history field {name} must be a string or None")


def digest(record: HistoryRecord) -> str:
    """64 bits of SHA-256 over every field, as 16 hex digits."""
    values = [record.memory_id, *(getattr(record, c) for c in COLUMNS)]
    raw = json.dumps(values, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()[:16]


def event_ids(records: Sequence[HistoryRecord]) -> list[str]:
    """One deterministic, time-ordered id per record (see the module docstring); checks each record."""
    seen: dict[tuple[str, int], int] = {}
    out: list[str] = []
    for record in records:
        check_record(record)
        us = micros(record.at)
        n = seen.get((record.memory_id, us), 0)
        seen[(record.memory_id, us)] = n + 1
        out.append(f"{us:017d}-{n:04d}-{digest(record)}")
    return out


def columns_of(record: HistoryRecord) -> list[tuple[str, str]]:
    """(name, value) for every non-None column of a record."""
    return [(name, value) for name in COLUMNS if (value := getattr(record, name)) is not None]


def record_from(memory_id: str, values: Mapping[str, Any]) -> HistoryRecord:
    """A record from stored column values; missing optional columns are None."""
    kwargs: dict[str, Any] = {name: values.get(name) for name in COLUMNS}
    kwargs["event"] = str(kwargs["event"] or "")
    kwargs["at"] = str(kwargs["at"] or "")
    kwargs["source"] = str(kwargs["source"] or "mcp")
    return HistoryRecord(memory_id=memory_id, **kwargs)


def unique_ids(memory_ids: Sequence[str], check: Callable[[object], str] = check_memory_id) -> list[str]:
    """Distinct, checked memory ids in their given order."""
    return list(dict.fromkeys(check(m) for m in memory_ids))
