"""Totals, pages by creation time, counts and vectors of the Tablestore store, answered by the search index.

Each answer is compared with the generic one (``MemoryStore``'s read of every row, which is strongly
consistent), while the index lags by design: this process's own adds, edits and deletes must show at once.
The RPC counts must not depend on how many memories the user has.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tablestore import SearchIndexMeta

from tablestore_openmemory_mcp.stores.base import MemoryStore, scoped
from tablestore_openmemory_mcp.stores.tablestore import RowUpdate, TablestoreStore
from tablestore_openmemory_mcp.stores.tablestore.schema import COL_DAY, index_meta
from tests.fakes.table_pool import TablePool
from tests.fakes.tablestore_fixture import INDEX_DELAY
from tests.tablestore_emulator import TablestoreEmulator

DIMS = 8
ALICE = {"user_id": "alice"}
CLINE = {"user_id": "alice", "agent_id": "cline"}
CURSOR = {"user_id": "alice", "agent_id": "cursor"}
BOB = {"user_id": "bob", "agent_id": "cline"}
TABLES = TablePool()  # new tables made ahead in batches: a test's store needs no wait for its table (see there)


@pytest.fixture(scope="module")
def emulator() -> Iterator[TablestoreEmulator]:
    em = TablestoreEmulator().start()
    yield em
    em.stop()
    if em.last_internal_error is not None:
        raise AssertionError(f"tablestore emulator bug: {em.last_internal_error!r}")


@pytest.fixture
def em(emulator: TablestoreEmulator) -> Iterator[TablestoreEmulator]:
    emulator.index_delay = INDEX_DELAY
    TABLES.top_up(emulator, lambda name: make(emulator, collection_name=name))
    emulator.reset_counts()
    yield emulator
    emulator.index_delay = INDEX_DELAY


def make(em: TablestoreEmulator, **kw: Any) -> TablestoreStore:
    kw.setdefault("collection_name", (None if kw else TABLES.take(em)) or f"t_{uuid.uuid4().hex[:10]}")
    return TablestoreStore(
        endpoint=em.endpoint,
        instance_name=em.instance_name,
        access_key_id=em.access_key_id,
        access_key_secret=em.access_key_secret,
        embedding_model_dims=DIMS,
        **kw,
    )


def vec(i: int) -> list[float]:
    v = [0.01] * DIMS
    v[i % DIMS] = 1.0
    v[(i // DIMS) % DIMS] += 0.5
    return v


def row(text: str, scope: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"data": text, "hash": uuid.uuid4().hex, "created_at": "2025-01-01T00:00:00+00:00", **scope, **extra}


STATES = [None, "active", "paused", "archived", "deleted"]


def seed(store: TablestoreStore) -> None:
    """30 memories of alice in two clients, 10 days, every state, ties on created_at; one of bob."""
    for scope, base in ((CLINE, 0), (CURSOR, 20)):
        n = 20 if base == 0 else 10
        with scoped(scope):
            store.insert(
                [vec(base + i) for i in range(n)],
                [
                    row(
                        f"t{base + i}",
                        scope,
                        created_at=f"2025-01-{1 + (base + i) // 3:02d}T00:00:00+00:00",
                        **({"state": s} if (s := STATES[i % 5]) else {}),
                    )
                    for i in range(n)
                ],
                [f"m{((base + i) * 37) % 30:02d}" for i in range(n)],  # ids not in time order
            )
    with scoped(BOB):
        store.insert([vec(99)], [row("bob", BOB, created_at="2025-01-03T00:00:00+00:00")], ["bob"])


PAGES = [
    (ALICE, True, 0, 7, None, None),
    (ALICE, False, 5, 7, None, None),
    ({**ALICE, "state": {"nin": ["archived", "deleted"]}}, True, 3, 10, None, None),
    (ALICE, True, 0, 50, "2025-01-03", "2025-01-06T99"),
    (CLINE, False, 2, 10, "2025-01-02", None),
    (ALICE, True, 40, 10, None, None),
]


def check_pages(store: TablestoreStore) -> None:
    with scoped(ALICE):
        for filters, newest, offset, limit, since, until in PAGES:
            args: dict[str, Any] = {"newest_first": newest, "offset": offset, "limit": limit}
            got, total = store.created_page(filters, since=since, until=until, **args)
            want, want_total = MemoryStore.created_page(store, filters, since=since, until=until, **args)
            assert [r.id for r in got] == [r.id for r in want], (filters, offset, since)
            assert [r.payload for r in got] == [r.payload for r in want]
            assert total == want_total, (filters, offset, since)


def check_counts(store: TablestoreStore) -> None:
    with scoped(ALICE):
        assert store.tally(ALICE) == MemoryStore.tally(store, ALICE)
        for filters in (ALICE, {**ALICE, "state": {"nin": ["paused", "archived", "deleted"]}}):
            assert store.total(filters) == store.count(filters)
    with scoped(CLINE):
        assert store.tally(CLINE) == MemoryStore.tally(store, CLINE)
        assert store.total(CLINE) == store.count(CLINE)


def test_pages_and_counts_from_the_index_match_reading_every_row(em: TablestoreEmulator) -> None:
    store = make(em)
    try:
        seed(store)
        em.flush_index()
        store._recent.clear()  # the index has everything: answers come from it alone
        check_pages(store)
        check_counts(store)
    finally:
        store.close()


def test_own_writes_show_at_once_while_the_index_lags(em: TablestoreEmulator) -> None:
    """Adds, edits, state changes and deletes of this process are reconciled while Search lags."""
    store = make(em)
    try:
        seed(store)
        em.flush_index()
        store._recent.clear()
        em.index_delay = 3600  # nothing written from here on reaches the index during the test
        with scoped(CLINE):
            store.insert(
                [vec(40), vec(41)],
                [
                    row("newest", CLINE, created_at="2025-02-01T00:00:00+00:00"),
                    row("middle", CLINE, created_at="2025-01-04T00:00:00+00:00"),
                ],
                ["n1", "n2"],
            )
            edited = store.get("m00")
            assert edited is not None and edited.payload is not None
            moved = {**edited.payload, "state": "archived", "data": "changed"}
            store.update_many([RowUpdate("m00", None, moved)])
            store.delete_many(["m07"])
        check_pages(store)
        check_counts(store)
        with scoped(ALICE):
            page, total = store.created_page(ALICE, newest_first=True, offset=0, limit=3)
            assert page[0].id == "n1" and total == 31
    finally:
        store.close()


def test_rpcs_do_not_grow_with_the_user(em: TablestoreEmulator) -> None:
    store = make(em)
    try:
        seed(store)
        em.flush_index()
        store._recent.clear()
        with scoped(ALICE):
            for call, searches in (
                (lambda: store.total(ALICE), 1),
                (lambda: store.tally(ALICE), 1),
                (lambda: store.created_page(ALICE, newest_first=True, offset=0, limit=20), 1),
            ):
                em.reset_counts()
                call()
                assert em.counts["Search"] == searches and em.counts["GetRange"] == 0, dict(em.counts)
                assert em.counts["BatchGetRow"] <= 1
    finally:
        store.close()


def test_an_index_without_created_day_falls_back_to_reading_rows(em: TablestoreEmulator) -> None:
    """An index made by an older version lacks ``created_day``: counts read the rows (still right)."""
    store = make(em)
    table = store.collection_name
    try:
        store.client.delete_search_index(table, store.index_name)
        old = [f for f in index_meta(DIMS, "cosine").fields if f.field_name != COL_DAY]
        store.client.create_search_index(table, store.index_name, SearchIndexMeta(old))
        older = TablestoreStore(
            collection_name=table,
            endpoint=em.endpoint,
            instance_name=em.instance_name,
            access_key_id=em.access_key_id,
            access_key_secret=em.access_key_secret,
            embedding_model_dims=DIMS,
        )
        try:
            seed(older)
            em.flush_index()
            em.reset_counts()
            with scoped(ALICE):
                assert older.tally(ALICE) == MemoryStore.tally(older, ALICE)
            assert em.counts["GetRange"] >= 1
        finally:
            older.close()
    finally:
        store.close()


def test_get_vectors_reads_the_scope_only(em: TablestoreEmulator) -> None:
    store = make(em)
    try:
        seed(store)
        with scoped(CLINE):
            got = store.get_vectors(["m00", "m20", "bob", "nope"])  # m20 is cursor's, bob another user's
        assert set(got) == {"m00"} and got["m00"] == pytest.approx(vec(0), abs=1e-6)
        with scoped(BOB):
            assert store.get_vectors(["bob"])["bob"] == pytest.approx(vec(99), abs=1e-6)
    finally:
        store.close()
