"""Read the reference deployment's table (Alibaba's tablestore-openmemory-mcp 1.3.x) and convert its rows.

The reference stores memories through mem0 0.1.114's ``aliyun_tablestore`` vector store, i.e.
tablestore-for-agent-memory's ``KnowledgeStore``: primary key ``(document_id, tenant_id)`` (tenant
``__default``), columns ``text``, ``embedding`` (the vector as a JSON string), ``payload`` (a JSON
array of ``key=value`` strings, for its index) and ``payload_source`` (the mem0 payload as JSON:
``user_id``, ``hash``, ``created_at``, ``updated_at`` and the metadata the reference added,
``mcp_client`` and ``source_app``). Its scope is ``(mcp_client, user_id)``, the same as ours.

Only read APIs are used here (DescribeTable, GetRange): the reference's table is never modified.
Rows are read in primary-key order, so a copy can resume after the last key it finished.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tablestore_openmemory_mcp.errors import InvalidIdentity
from tablestore_openmemory_mcp.memory.ports import NewMemory
from tablestore_openmemory_mcp.scope import Scope

logger = logging.getLogger(__name__)

PRIMARY_KEY = [("document_id", "STRING"), ("tenant_id", "STRING")]
COL_TEXT, COL_VECTOR, COL_PAYLOAD = "text", "embedding", "payload_source"
#: Where the reference kept the client name (its ``client_name_key``).
CLIENT_KEY = "mcp_client"
#: Payload keys that become fields of their own (or are dropped), not metadata.
_NOT_METADATA = frozenset(
    {"data", "user_id", "agent_id", CLIENT_KEY, "hash", "created_at", "updated_at", "text_lemmatized"}
)

#: A position in the reference table: the primary key of the last row handled.
Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class ReferenceRow:
    """One row as the reference stored it."""

    document_id: str
    tenant_id: str
    text: str | None
    vector: list[float] | None
    payload: dict[str, Any]

    @property
    def key(self) -> Key:
        return (self.document_id, self.tenant_id)


@dataclass(frozen=True, slots=True)
class Converted:
    """A reference row as one of our memories, in its scope; ``reason`` says why a row cannot be copied."""

    row: ReferenceRow
    scope: Scope | None = None
    memory: NewMemory | None = None
    reason: str | None = None


def is_reference_schema(schema: Any) -> bool:
    """True when a DescribeTable primary-key schema is the reference's ``(document_id, tenant_id)``."""
    names = [(str(c[0]), str(c[1]).upper()) for c in schema or []]
    return names == PRIMARY_KEY


