"""The keyword side of a search (issue 23, item 5), on both stores: a question's function words are no match,
and a keyword match deep in the vector order (past the 60 nearest) still reaches the top.

Real repository and stores (the embedded SQLite store; the Tablestore store through the real SDK against the
emulator) with chosen vectors, so the geometry is exact: cosine ``c`` to the query is ``c * e1 + sqrt(1 - c^2) *
e2``. Scores use the offline embedder's calibration (``embedder_name``), the default search's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tablestore_openmemory_mcp.memory import scoring
from tablestore_openmemory_mcp.memory.ports import NewMemory, Origin
from tablestore_openmemory_mcp.repository import StoreRepository
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
from tablestore_openmemory_mcp.stores.history_sqlite import SqliteHistoryLog
from tests.fakes.tablestore_fixture import tablestore_emulator  # noqa: F401  (fixture)
from tests.tablestore_emulator import TablestoreEmulator

DIMS = 8
E5 = "offline:multilingual-e5-small-q4"
ALICE = Scope("cli", "alice")
QUERY = [1.0] + [0.0] * (DIMS - 1)


def at(cosine: float, axis: int = 1) -> list[float]:
    """A unit vector with ``cosine`` to :data:`QUERY` (the rest on ``axis``)."""
    vector = [0.0] * DIMS
    vector[0], vector[axis] = cosine, math.sqrt(1.0 - cosine * cosine)
    return vector


class Searchable:
    """A repository and how to make its latest writes searchable (the emulator's index sees writes late)."""

    def __init__(self, repository: StoreRepository, settle: Callable[[], None]) -> None:
        self.repository, self.settle = repository, settle

    def add(self, memories: list[tuple[str, list[float]]]) -> dict[str, str]:
        added = self.repository.add(ALICE, [NewMemory(text=t, vector=v) for t, v in memories], Origin())
        self.settle()
        return {a.memory.text: a.memory.id for a in added}


def _searchable_at_once() -> None:
    """The embedded store: a write is searchable when it returns."""


@pytest.fixture(params=["embedded", "tablestore"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Searchable]:
    settle: Callable[[], None] = _searchable_at_once
    if request.param == "embedded":
        store = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
        repository = StoreRepository(store, SqliteHistoryLog(tmp_path), embedder_name=E5)
    else:
        from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore
        from tablestore_openmemory_mcp.stores.tablestore.history import TablestoreHistoryLog

        emulator: TablestoreEmulator = request.getfixturevalue("tablestore_emulator")
        ts = TablestoreStore(
            collection_name="keywords",
            **emulator.credentials(),
            embedding_model_dims=DIMS,
        )
        history = TablestoreHistoryLog(ts.client, "keywords_history", endpoint=ts.endpoint)
        repository = StoreRepository(ts, history, embedder_name=E5)
        settle = emulator.flush_index
    try:
        yield Searchable(repository, settle)
    finally:
        repository.close()


def test_a_questions_function_words_are_no_keyword_match(repo: Searchable) -> None:
    """A question's "what did ... do with the ... when it was" is in half of any chat; counting it as a match
    ranked a memory sharing only those words above the answer (and over the cutoff)."""
    answer = "Melanie painted pictures indoors with the kids"
    chatter = "What did you do with it? Was it fun when it was sunny?"
    repo.add([(answer, at(0.815)), (chatter, at(0.82, 2)), *((f"filler note {i}", at(0.5, 3)) for i in range(6))])
    query = "What did Melanie do with the kids when it was raining?"
    hits = repo.repository.search(ALICE, query, QUERY, 5, 0.0)
    assert [h.text for h in hits[:2]] == [answer, chatter]
    e5 = scoring.calibration_for(E5, query)
    assert hits[1].score == pytest.approx(e5.relevance(0.82))  # no keyword part at all
    assert hits[1].score < scoring.DEFAULT_MIN_SCORE
    assert [h.text for h in repo.repository.search(ALICE, query, QUERY, 5, None)] == [answer]  # the default cutoff


def test_a_keyword_match_past_the_60_nearest_reaches_the_top(repo: Searchable) -> None:
    """The vector search fetches :data:`scoring.SEARCH_POOL` candidates, not 60: the one memory naming the
    question's thing is 121st by vector and first by score."""
    crowd = [(f"a walk in the park, day {i}", at(0.86 - i * 1e-4, 2)) for i in range(120)]
    target = "that novel about tigers on a lifeboat was wonderful"
    ids = repo.add([*crowd, (target, at(0.83))])
    hits = repo.repository.search(ALICE, "Which book about tigers did I like?", QUERY, 5, None)
    assert len(hits) == 5 and hits[0].id == ids[target]
    assert [h.text for h in hits[1:]] == [text for text, _ in crowd[:4]]
    assert len(crowd) + 1 <= scoring.SEARCH_POOL  # the target, 121st by vector, is a candidate
