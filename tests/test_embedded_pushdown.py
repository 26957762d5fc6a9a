"""The embedded store answers a narrowed read (time, category, tags, client) from its SQL indexes.

Counts, not times: how many payload rows a search reads and how many cached vectors it scores, and the
query plan SQLite picks. Also: files of the previous schema are backfilled, both ``match_any`` modes,
categories after an update, and another user's terms never select anything.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tablestore_openmemory_mcp.memory.ports import ALL_STATES, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import EVERYTHING, MemoryQuery, build_query
from tablestore_openmemory_mcp.memory.store_port import NewRow, RowChange
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores import row_format
from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore, narrowing
from tablestore_openmemory_mcp.stores.embedded.schema import VERSION

DIMS = 16
ALICE = Scope("cline", "alice", shared=True)
BOB = Scope("cline", "bob", shared=True)
ACTIVE = ("active",)


def vector(rng: random.Random) -> list[float]:
    return [rng.gauss(0.0, 1.0) for _ in range(DIMS)]


def memory(
    scope: Scope,
    i: int,
    *,
    client: str = "cline",
    tags: dict[str, Any] | None = None,
    event_time: str | None = None,
    categories: tuple[str, ...] = (),
) -> StoredMemory:
    metadata: dict[str, Any] = {}
    if tags:
        metadata["metadata"] = tags
    if event_time:
        metadata["event_time"] = event_time
    text = f"memory {i} of {scope.user_id}"
    return StoredMemory(
        id=f"{scope.user_id}-{i:05d}",
        text=text,
        user_id=scope.user_id,
        client=client,
        created_at=f"2026-01-01T00:00:{i % 60:02d}.{i:06d}+00:00",
        updated_at=f"2026-01-01T00:00:{i % 60:02d}.{i:06d}+00:00",
        hash=row_format.text_hash(text),
        categories=categories,
        metadata=metadata,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore("mem0", path=str(tmp_path), embedding_model_dims=DIMS)
    try:
        yield s
    finally:
        s.close()


def fill_big(store: EmbeddedStore) -> list[str]:
    """2,000 memories of alice, 5 tagged and categorised; bob holds the same tag and category on 5."""
    rng = random.Random(23)
    rows = []
    tagged = []
    for i in range(2000):
        special = i % 400 == 7
        mem = memory(
            ALICE,
            i,
            tags={"project": "apollo"} if special else {"project": "zeus"},
            categories=("work",) if special else (),
        )
        if special:
            tagged.append(mem.id)
        rows.append(NewRow(mem, vector(rng)))
    store.put(ALICE, rows)
    store.put(
        BOB, [NewRow(memory(BOB, i, tags={"project": "apollo"}, categories=("work",)), vector(rng)) for i in range(5)]
    )
    return tagged


def test_a_selective_filter_reads_only_the_matching_rows(store: EmbeddedStore) -> None:
    tagged = fill_big(store)
    probe = vector(random.Random(5))
    for query in (build_query(metadata={"project": "apollo"}), MemoryQuery(category="work")):
        store.reads.clear()
        found = store.nearest(ALICE, probe, 10, states=ACTIVE, query=query)
        assert sorted(m.id for m in found) == sorted(tagged)  # all 5 although 10 were asked for, none of bob's
        assert store.reads["vectors"] == 5 and store.reads["rows"] == 5, store.reads
    # checking the filter row by row on the nearest rows instead (what the store did before the pushdown)
    # scores and reads the whole scope for the same answer
    store.reads.clear()
    apollo = build_query(metadata={"project": "apollo"})
    by_row = [m for m in store.nearest(ALICE, probe, 2000, states=ACTIVE, query=EVERYTHING) if apollo.accepts(m)]
    assert sorted(m.id for m in by_row[:10]) == sorted(tagged)
    assert store.reads["rows"] == 2000 and store.reads["vectors"] == 2000


def test_a_filtered_search_returns_limit_matches_when_that_many_exist(store: EmbeddedStore) -> None:
    fill_big(store)
    zeus = build_query(metadata={"project": "zeus"})
    probe = vector(random.Random(6))
    found = store.nearest(ALICE, probe, 10, states=ACTIVE, query=zeus)
    assert len(found) == 10
    by_row = [m for m in store.nearest(ALICE, probe, 2000, states=ACTIVE, query=EVERYTHING) if zeus.accepts(m)]
    assert [m.id for m in found] == [m.id for m in by_row[:10]]  # the same as checking every row
    assert store.page_total(ALICE, states=ACTIVE, query=zeus) == 1995


def test_the_query_plan_uses_the_term_and_event_indexes(store: EmbeddedStore) -> None:
    fill_big(store)
    plans = {}
    for name, query in (
        ("tag", build_query(metadata={"project": "apollo"})),
        ("time", build_query(since="2026-01-01T00:00:10Z", until="2026-01-01T00:00:11Z")),
    ):
        where, values = narrowing.where(ALICE, ACTIVE, query, store._n.terms)
        conn = sqlite3.connect(store._db_path)
        try:
            plans[name] = " | ".join(
                str(r[3]) for r in conn.execute(f"EXPLAIN QUERY PLAN SELECT rid FROM {store._n.table}{where}", values)
            )
        finally:
            conn.close()
    # the term index drives (rowid lookups of its matches), not a walk over the user's 2,000 rows
    assert "mem0__terms USING PRIMARY KEY" in plans["tag"] and "rowid=?" in plans["tag"], plans
    assert "SCAN" not in plans["tag"] and "user_id=?" not in plans["tag"], plans
    assert "mem0__event_u (user_id=? AND event_at>? AND event_at<?)" in plans["time"], plans


def test_match_any_and_every_key(store: EmbeddedStore) -> None:
    rng = random.Random(1)
    store.put(
        ALICE,
        [
            NewRow(memory(ALICE, 1, tags={"a": "x", "b": 2}), vector(rng)),
            NewRow(memory(ALICE, 2, tags={"a": "x"}), vector(rng)),
            NewRow(memory(ALICE, 3, tags={"b": 2.0, "c": True}), vector(rng)),
            NewRow(memory(ALICE, 4), vector(rng)),
        ],
    )

    def ids(**kw: Any) -> list[str]:
        query = build_query(**kw)
        listed = [m.id for m in store.page(ALICE, states=ACTIVE, query=query, limit=50).items]
        found = sorted(m.id for m in store.nearest(ALICE, vector(rng), 50, states=ACTIVE, query=query))
        assert found == listed and store.page_total(ALICE, states=ACTIVE, query=query) == len(listed)
        return listed

    assert ids(metadata={"a": "x", "b": 2}) == ["alice-00001"]
    assert ids(metadata={"a": "x", "b": 2}, match_any=True) == ["alice-00001", "alice-00002", "alice-00003"]
    assert ids(metadata={"c": True}) == ["alice-00003"]
    assert ids(metadata={"c": 1}) == []  # a boolean is not a number (the terms Tablestore holds, too)
    assert ids(metadata={"b": "2"}) == []


def test_categories_and_tags_follow_updates_and_deletes(store: EmbeddedStore) -> None:
    rng = random.Random(2)
    first = memory(ALICE, 1, categories=("food",), tags={"k": "old"})
    store.put(ALICE, [NewRow(first, vector(rng))])
    work = MemoryQuery(category="work")
    assert store.page_total(ALICE, states=ACTIVE, query=work) == 0
    store.rewrite(ALICE, RowChange(first.id, replace(first, categories=("work",), metadata={"metadata": {"k": "new"}})))
    assert [m.id for m in store.page(ALICE, states=ACTIVE, query=work, limit=5).items] == [first.id]
    assert store.page_total(ALICE, states=ACTIVE, query=MemoryQuery(category="food")) == 0
    assert store.page_total(ALICE, states=ACTIVE, query=build_query(metadata={"k": "old"})) == 0
    assert store.page_total(ALICE, states=ACTIVE, query=build_query(metadata={"k": "new"})) == 1
    store.rewrite(ALICE, RowChange(first.id, replace(first, state="deleted", categories=("work",))))
    assert store.page_total(ALICE, states=ACTIVE, query=work) == 0
    assert store.page_total(ALICE, states=("deleted",), query=work) == 1
    store.remove(ALICE, [first.id])
    conn = sqlite3.connect(store._db_path)
    try:
        assert conn.execute(f"SELECT COUNT(*) FROM {store._n.terms}").fetchone()[0] == 0
    finally:
        conn.close()


def test_another_users_terms_never_match(store: EmbeddedStore) -> None:
    rng = random.Random(3)
    store.put(
        BOB,
        [NewRow(memory(BOB, 1, tags={"p": "q"}, categories=("c",), event_time="2026-05-01T00:00:00Z"), vector(rng))],
    )
    store.put(ALICE, [NewRow(memory(ALICE, 1), vector(rng))])
    for query in (
        build_query(metadata={"p": "q"}),
        MemoryQuery(category="c"),
        build_query(since="2026-04-01"),
        build_query(metadata={"p": "q"}, match_any=True),
    ):
        assert store.nearest(ALICE, vector(rng), 5, states=ALL_STATES, query=query) == []
        assert store.page(ALICE, states=ALL_STATES, query=query, limit=5).items == []
        assert store.page_total(ALICE, states=ALL_STATES, query=query) == 0
        assert store.created_window(ALICE, states=ALL_STATES, newest_first=True, offset=0, limit=5, query=query) == (
            [],
            0,
        )
        assert store.keyword_hits(ALICE, "memory", 5, states=ALL_STATES, query=query) == []
        assert len(store.nearest(BOB, vector(rng), 5, states=ALL_STATES, query=query)) == 1
    # a client scope never sees another client's memories, even when asked by name
    other = Scope("cursor", "bob")
    assert store.page_total(other, states=ALL_STATES, query=MemoryQuery(client="cline")) == 0


def test_event_time_and_created_window(store: EmbeddedStore) -> None:
    rng = random.Random(4)
    rows = [
        NewRow(memory(ALICE, i, event_time=f"2025-0{1 + i % 3}-15T12:00:00Z" if i % 2 else None), vector(rng))
        for i in range(30)
    ]
    store.put(ALICE, rows)
    query = build_query(since="2025-02-01", until="2025-03-01")  # odd i with i % 3 == 1: 1, 7, 13, 19, 25
    expected = [m.memory.id for m in rows if m.memory.metadata.get("event_time", "").startswith("2025-02")]
    assert len(expected) == 5
    page, total = store.created_window(ALICE, states=ACTIVE, newest_first=True, offset=1, limit=2, query=query)
    assert total == 5 and [m.id for m in page] == sorted(expected, reverse=True)[1:3]
    # created-time fallback: memories without an event time are matched on their creation time
    created = build_query(since="2026-01-01T00:00:00Z", until="2026-01-01T00:00:05Z")
    assert [m.id for m in store.page(ALICE, states=ACTIVE, query=created, limit=50).items] == [
        "alice-00000",
        "alice-00002",
        "alice-00004",
    ]
    hits = store.keyword_hits(ALICE, "memory alice", 50, states=ACTIVE, query=query)
    assert hits is not None and sorted(h.memory_id for h in hits) == sorted(expected)


def downgrade_to_v2(path: str) -> None:
    """Make the file what schema version 2 left: no event_at column, no term table, version 2."""
    conn = sqlite3.connect(path)
    try:
        for index in ("mem0__event_ua", "mem0__event_u", "mem0__unnarrowed"):
            conn.execute(f'DROP INDEX "{index}"')
        conn.execute('DROP TABLE "mem0__terms"')
        conn.execute('ALTER TABLE "mem0" DROP COLUMN event_at')
        conn.execute("UPDATE __schema SET version = 2")
        conn.commit()
    finally:
        conn.close()


def test_a_version_2_file_is_backfilled_at_open(tmp_path: Path) -> None:
    rng = random.Random(7)
    old = EmbeddedStore("mem0", path=str(tmp_path), embedding_model_dims=DIMS)
    old.put(
        ALICE,
        [
            NewRow(
                memory(ALICE, 1, tags={"t": "x"}, event_time="2024-06-01T00:00:00Z", categories=("work",)), vector(rng)
            ),
            NewRow(memory(ALICE, 2), vector(rng)),
        ],
    )
    path = old._db_path
    old.close()
    downgrade_to_v2(path)
    for _ in range(2):  # the second open finds nothing left to do
        store = EmbeddedStore("mem0", path=str(tmp_path), embedding_model_dims=DIMS)
        try:
            for query in (
                build_query(metadata={"t": "x"}),
                MemoryQuery(category="work"),
                build_query(until="2025-01-01"),
            ):
                assert [m.id for m in store.page(ALICE, states=ACTIVE, query=query, limit=5).items] == ["alice-00001"]
            assert store.page_total(ALICE, states=ACTIVE, query=build_query(since="2025-01-01")) == 1
        finally:
            store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM __schema").fetchone()[0] == VERSION
        assert conn.execute('SELECT COUNT(*) FROM "mem0" WHERE event_at IS NULL').fetchone()[0] == 0
    finally:
        conn.close()


def test_a_client_filter_in_a_shared_scope_with_tags(store: EmbeddedStore) -> None:
    rng = random.Random(8)
    rows = [
        NewRow(memory(ALICE, i, client="cursor" if i % 2 else "cline", tags={"p": "q"}), vector(rng)) for i in range(40)
    ]
    store.put(ALICE, rows)
    query = build_query(client="cline", metadata={"p": "q"})
    store.reads.clear()
    found = store.nearest(ALICE, vector(rng), 5, states=ACTIVE, query=query)
    assert len(found) == 5 and {m.client for m in found} == {"cline"}
    assert store.reads["vectors"] == 20  # the client's 20 tagged rows only
    assert store.page_total(ALICE, states=ACTIVE, query=query) == 20
    listed = store.page(ALICE, states=ACTIVE, query=query, limit=50).items
    assert [m.id for m in listed] == [r.memory.id for r in rows if r.memory.client == "cline"]
