"""What a search or a list may be narrowed by (issue 23): app, category, event time and metadata.

Why one module: MCP tools and REST take the same names (``client``, ``category``, ``since``, ``until``,
``metadata``, ``match_any``), and every store must answer the same question, so arguments are checked
here once (a bad one is a :class:`UserInputError` naming it) and passed to the stores as a
:class:`MemoryQuery` (:mod:`.store_port`): each pushes what its index has and checks the rest while it walks
the candidates in score or creation order, so a filtered search still returns ``limit`` matches when that
many exist.

Event time: ``event_time`` on the memory (ISO 8601, given on add), else its creation time. Metadata: a
flat object of string, number or boolean values, stored under the payload's ``metadata`` key; every key
must match (``match_any``: any one).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tablestore_openmemory_mcp.errors import UserInputError
from tablestore_openmemory_mcp.memory.ports import StoredMemory
from tablestore_openmemory_mcp.scope import validate_identity_part

MAX_METADATA_KEYS = 16
MAX_VALUE_CHARS = 256
METADATA_KEY = "metadata"  # the payload key user metadata lives under
EVENT_TIME_KEY = "event_time"


@dataclass(frozen=True, slots=True)
class MemoryQuery:
    """Checked narrowing of one search or list; empty: everything in scope."""

    client: str | None = None
    category: str | None = None
    since: str | None = None  # normalized ISO 8601 (UTC)
    until: str | None = None
    metadata: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    match_any: bool = False

    def __bool__(self) -> bool:
        return bool(self.client or self.category or self.since or self.until or self.metadata)

    def accepts(self, memory: StoredMemory) -> bool:
        """The condition on a memory in hand (as-of recall; the stores apply it to their rows themselves)."""
        if self.client and memory.client != self.client:
            return False
        if self.category and self.category not in memory.categories:
            return False
        when = str(memory.metadata.get(EVENT_TIME_KEY) or memory.created_at)
        if (self.since and when < self.since) or (self.until and when >= self.until):
            return False
        if self.metadata:
            tags = memory.metadata.get(METADATA_KEY)
            tags = tags if isinstance(tags, Mapping) else {}
            hits = [key in tags and same_tag(tags[key], value) for key, value in self.metadata.items()]
            return any(hits) if self.match_any else all(hits)
        return True


def same_tag(stored: Any, wanted: Any) -> bool:
    """Whether a stored tag value equals a wanted one, as the stores' indexes compare them (Tablestore's
    ``tag_term``): numbers by value (``1 == 1.0``), but a boolean is never a number (``True != 1``), and a
    string never equals a number (``"1" != 1``)."""
    if isinstance(stored, bool) or isinstance(wanted, bool):
        return isinstance(stored, bool) and isinstance(wanted, bool) and stored == wanted
    if isinstance(stored, int | float) and isinstance(wanted, int | float):
        return float(stored) == float(wanted)
    if isinstance(stored, int | float) or isinstance(wanted, int | float):
        return False
    return bool(stored == wanted)


def iso_time(value: Any, name: str) -> str:
    """An ISO 8601 date or time as the stores write times (UTC, microseconds); naive times are UTC."""
    if not isinstance(value, str) or not value.strip():
        raise UserInputError(f"{name} must be an ISO 8601 date or time, e.g. 2026-03-01 or 2026-03-01T09:30:00Z")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserInputError(
            f"{name} must be an ISO 8601 date or time, e.g. 2026-03-01 or 2026-03-01T09:30:00Z; got {value[:40]!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="microseconds")


def clean_metadata(value: Any, name: str = "metadata") -> dict[str, str | int | float | bool]:
    """A flat object of at most :data:`MAX_METADATA_KEYS` keys with short scalar values."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UserInputError(f'{name} must be an object of keys to values, e.g. {{"project": "apollo"}}')
    if len(value) > MAX_METADATA_KEYS:
        raise UserInputError(f"{name} may have at most {MAX_METADATA_KEYS} keys, got {len(value)}")
    out: dict[str, str | int | float | bool] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or len(key) > 64 or "." in key or key.startswith("$"):
            raise UserInputError(f"{name} keys must be 1-64 characters without '.' or a leading '$'; got {key!r}")
        if not isinstance(item, str | int | float | bool) or (isinstance(item, str) and len(item) > MAX_VALUE_CHARS):
            raise UserInputError(
                f"{name}.{key} must be a string (at most {MAX_VALUE_CHARS} characters), a number or a boolean"
            )
        out[key] = item
    return out


def build_query(
    *,
    client: str | None = None,
    category: str | None = None,
    since: str | None = None,
    until: str | None = None,
    metadata: Any = None,
    match_any: bool = False,
) -> MemoryQuery:
    """Check every argument; the first bad one is a :class:`UserInputError` that names it."""
    if client is not None:
        client = validate_identity_part(client, "client") if client else None
    if category is not None:
        category = category.strip()
        if len(category) > 64:
            raise UserInputError("category must be at most 64 characters")
    start = iso_time(since, "since") if since else None
    end = iso_time(until, "until") if until else None
    if start and end and start >= end:
        raise UserInputError("since must be before until")
    return MemoryQuery(client or None, category or None, start, end, clean_metadata(metadata), bool(match_any))


def add_fields(metadata: Any = None, event_time: str | None = None) -> dict[str, Any]:
    """The payload fields an add's ``metadata`` and ``event_time`` arguments give each new memory."""
    out: dict[str, Any] = {}
    tags = clean_metadata(metadata)
    if tags:
        out[METADATA_KEY] = tags
    if event_time:
        out[EVENT_TIME_KEY] = iso_time(event_time, "event_time")
    return out


#: The empty query: everything in scope (the default wherever no narrowing is asked).
EVERYTHING = MemoryQuery()
