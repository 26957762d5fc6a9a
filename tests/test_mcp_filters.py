"""Filters and event time over MCP (issue 23, items 2): the real tools, flow, embedded store and offline embedder
in this process, through the SDK's in-memory client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer

from tablestore_openmemory_mcp.app.bootstrap import build_components
from tablestore_openmemory_mcp.edge.tools import register_tools
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.settings import Settings

pytestmark = pytest.mark.anyio


class _Identity:
    def __init__(self) -> None:
        self.scope = Scope("cline", "alice")

    def resolve(self, ctx: Any, user_id: str | None = None) -> Scope:
        return self.scope


_SERVICES: list[Any] = []


@pytest.fixture(params=["embedded", "tablestore"])
async def session(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Client, _Identity]]:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("MEMORY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LLM_PROVIDER", "none")
    if request.param == "tablestore":  # the real SDK against the emulator
        from tests.server_process import tablestore_env

        for key, value in tablestore_env(request.getfixturevalue("tablestore_emulator")).items():
            monkeypatch.setenv(key, value)
    settings = Settings(transport="stdio")
    service = build_components(settings).service
    identity = _Identity()
    _SERVICES[:] = [service]

    async def get_service() -> Any:
        return service

    server = MCPServer(name="test")
    register_tools(server, get_service, settings, identity)  # type: ignore[arg-type]
    try:
        async with Client(server) as client:
            yield client, identity
    finally:
        service.close()


async def ok(client: Client, tool: str, /, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    return dict(result.structured_content or {})


async def error(client: Client, tool: str, /, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result
    return str(result.content[0].text)


async def test_tags_and_event_time_narrow_list_and_search(session: tuple[Client, _Identity]) -> None:
    client, identity = session
    await ok(
        client,
        "add_memories",
        text="Decided to use Postgres for apollo",
        infer=False,
        metadata={"project": "apollo", "kind": "decision"},
        event_time="2026-03-02T10:00:00Z",
    )
    await ok(
        client,
        "add_memories",
        text="Decided to use SQLite for hermes",
        infer=False,
        metadata={"project": "hermes", "kind": "decision"},
        event_time="2026-01-15",
    )
    await ok(client, "add_memories", text="Lunch with the apollo team", infer=False, metadata={"project": "apollo"})
    identity.scope = Scope("cline", "bob")  # another user with the same tags sees none of alice's
    await ok(client, "add_memories", text="Bob decided apollo things", infer=False, metadata={"project": "apollo"})
    identity.scope = Scope("cline", "alice")

    def texts(result: dict[str, Any], key: str = "memories") -> list[str]:
        return sorted(m["memory"] for m in result[key])

    listed = await ok(client, "list_memories", metadata={"project": "apollo"})
    assert texts(listed) == ["Decided to use Postgres for apollo", "Lunch with the apollo team"]
    assert listed["total"] == 2
    both = await ok(client, "list_memories", metadata={"project": "apollo", "kind": "decision"})
    assert texts(both) == ["Decided to use Postgres for apollo"]
    either = await ok(client, "list_memories", metadata={"project": "hermes", "kind": "decision"}, match_any=True)
    assert texts(either) == ["Decided to use Postgres for apollo", "Decided to use SQLite for hermes"]
    march = await ok(client, "list_memories", since="2026-03-01", until="2026-04-01")
    assert texts(march) == ["Decided to use Postgres for apollo"]
    assert march["memories"][0]["event_time"].startswith("2026-03-02T10:00:00")
    assert march["memories"][0]["metadata"] == {"project": "apollo", "kind": "decision"}
    recent = await ok(client, "list_memories", since="2026-06-01")  # no event time given: its creation time
    assert texts(recent) == ["Lunch with the apollo team"]
    found = await ok(client, "search_memories", query="which database did we decide on", metadata={"project": "hermes"})
    assert [m["memory"] for m in found["results"]] == ["Decided to use SQLite for hermes"]
    assert (await ok(client, "list_memories", client="cursor"))["memories"] == []

    # an update keeps the tags and the event time
    memory_id = march["memories"][0]["id"]
    await ok(client, "update_memory", memory_id=memory_id, text="Decided to use Postgres 17 for apollo")
    again = await ok(client, "list_memories", since="2026-03-01", until="2026-04-01", metadata={"kind": "decision"})
    assert texts(again) == ["Decided to use Postgres 17 for apollo"]


async def test_a_filtered_search_returns_limit_matches_when_that_many_exist(session: tuple[Client, _Identity]) -> None:
    client, _ = session
    for i in range(40):  # the tagged ones are the least similar: a top-k before the filter would miss them
        tag = "rare" if i % 4 == 0 else "common"
        text = (
            f"I water the garden plants in the evening, note {i}"
            if tag == "rare"
            else f"I water the garden plants every morning ({i})"
        )
        await ok(client, "add_memories", text=text, infer=False, metadata={"tag": tag})
    found = await ok(
        client, "search_memories", query="I water the garden plants every morning", limit=10, metadata={"tag": "rare"}
    )
    assert len(found["results"]) == 10
    assert all(m["metadata"] == {"tag": "rare"} for m in found["results"])
    listed = await ok(client, "list_memories", limit=5, metadata={"tag": "rare"})
    assert listed["count"] == 5 and listed["total"] == 10 and listed["next_cursor"]


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"since": "last week"}, "since"),
        ({"until": "2026-13-45"}, "until"),
        ({"since": "2026-05-01", "until": "2026-04-01"}, "since must be before until"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"a.b": "v"}}, "metadata keys"),
        ({"metadata": {"k": "v" * 300}}, "metadata.k"),
        ({"client": "bad/name"}, "client"),
    ],
)
async def test_bad_filters_are_tool_errors_naming_the_field(
    session: tuple[Client, _Identity], arguments: dict[str, Any], named: str
) -> None:
    client, _ = session
    assert named in await error(client, "list_memories", **arguments)
    assert named in await error(client, "search_memories", query="anything", **arguments)


async def test_bad_add_fields_are_tool_errors(session: tuple[Client, _Identity]) -> None:
    client, _ = session
    assert "event_time" in await error(client, "add_memories", text="x", infer=False, event_time="yesterday")
    assert "metadata" in await error(client, "add_memories", text="x", infer=False, metadata={"k": "v" * 300})
    assert (await ok(client, "list_memories"))["total"] == 0  # nothing stored


async def test_tags_and_event_time_survive_export_and_import(session: tuple[Client, _Identity]) -> None:
    from tablestore_openmemory_mcp.backup.exporter import export_zip
    from tablestore_openmemory_mcp.backup.importer import import_file

    client, _ = session
    service = _SERVICES[0]
    added = await ok(
        client,
        "add_memories",
        text="Shipped apollo v1",
        infer=False,
        metadata={"project": "apollo"},
        event_time="2026-02-01T08:00:00Z",
    )
    path = export_zip(service.repository, "alice", embedding_model=str(service.flow.embedder.name))
    await ok(client, "delete_memories", memory_ids=[added["events"][0]["id"]])
    assert (await ok(client, "list_memories", metadata={"project": "apollo"}))["total"] == 0
    import_file(service.repository, service.flow.embedder, path, "alice", "overwrite")
    back = await ok(client, "list_memories", metadata={"project": "apollo"}, until="2026-02-02")
    assert [m["memory"] for m in back["memories"]] == ["Shipped apollo v1"]
    assert back["memories"][0]["event_time"].startswith("2026-02-01T08:00:00")


async def test_rest_takes_the_same_tags(session: tuple[Client, _Identity]) -> None:
    from starlette.requests import Request

    from tablestore_openmemory_mcp.errors import UserInputError
    from tablestore_openmemory_mcp.memory.admin import BrowseRequest
    from tablestore_openmemory_mcp.rest.routes import _metadata

    client, _ = session
    service = _SERVICES[0]
    await ok(client, "add_memories", text="Apollo launch plan", infer=False, metadata={"project": "apollo"})
    await ok(client, "add_memories", text="Hermes launch plan", infer=False, metadata={"project": "hermes"})
    page = await service.browse(BrowseRequest(user_id="alice", metadata={"project": "apollo"}))
    assert [m.text for m in page.items] == ["Apollo launch plan"] and page.total == 1
    either = await service.browse(
        BrowseRequest(user_id="alice", metadata={"project": "apollo", "x": 1}, match_any=True, query="launch plan")
    )
    assert [m.text for m in either.items] == ["Apollo launch plan"]

    def request(query: bytes) -> Request:
        return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": query})

    assert _metadata(request(b'metadata={"project":"apollo"}'), "metadata") == {"project": "apollo"}
    for bad in (b"metadata=apollo", b"metadata=[1]", b'metadata={"a":{"b":1}}'):
        with pytest.raises(UserInputError, match="metadata"):
            _metadata(request(bad), "metadata")


async def test_as_of_answers_from_the_history(session: tuple[Client, _Identity]) -> None:
    """Issue 23 item 3: lists and searches as the memories were, updated and deleted ones included."""
    from datetime import UTC, datetime

    client, _ = session
    home = (await ok(client, "add_memories", text="I live in Beijing", infer=False))["events"][0]["id"]
    before_move = datetime.now(UTC).isoformat()
    await ok(client, "update_memory", memory_id=home, text="I live in Hangzhou")
    cat = (await ok(client, "add_memories", text="I have a cat called Mochi", infer=False))["events"][0]["id"]
    with_cat = datetime.now(UTC).isoformat()
    await ok(client, "delete_memories", memory_ids=[cat])

    def texts(result: dict[str, Any]) -> list[str]:
        return [m["memory"] for m in result["memories"]]

    assert texts(await ok(client, "list_memories", as_of=before_move)) == ["I live in Beijing"]
    assert texts(await ok(client, "list_memories", as_of=with_cat)) == [
        "I live in Hangzhou",
        "I have a cat called Mochi",
    ]
    assert texts(await ok(client, "list_memories")) == ["I live in Hangzhou"]
    paged = await ok(client, "list_memories", as_of=with_cat, limit=1)
    assert texts(paged) == ["I live in Hangzhou"] and paged["total"] == 2
    rest = await ok(client, "list_memories", as_of=with_cat, limit=1, cursor=paged["next_cursor"])
    assert texts(rest) == ["I have a cat called Mochi"] and rest["next_cursor"] is None
    then = await ok(client, "search_memories", query="which city do I live in", as_of=before_move)
    assert [m["memory"] for m in then["results"]] == ["I live in Beijing"]
    cats = await ok(client, "search_memories", query="my cat Mochi", as_of=with_cat)
    assert [m["memory"] for m in cats["results"]][:1] == ["I have a cat called Mochi"]
    assert "as_of" in await error(client, "list_memories", as_of="2999-01-01")
    assert "as_of" in await error(client, "search_memories", query="x", as_of="yesterday")
