"""Categories (categories.py): the model's answer cleaned to at most three short names, and the background
categorizer on the wired repository with the scripted in-process LLM (tests/unit/wiring.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tablestore_openmemory_mcp.app.bootstrap import Components
from tablestore_openmemory_mcp.memory.categories import MAX_CATEGORY_CHARS, Categorizer, clean_categories
from tablestore_openmemory_mcp.memory.ports import Origin
from tablestore_openmemory_mcp.models.llm import LLMError
from tests.fakes.inprocess_llm import InProcessLLM
from tests.unit.wiring import add_texts, built, fresh_scope


@pytest.mark.parametrize(
    "raw,expected",
    [
        ({"categories": ["Food", "  travel   plans ", "Food"]}, ("Food", "travel plans")),
        ({"categories": "work"}, ("work",)),
        (["a", "b", "c", "d"], ("a", "b", "c")),
        ({"categories": [1, None, "", "   ", "ok"]}, ("ok",)),
        ({"categories": ["x" * 100]}, ("x" * MAX_CATEGORY_CHARS,)),
        ({"other": ["x"]}, ()),
        ("a bare name", ("a bare name",)),
        (42, ()),
    ],
)
def test_clean_categories(raw: Any, expected: tuple[str, ...]) -> None:
    assert clean_categories(raw) == expected


def categories_by_language(body: dict[str, Any]) -> str:
    memory = body["messages"][-1]["content"]
    return json.dumps({"categories": ["饮品"] if "茶" in memory else ["work"]}, ensure_ascii=False)


@pytest.fixture(scope="module")
def llm() -> InProcessLLM:
    return InProcessLLM(categories_by_language)


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory, llm: InProcessLLM) -> Iterator[Components]:
    with built(tmp_path_factory.mktemp("categories"), llm=llm, MEMORY_CATEGORIES="true") as components:
        yield components


@pytest.fixture
def categorizer(wired: Components) -> Categorizer:
    assert wired.service.categorizer is not None, "MEMORY_CATEGORIES=true with an LLM wires a categorizer"
    return wired.service.categorizer  # type: ignore[no-any-return]


def test_categorize_stores_the_models_categories_and_offers_existing_ones(
    wired: Components, categorizer: Categorizer, llm: InProcessLLM
) -> None:
    scope = fresh_scope()
    tea, work = add_texts(wired, scope, "我喜欢喝绿茶", "Writes Go at work")
    assert categorizer.categorize(scope, tea.id) == ("饮品",)
    assert wired.service.repository.get(scope, tea.id).categories == ("饮品",)
    assert categorizer.categorize(scope, work.id) == ("work",)
    prompt = llm.requests[-1][1]["messages"][0]["content"]
    assert "饮品" in prompt, "the user's existing categories are offered for reuse"
    done = categorizer.done
    assert categorizer.categorize(scope, work.id) == ("work",)
    assert categorizer.done == done, "unchanged categories are not written again"


def test_deleted_unknown_and_failed_memories_get_no_categories(
    wired: Components, categorizer: Categorizer, llm: InProcessLLM
) -> None:
    scope = fresh_scope()
    gone, kept = add_texts(wired, scope, "Old job", "New job")
    wired.service.repository.delete(scope, [gone.id], Origin())
    calls = llm.counts["chat"]
    assert categorizer.categorize(scope, gone.id) is None
    assert categorizer.categorize(scope, "00000000-0000-4000-8000-000000000000") is None
    assert categorizer.categorize(fresh_scope(), kept.id) is None, "another user's memory is not found"
    assert llm.counts["chat"] == calls, "no LLM call for what cannot be categorized"
    llm.script_chat(LLMError("the LLM is down"))
    assert categorizer.categorize(scope, kept.id) is None
    assert wired.service.repository.get(scope, kept.id).categories == ()


def test_submitted_memories_are_categorized_in_the_background(wired: Components, categorizer: Categorizer) -> None:
    scope = fresh_scope()
    memories = add_texts(wired, scope, "Drinks 茶 daily", "Reviews code at work")
    categorizer.submit(scope, [m.id for m in memories])
    categorizer.join()
    stored = wired.service.repository.get_many(scope, [m.id for m in memories])
    assert [stored[m.id].categories for m in memories] == [("饮品",), ("work",)]
