"""The default relevance cutoff (issue 23): unrelated memories are not matches, over MCP's flow and REST's search.

The real flow, embedded store and offline embedder in this process (no doubles); the page's side is in
tests/test_web_page.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tablestore_openmemory_mcp.app.bootstrap import build_components
from tablestore_openmemory_mcp.memory.admin import BrowseRequest
from tablestore_openmemory_mcp.memory.scoring import DEFAULT_MIN_SCORE
from tablestore_openmemory_mcp.memory.service import MemoryService
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.settings import Settings

pytestmark = pytest.mark.anyio
ALICE = Scope("cli", "alice")
MEMORIES = ("我的猫叫年糕", "I use vim for Go code", "I like spicy food")


def service_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> MemoryService:
    for key in ("OPENAI_API_KEY", "TABLESTORE_SEARCH_MEMORY_MIN_SCORE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"MEMORY_DATA_DIR": str(tmp_path), "LLM_PROVIDER": "none", **env}.items():
        monkeypatch.setenv(key, value)
    return build_components(Settings()).service


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryService]:
    svc = service_with(tmp_path, monkeypatch)
    yield svc
    svc.close()


async def add_all(service: MemoryService) -> None:
    for text in MEMORIES:
        await service.add(ALICE, text, infer=False)


async def test_an_unrelated_query_finds_nothing_and_says_so(service: MemoryService) -> None:
    await add_all(service)
    result = await service.search(ALICE, "where do I live", 10)
    assert result.results == []
    assert result.text() == "No memory matches 'where do I live'."
    hits = (await service.search(ALICE, "vim", 10)).results
    assert [h.memory for h in hits] == ["I use vim for Go code"]
    assert all(h.score >= DEFAULT_MIN_SCORE for h in hits)


async def test_rest_search_shows_matches_and_weaker_ones_on_request(service: MemoryService) -> None:
    await add_all(service)
    matches = await service.browse(BrowseRequest(user_id="alice", query="vim", sort="score"))
    assert [m.text for m in matches.items] == ["I use vim for Go code"] and matches.total == 1
    weaker = await service.browse(BrowseRequest(user_id="alice", query="vim", sort="score", min_score=0.0))
    assert weaker.total == 3 and weaker.items[0].text == "I use vim for Go code"


async def test_the_variable_still_sets_the_cutoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = service_with(tmp_path, monkeypatch, TABLESTORE_SEARCH_MEMORY_MIN_SCORE="0")
    try:
        await add_all(svc)
        assert len((await svc.search(ALICE, "where do I live", 10)).results) == 3
    finally:
        svc.close()
