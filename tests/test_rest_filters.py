"""REST GET /api/v1/memories takes the MCP read tools' filters with the same names and meaning (issue 23):
``client, category, since, until, metadata, match_any, as_of``, since/until on the event time. In process: the
real REST routes over ASGI and the real tools through the SDK's in-memory client, on one service, both stores."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette

from tablestore_openmemory_mcp.app.bootstrap import build_components
from tablestore_openmemory_mcp.edge.tools import register_tools
from tablestore_openmemory_mcp.rest.openapi import document
from tablestore_openmemory_mcp.rest.routes import LIST_PARAMETERS, RestApi
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.settings import Settings

pytestmark = pytest.mark.anyio


class _Identity:
    def resolve(self, ctx: Any, user_id: str | None = None) -> Scope:
        return Scope("cline", "alice")


@pytest.fixture(params=["embedded", "tablestore"])
async def both(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, Client]]:
    """The REST API (user alice by user_id) and alice's MCP session in app "cline", on one service."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("MEMORY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LLM_PROVIDER", "none")
    if request.param == "tablestore":  # the real SDK against the emulator
        from tests.server_process import tablestore_env

        for key, value in tablestore_env(request.getfixturevalue("tablestore_emulator")).items():
            monkeypatch.setenv(key, value)
    settings = Settings(transport="stdio")
    service = build_components(settings).service

    async def get_service() -> Any:
        return service

    server = MCPServer(name="test")
    register_tools(server, get_service, settings, _Identity())  # type: ignore[arg-type]
    app = Starlette(routes=RestApi(get_service, settings).routes())
    try:
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t/api/v1") as rest,
            Client(server) as mcp,
        ):
            yield rest, mcp
    finally:
        service.close()


