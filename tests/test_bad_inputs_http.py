"""Bad input over the wire, on SSE and streamable HTTP: every case gets a clear 4xx or tool error.

Raw bodies (oversized, not JSON, not JSON-RPC, batches, NaN tokens, invalid UTF-8) go out byte for byte;
after each case the scope's memory count is unchanged (nothing stored half-way) and /health answers.
The table in docs/bad-inputs.md lists the same cases with what the user gets. The HTTP cases run against the real
app built in process (tests/inprocess.py); stdio runs the server process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest

from tests.inprocess import InProcessServer, serve_in_process
from tests.server_process import error_text, server_env, stdio_client, structured
from tests.test_fuzz_tools import HEADERS, messages

pytestmark = pytest.mark.anyio

MB = 1024 * 1024


def call(tool: str, arguments: Any, id_: int = 1) -> bytes:
    body = {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
    return json.dumps(body).encode()


def with_limit(token: str) -> bytes:
    """A search call whose limit is a bare JSON token such as NaN or Infinity."""
    return call("search_memories", {"query": "tea", "limit": "@"}).replace(b'"@"', token.encode())


class Raw:
    """One raw session: ``post`` returns (HTTP status, the JSON-RPC answer or None, raw text)."""

    def __init__(self, http: httpx2.AsyncClient, endpoint: str, events: AsyncIterator[str] | None = None) -> None:
        self.http, self.endpoint, self.events = http, endpoint, events

    async def post(self, body: bytes) -> tuple[int, dict[str, Any] | None, str]:
        response = await self.http.post(self.endpoint, content=body, headers=HEADERS)
        assert response.status_code < 500 and "Traceback" not in response.text, response.text[:500]
        if self.events is None:  # streamable HTTP answers in the response
            typed = response.headers.get("content-type", "").startswith(("application/json", "text/event-stream"))
            answers = messages(response) if typed else []
            return response.status_code, (answers[0] if answers else None), response.text
        if response.status_code != 202:  # SSE: a refused POST is answered by its status alone
            return response.status_code, None, response.text
        return response.status_code, await self._next_message(), response.text

    async def _next_message(self) -> dict[str, Any]:
        async for line in self.events:
            if line.startswith("data:"):
                return json.loads(line[5:])
        raise AssertionError("the SSE stream ended")

    async def tool(self, name: str, arguments: Any) -> dict[str, Any]:
        status, answer, text = await self.post(call(name, arguments))
        assert answer is not None, (status, text)
        return answer

    async def count(self) -> int:
        return (await self.tool("list_memories", {}))["result"]["structuredContent"]["count"]


@asynccontextmanager
async def raw_session(server: InProcessServer, transport: str, user: str) -> AsyncIterator[Raw]:
    async with server.raw(timeout=60.0) as http:
        if transport == "http":
            yield Raw(http, f"{server.url}/mcp/cline/http/{user}")
            return
        async with http.stream("GET", f"{server.url}/mcp/cline/sse/{user}") as stream:
            lines = stream.aiter_lines()
            endpoint = next_data = None
            async for line in lines:
                if line.startswith("data:"):
                    next_data = line[5:].strip()
                    break
            endpoint = f"{server.url}{next_data}"
            raw = Raw(http, endpoint, lines)
            init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
            status, answer, _ = await raw.post(
                json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}).encode()
            )
            assert status == 202 and "result" in answer
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            assert (await http.post(endpoint, json=note, headers=HEADERS)).status_code == 202
            yield raw


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # one event loop for the module, so the module's server lives across its tests


@pytest.fixture(scope="module")
async def server(tmp_path_factory) -> AsyncIterator[InProcessServer]:
    async with serve_in_process(tmp_path_factory.mktemp("bad-inputs"), TOOL_BLACK_LIST="[]") as running:
        yield running


async def health(server: InProcessServer) -> int:
    async with server.raw() as http:
        return (await http.get("/health")).status_code


def tool_error(answer: dict[str, Any]) -> str:
    assert answer["result"]["isError"] is True, answer
    return answer["result"]["content"][0]["text"]


@pytest.mark.parametrize("transport", ["sse", "http"])
async def test_refused_bodies_store_nothing(server, transport):
    """Bodies the transport refuses before any tool runs: 413 or 400, and the session keeps working."""
    async with raw_session(server, transport, f"refused-{transport}") as raw:
        assert "result" in await raw.tool("add_memories", {"text": "kept", "infer": False})
        refused = {
            "20 MB body": (b"x" * (20 * MB), 413),
            "10 MB of text": (call("add_memories", {"text": "y" * (10 * MB), "infer": False}), 413),
            "not JSON": (b"{this is not json", 400),
            "empty body": (b"", 400),
            "JSON, not JSON-RPC": (b'{"hello": "world"}', 400),
            "batch": (b"[" + call("list_memories", {}) + b"," + call("list_memories", {}, 2) + b"]", 400),
            "empty batch": (b"[]", 400),
            "invalid UTF-8": (call("add_memories", {"text": "@", "infer": False}).replace(b"@", b"\xff\xfe"), 400),
            "lone surrogate": (call("add_memories", {"text": "\ud800", "infer": False}), 400),
        }
        for case, (body, status) in refused.items():
            got, answer, text = await raw.post(body)
            assert got == status, (case, got, text[:300])
            if transport == "http" and status == 400:
                assert answer["error"]["code"] in (-32700, -32600, -32602), (case, answer)
            assert await health(server) == 200, case
        assert await raw.count() == 1, "nothing stored half-way"


@pytest.mark.parametrize("transport", ["sse", "http"])
async def test_tool_level_bad_input_gets_tool_errors(server, transport):
    async with raw_session(server, transport, f"tool-errors-{transport}") as raw:
        cases = [
            ("search_memories", {"query": 5}, "Input should be a valid string"),
            ("search_memories", {"query": "tea", "limit": "ten"}, "Input should be a valid integer"),
            ("search_memories", {"query": "tea", "limit": 2.5}, "fractional part"),
            ("search_memories", {"query": "tea", "limit": None}, "Input should be a valid integer"),
            ("delete_memories", {"memory_ids": "abc"}, "Input should be a valid list"),
            ("delete_memories", {"memory_ids": [1]}, "Input should be a valid string"),
            ("add_memories", {}, "Field required"),
            ("add_memories", {"text": "x", "infer": "maybe"}, "valid boolean"),
            ("add_memories", {"text": "z" * MB, "infer": False}, "the limit is 16000 (MEMORY_MAX_TEXT_CHARS)"),
            ("update_memory", {"memory_id": "../x", "text": "t"}, "'../x' is not a memory id"),
            ("update_memory", {"memory_id": "a?b=c", "text": "t"}, "'a?b=c' is not a memory id"),
            ("memory_history", {"memory_id": "%00"}, "'%00' is not a memory id"),
            ("delete_memories", {"memory_ids": ["../../etc/passwd", "*"]}, "is not a memory id"),
        ]
        for tool, args, expected in cases:
            message = tool_error(await raw.tool(tool, args))
            assert expected in message and "Traceback" not in message, (tool, args, message)
        unknown = await raw.tool("nope_tool", {})  # a protocol error (JSON-RPC -32602), not a tool result
        assert unknown["error"] == {"code": -32602, "message": "Unknown tool: nope_tool"}, unknown
        for token in ("NaN", "Infinity", "-Infinity", "1e999"):
            _, answer, _ = await raw.post(with_limit(token))
            assert "Input should be a finite number" in tool_error(answer), token
        assert await raw.count() == 0, "nothing stored half-way"
    assert await health(server) == 200


async def test_identities_built_like_paths_or_queries(server):
    """In the URL a NUL is rejected, an encoded slash matches no route, and ``..`` is a literal (dots are allowed)."""
    post: dict[str, Any] = {"json": {"jsonrpc": "2.0", "id": 1, "method": "ping"}, "headers": HEADERS}
    async with server.raw() as http:
        assert (await http.post(f"{server.url}/mcp/cline/http/%00", **post)).status_code == 400
        assert (await http.post(f"{server.url}/mcp/cline/http/a%2F..%2Fb", **post)).status_code == 404
        assert (await http.post(f"{server.url}/mcp/cline/http/%2E%2E", **post)).status_code == 200  # user ".."
        assert (await http.post(f"{server.url}/mcp/../../etc/passwd", **post)).status_code == 404


async def test_ten_megabytes_over_stdio_names_the_limit(tmp_path):
    """stdio has no body cap: the tool itself refuses the text and names the limit."""
    async with stdio_client(server_env(tmp_path)) as client:
        message = error_text(await client.call_tool("add_memories", {"text": "x" * (10 * MB), "infer": False}))
        assert "is 10485760 characters long; the limit is 16000 (MEMORY_MAX_TEXT_CHARS)" in message
        assert structured(await client.call_tool("list_memories", {}))["count"] == 0
