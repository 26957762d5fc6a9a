"""A MemoryQuery pushed into the Tablestore search index (stores/tablestore/narrowed.py), on the strict emulator.

The matches here are the rows LEAST similar to the query vector, so a search that filtered a bounded over-fetch of
the nearest rows would miss them: the filter must be inside the KNN query (top-k among matching rows). Counts, not
times: Search / BatchGetRow calls and rows read per operation. Also: an index made by an older version (no
narrowing fields) and rows written by 2.0.0 (no derived columns) still answer correctly (checked after the read).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from tablestore import (
    CapacityUnit,
    Condition,
    OTSClient,
    ReservedThroughput,
    Row,
    RowExistenceExpectation,
    SearchIndexMeta,
    TableMeta,
    TableOptions,
)

from tablestore_openmemory_mcp.memory.ports import StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery, build_query
from tablestore_openmemory_mcp.memory.store_port import NewRow, RowChange
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore
from tablestore_openmemory_mcp.stores.tablestore.narrowing import NARROWING_COLUMNS
from tablestore_openmemory_mcp.stores.tablestore.schema import index_meta
from tests.fakes.table_pool import TablePool
from tests.tablestore_emulator import TablestoreEmulator

DIMS = 8
ALICE = Scope("cline", "alice")
OWNER = Scope("cline", "alice", shared=True)
BOB = Scope("cline", "bob")
RARE = 5
TAGGED = build_query(metadata={"project": "apollo"})
CATEGORY = build_query(category="rare")
WINDOW = build_query(since="2020-01-01", until="2021-01-01")
QUERIES = {"tag": TAGGED, "category": CATEGORY, "event time": WINDOW}
TABLES = TablePool("n_")
ACTIVE = ("active",)


def unit(values: list[float]) -> list[float]:
    norm = sum(v * v for v in values) ** 0.5
    return [v / norm for v in values]


NEAR = unit([1.0, 0.2, 0, 0, 0, 0, 0, 0])  # the query's direction
FAR = unit([-1.0, 0, 0, 0, 0, 0, 0.1, 0])  # the rare matches: the least similar rows


def memory(i: int, *, rare: bool, client: str = "cline", user: str = "alice") -> StoredMemory:
    created = f"2026-0{1 + i % 3}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00.000000+00:00"
    meta: dict[str, Any] = {"metadata": {"project": "apollo" if rare else "zeus", "n": i}}
    if rare:
        meta["event_time"] = f"2020-06-{1 + i % 28:02d}T00:00:00.000000+00:00"
    return StoredMemory(
        id=f"m{i:05d}",
        text=f"note number {i}",
        user_id=user,
        client=client,
        created_at=created,
        updated_at=created,
        hash=uuid.uuid4().hex,
        categories=("rare",) if rare else ("common",),
        metadata=meta,
    )


def vector(i: int, rare: bool) -> list[float]:
    return FAR if rare else unit([1.0, 0.2, (i % 7) / 50, (i % 11) / 50, 0, 0, 0, 0.01])


def open_store(em: TablestoreEmulator, table: str) -> TablestoreStore:
    return TablestoreStore(
        collection_name=table,
        **em.credentials(),
        embedding_model_dims=DIMS,
    )


@pytest.fixture(scope="module")
def emulator() -> Iterator[TablestoreEmulator]:
    em = TablestoreEmulator().start()
    em.index_delay = 0.0
    try:
        yield em
    finally:
        em.stop()
    if em.last_internal_error is not None:
        raise AssertionError(f"tablestore emulator bug: {em.last_internal_error!r}")


def new_table(em: TablestoreEmulator) -> str:
    TABLES.top_up(em, lambda name: open_store(em, name), least=1)
    name = TABLES.take(em)
    assert name is not None
    return name


def seed(store: TablestoreStore, total: int, rare_every: int) -> list[str]:
    """``total`` memories of alice (cline); every ``rare_every``-th one rare (tagged, categorized, event-timed)."""
    rows, rare_ids = [], []
    for i in range(total):
        rare = i % rare_every == rare_every - 1
        rows.append(NewRow(memory(i, rare=rare), vector(i, rare)))
        if rare:
            rare_ids.append(f"m{i:05d}")
    for start in range(0, total, 500):
        store.put(ALICE, rows[start : start + 500])
    return rare_ids


@pytest.fixture(scope="module")
def big(emulator: TablestoreEmulator) -> Iterator[tuple[str, list[str]]]:
    """2,000 memories, 5 of them rare and the least similar to NEAR; plus one rare memory of bob."""
    table = new_table(emulator)
    store = open_store(emulator, table)
    rare = seed(store, 2000, 400)
    store.put(BOB, [NewRow(memory(9, rare=True, user="bob"), FAR)])
    store.close()
    emulator.flush_index()
    assert len(rare) == RARE
    yield table, rare


@pytest.fixture
def reader(emulator: TablestoreEmulator, big: tuple[str, list[str]]) -> Iterator[TablestoreStore]:
    """A store that did not write the rows (another process's view: no recent writes of its own)."""
    store = open_store(emulator, big[0])
    emulator.reset_counts()
    emulator.api.rows_read.clear()
    yield store
    store.close()


def cost(em: TablestoreEmulator, table: str) -> tuple[dict[str, int], int]:
    calls = em.calls_on(table)
    calls.pop("DescribeSearchIndex", None)  # once per store, until the index reports it has initialized
    rows = em.api.rows_read[table]
    em.reset_counts()
    em.api.rows_read.clear()
    return calls, rows


@pytest.mark.parametrize("name", list(QUERIES))
def test_a_filtered_search_finds_the_least_similar_matches_with_one_search(
    emulator: TablestoreEmulator, big: tuple[str, list[str]], reader: TablestoreStore, name: str
) -> None:
    table, rare = big
    found = reader.nearest(ALICE, NEAR, RARE, states=ACTIVE, query=QUERIES[name])
    assert sorted(m.id for m in found) == rare
    calls, rows = cost(emulator, table)
    assert calls == {"Search": 1, "BatchGetRow": 1}
    assert rows <= 2 * RARE + 2  # the 5 keys Search returned and the 5 rows checked (+ a small margin)
    # asking for more than exist returns them all, and a narrower query fewer
    assert sorted(m.id for m in reader.nearest(ALICE, NEAR, 50, states=ACTIVE, query=QUERIES[name])) == rare
    both = replace(QUERIES[name], client="cursor")
    assert reader.nearest(ALICE, NEAR, 5, states=ACTIVE, query=both) == []
    assert reader.nearest(BOB, NEAR, 5, states=ACTIVE, query=QUERIES[name])[0].user_id == "bob"


def test_a_filtered_keyword_search_scores_only_matching_rows(
    emulator: TablestoreEmulator, big: tuple[str, list[str]], reader: TablestoreStore
) -> None:
    table, rare = big
    hits = reader.keyword_hits(ALICE, "note", RARE, states=ACTIVE, query=CATEGORY)
    assert hits is not None and sorted(h.memory_id for h in hits) == rare
    calls, rows = cost(emulator, table)
    assert calls == {"Search": 1, "BatchGetRow": 1} and rows <= 2 * RARE + 2


def test_a_filtered_list_pages_through_the_matches_with_its_total(
    emulator: TablestoreEmulator, big: tuple[str, list[str]], reader: TablestoreStore
) -> None:
    table, rare = big
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = reader.page(OWNER, states=ACTIVE, query=TAGGED, limit=2, cursor=cursor)
        seen += [m.id for m in page.items]
        pages += 1
        calls, rows = cost(emulator, table)
        assert calls == {"Search": 1, "BatchGetRow": 1} and rows <= 6  # 3 keys + up to 3 rows: no scan
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == rare and pages == 3
    assert reader.page_total(OWNER, states=ACTIVE, query=TAGGED) == RARE
    calls, _ = cost(emulator, table)
    assert calls == {"Search": 2}  # the count, and the check that no old row is among the matches


def test_a_filtered_browse_in_created_order_with_offset_and_total(
    emulator: TablestoreEmulator, big: tuple[str, list[str]], reader: TablestoreStore
) -> None:
    table, rare = big
    everything = reader.read(OWNER, rare)
    cost(emulator, table)
    order = sorted(rare, key=lambda mid: (everything[mid].created_at, mid), reverse=True)
    items, total = reader.created_window(OWNER, states=ACTIVE, newest_first=True, offset=1, limit=2, query=WINDOW)
    assert total == RARE and [m.id for m in items] == order[1:3]
    calls, rows = cost(emulator, table)
    assert calls == {"Search": 2, "BatchGetRow": 1} and rows <= 4  # 2 keys, 2 rows
    since = sorted(everything[mid].created_at for mid in rare)[2]
    items, total = reader.created_window(
        OWNER, states=ACTIVE, newest_first=False, offset=0, limit=10, since=since, query=CATEGORY
    )
    assert [m.id for m in items] == sorted(order[:3], key=lambda mid: everything[mid].created_at)
    assert total == 3


def test_this_process_writes_and_removals_show_at_once(emulator: TablestoreEmulator) -> None:
    store = open_store(emulator, new_table(emulator))
    try:
        rare = seed(store, 40, 8)
        emulator.flush_index()
        extra = memory(100, rare=True)
        emulator.index_delay = 60.0  # the index does not see what follows
        store.put(ALICE, [NewRow(extra, FAR)])
        gone = store.read(ALICE, [rare[0]])[rare[0]]
        untagged = replace(gone, categories=(), metadata={"metadata": {"project": "zeus"}}, updated_at="2027")
        store.rewrite(ALICE, RowChange(gone.id, untagged))
        wanted = sorted([*rare[1:], extra.id])
        assert sorted(m.id for m in store.nearest(ALICE, NEAR, 10, states=ACTIVE, query=TAGGED)) == wanted
        assert [m.id for m in store.page(ALICE, states=ACTIVE, query=TAGGED, limit=10).items] == wanted
        assert store.page_total(ALICE, states=ACTIVE, query=TAGGED) == len(wanted)
        assert store.created_window(ALICE, states=ACTIVE, newest_first=True, offset=0, limit=10, query=TAGGED)[1] == 5
    finally:
        emulator.index_delay = 0.0
        store.close()


def test_an_update_removing_tags_and_categories_clears_their_index_terms(emulator: TablestoreEmulator) -> None:
    table = new_table(emulator)
    store = open_store(emulator, table)
    try:
        rare = seed(store, 30, 6)
        first = store.read(ALICE, [rare[0]])[rare[0]]
        store.rewrite(ALICE, RowChange(first.id, replace(first, categories=(), metadata={})))
    finally:
        store.close()
    emulator.flush_index()
    other = open_store(emulator, table)  # no recent writes: the index alone answers the totals
    try:
        for query in (TAGGED, CATEGORY, WINDOW):
            assert other.page_total(ALICE, states=ACTIVE, query=query) == len(rare) - 1
    finally:
        other.close()


def test_an_index_made_by_an_older_version_still_answers_exactly(emulator: TablestoreEmulator) -> None:
    table = f"old_{uuid.uuid4().hex[:8]}"
    client = OTSClient(emulator.endpoint, emulator.access_key_id, emulator.access_key_secret, emulator.instance_name)
    client.create_table(
        TableMeta(table, [("user_id", "STRING"), ("memory_id", "STRING")]),
        TableOptions(),
        ReservedThroughput(CapacityUnit(0, 0)),
    )
    fields = [f for f in index_meta(DIMS, "cosine").fields if f.field_name not in NARROWING_COLUMNS]
    client.create_search_index(table, f"{table}_search_index", SearchIndexMeta(fields))
    store = open_store(emulator, table)
    try:
        assert not set(NARROWING_COLUMNS) & store._indexed
        rare = seed(store, 300, 60)
        emulator.flush_index()
        for query in QUERIES.values():
            found = store.nearest(ALICE, NEAR, RARE, states=ACTIVE, query=query)
            assert sorted(m.id for m in found) == rare
            assert store.page_total(ALICE, states=ACTIVE, query=query) == RARE
            assert [m.id for m in store.page(ALICE, states=ACTIVE, query=query, limit=10).items] == rare
            window = store.created_window(ALICE, states=ACTIVE, newest_first=False, offset=0, limit=10, query=query)
            assert sorted(m.id for m in window[0]) == rare and window[1] == RARE
    finally:
        store.close()


def put_2_0_0(em: TablestoreEmulator, table: str, mem: StoredMemory, vec: list[float]) -> None:
    """A memory row as 2.0.0 wrote it: no event_at / category_terms / tag_terms columns."""
    payload = {**mem.metadata, "data": mem.text, "hash": mem.hash, "user_id": mem.user_id, "agent_id": mem.client}
    payload.update(created_at=mem.created_at, updated_at=mem.updated_at, categories=list(mem.categories))
    columns = [("data", mem.text), ("agent_id", mem.client or ""), ("hash", mem.hash)]
    columns += [("created_at", mem.created_at), ("updated_at", mem.updated_at)]
    columns += [("payload", json.dumps(payload)), ("vector", "[" + ",".join(f"{x:.9g}" for x in vec) + "]")]
    client = OTSClient(em.endpoint, em.access_key_id, em.access_key_secret, em.instance_name)
    row = Row([("user_id", mem.user_id), ("memory_id", mem.id)], columns)
    client.put_row(table, row, Condition(RowExistenceExpectation.IGNORE))


def test_rows_written_by_2_0_0_are_found_and_checked(emulator: TablestoreEmulator) -> None:
    table = new_table(emulator)
    store = open_store(emulator, table)
    try:
        rare = seed(store, 50, 10)
    finally:
        store.close()
    old_rare, old_common = memory(501, rare=True), memory(502, rare=False)
    put_2_0_0(emulator, table, old_rare, FAR)
    put_2_0_0(emulator, table, old_common, FAR)  # passes the index condition (old), fails the check
    emulator.flush_index()
    reader = open_store(emulator, table)
    try:
        wanted = sorted([*rare, old_rare.id])
        for query in QUERIES.values():
            assert sorted(m.id for m in reader.nearest(ALICE, NEAR, 6, states=ACTIVE, query=query)) == wanted
            assert [m.id for m in reader.page(ALICE, states=ACTIVE, query=query, limit=3).items] == wanted[:3]
            assert reader.page_total(ALICE, states=ACTIVE, query=query) == len(wanted)
            items, total = reader.created_window(
                ALICE, states=ACTIVE, newest_first=True, offset=0, limit=10, query=query
            )
            assert sorted(m.id for m in items) == wanted and total == len(wanted)
        hits = reader.keyword_hits(ALICE, "note", 10, states=ACTIVE, query=TAGGED)
        assert hits is not None and sorted(h.memory_id for h in hits) == wanted
        assert old_common.id in {m.id for m in reader.page(ALICE, states=ACTIVE, query=MemoryQuery(), limit=100).items}
    finally:
        reader.close()
