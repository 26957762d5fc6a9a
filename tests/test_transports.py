"""Every tool over SSE and streamable HTTP from one server, with the reference's exact routes.

The server is the real app built in process (tests/inprocess.py): these need no process, port or signal.
"""

import pytest

from tests.inprocess import serve_in_process
from tests.server_process import error_text, structured

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # one event loop for the module, so the module's server lives across its tests


@pytest.fixture(scope="module")
async def server(tmp_path_factory):
    async with serve_in_process(tmp_path_factory.mktemp("http"), TOOL_BLACK_LIST="[]") as running:
        yield running


@pytest.mark.parametrize("transport", ["sse", "http"])
async def test_every_tool(server, transport):
    user = f"user-{transport}"
    connect = server.sse if transport == "sse" else server.http
    async with connect("cline", user) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names >= {
            "add_memories",
            "search_memories",
            "list_memories",
            "delete_all_memories",
            "delete_memories",
            "update_memory",
            "memory_history",
        }
        added = structured(await client.call_tool("add_memories", {"text": "I drink oolong tea every morning"}))
        first = added["events"][0]["id"]
        structured(await client.call_tool("add_memories", {"text": "我住在杭州", "infer": False}))
        found = structured(await client.call_tool("search_memories", {"query": "tea", "limit": 1}))
        assert [m["id"] for m in found["results"]] == [first]
        assert found["results"][0]["client"] == "cline"
        listed = structured(await client.call_tool("list_memories", {}))
        assert listed["count"] == 2
        updated = structured(await client.call_tool("update_memory", {"memory_id": first, "text": "I drink green tea"}))
        assert updated["previous_memory"] == "I drink oolong tea every morning"
        history = structured(await client.call_tool("memory_history", {"memory_id": first}))
        assert [h["event"] for h in history["history"]] == ["ADD", "UPDATE"]
        deleted = structured(await client.call_tool("delete_memories", {"memory_ids": [first]}))
        assert deleted["deleted"] == [first]
        wiped = structured(await client.call_tool("delete_all_memories", {}))
        assert wiped["deleted_count"] == 1
        assert structured(await client.call_tool("list_memories", {}))["count"] == 0


async def test_tool_annotations_and_output_schemas(server):
    async with server.http("cline", "annotations") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    for name in ("search_memories", "list_memories", "memory_history"):
        assert tools[name].annotations.read_only_hint is True
    for name in ("delete_memories", "delete_all_memories"):
        assert tools[name].annotations.destructive_hint is True
        assert tools[name].annotations.read_only_hint is False
    assert tools["add_memories"].annotations.read_only_hint is False
    assert all(tool.output_schema for tool in tools.values())
    assert "user_id" not in tools["add_memories"].input_schema["properties"], "off unless MEMORY_ALLOW_USER_ID_ARG"


async def test_health_and_sse_post_errors_pass_through(server):
    async with server.raw() as http:
        health = await http.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        unknown = await http.post(
            "/mcp/messages/?session_id=0123456789abcdef0123456789abcdef",
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        )
        assert unknown.status_code == 404
        missing = await http.post("/mcp/messages/", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert missing.status_code == 400


@pytest.mark.parametrize(
    "client_name,user_id",
    [("cline", "a=b"), ("cline", "*"), ("c'x", "u"), ('c"x', "u"), ("cline", "x" * 200), ("cline", "a%2Fb")],
)
async def test_unsafe_identities_are_rejected_with_400(server, client_name, user_id):
    async with server.raw() as http:
        response = await http.post(
            f"/mcp/{client_name}/http/{user_id}",
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        if "%2F" in user_id:  # decodes to a slash: no route matches at all
            assert response.status_code == 404
            return
        assert response.status_code == 400
        body = response.json()  # a JSON-RPC request gets a JSON-RPC error, with the request's id
        assert body["jsonrpc"] == "2.0" and body["id"] == 1 and body["error"]["data"]["status"] == 400
        assert "may contain only" in body["error"]["message"] or "longer than" in body["error"]["message"]
        async with http.stream("GET", f"/mcp/{client_name}/sse/{user_id}") as stream:
            assert stream.status_code == 400


async def test_unicode_identity_is_accepted_and_isolated(server):
    async with server.http("cherry", "用户一") as one, server.http("cherry", "用户二") as two:
        structured(await one.call_tool("add_memories", {"text": "秘密: 我的猫叫年糕", "infer": False}))
        assert structured(await two.call_tool("list_memories", {}))["count"] == 0
        assert structured(await one.call_tool("list_memories", {}))["count"] == 1


async def test_bad_input_gets_clear_tool_errors(server):
    async with server.http("cline", "bad-input") as client:
        cases = [
            ("add_memories", {"text": "   "}, "must not be empty"),
            ("add_memories", {"text": "x" * 20000}, "the limit is 16000"),
            ("add_memories", {"text": "bell \x07 char"}, "control characters"),
            ("search_memories", {"query": ""}, "must not be empty"),
            ("search_memories", {"query": "tea", "limit": 0}, "between 1 and 100"),
            ("search_memories", {"query": "tea", "limit": 10**9}, "between 1 and 100"),
            ("delete_memories", {"memory_ids": []}, "non-empty list"),
            ("delete_memories", {"memory_ids": ["../../etc/passwd"]}, "is not a memory id"),
            ("delete_memories", {"memory_ids": ["id=1 OR 1=1"]}, "is not a memory id"),
            ("update_memory", {"memory_id": "*", "text": "x"}, "is not a memory id"),
            ("memory_history", {"memory_id": "00000000-0000-4000-8000-000000000000"}, "No memory with id"),
        ]
        for tool, args, expected in cases:
            message = error_text(await client.call_tool(tool, args))
            assert expected in message, (tool, args, message)
            assert "Traceback" not in message
        assert structured(await client.call_tool("list_memories", {}))["count"] == 0, "nothing stored half-way"


async def test_lone_surrogate_over_raw_json_rpc_is_rejected(server):
    """The SDK client cannot even encode a lone surrogate; a raw client can, as a JSON escape.

    The SDK's JSON parser refuses it with a 400 parse error before any tool runs (our own check in
    validation.clean_text stays as a second line of defence).
    """
    body = (
        '{"jsonrpc": "2.0", "id": 7, "method": "tools/call", '
        '"params": {"name": "add_memories", "arguments": {"text": "bad \\ud800 surrogate"}}}'
    )
    async with server.raw() as http:
        response = await http.post(
            "/mcp/cline/http/surrogates",
            content=body.encode(),
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2025-06-18",
            },
        )
    assert response.status_code == 400
    assert "Parse error" in response.json()["error"]["message"]
