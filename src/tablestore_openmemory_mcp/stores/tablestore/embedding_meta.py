"""Which embedder, search index and vector column a Tablestore table uses: one meta row in the table.

Why a row: vectors of two embedders are not comparable, and ``reembed`` moves a table to a new vector
column with a new index; every server must agree which one is current, durably, and read it at startup.
The row lives in the partition :data:`META_USER` ('#' is not allowed in a user id), so no user's range,
list or search ever sees it. ``next`` holds a re-embedding in progress (JSON), cleared by its switch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tablestore import Condition, OTSServiceError, Row, RowExistenceExpectation

from .schema import COL_VECTOR, PK_ID, PK_USER

META_USER = "#meta"
META_ID = "embedding"


@dataclass
class EmbeddingMeta:
    """The current embedder, dimension, index and vector column; ``next`` = a reembed in progress."""

    embedder: str | None
    dimension: int | None
    index_name: str
    vector_column: str = COL_VECTOR
    next: dict[str, Any] = field(default_factory=dict)
    switched_at: str | None = None  # when reembed last switched (UTC ISO): what was written since is re-checked

    def columns(self) -> list[tuple[str, Any]]:
        cols: list[tuple[str, Any]] = [
            ("index_name", self.index_name),
            ("vector_column", self.vector_column),
            ("next", json.dumps(self.next, sort_keys=True)),
        ]
        if self.embedder is not None:
            cols.append(("embedder", self.embedder))
        if self.dimension is not None:
            cols.append(("dimension", int(self.dimension)))
        if self.switched_at is not None:
            cols.append(("switched_at", self.switched_at))
        return cols


def meta_pk() -> list[tuple[str, str]]:
    return [(PK_USER, META_USER), (PK_ID, META_ID)]


def read_meta(client: Any, table: str) -> EmbeddingMeta | None:
    """The table's meta row, or None (a table made before this row existed, or a new one)."""
    _, row, _ = client.get_row(table, meta_pk(), None, None, 1)
    if row is None:
        return None
    attrs = {c[0]: c[1] for c in row.attribute_columns or []}
    try:
        pending = json.loads(attrs.get("next") or "{}")
    except ValueError:
        pending = {}
    dimension = attrs.get("dimension")
    return EmbeddingMeta(
        embedder=str(attrs["embedder"]) if "embedder" in attrs else None,
        dimension=int(dimension) if dimension is not None else None,
        index_name=str(attrs.get("index_name") or ""),
        vector_column=str(attrs.get("vector_column") or COL_VECTOR),
        next=pending if isinstance(pending, dict) else {},
        switched_at=str(attrs["switched_at"]) if "switched_at" in attrs else None,
    )


def write_meta(client: Any, table: str, meta: EmbeddingMeta, only_if_missing: bool = False) -> bool:
    """Write the meta row; with ``only_if_missing``, False when another process wrote it first."""
    expectation = RowExistenceExpectation.EXPECT_NOT_EXIST if only_if_missing else RowExistenceExpectation.IGNORE
    try:
        client.put_row(table, Row(meta_pk(), meta.columns()), Condition(expectation))
    except OTSServiceError as exc:
        if only_if_missing and exc.code == "OTSConditionCheckFail":
            return False
        raise
    return True


__all__ = ["META_ID", "META_USER", "EmbeddingMeta", "meta_pk", "read_meta", "write_meta"]
