"""Every row a store's row API lists in the active scope, oldest first: what the stores' removed mem0-era
``list()`` returned, read page by page through ``list_page`` (the only listing the stores keep)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tablestore_openmemory_mcp.stores.base import MemoryStore, OutputData


def _created_key(row: OutputData) -> tuple[float, str, str]:
    raw = (row.payload or {}).get("created_at")
    ts = float("inf")
    if isinstance(raw, str) and raw:
        try:
            dt = datetime.fromisoformat(raw)
            ts = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
        except ValueError:
            pass
    return ts, raw if isinstance(raw, str) else "", row.id


def all_rows(
    store: MemoryStore, filters: Mapping[str, Any] | None = None, top_k: int | None = None
) -> list[OutputData]:
    """Rows matching ``filters`` in created order (the embedded store pages in that order already; Tablestore
    pages in key order, so its rows are sorted as its ``list()`` sorted them); at most ``top_k``."""
    rows: list[OutputData] = []
    cursor: str | None = None
    while True:
        page, cursor = store.list_page(filters, 1000, cursor)
        rows.extend(page)
        if cursor is None:
            break
    if type(store).__name__ == "TablestoreStore":
        rows.sort(key=_created_key)
    return rows if top_k is None else rows[: max(0, top_k)]
