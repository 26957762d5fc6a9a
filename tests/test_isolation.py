"""A memory in one scope is invisible to every other scope, and no tool can read or change it from there.

The server is the real app built in process (tests/inprocess.py), over streamable HTTP and SSE.
"""

import pytest

from tests.inprocess import serve_in_process
from tests.server_process import error_text, structured

pytestmark = pytest.mark.anyio


async def test_scopes_are_isolated_across_users_and_clients(tmp_path):
    async with (
        serve_in_process(tmp_path, TOOL_BLACK_LIST="[]") as server,
        server.http("cline", "alice") as alice_cline,
        server.sse("cherry", "alice") as alice_cherry,
        server.http("cline", "bob") as bob_cline,
    ):
        secret = structured(await alice_cline.call_tool("add_memories", {"text": "Alice's PIN is 4321"}))
        secret_id = secret["events"][0]["id"]
        structured(await alice_cherry.call_tool("add_memories", {"text": "Alice likes jazz"}))
        structured(await bob_cline.call_tool("add_memories", {"text": "Bob likes rock"}))

        for other in (alice_cherry, bob_cline):
            found = structured(await other.call_tool("search_memories", {"query": "PIN 4321"}))
            assert secret_id not in [m["id"] for m in found["results"]]
            assert "PIN" not in str(structured(await other.call_tool("list_memories", {})))
            deleted = structured(await other.call_tool("delete_memories", {"memory_ids": [secret_id]}))
            assert deleted == {"deleted": [], "not_found": [secret_id]}, "reported as unknown, never deleted"
            for tool, args in (
                ("update_memory", {"memory_id": secret_id, "text": "hijacked"}),
                ("memory_history", {"memory_id": secret_id}),
            ):
                assert "No memory with id" in error_text(await other.call_tool(tool, args))
            structured(await other.call_tool("delete_all_memories", {}))

        listed = structured(await alice_cline.call_tool("list_memories", {}))
        assert [(m["id"], m["memory"]) for m in listed["memories"]] == [(secret_id, "Alice's PIN is 4321")]


async def test_shared_user_scope_across_clients_records_the_client(tmp_path):
    async with serve_in_process(tmp_path, MEMORY_SHARE_ACROSS_CLIENTS="true") as server:
        async with server.http("cline", "carol") as cline, server.sse("cherrystudio", "carol") as cherry:
            structured(await cline.call_tool("add_memories", {"text": "Carol's project uses Python 3.11"}))
            found = structured(await cherry.call_tool("search_memories", {"query": "which Python version"}))
            assert found["results"][0]["memory"] == "Carol's project uses Python 3.11"
            assert found["results"][0]["client"] == "cline"
        async with server.http("cline", "dave") as dave:
            assert structured(await dave.call_tool("list_memories", {}))["count"] == 0


async def test_user_id_argument_only_when_allowed(tmp_path):
    env = {"MEMORY_ALLOW_USER_ID_ARG": "true", "TOOL_USER_ID_FIELD_DESCRIPTION": "Custom user id text"}
    async with serve_in_process(tmp_path, **env) as server, server.http("cline", "erin") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        field = tools["add_memories"].input_schema["properties"]["user_id"]
        assert field["description"] == "Custom user id text"
        structured(await client.call_tool("add_memories", {"text": "for frank", "user_id": "frank"}))
        assert structured(await client.call_tool("list_memories", {}))["count"] == 0
        assert structured(await client.call_tool("list_memories", {"user_id": "frank"}))["count"] == 1
        assert "may contain only" in error_text(await client.call_tool("list_memories", {"user_id": "*"}))