def utc_iso(value: object) -> str | None:
    """mem0 wrote US/Pacific times with an offset; ours are UTC ISO 8601 (naive means UTC)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return parsed.isoformat()


def parse_vector(raw: object) -> list[float] | None:
    """The ``embedding`` column (a JSON array, or bytes of one); None when absent or unusable."""
    if raw is None:
        return None
    if isinstance(raw, bytes | bytearray):
        raw = bytes(raw).decode("utf-8", "replace")
    try:
        values = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return None
    if not isinstance(values, list) or not values:
        return None
    try:
        vector = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return vector if all(math.isfinite(v) for v in vector) else None


def parse_payload(raw: object) -> dict[str, Any]:
    if isinstance(raw, bytes | bytearray):
        raw = bytes(raw).decode("utf-8", "replace")
    try:
        payload = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def row_from_sdk(primary_key: Any, columns: Any) -> ReferenceRow:
    """A row as the SDK returns it: ``[(name, value)]`` keys and ``[(name, value[, ts])]`` columns."""
    keys = {str(item[0]): item[1] for item in primary_key or []}
    values = {str(item[0]): item[1] for item in columns or []}
    text = values.get(COL_TEXT)
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", "replace")
    return ReferenceRow(
        document_id=str(keys.get("document_id", "")),
        tenant_id=str(keys.get("tenant_id", "")),
        text=text if isinstance(text, str) else None,
        vector=parse_vector(values.get(COL_VECTOR)),
        payload=parse_payload(values.get(COL_PAYLOAD)),
    )


def convert(row: ReferenceRow, *, fallback_client: str | None = None) -> Converted:
    """Our scope and memory for a reference row, or the reason it cannot be copied."""
    raw = row.text if row.text and row.text.strip() else row.payload.get("data")
    text = raw if isinstance(raw, str) and raw.strip() else ""
    if not row.document_id:
        return Converted(row, reason="no id")
    if not text:
        return Converted(row, reason="no text")
    user = row.payload.get("user_id")
    client = row.payload.get(CLIENT_KEY) or row.payload.get("agent_id") or fallback_client
    if not isinstance(user, str) or not user:
        return Converted(row, reason="no user_id")
    if not isinstance(client, str) or not client:
        return Converted(row, reason="no mcp_client")
    try:
        scope = Scope(client_name=client, user_id=user)
    except InvalidIdentity as exc:
        logger.warning("reference row %s not copied: %s", row.document_id, exc)
        return Converted(row, reason="unusable identity")
    created = utc_iso(row.payload.get("created_at"))
    updated = utc_iso(row.payload.get("updated_at")) or created
    metadata = {k: v for k, v in row.payload.items() if k not in _NOT_METADATA and _is_plain(v)}
    memory = NewMemory(
        text=text,
        vector=row.vector or [],
        id=row.document_id,
        created_at=created,
        updated_at=updated,
        metadata=metadata,
    )
    return Converted(row, scope=scope, memory=memory)


def _is_plain(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list | dict)


class ReferenceTable:
    """Read-only access to the reference's table through the tablestore SDK."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def exists_with_reference_key(self) -> bool:
        """True when the table exists and has the reference's primary key (one DescribeTable)."""
        from tablestore import OTSServiceError

        try:
            desc = self.client.describe_table(self.table)
        except OTSServiceError as exc:
            if "does not exist" in str(exc.message) or exc.code == "OTSObjectNotExist":
                return False
            raise
        return is_reference_schema(desc.table_meta.schema_of_primary_key)

    def pages(self, after: Key | None = None, limit: int = 200) -> Iterator[list[ReferenceRow]]:
        """Rows in primary-key order, ``limit`` at a time, starting after ``after``."""
        from tablestore import INF_MAX, INF_MIN, Direction

        start: list[tuple[str, Any]] = (
            [("document_id", after[0]), ("tenant_id", after[1])]
            if after
            else [("document_id", INF_MIN), ("tenant_id", INF_MIN)]
        )
        end = [("document_id", INF_MAX), ("tenant_id", INF_MAX)]
        while start is not None:
            _, next_start, rows, _ = self.client.get_range(
                self.table,
                Direction.FORWARD,
                start,
                end,
                columns_to_get=[COL_TEXT, COL_VECTOR, COL_PAYLOAD],
                limit=limit,
                max_version=1,
            )
            page = [row_from_sdk(r.primary_key, r.attribute_columns) for r in rows or []]
            if after is not None:
                page = [r for r in page if r.key != after]  # GetRange starts inclusive
                after = None
            if page:
                yield page
            start = next_start

    def count_rows(self) -> int:
        """Every row, by reading primary keys only (for progress totals and --dry-run)."""
        from tablestore import INF_MAX, INF_MIN, Direction

        total = 0
        start: Any = [("document_id", INF_MIN), ("tenant_id", INF_MIN)]
        end = [("document_id", INF_MAX), ("tenant_id", INF_MAX)]
        while start is not None:
            _, start, rows, _ = self.client.get_range(
                self.table, Direction.FORWARD, start, end, columns_to_get=["tenant_id"], limit=5000, max_version=1
            )
            total += len(rows or [])
        return total


__all__ = [
    "PRIMARY_KEY",
    "Converted",
    "ReferenceRow",
    "ReferenceTable",
    "convert",
    "is_reference_schema",
    "row_from_sdk",
]
