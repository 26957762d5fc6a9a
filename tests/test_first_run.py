"""What a new user meets first: progress during an inferred add, quiet logs, the browser URL in the startup
line, MCP Inspector's URL forms (paths ending in /mcp or /sse), and honest capabilities."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, METHOD_NOT_FOUND

from tests.fakes.memory_llm import classic_memory_llm
from tests.fakes.openai_server import FakeOpenAI
from tests.server_process import HttpServer, llm_env, server_env, structured

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    tmp: Path = tmp_path_factory.mktemp("first-run")
    fake = FakeOpenAI().start()
    fake.chat_handler = classic_memory_llm  # extraction and decision: every add takes the full path
    try:
        with HttpServer(server_env(tmp, **llm_env(fake)), tmp) as running:
            yield running
    finally:
        fake.stop()


async def test_inferred_add_reports_progress_to_a_client_that_asks(server: HttpServer) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with server.http("progress", "alice") as client:
        result = structured(
            await client.call_tool(
                "add_memories", {"text": "I grow tomatoes on my balcony"}, progress_callback=on_progress
            )
        )
        assert result["inferred"]
        structured(await client.call_tool("add_memories", {"text": "no progress asked", "infer": True}))
    async with server.sse("progress", "alice") as client:  # the same over SSE
        sail = {"text": "I sail on weekends"}
        structured(await client.call_tool("add_memories", sail, progress_callback=on_progress))
    assert [step for step, _, _ in seen] == [1, 2, 3, 4, 1, 2, 3, 4]
    seen[4:] = []
    assert {total for _, total, _ in seen} == {4}
    messages = [message or "" for _, _, message in seen]
    assert messages[0] == "extracting facts" and messages[-1] == "done"
    assert messages[1].startswith("comparing") and messages[2].startswith("writing")


async def test_log_has_the_browser_url_and_no_line_per_llm_request(server: HttpServer) -> None:
    async with server.http("quiet", "alice") as client:
        for index in range(3):
            structured(await client.call_tool("add_memories", {"text": f"fact number {index} about me"}))
    log = server.log()
    assert f"browser=http://127.0.0.1:{server.port}/" in log
    assert "HTTP Request" not in log  # httpx/httpx2 request lines only at LOG_LEVEL=debug


async def test_inspector_url_forms_reach_the_same_memories(server: HttpServer) -> None:
    async with server.http("inspector", "zoe") as client:
        structured(await client.call_tool("add_memories", {"text": "zoe keeps bees", "infer": False}))
    async with Client(f"{server.url}/mcp/inspector/zoe/mcp") as client:
        listed = structured(await client.call_tool("list_memories", {}))
        assert [m["memory"] for m in listed["memories"]] == ["zoe keeps bees"]
    async with Client(sse_client(f"{server.url}/mcp/inspector/zoe/sse")) as client:
        listed = structured(await client.call_tool("list_memories", {}))
        assert [m["memory"] for m in listed["memories"]] == ["zoe keeps bees"]
    # without a token there is no user for /mcp: a 400 that names the URLs to use
    response = httpx.post(f"{server.url}/mcp", json={}, timeout=10.0)
    assert response.status_code == 400 and "/mcp/<client_name>/http/<user_id>" in response.json()["message"]


async def test_capabilities_declare_only_tools_and_unknown_tools_are_jsonrpc_errors(server: HttpServer) -> None:
    async with server.http("caps", "alice") as client:
        capabilities = client.server_capabilities
        assert capabilities.prompts is None and capabilities.resources is None
        assert capabilities.tools is not None and not capabilities.tools.list_changed
        with pytest.raises(MCPError) as caught:
            await client.list_prompts()
        assert caught.value.code == METHOD_NOT_FOUND
        for name in ("no_such_tool", "delete_all_memories"):  # the second is hidden by TOOL_BLACK_LIST's default
            with pytest.raises(MCPError) as caught:
                await client.call_tool(name, {})
            assert caught.value.code == INVALID_PARAMS and name in caught.value.error.message


async def test_rest_export_leaves_a_progress_line_in_the_log(server: HttpServer) -> None:
    async with server.http("export", "yara") as client:
        for index in range(3):
            structured(await client.call_tool("add_memories", {"text": f"yara fact {index}", "infer": False}))
    response = httpx.post(f"{server.url}/api/v1/backup/export", json={"user_id": "yara"}, timeout=60.0)
    assert response.status_code == 200, response.text
    assert "export for yara: finished, 3" in server.log()
