"""The REST API and the memory lifecycle end to end: the real app in process (tests/inprocess.py), the MCP SDK's
client and httpx, on both stores (Tablestore through the emulator). MCP and REST must agree on what a user sees;
tokens bound to a user see only that user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.inprocess import InProcessServer, serve_in_process
from tests.server_process import error_text, structured, tablestore_env
from tests.waiting import until

pytestmark = pytest.mark.anyio

TOKENS = "alice-token:alice,bob-token:bob,admin-token"


@pytest.fixture(params=["embedded", "tablestore"])
async def server(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[InProcessServer]:
    extra: dict[str, str] = {"MCP_AUTH_TOKENS": TOKENS, "TOOL_BLACK_LIST": "[]"}
    if request.param == "tablestore":
        emulator = request.getfixturevalue("tablestore_emulator")
        extra.update(tablestore_env(emulator))
    async with serve_in_process(tmp_path, **extra) as running:
        yield running


def api(server: InProcessServer, token: str = "admin-token") -> httpx.AsyncClient:
    return server.rest(token)


def mcp(server: InProcessServer, client: str, user: str, token: str) -> Any:
    return server.http(client, user, token)


async def add(server: InProcessServer, client: str, user: str, text: str) -> str:
    async with mcp(server, client, user, f"{user}-token") as session:
        result = structured(await session.call_tool("add_memories", {"text": text, "infer": False}))
    return str(result["events"][0]["id"])


async def mcp_list(server: InProcessServer, client: str, user: str) -> list[str]:
    async with mcp(server, client, user, f"{user}-token") as session:
        listed = structured(await session.call_tool("list_memories", {}))
    return sorted(m["memory"] for m in listed["memories"])


async def test_lifecycle_through_rest_and_mcp_agree(server: InProcessServer) -> None:
    tea = await add(server, "cline", "alice", "Likes green tea")
    go = await add(server, "cline", "alice", "Writes Go at work")
    await add(server, "cursor", "alice", "Uses tabs for indentation")
    await add(server, "cline", "bob", "Bob's secret PIN is 7391")
    async with api(server) as rest:
        page = (await rest.get("/memories", params={"user_id": "alice"})).json()
        assert page["total"] == 3 and {m["client"] for m in page["items"]} == {"cline", "cursor"}
        assert all(m["state"] == "active" for m in page["items"])
        assert "7391" not in str(page)

        # pause: MCP no longer lists or finds it; REST still shows it as paused
        changed = await rest.post("/memories/state", json={"user_id": "alice", "memory_ids": [tea], "state": "paused"})
        assert changed.json() == {"changed": [tea], "unchanged": [], "invalid": []}
        assert await mcp_list(server, "cline", "alice") == ["Writes Go at work"]
        paused = (await rest.get("/memories", params={"user_id": "alice", "state": "paused"})).json()
        assert [m["id"] for m in paused["items"]] == [tea]
        await rest.post("/memories/state", json={"user_id": "alice", "memory_ids": [tea], "state": "active"})
        assert await mcp_list(server, "cline", "alice") == ["Likes green tea", "Writes Go at work"]

        # edit: MCP search finds the new text; history shows old -> new with source rest
        edited = await rest.put(f"/memories/{go}", json={"user_id": "alice", "text": "Writes Rust at work"})
        assert edited.status_code == 200, edited.text
        async with mcp(server, "cline", "alice", "alice-token") as session:
            hits = structured(await session.call_tool("search_memories", {"query": "Rust at work"}))["results"]
            assert hits[0]["id"] == go and hits[0]["memory"] == "Writes Rust at work"
        detail = (await rest.get(f"/memories/{go}", params={"user_id": "alice"})).json()
        assert [(h["event"], h["source"]) for h in detail["history"]] == [("ADD", "mcp"), ("UPDATE", "rest")]
        assert detail["history"][1]["old_memory"] == "Writes Go at work"

        async def access_log() -> Any:
            return (await rest.get(f"/memories/{go}", params={"user_id": "alice"})).json()["access_log"]

        await until(access_log, "the search hit in the access log", timeout=30.0)

        # soft delete: gone for MCP, its history (with the DELETE) stays readable
        deleted = (await rest.request("DELETE", "/memories", json={"user_id": "alice", "memory_ids": [go]})).json()
        assert deleted == {"deleted": [go], "not_found": [], "invalid": []}
        assert await mcp_list(server, "cline", "alice") == ["Likes green tea"]
        async with mcp(server, "cline", "alice", "alice-token") as session:
            history = structured(await session.call_tool("memory_history", {"memory_id": go}))["history"]
            assert [h["event"] for h in history] == ["ADD", "UPDATE", "DELETE"]
        assert (await rest.get(f"/memories/{go}", params={"user_id": "alice"})).json()["state"] == "deleted"

        # the same text can be added again after deletion
        again = await add(server, "cline", "alice", "Writes Rust at work")
        assert again != go

        # purge erases the memory, its history and its access log, and says what it erased
        purged = (
            await rest.request(
                "DELETE", "/memories", params={"purge": "true"}, json={"user_id": "alice", "memory_ids": [go]}
            )
        ).json()
        assert purged["purged"] == [go] and purged["history_events"] >= 3
        assert (await rest.get(f"/memories/{go}", params={"user_id": "alice"})).status_code == 404

        stats = (await rest.get("/stats", params={"user_id": "alice"})).json()
        assert stats["total"] == 3 and stats["by_app"] == {"cline": 2, "cursor": 1}


async def test_paused_app_cannot_write_and_is_hidden_for_that_user_only(server: InProcessServer) -> None:
    await add(server, "cline", "alice", "Prefers dark mode")
    await add(server, "cline", "bob", "Prefers light mode")
    async with api(server) as rest:
        paused = await rest.put("/apps/cline", params={"user_id": "alice"}, json={"paused": True})
        assert paused.status_code == 200 and paused.json()["paused"] is True
        async with mcp(server, "cline", "alice", "alice-token") as session:
            message = error_text(await session.call_tool("add_memories", {"text": "x", "infer": False}))
            assert "paused" in message
            assert structured(await session.call_tool("list_memories", {}))["memories"] == []
        assert await mcp_list(server, "cline", "bob") == ["Prefers light mode"], "bob's cline is not paused"
        apps = (await rest.get("/apps", params={"user_id": "alice"})).json()["items"]
        assert [(a["name"], a["memories"], a["paused"]) for a in apps] == [("cline", 1, True)]
        await rest.put("/apps/cline", params={"user_id": "alice"}, json={"paused": False})
        assert await mcp_list(server, "cline", "alice") == ["Prefers dark mode"]


async def test_tokens_scope_the_rest_api(server: InProcessServer) -> None:
    alice_memory = await add(server, "cline", "alice", "Alice's diary entry")
    async with api(server, "bob-token") as bob:
        assert (await bob.get("/memories")).json()["total"] == 0, "a bound token implies its user"
        assert (await bob.get("/memories", params={"user_id": "alice"})).status_code == 403
        for method, path, body in [
            ("GET", f"/memories/{alice_memory}", None),
            ("PUT", f"/memories/{alice_memory}", {"text": "hijacked"}),
        ]:
            response = await bob.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
        state = (await bob.post("/memories/state", json={"memory_ids": [alice_memory], "state": "deleted"})).json()
        assert state == {"changed": [], "unchanged": [alice_memory], "invalid": []}
        purge = await bob.request("DELETE", "/memories", params={"purge": "1"}, json={"memory_ids": [alice_memory]})
        assert purge.json()["purged"] == []
    async with api(server, "admin-token") as admin:
        assert (await admin.get("/memories")).status_code == 400, "an unbound token must name the user"
        assert (await admin.get("/memories", params={"user_id": "alice"})).json()["total"] == 1
    async with server.rest(None) as anonymous:
        assert (await anonymous.get("/memories", params={"user_id": "alice"})).status_code == 401


async def test_bad_input_gets_clear_errors(server: InProcessServer) -> None:
    async with api(server) as rest:
        cases = [
            await rest.get("/memories", params={"user_id": "alice", "state": "gone"}),
            await rest.get("/memories", params={"user_id": "alice", "size": "0"}),
            await rest.get("/memories", params={"user_id": "alice", "sort": "random"}),
            await rest.get("/memories/not-an-id", params={"user_id": "alice"}),
            await rest.post("/memories", content=b"{not json", headers={"content-type": "application/json"}),
            await rest.post("/memories", json={"user_id": "alice", "text": ""}),
            await rest.post("/memories/state", json={"user_id": "alice", "memory_ids": [], "state": "paused"}),
            await rest.get("/memories", params={"user_id": "al\nice"}),
        ]
        for response in cases:
            assert response.status_code == 400, response.text
            body = response.json()
            assert body["error"] == "bad_request" and body["message"], body
        created = await rest.post(
            "/memories", json={"user_id": "alice", "client": "script", "text": "Created over REST"}
        )
        assert created.status_code == 201 and created.json()["events"][0]["event"] == "ADD"
        spec = (await rest.get("/openapi.json")).json()
        assert spec["openapi"].startswith("3.") and "/api/v1/memories/{memory_id}" in spec["paths"]


async def test_backup_export_then_import_into_another_user(server: InProcessServer) -> None:
    await add(server, "cline", "alice", "Likes green tea")
    await add(server, "cursor", "alice", "周末喜欢去西湖边散步")
    async with api(server) as rest:
        exported = await rest.post("/backup/export", json={"user_id": "alice"})
        assert exported.status_code == 200 and exported.headers["content-type"] == "application/zip"
        assert exported.content[:2] == b"PK"
        files = {"file": ("memories_alice.zip", exported.content, "application/zip")}
        imported = await rest.post("/backup/import", data={"user_id": "bob", "mode": "skip"}, files=files)
        assert imported.status_code == 200, imported.text
        assert imported.json()["imported"] == 2
        bob = (await rest.get("/memories", params={"user_id": "bob"})).json()
        assert sorted(m["memory"] for m in bob["items"]) == ["Likes green tea", "周末喜欢去西湖边散步"]
        assert {m["client"] for m in bob["items"]} == {"cline", "cursor"}
        again = (await rest.post("/backup/import", data={"user_id": "bob", "mode": "skip"}, files=files)).json()
        assert again["imported"] == 0, "a second import adds nothing"
        broken = await rest.post(
            "/backup/import", data={"user_id": "bob"}, files={"file": ("x.zip", b"not a zip", "x")}
        )
        assert broken.status_code == 400 and broken.json()["message"]
    async with mcp(server, "cline", "bob", "bob-token") as session:
        listed = structured(await session.call_tool("list_memories", {}))
        assert [m["memory"] for m in listed["memories"]] == ["Likes green tea"]
