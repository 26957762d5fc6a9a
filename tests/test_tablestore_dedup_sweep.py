"""Stale dedup rows (a claim naming a memory that no longer holds the key) are removed where they are found
and by the sweep; young claims, live claims and orphan claims are kept."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tablestore import Row

from tablestore_openmemory_mcp.memory.ports import StoredMemory
from tablestore_openmemory_mcp.memory.store_port import NewRow, RowChange
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore, dedup_sweep
from tests.tablestore_emulator import TablestoreEmulator

DIMS = 4
U1 = Scope("cline", "u1", shared=True)


@pytest.fixture(scope="module")
def emulator() -> Iterator[TablestoreEmulator]:
    em = TablestoreEmulator().start()
    yield em
    em.stop()
    if em.last_internal_error is not None:
        raise AssertionError(f"tablestore emulator bug: {em.last_internal_error!r}")


@pytest.fixture
def store(emulator: TablestoreEmulator) -> Iterator[TablestoreStore]:
    made = TablestoreStore(
        collection_name=f"t_{uuid.uuid4().hex[:10]}",
        **emulator.credentials(),
        embedding_model_dims=DIMS,
    )
    yield made
    made.close()


def key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def memory(memory_id: str, text: str, **extra: Any) -> StoredMemory:
    at = "2025-01-01T00:00:00+00:00"
    return StoredMemory(id=memory_id, text=text, user_id="u1", client=None, created_at=at, updated_at=at,
                        hash=uuid.uuid4().hex, **extra)  # fmt: skip


def holder_id(store: TablestoreStore, k: str) -> str | None:
    found = store.holder(U1, k)
    return found.id if found is not None else None


def sweep(store: TablestoreStore, user: str = "u1") -> int:
    """The maintenance sweep of ``user``'s stale dedup rows (still named by a row-method style scope dict)."""
    return store.sweep_dedup(Scope("cline", user, shared=True))


def claim(store: TablestoreStore, k: str) -> str | None:
    _, row, _ = store.client.get_row(store.collection_name, [("user_id", "u1#dedup"), ("memory_id", k)], max_version=1)
    if row is None or not row.primary_key:
        return None
    return dict((c[0], c[1]) for c in row.attribute_columns).get("memory")


def add_then_give_up_key(store: TablestoreStore, text: str, memory_id: str) -> None:
    """A memory added with its key, then archived (it gives up the key): its claim turns stale."""
    store.put(U1, [NewRow(memory(memory_id, text), [1.0, 0.0, 0.0, 0.0], key(text))])
    store.rewrite(U1, RowChange(memory_id, memory(memory_id, text, state="archived"), dedup_key=""))


def test_a_stale_claim_found_by_a_lookup_is_removed_once_old_enough(
    store: TablestoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_then_give_up_key(store, "tea", "m1")
    assert holder_id(store, key("tea")) is None
    assert claim(store, key("tea")) == "m1"  # young: an update may be between its claim and its row
    monkeypatch.setattr(dedup_sweep, "GRACE_SECONDS", 0.0)
    assert holder_id(store, key("tea")) is None
    assert claim(store, key("tea")) is None  # removed on the way
    assert store.put(U1, [NewRow(memory("m2", "tea"), [0.0, 1.0, 0.0, 0.0], key("tea"))]) == ["m2"]
    assert holder_id(store, key("tea")) == "m2"


def test_the_sweep_removes_only_old_stale_claims(store: TablestoreStore, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        add_then_give_up_key(store, f"old {i}", f"s{i}")
    store.put(U1, [NewRow(memory("live", "live"), [0.0, 0.0, 1.0, 0.0], key("live"))])
    store.client.put_row(  # an orphan: its writer died between the claim and the row
        store.collection_name, Row([("user_id", "u1#dedup"), ("memory_id", key("orphan"))], [("memory", "gone")])
    )
    assert sweep(store) == 0  # everything is younger than the grace period
    monkeypatch.setattr(dedup_sweep, "GRACE_SECONDS", 0.0)
    assert sweep(store) == 5
    assert all(claim(store, key(f"old {i}")) is None for i in range(5))
    assert claim(store, key("live")) == "live" and claim(store, key("orphan")) == "gone"
    assert sweep(store) == 0
    # the orphan still completes an add of its text under its own id, as before
    assert store.put(U1, [NewRow(memory("new", "orphan"), [0.0, 0.0, 0.0, 1.0], key("orphan"))]) == ["gone"]
    assert sweep(store, "u2") == 0  # another user's partition is untouched
