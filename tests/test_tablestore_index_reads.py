"""Totals, pages by creation time, counts and vectors of the Tablestore store, answered by the search index.

Each answer is compared with the same answer computed here from every row (read through the table's pages,
strongly consistent), while the index lags by design: this process's own adds, edits and deletes must show at once.
The RPC counts must not depend on how many memories the user has.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import replace
from typing import Any

import pytest
from tablestore import SearchIndexMeta

from tablestore_openmemory_mcp.memory.ports import ALL_STATES, State, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import EVERYTHING, build_query
from tablestore_openmemory_mcp.memory.store_port import NewRow, RowChange, Tally
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore
from tablestore_openmemory_mcp.stores.tablestore.recent import RecentWrites
from tablestore_openmemory_mcp.stores.tablestore.schema import COL_DAY, index_meta
from tests.fakes.port_rows import every_row
from tests.fakes.table_pool import TablePool
from tests.fakes.tablestore_fixture import INDEX_DELAY
from tests.tablestore_emulator import TablestoreEmulator

DIMS = 8
ALICE = Scope("cline", "alice", shared=True)
CLINE = Scope("cline", "alice")
CURSOR = Scope("cursor", "alice")
BOB = Scope("cline", "bob")
ALL = ALL_STATES
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
        **em.credentials(),
        embedding_model_dims=DIMS,
        **kw,
    )


def vec(i: int) -> list[float]:
    v = [0.01] * DIMS
    v[i % DIMS] = 1.0
    v[(i // DIMS) % DIMS] += 0.5
    return v


def row(memory_id: str, text: str, scope: Scope, created_at: str, state: State | None = None) -> StoredMemory:
    return StoredMemory(
        id=memory_id,
        text=text,
        user_id=scope.user_id,
        client=scope.client_name,
        created_at=created_at,
        updated_at=created_at,
        hash=uuid.uuid4().hex,
        state=state or "active",
    )


STATES: list[State | None] = [None, "active", "paused", "archived", "deleted"]


def seed(store: TablestoreStore) -> None:
    """30 memories of alice in two clients, 10 days, every state, ties on created_at; one of bob."""
    for scope, base in ((CLINE, 0), (CURSOR, 20)):
        n = 20 if base == 0 else 10
        store.put(
            scope,
            [
                NewRow(
                    row(
                        f"m{((base + i) * 37) % 30:02d}",  # ids not in time order
                        f"t{base + i}",
                        scope,
                        f"2025-01-{1 + (base + i) // 3:02d}T00:00:00+00:00",
                        STATES[i % 5],
                    ),
                    vec(base + i),
                )
                for i in range(n)
            ],
        )
    store.put(BOB, [NewRow(row("bob", "bob", BOB, "2025-01-03T00:00:00+00:00"), vec(99))])


def reference_window(
    store: TablestoreStore,
    scope: Scope,
    states: Collection[State],
    *,
    newest_first: bool,
    offset: int,
    limit: int,
    since: str | None,
    until: str | None,
) -> tuple[list[StoredMemory], int]:
    """What ``created_window`` must answer, from every row."""
    rows = [
        m
        for m in every_row(store, scope, states)
        if (since is None or m.created_at >= since) and (until is None or m.created_at < until)
    ]
    rows.sort(key=lambda m: (m.created_at, m.id), reverse=newest_first)
    return rows[offset : offset + limit], len(rows)


def reference_tally(store: TablestoreStore, scope: Scope) -> Tally:
    return dict(Counter((m.client, m.state, m.created_at[:10]) for m in every_row(store, scope)))


VISIBLE: tuple[State, ...] = ("active", "paused")
PAGES: list[tuple[Scope, Collection[State], bool, int, int, str | None, str | None]] = [
    (ALICE, ALL, True, 0, 7, None, None),
    (ALICE, ALL, False, 5, 7, None, None),
    (ALICE, VISIBLE, True, 3, 10, None, None),
    (ALICE, ALL, True, 0, 50, "2025-01-03", "2025-01-06T99"),
    (CLINE, ALL, False, 2, 10, "2025-01-02", None),
    (ALICE, ALL, True, 40, 10, None, None),
]


def check_pages(store: TablestoreStore) -> None:
    for scope, states, newest, offset, limit, since, until in PAGES:
        args: dict[str, Any] = {
            "newest_first": newest,
            "offset": offset,
            "limit": limit,
            "since": since,
            "until": until,
        }
        got, total = store.created_window(scope, states=states, **args)
        want, want_total = reference_window(store, scope, states, **args)
        assert [m.id for m in got] == [m.id for m in want], (scope, states, offset, since)
        assert [replace(m, score=None) for m in got] == [replace(m, score=None) for m in want]
        assert total == want_total, (scope, states, offset, since)


def check_counts(store: TablestoreStore) -> None:
    assert store.tallies(ALICE) == reference_tally(store, ALICE)
    for states in (ALL, ("active",)):
        assert store.page_total(ALICE, states=states, query=EVERYTHING) == len(every_row(store, ALICE, states))
    assert store.tallies(CLINE) == reference_tally(store, CLINE)
    assert store.page_total(CLINE, states=ALL, query=EVERYTHING) == len(every_row(store, CLINE))


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
        store.put(
            CLINE,
            [
                NewRow(row("n1", "newest", CLINE, "2025-02-01T00:00:00+00:00"), vec(40)),
                NewRow(row("n2", "middle", CLINE, "2025-01-04T00:00:00+00:00"), vec(41)),
            ],
        )
        edited = store.read_one(CLINE, "m00")
        assert edited is not None
        store.rewrite_many(CLINE, [RowChange("m00", replace(edited, state="archived", text="changed"))])
        store.remove(CLINE, ["m07"])
        check_pages(store)
        check_counts(store)
        page, total = store.created_window(ALICE, states=ALL, newest_first=True, offset=0, limit=3)
        assert page[0].id == "n1" and total == 31
    finally:
        store.close()


def test_rpcs_do_not_grow_with_the_user(em: TablestoreEmulator) -> None:
    store = make(em)
    try:
        seed(store)
        em.flush_index()
        store._recent.clear()
        for call, searches in (
            (lambda: store.page_total(ALICE, states=ALL, query=EVERYTHING), 1),
            (lambda: store.tallies(ALICE), 1),
            (lambda: store.created_window(ALICE, states=ALL, newest_first=True, offset=0, limit=20), 1),
        ):
            em.reset_counts()
            call()
            assert em.counts["Search"] == searches and em.counts["GetRange"] == 0, dict(em.counts)
            assert em.counts["BatchGetRow"] <= 1
    finally:
        store.close()


FOOD = build_query(category="food")


def bulk(store: TablestoreStore, scope: Scope, n: int, batch: int = 100) -> list[str]:
    """``n`` new memories of ``scope`` (every other one about food), ``batch`` per put as an import writes them."""
    ids = [f"b{i:04d}" for i in range(n)]
    for start in range(0, n, batch):
        store.put(
            scope,
            [
                NewRow(
                    replace(
                        row(ids[i], f"bulk {i}", scope, f"2025-03-{1 + i % 28:02d}T00:00:00+00:00"),
                        categories=("food",) if i % 2 else ("work",),
                    ),
                    vec(i),
                )
                for i in range(start, min(n, start + batch))
            ],
        )
    return ids


def totals(store: TablestoreStore, em: TablestoreEmulator) -> list[tuple[str, Any, Any]]:
    """(what, answer, reference) for the totals, narrowed pages, owner's window and tallies; the answers are
    taken first, while nothing has read the table yet."""
    got = {
        "total": store.page_total(ALICE, states=ALL, query=EVERYTHING),
        "total active": store.page_total(CLINE, states=("active",), query=EVERYTHING),
        "total food": store.page_total(ALICE, states=ALL, query=FOOD),
        "food page": store.page(ALICE, states=ALL, query=FOOD, limit=1000).items,
        "window": store.created_window(ALICE, states=ALL, newest_first=True, offset=0, limit=10),
        "tally": store.tallies(ALICE),
    }
    food = [m for m in every_row(store, ALICE) if "food" in m.categories]
    return [
        ("total", got["total"], len(every_row(store, ALICE))),
        ("total active", got["total active"], len(every_row(store, CLINE, ("active",)))),
        ("total food", got["total food"], len(food)),
        ("food page", [m.id for m in got["food page"]], sorted(m.id for m in food)),
        ("window", ([m.id for m in got["window"][0]], got["window"][1]), reference_ids(store)),
        ("tally", got["tally"], reference_tally(store, ALICE)),
    ]


def reference_ids(store: TablestoreStore) -> tuple[list[str], int]:
    rows, total = reference_window(store, ALICE, ALL, newest_first=True, offset=0, limit=10, since=None, until=None)
    return [m.id for m in rows], total


def test_a_bulk_write_beyond_what_is_reconciled_is_counted_exactly_while_the_index_lags(
    em: TablestoreEmulator,
) -> None:
    """700 rows written by this process (more than ``MAX_TOUCHED``): totals, narrowed pages, the owner's
    window and tallies are exact at once (the table answers), not the index's count plus 500 of them."""
    store = make(em)
    try:
        seed(store)
        em.flush_index()
        store._recent.clear()
        em.index_delay = 3600  # nothing written from here on reaches the index during the test
        ids = bulk(store, CLINE, 700)
        em.reset_counts()
        for what, answer, want in totals(store, em):
            assert answer == want, what
        assert em.counts["GetRange"] >= 1  # the strongly consistent path
        store.remove(CLINE, ids[:600])  # deletes count too: the index still has none of the 700
        for what, answer, want in totals(store, em):
            assert answer == want, what
        assert store.page_total(ALICE, states=ALL, query=EVERYTHING) == 30 + 100
    finally:
        store.close()


