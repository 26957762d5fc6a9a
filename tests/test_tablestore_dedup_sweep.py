"""Stale dedup rows (a claim naming a memory that no longer holds the key) are removed where they are found
and by the sweep; young claims, live claims and orphan claims are kept."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tablestore import Row

from tablestore_openmemory_mcp.stores.base import scoped
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore, dedup_sweep
from tests.tablestore_emulator import TablestoreEmulator

DIMS = 4
U1 = {"user_id": "u1"}


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
        endpoint=emulator.endpoint,
        instance_name=emulator.instance_name,
        access_key_id=emulator.access_key_id,
        access_key_secret=emulator.access_key_secret,
        embedding_model_dims=DIMS,
    )
    yield made
    made.close()


def key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def payload(text: str, **extra: Any) -> dict[str, Any]:
    return {"data": text, "user_id": "u1", "created_at": "2025-01-01T00:00:00+00:00", **extra}


def claim(store: TablestoreStore, k: str) -> str | None:
    _, row, _ = store.client.get_row(store.collection_name, [("user_id", "u1#dedup"), ("memory_id", k)], max_version=1)
    if row is None or not row.primary_key:
        return None
    return dict((c[0], c[1]) for c in row.attribute_columns).get("memory")


def add_then_give_up_key(store: TablestoreStore, text: str, memory_id: str) -> None:
    """A memory added with its key, then archived (it gives up the key): its claim turns stale."""
    store.insert([[1.0, 0.0, 0.0, 0.0]], [payload(text)], [memory_id], [key(text)])
    store.update(memory_id, payload=payload(text, state="archived"), dedup_key="")


def test_a_stale_claim_found_by_a_lookup_is_removed_once_old_enough(
    store: TablestoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with scoped(U1):
        add_then_give_up_key(store, "tea", "m1")
        assert store.find_by_dedup_key(key("tea")) is None
        assert claim(store, key("tea")) == "m1"  # young: an update may be between its claim and its row
        monkeypatch.setattr(dedup_sweep, "GRACE_SECONDS", 0.0)
        assert store.find_by_dedup_key(key("tea")) is None
        assert claim(store, key("tea")) is None  # removed on the way
        assert store.insert([[0.0, 1.0, 0.0, 0.0]], [payload("tea")], ["m2"], [key("tea")]) == ["m2"]
        found = store.find_by_dedup_key(key("tea"))
        assert found is not None and found.id == "m2"


def test_the_sweep_removes_only_old_stale_claims(store: TablestoreStore, monkeypatch: pytest.MonkeyPatch) -> None:
    with scoped(U1):
        for i in range(5):
            add_then_give_up_key(store, f"old {i}", f"s{i}")
        store.insert([[0.0, 0.0, 1.0, 0.0]], [payload("live")], ["live"], [key("live")])
        store.client.put_row(  # an orphan: its writer died between the claim and the row
            store.collection_name, Row([("user_id", "u1#dedup"), ("memory_id", key("orphan"))], [("memory", "gone")])
        )
        assert store.sweep_dedup() == 0  # everything is younger than the grace period
        monkeypatch.setattr(dedup_sweep, "GRACE_SECONDS", 0.0)
        assert store.sweep_dedup() == 5
        assert all(claim(store, key(f"old {i}")) is None for i in range(5))
        assert claim(store, key("live")) == "live" and claim(store, key("orphan")) == "gone"
        assert store.sweep_dedup() == 0
        # the orphan still completes an add of its text under its own id, as before
        assert store.insert([[0.0, 0.0, 0.0, 1.0]], [payload("orphan")], ["new"], [key("orphan")]) == ["gone"]
    with scoped({"user_id": "u2"}):
        assert store.sweep_dedup() == 0  # another user's partition is untouched
