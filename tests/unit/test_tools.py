"""The MCP tools in-process, through the SDK's in-memory client: arguments, results, error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer

from tablestore_openmemory_mcp.edge.tools import register_tools
from tablestore_openmemory_mcp.errors import StoreError
from tablestore_openmemory_mcp.memory.flow import ClassicFlow
from tablestore_openmemory_mcp.memory.service import MemoryService
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.settings import Settings
from tests.fakes.memory_repository import InMemoryRepository, WordEmbedder

pytestmark = pytest.mark.anyio


class _Identity:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def resolve(self, ctx: Any, user_id: str | None = None) -> Scope:
        return self.scope


def build(repo: InMemoryRepository, **settings: Any) -> MCPServer:
    config = Settings(transport="stdio", **settings)
    service = MemoryService(ClassicFlow(repo, WordEmbedder(), None), repo)

    async def get_service() -> MemoryService:
        return service

    server = MCPServer(name="test")
    register_tools(server, get_service, config, _Identity(Scope("cline", "alice")))  # type: ignore[arg-type]
    return server


@pytest.fixture
async def client() -> AsyncIterator[tuple[Client, InMemoryRepository]]:
    repo = InMemoryRepository()
    async with Client(build(repo)) as connected:
        yield connected, repo


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    return await client.call_tool(tool, arguments)


async def test_tools_listed_with_annotations(client: tuple[Client, InMemoryRepository]) -> None:
    tools = {tool.name: tool for tool in (await client[0].list_tools()).tools}
    assert set(tools) == {
        "add_memories",
        "search_memories",
        "list_memories",
        "delete_memories",
        "update_memory",
        "memory_history",
    }, "delete_all_memories is hidden by default"
    assert tools["search_memories"].annotations and tools["search_memories"].annotations.read_only_hint
    assert "user_id" not in tools["add_memories"].input_schema["properties"]


async def test_add_search_list_update_history_delete(client: tuple[Client, InMemoryRepository]) -> None:
    mcp = client[0]
    added = await call(mcp, "add_memories", text="Likes green tea", infer=False)
    memory_id = added.structured_content["events"][0]["id"]
    assert "Likes green tea" in added.content[0].text
    hits = (await call(mcp, "search_memories", query="green tea")).structured_content["results"]
    assert [h["id"] for h in hits] == [memory_id] and hits[0]["score"] is not None
    listed = (await call(mcp, "list_memories")).structured_content
    assert listed["total"] == 1 and "score" not in listed["memories"][0]
    await call(mcp, "update_memory", memory_id=memory_id, text="Likes oolong tea")
    history = (await call(mcp, "memory_history", memory_id=memory_id)).structured_content["history"]
    assert [h["event"] for h in history] == ["ADD", "UPDATE"]
    deleted = (await call(mcp, "delete_memories", memory_ids=[memory_id])).structured_content
    assert deleted == {"deleted": [memory_id], "not_found": []}


async def test_unknown_id_is_reported_not_failed(client: tuple[Client, InMemoryRepository]) -> None:
    unknown = "00000000-0000-4000-8000-000000000001"
    result = await call(client[0], "delete_memories", memory_ids=[unknown])
    assert not result.is_error and result.structured_content == {"deleted": [], "not_found": [unknown]}


async def test_error_categories_map_to_readable_tool_errors(client: tuple[Client, InMemoryRepository]) -> None:
    mcp, repo = client
    bad = await call(mcp, "update_memory", memory_id="../etc/passwd", text="x")
    assert bad.is_error and "is not a memory id" in bad.content[0].text
    missing = await call(mcp, "update_memory", memory_id="00000000-0000-4000-8000-000000000001", text="x")
    assert missing.is_error and "No memory with id" in missing.content[0].text

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("the memory store at http://ots is unreachable; check TABLESTORE_ENDPOINT")

    repo.find_exact = broken  # type: ignore[method-assign]
    down = await call(mcp, "add_memories", text="x", infer=False)
    assert (
        down.is_error
        and "TABLESTORE_ENDPOINT" in down.content[0].text
        and "Nothing was changed" in down.content[0].text
    )

    def bug(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("secret internals")

    repo.list_page = bug  # type: ignore[method-assign]
    internal = await call(mcp, "list_memories")
    assert internal.is_error and "internal error" in internal.content[0].text
    assert "secret" not in internal.content[0].text


async def test_list_limit_and_cursor_are_checked(client: tuple[Client, InMemoryRepository]) -> None:
    mcp = client[0]
    for i in range(3):
        await call(mcp, "add_memories", text=f"fact {i}", infer=False)
    first = (await call(mcp, "list_memories", limit=2)).structured_content
    assert first["count"] == 2 and first["total"] == 3 and first["next_cursor"]
    rest = (await call(mcp, "list_memories", limit=2, cursor=first["next_cursor"])).structured_content
    assert [m["memory"] for m in rest["memories"]] == ["fact 2"] and rest["next_cursor"] is None
    assert (await call(mcp, "list_memories", limit=0)).is_error
    assert (await call(mcp, "list_memories", cursor="bad cursor with spaces")).is_error
