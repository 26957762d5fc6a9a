"""The REST routes (rest/routes.py) through the real app in process (tests/inprocess.py): how each route reads
its user, parameters and body, and which status and JSON error each failure gets. The lifecycle across MCP and
REST is tests/test_rest_api.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.inprocess import InProcessServer, serve_in_process
from tests.waiting import until

pytestmark = pytest.mark.anyio

TOKENS = "alice-token:alice,admin-token"
UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # one event loop for the module: one app for its tests


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    async with serve_in_process(tmp_path_factory.mktemp("routes"), MCP_AUTH_TOKENS=TOKENS) as running:
        yield running


async def create(server: InProcessServer, user: str, text: str, client: str = "script") -> str:
    async with server.rest() as rest:
        created = await rest.post("/memories", json={"user_id": user, "client": client, "text": text})
    assert created.status_code == 201, created.text
    return str(created.json()["events"][0]["id"])


def bad_request(response: Any, fragment: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "bad_request" and fragment in body["message"], body


async def test_the_user_comes_from_the_token_or_the_request(server: InProcessServer) -> None:
    await create(server, "alice", "Alice's note")
    async with server.rest("alice-token") as alice, server.rest() as admin:
        assert (await alice.get("/memories")).json()["total"] == 1, "a bound token implies its user"
        assert (await alice.get("/memories", params={"user_id": "alice"})).status_code == 200
        forbidden = await alice.get("/memories", params={"user_id": "bob"})
        assert forbidden.status_code == 403 and forbidden.json()["error"] == "forbidden"
        bad_request(await admin.get("/memories"), "user_id is required")
        bad_request(await admin.get("/memories", params={"user_id": "a b"}), "user_id")
        body = await alice.post("/memories", json={"client": "script", "text": "Bound body"})
        assert body.status_code == 201, "a body without user_id acts for the token's user"


@pytest.mark.parametrize(
    "params,fragment",
    [
        ({"size": "ten"}, "size must be a whole number"),
        ({"size": "201"}, "size must be between 1 and 200"),
        ({"page": "0"}, "page must be between"),
        ({"state": "paused,gone"}, "got gone"),
        ({"sort": "random"}, "sort must be one of"),
        ({"metadata": "{not json"}, "metadata must be a JSON object"),
        ({"q": "tea", "min_score": "2"}, "min_score must be a number from 0 to 1"),
        ({"q": "tea", "min_score": "high"}, "min_score must be a number from 0 to 1"),
    ],
)
async def test_list_parameters_are_checked(server: InProcessServer, params: dict[str, str], fragment: str) -> None:
    async with server.rest() as rest:
        bad_request(await rest.get("/memories", params={"user_id": "alice", **params}), fragment)


async def test_list_filters_states_and_metadata(server: InProcessServer) -> None:
    user = "lister"
    kept = await create(server, user, "Kept memory")
    gone = await create(server, user, "Gone memory")
    async with server.rest() as rest:
        await rest.request("DELETE", "/memories", json={"user_id": user, "memory_ids": [gone]})
        visible = (await rest.get("/memories", params={"user_id": user})).json()
        assert [m["id"] for m in visible["items"]] == [kept]
        everything = (await rest.get("/memories", params={"user_id": user, "state": "all"})).json()
        assert {m["id"]: m["state"] for m in everything["items"]} == {kept: "active", gone: "deleted"}
        tagged = await rest.get("/memories", params={"user_id": user, "metadata": json.dumps({"project": "x"})})
        assert tagged.status_code == 200 and tagged.json()["total"] == 0, "no memory carries that tag"
        found = (await rest.get("/memories", params={"user_id": user, "q": "kept", "min_score": "0"})).json()
        assert found["items"][0]["id"] == kept and found["items"][0]["score"] is not None


async def test_bodies_are_json_objects_with_known_fields(server: InProcessServer) -> None:
    async with server.rest() as rest:
        not_json = await rest.post("/memories", content=b"{nope", headers={"content-type": "application/json"})
        bad_request(not_json, "the request body must be JSON")
        bad_request(await rest.post("/memories", json={"user_id": "alice"}), "text")
        bad_request(await rest.post("/memories", json={"user_id": "alice", "text": "x", "colour": 1}), "colour")
        bad_request(await rest.post("/memories", json={"user_id": "alice", "text": "x", "client": "a b"}), "client")
        bad_request(await rest.post("/memories", json={"user_id": "alice", "text": "bell \x07"}), "control")
        state = await rest.post("/memories/state", json={"user_id": "alice", "memory_ids": [UNKNOWN], "state": "x"})
        bad_request(state, "state")


async def test_one_memory_its_edit_and_its_access_log(server: InProcessServer) -> None:
    memory_id = await create(server, "editor", "Writes Go", client="cline")
    async with server.rest() as rest:
        edited = await rest.put(f"/memories/{memory_id}", json={"user_id": "editor", "text": "Writes Rust"})
        assert edited.status_code == 200 and edited.json()["memory"] == "Writes Rust", edited.text
        detail = (await rest.get(f"/memories/{memory_id}", params={"user_id": "editor"})).json()
        assert [(h["event"], h["source"]) for h in detail["history"]] == [("ADD", "rest"), ("UPDATE", "rest")]
        assert (await rest.get(f"/memories/{UNKNOWN}", params={"user_id": "editor"})).status_code == 404
        assert (await rest.get(f"/memories/{memory_id}", params={"user_id": "other"})).status_code == 404
        bad_request(await rest.get("/memories/not-an-id", params={"user_id": "editor"}), "not a memory id")
        missing = await rest.put(f"/memories/{UNKNOWN}", json={"user_id": "editor", "text": "x"})
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        async with server.http("cline", "editor", "admin-token") as session:  # an app's read is logged
            await session.call_tool("search_memories", {"query": "Rust"})

        async def logged() -> list[Any]:
            page = (await rest.get(f"/memories/{memory_id}/access-log", params={"user_id": "editor"})).json()
            return list(page["items"])

        [entry] = await until(logged, "the search hit in the access log")
        assert entry["client"] == "cline" and entry["query"] == "Rust"
        bad_request(
            await rest.get(f"/memories/{memory_id}/access-log", params={"user_id": "editor", "size": "0"}), "size"
        )


async def test_state_changes_report_changed_unchanged_and_invalid(server: InProcessServer) -> None:
    memory_id = await create(server, "stater", "A fact")
    async with server.rest() as rest:
        body = {"user_id": "stater", "memory_ids": [memory_id, UNKNOWN, "../x"], "state": "archived"}
        answer = (await rest.post("/memories/state", json=body)).json()
        assert answer["changed"] == [memory_id] and answer["unchanged"] == [UNKNOWN]
        assert [i["id"] for i in answer["invalid"]] == ["../x"] and answer["invalid"][0]["error"]
        purge = await rest.request(
            "DELETE", "/memories", params={"purge": "yes"}, json={"user_id": "stater", "memory_ids": [memory_id]}
        )
        assert purge.json()["purged"] == [memory_id]


async def test_apps_pause_refuses_writes_and_stats_count(server: InProcessServer) -> None:
    await create(server, "apper", "Note one", client="notes")
    async with server.rest() as rest:
        paused = await rest.put("/apps/notes", params={"user_id": "apper"}, json={"paused": True})
        assert paused.status_code == 200 and paused.json()["paused"] is True
        refused = await rest.post("/memories", json={"user_id": "apper", "client": "notes", "text": "Note two"})
        assert refused.status_code == 409 and refused.json()["error"] == "app_paused"
        bad_request(await rest.put("/apps/a%20b", params={"user_id": "apper"}, json={"paused": True}), "client")
        apps = (await rest.get("/apps", params={"user_id": "apper"})).json()["items"]
        assert [(a["name"], a["paused"], a["memories"]) for a in apps] == [("notes", True, 1)]
        stats = (await rest.get("/stats", params={"user_id": "apper"})).json()
        assert stats["total"] == 1 and stats["by_app"] == {"notes": 1}


async def test_openapi_document_and_docs_page(server: InProcessServer) -> None:
    async with server.rest() as rest:
        spec = (await rest.get("/openapi.json")).json()
        assert spec["openapi"].startswith("3.") and "/api/v1/memories/{memory_id}/access-log" in spec["paths"]
    async with server.rest(prefix="/api") as api:
        docs = await api.get("/docs")
        assert docs.status_code == 200 and "openapi.json" in docs.text
