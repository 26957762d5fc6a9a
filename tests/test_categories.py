"""Categories: assigned in the background by the configured LLM, in the memory's language, never on the
write path (an add answers before the categorization call happens, and a failing LLM costs nothing)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import Fault
from tests.server_process import HttpServer, llm_env, server_env, structured

pytestmark = pytest.mark.anyio


def categorizing_llm(body: dict[str, Any]) -> str:
    system = body["messages"][0]["content"]
    assert "topic categories" in system, "only the categorizer calls the LLM in this test (infer=false adds)"
    memory = body["messages"][-1]["content"]
    return '{"categories": ["饮品", "偏好"]}' if "茶" in memory else '{"categories": ["Work", "work", "programming"]}'


def wait_for_categories(server: HttpServer, memory_id: str) -> list[str]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        detail = httpx.get(f"{server.url}/api/v1/memories/{memory_id}", params={"user_id": "alice"}, timeout=30).json()
        if detail["categories"]:
            return list(detail["categories"])
        time.sleep(0.1)
    raise AssertionError("no categories assigned")


async def test_categories_in_the_memory_language_filterable_over_rest(tmp_path: Any, fake_openai: Any) -> None:
    fake_openai.chat_handler = categorizing_llm
    env = server_env(tmp_path, **llm_env(fake_openai, MEMORY_CATEGORIES="true", LLM_MAX_RETRIES=0))
    with HttpServer(env, tmp_path, transport="streamable-http") as server:
        async with server.http("cline", "alice") as client:
            tea = structured(await client.call_tool("add_memories", {"text": "我喜欢喝绿茶", "infer": False}))
            go = structured(await client.call_tool("add_memories", {"text": "Writes Go at work", "infer": False}))
        tea_id, go_id = tea["events"][0]["id"], go["events"][0]["id"]
        assert wait_for_categories(server, tea_id) == ["饮品", "偏好"]
        assert wait_for_categories(server, go_id) == ["Work", "work", "programming"], "kept as the model wrote them"
        filtered = httpx.get(
            f"{server.url}/api/v1/memories", params={"user_id": "alice", "category": "饮品"}, timeout=30
        ).json()
        assert [m["id"] for m in filtered["items"]] == [tea_id]


async def test_a_failing_llm_never_blocks_or_fails_writes(tmp_path: Any, fake_openai: Any) -> None:
    fake_openai.script_chat(*[Fault.http(500)] * 5)
    env = server_env(tmp_path, **llm_env(fake_openai, MEMORY_CATEGORIES="true", LLM_MAX_RETRIES=0))
    with HttpServer(env, tmp_path, transport="streamable-http") as server:
        async with server.http("cline", "alice") as client:
            added = structured(await client.call_tool("add_memories", {"text": "Likes hiking", "infer": False}))
            assert added["events"][0]["event"] == "ADD"
            listed = structured(await client.call_tool("list_memories", {}))
            assert [m["memory"] for m in listed["memories"]] == ["Likes hiking"]
