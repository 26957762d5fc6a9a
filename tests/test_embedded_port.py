"""The embedded store's own port reads beyond the shared contract: no states, the readiness probe, and the
typed check of a row that changed between its selection and the read of its payload."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tablestore_openmemory_mcp.memory.ports import State
from tablestore_openmemory_mcp.memory.query_filters import EVERYTHING, MemoryQuery
from tablestore_openmemory_mcp.memory.store_port import NewRow, RowChange
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
from tests.fakes.port_rows import memory

DIMS = 4
ALICE = Scope("cline", "alice")
ACTIVE: tuple[State, ...] = ("active",)


def vec(i: int) -> list[float]:
    return [1.0, 0.1 * i, 0.0, 0.5]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore("memories", path=str(tmp_path), embedding_model_dims=DIMS)
    s.put(
        ALICE,
        [
            NewRow(memory(f"m{i}", f"green tea note {i}", "alice", "cline", categories=("drinks",)), vec(i))
            for i in range(6)
        ],
    )
    yield s
    s.close()


def test_no_states_sees_nothing(store: EmbeddedStore) -> None:
    assert store.page(ALICE, states=(), query=EVERYTHING, limit=10).items == []
    assert store.page_total(ALICE, states=(), query=EVERYTHING) == 0
    assert store.created_window(ALICE, states=(), newest_first=True, offset=0, limit=10) == ([], 0)
    assert store.nearest(ALICE, vec(1), 5, states=(), query=EVERYTHING) == []
    assert store.keyword_hits(ALICE, "green tea", 5, states=(), query=EVERYTHING) == []
    assert store.page_total(ALICE, states=ACTIVE, query=EVERYTHING) == 6


def test_probe_reads_no_memory_and_fails_once_closed(store: EmbeddedStore) -> None:
    before = dict(store.reads)
    store.probe()
    assert dict(store.reads) == before
    store.close()
    with pytest.raises(RuntimeError):
        store.probe()


@pytest.mark.parametrize("query", [EVERYTHING, MemoryQuery(category="drinks")], ids=["whole slab", "narrowed"])
def test_a_row_archived_after_its_selection_is_not_returned(
    store: EmbeddedStore, tmp_path: Path, query: MemoryQuery
) -> None:
    """Another process archives the best match after this search scored it but before it read the row: the
    row read is checked again (its state), so it is skipped and the next best fills the page."""
    best = store.nearest(ALICE, vec(5), 1, states=ACTIVE, query=query)[0]
    other = EmbeddedStore("memories", path=str(tmp_path), embedding_model_dims=DIMS)
    real = store._rows_by_rid
    moved: list[str] = []

    def archive_then_read(conn: object, rids: Sequence[int]) -> object:
        if not moved:
            archived = dataclasses.replace(best, state="archived", score=None)
            other.rewrite(ALICE, RowChange(best.id, memory=archived, dedup_key=""))
            moved.append(best.id)
        return real(conn, rids)  # type: ignore[arg-type]

    store._rows_by_rid = archive_then_read  # type: ignore[assignment, method-assign]
    try:
        hits = store.nearest(ALICE, vec(5), 3, states=ACTIVE, query=query)
    finally:
        other.close()
    assert moved == [best.id]
    assert len(hits) == 3 and best.id not in {h.id for h in hits}
    assert all(h.state == "active" for h in hits)


def test_keyword_scores_of_candidates_follow_the_scope_states_and_query(store: EmbeddedStore) -> None:
    """Candidate ids are scored only while the scope, the states and the query still select their rows."""
    ids = [f"m{i}" for i in range(6)]
    m1 = store.read_one(ALICE, "m1")
    assert m1 is not None
    store.rewrite(ALICE, RowChange("m1", dataclasses.replace(m1, state="archived")))
    m2 = store.read_one(ALICE, "m2")
    assert m2 is not None
    store.rewrite(ALICE, RowChange("m2", dataclasses.replace(m2, categories=("food",))))

    def scored(scope: Scope, states: Sequence[State], query: MemoryQuery) -> set[str]:
        hits = store.keyword_hits(scope, "green tea", 10, states=states, query=query, candidates=ids)
        assert hits is not None
        return {hit.memory_id for hit in hits}

    assert scored(ALICE, ACTIVE, EVERYTHING) == set(ids) - {"m1"}
    assert scored(ALICE, ("active", "archived"), EVERYTHING) == set(ids)
    assert scored(ALICE, ACTIVE, MemoryQuery(category="drinks")) == set(ids) - {"m1", "m2"}
    assert scored(ALICE, (), EVERYTHING) == set()
    assert scored(Scope("other", "alice"), ACTIVE, EVERYTHING) == set()
    assert scored(Scope("cline", "bob"), ACTIVE, EVERYTHING) == set()
