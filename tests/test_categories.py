"""Categories: assigned in the background by the configured LLM, in the memory's language, never on the
write path (an add answers before the categorization call happens, and a failing LLM costs nothing).

The server is the real app in process (tests/inprocess.py) with the scripted LLM at the client boundary."""

from __future__ import annotations

from typing import Any

import pytest

from tablestore_openmemory_mcp.models.llm import LLMError
from tests.fakes.inprocess_llm import InProcessLLM
from tests.inprocess import InProcessServer, serve_in_process
from tests.server_process import structured
from tests.waiting import until

pytestmark = pytest.mark.anyio


def categorizing_llm(body: dict[str, Any]) -> str:
    system = body["messages"][0]["content"]
    assert "topic categories" in system, "only the categorizer calls the LLM in this test (infer=false adds)"
    memory = body["messages"][-1]["content"]
    return '{"categories": ["饮品", "偏好"]}' if "茶" in memory else '{"categories": ["Work", "work", "programming"]}'


async def wait_for_categories(server: InProcessServer, memory_id: str) -> list[str]:
    async def categories() -> list[str]:
        async with server.rest(None) as rest:
            detail = (await rest.get(f"/memories/{memory_id}", params={"user_id": "alice"})).json()
        return list(detail["categories"])

    return await until(categories, f"categories for memory {memory_id}")


async def test_categories_in_the_memory_language_filterable_over_rest(tmp_path: Any) -> None:
    llm = InProcessLLM(categorizing_llm)
    async with serve_in_process(tmp_path, llm=llm, MEMORY_CATEGORIES="true", LLM_MAX_RETRIES=0) as server:
        async with server.http("cline", "alice") as client:
            tea = structured(await client.call_tool("add_memories", {"text": "我喜欢喝绿茶", "infer": False}))
            go = structured(await client.call_tool("add_memories", {"text": "Writes Go at work", "infer": False}))
        tea_id, go_id = tea["events"][0]["id"], go["events"][0]["id"]
        assert await wait_for_categories(server, tea_id) == ["饮品", "偏好"]
        as_written = ["Work", "work", "programming"]
        assert await wait_for_categories(server, go_id) == as_written, "kept as the model wrote them"
        async with server.rest(None) as rest:
            filtered = (await rest.get("/memories", params={"user_id": "alice", "category": "饮品"})).json()
        assert [m["id"] for m in filtered["items"]] == [tea_id]


async def test_a_failing_llm_never_blocks_or_fails_writes(tmp_path: Any) -> None:
    llm = InProcessLLM(categorizing_llm)
    llm.script_chat(*[LLMError("the LLM answered HTTP 500")] * 5)  # what the client raises for a 500
    async with (
        serve_in_process(tmp_path, llm=llm, MEMORY_CATEGORIES="true", LLM_MAX_RETRIES=0) as server,
        server.http("cline", "alice") as client,
    ):
        added = structured(await client.call_tool("add_memories", {"text": "Likes hiking", "infer": False}))
        assert added["events"][0]["event"] == "ADD"
        listed = structured(await client.call_tool("list_memories", {}))
        assert [m["memory"] for m in listed["memories"]] == ["Likes hiking"]

        async def asked() -> int:
            return llm.counts["chat"]

        await until(asked, "the categorizer's (failing) call")  # it ran, and the write never waited for it
