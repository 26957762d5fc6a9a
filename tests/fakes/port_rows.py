"""Small builders for store-level tests on the typed store port (``memory/store_port.py``): a memory as the
repository would write it, a user-wide scope, and every row a scope sees, page by page."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from tablestore_openmemory_mcp.memory.ports import ALL_STATES, State, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import EVERYTHING, MemoryQuery
from tablestore_openmemory_mcp.memory.store_port import StorePort
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores import row_format

STAMP = "2025-01-01T00:00:00.000000+00:00"


def user_scope(user: str) -> Scope:
    """The scope that sees every client's memories of ``user`` (the owner's view)."""
    return Scope("owner", user, shared=True)


def memory(
    memory_id: str,
    text: str,
    user: str,
    client: str | None = None,
    *,
    state: State = "active",
    created_at: str = STAMP,
    updated_at: str | None = None,
    categories: tuple[str, ...] = (),
    **metadata: Any,
) -> StoredMemory:
    """One memory as the repository builds it (the hash of its text; every other payload key is metadata)."""
    return StoredMemory(
        id=memory_id,
        text=text,
        user_id=user,
        client=client,
        created_at=created_at,
        updated_at=updated_at or created_at,
        hash=row_format.text_hash(text),
        state=state,
        categories=categories,
        metadata=metadata,
    )


def every_row(
    store: StorePort, scope: Scope, states: Collection[State] = ALL_STATES, query: MemoryQuery = EVERYTHING
) -> list[StoredMemory]:
    """Every memory ``scope`` sees in the given states, in the store's page order (read 1,000 at a time)."""
    rows: list[StoredMemory] = []
    cursor: str | None = None
    while True:
        page = store.page(scope, states=states, query=query, limit=1000, cursor=cursor)
        rows.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return rows


def count(store: StorePort, scope: Scope, states: Collection[State] = ALL_STATES) -> int:
    """How many memories ``scope`` sees in the given states (every state by default)."""
    return store.page_total(scope, states=states, query=EVERYTHING)