async def get(rest: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await rest.get("/memories", params={"user_id": "alice", "size": 200, **params})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def bad(rest: httpx.AsyncClient, **params: Any) -> str:
    response = await rest.get("/memories", params={"user_id": "alice", **params})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "bad_request"
    return str(body["message"])


async def tool(mcp: Client, name: str, /, **arguments: Any) -> dict[str, Any]:
    result = await mcp.call_tool(name, arguments)
    assert not result.is_error, result.content[0].text
    return dict(result.structured_content or {})


def texts(items: list[dict[str, Any]]) -> list[str]:
    return sorted(m["memory"] for m in items)


async def create(rest: httpx.AsyncClient, text: str, **fields: Any) -> str:
    body = {"user_id": "alice", "client": "cline", "text": text, **fields}
    response = await rest.post("/memories", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["events"][0]["id"])


async def test_rest_and_mcp_answer_the_same_filters_alike(both: tuple[httpx.AsyncClient, Client]) -> None:
    rest, mcp = both
    await create(
        rest,
        "Decided to use Postgres for apollo",
        metadata={"project": "apollo", "kind": "decision"},
        event_time="2026-03-02T10:00:00Z",
    )
    await create(
        rest,
        "Decided to use SQLite for hermes",
        metadata={"project": "hermes", "kind": "decision"},
        event_time="2026-01-15",
    )
    await tool(mcp, "add_memories", text="Lunch with the apollo team", infer=False, metadata={"project": "apollo"})
    other = await rest.post(
        "/memories", json={"user_id": "bob", "client": "cline", "text": "Bob decided apollo things"}
    )
    assert other.status_code == 201  # another user with the same words and no tags: never in alice's answers

    listed = await get(rest, since="2026-03-01", until="2026-04-01")
    assert texts(listed["items"]) == ["Decided to use Postgres for apollo"]  # the event time, not the creation time
    assert listed["items"][0]["event_time"].startswith("2026-03-02T10:00:00")
    assert listed["items"][0]["metadata"] == {"project": "apollo", "kind": "decision"}
    assert texts((await get(rest, until="2026-02-01"))["items"]) == ["Decided to use SQLite for hermes"]

    cases: list[dict[str, Any]] = [
        {"since": "2026-03-01", "until": "2026-04-01"},
        {"since": "2026-06-01"},  # no event time given: its creation time (today)
        {"until": "2026-03-02T10:00:00Z"},  # exclusive, as over MCP
        {"metadata": {"project": "apollo"}},
        {"metadata": {"project": "hermes", "kind": "decision"}},
        {"metadata": {"project": "hermes", "x": "y"}, "match_any": True},
        {"client": "cline", "since": "2026-01-01", "until": "2026-03-01"},
        {"client": "cursor"},
        {"category": "nothing-here"},
    ]
    for case in cases:
        query = {k: json.dumps(v) if isinstance(v, dict) else "true" if v is True else v for k, v in case.items()}
        over_rest = texts((await get(rest, **query))["items"])
        over_mcp = texts((await tool(mcp, "list_memories", **case))["memories"])
        assert over_rest == over_mcp, case
        found_rest = [m["memory"] for m in (await get(rest, q="which database did we decide on", **query))["items"]]
        found_mcp = [
            m["memory"]
            for m in (await tool(mcp, "search_memories", query="which database did we decide on", **case))["results"]
        ]
        assert sorted(found_rest) == sorted(found_mcp), case
    assert texts((await get(rest, since="2026-06-01"))["items"]) == ["Lunch with the apollo team"]
    assert [
        m["memory"] for m in (await get(rest, q="which database did we decide on", since="2026-03-01"))["items"]
    ] == ["Decided to use Postgres for apollo"]


async def test_as_of_over_rest_answers_from_the_history(both: tuple[httpx.AsyncClient, Client]) -> None:
    rest, _ = both
    home = await create(rest, "I live in Beijing")
    before_move = datetime.now(UTC).isoformat()
    edited = await rest.put(f"/memories/{home}", json={"user_id": "alice", "text": "I live in Hangzhou"})
    assert edited.status_code == 200, edited.text
    cat = await create(rest, "I have a cat called Mochi")
    with_cat = datetime.now(UTC).isoformat()
    gone = await rest.request("DELETE", "/memories", json={"user_id": "alice", "memory_ids": [cat]})
    assert gone.status_code == 200, gone.text

    assert texts((await get(rest, as_of=before_move))["items"]) == ["I live in Beijing"]
    then = await get(rest, as_of=with_cat, sort="created_at")
    assert [m["memory"] for m in then["items"]] == ["I live in Hangzhou", "I have a cat called Mochi"]
    assert then["total"] == 2
    assert texts((await get(rest))["items"]) == ["I live in Hangzhou"]  # today: the cat is deleted
    assert texts((await get(rest, as_of=with_cat, state="deleted"))["items"]) == []  # it was not deleted then
    now = datetime.now(UTC).isoformat()
    assert texts((await get(rest, as_of=now, state="deleted"))["items"]) == ["I have a cat called Mochi"]
    paged = await get(rest, as_of=with_cat, sort="created_at", size=1, page=2)
    assert [m["memory"] for m in paged["items"]] == ["I have a cat called Mochi"] and paged["total"] == 2
    found = await get(rest, q="which city do I live in", as_of=before_move)
    assert [m["memory"] for m in found["items"]] == ["I live in Beijing"]
    cats = await get(rest, q="my cat Mochi", as_of=with_cat)
    assert [m["memory"] for m in cats["items"]][:1] == ["I have a cat called Mochi"]


async def test_bad_filters_are_400s_naming_the_field(both: tuple[httpx.AsyncClient, Client]) -> None:
    rest, _ = both
    await create(rest, "Something to find")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"since": "last week"}, "since"),
        ({"until": "2026-13-45"}, "until"),
        ({"since": "2026-05-01", "until": "2026-04-01"}, "since must be before until"),
        ({"as_of": "2999-01-01"}, "as_of"),
        ({"as_of": "yesterday"}, "as_of"),
        ({"as_of": "yesterday", "q": "something"}, "as_of"),
        ({"match_any": "maybe"}, "match_any"),
        ({"metadata": '{"a.b": "v"}'}, "metadata keys"),
        ({"metadata": "[1]"}, "metadata"),
        ({"client": "bad/name"}, "client"),
        ({"category": "c" * 65}, "category"),
        ({"since": "last week", "q": "something"}, "since"),
        ({"limit": "5"}, "unknown query parameter 'limit'"),
        ({"created_since": "2026-01-01"}, "unknown query parameter 'created_since'"),
    ]
    for params, named in cases:
        assert named in await bad(rest, **params), params
    for body, named in (({"event_time": "yesterday"}, "event_time"), ({"metadata": {"k": "v" * 300}}, "metadata.k")):
        response = await rest.post("/memories", json={"user_id": "alice", "text": "x", **body})
        assert response.status_code == 400 and named in response.json()["message"], response.text
    assert (await get(rest))["total"] == 1  # nothing stored by the refused ones


def test_openapi_documents_exactly_the_parameters_the_route_takes() -> None:
    operation = document()["paths"]["/api/v1/memories"]["get"]
    names = [p["name"] for p in operation["parameters"]]
    assert sorted(names) == sorted(LIST_PARAMETERS) and len(names) == len(set(names))