def test_up_to_max_touched_own_writes_are_reconciled_with_the_same_rpcs(em: TablestoreEmulator) -> None:
    """500 rows written by this process: reconciled from the index (Search 1 + BatchGetRow per 100), no scan."""
    store = make(em)
    try:
        seed(store)
        em.flush_index()
        store._recent.clear()
        em.index_delay = 3600
        bulk(store, CLINE, 500)
        for call, rpcs in (
            (lambda: store.page_total(ALICE, states=ALL, query=EVERYTHING), {"Search": 1, "BatchGetRow": 5}),
            (lambda: store.tallies(ALICE), {"Search": 1, "BatchGetRow": 5}),
            (
                lambda: store.created_window(ALICE, states=ALL, newest_first=True, offset=0, limit=10),
                {"Search": 1, "BatchGetRow": 6},
            ),
        ):
            em.reset_counts()
            call()
            assert {api: em.counts[api] for api in ("Search", "BatchGetRow", "GetRange")} == {**rpcs, "GetRange": 0}
        for what, answer, want in totals(store, em):
            assert answer == want, what
    finally:
        store.close()


def test_recent_writes_name_every_touched_row_or_none() -> None:
    """A reconciliation needs every recent row of the user: more than asked for, or some dropped by the
    bound while still within the window, and the readers get None (they ask the table)."""
    recent = RecentWrites(max_rows=4)
    recent.note("a", ["a1", "a2", "a3"], [None] * 3)
    recent.note("b", ["b1"], [None])
    recent.forget("b", ["b0"])
    assert recent.touched("a", 500) == ["a3", "a2", "a1"] and recent.touched("a", 2) is None
    assert recent.touched("b", 500) == ["b1", "b0"]
    recent.note("b", ["b2"], [None])  # the bound drops a1, still within its window
    assert recent.touched("a", 500) is None
    assert recent.touched("b", 500) == ["b2", "b1", "b0"]
    recent.clear()
    assert recent.touched("a", 500) == []


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
            **em.credentials(),
            embedding_model_dims=DIMS,
        )
        try:
            seed(older)
            em.flush_index()
            em.reset_counts()
            tally = older.tallies(ALICE)
            assert em.counts["GetRange"] >= 1  # the rows were read
            assert tally == reference_tally(older, ALICE)
        finally:
            older.close()
    finally:
        store.close()


def test_get_vectors_reads_the_scope_only(em: TablestoreEmulator) -> None:
    store = make(em)
    try:
        seed(store)
        got = store.read_vectors(CLINE, ["m00", "m20", "bob", "nope"])  # m20 is cursor's, bob another user's
        assert set(got) == {"m00"} and got["m00"] == pytest.approx(vec(0), abs=1e-6)
        assert store.read_vectors(BOB, ["bob"])["bob"] == pytest.approx(vec(99), abs=1e-6)
    finally:
        store.close()
