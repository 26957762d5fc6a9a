"""Transport hardening (issue 10), through real server processes and raw HTTP clients.

SSE sessions that were never initialized (reconnects, server restarts), strict session ids, 405 for SSE clients
on the streamable URL, control characters in identities, the user_id argument against bound tokens, JSON-RPC
error bodies, bounded resources (undelivered messages, header timeout, connection cap), 404 hints, the access
log switch, and "port in use" in one line.

What needs no process runs on the real app built in process (tests/inprocess.py: the ``server`` and ``auth_server``
fixtures); restarts, socket buffers, header timeouts, the connection cap, uvicorn's access log and "port in use"
run server processes.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tablestore_openmemory_mcp.edge.security import describe_binding
from tests.inprocess import InProcessServer, serve_in_process
from tests.server_process import SCRIPT, HttpServer, error_text, server_env, structured
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789"
ADMIN = "admin-token-0123456789"
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
WAIT = 90.0  # any single wait on a busy machine


def rpc(method: str, params: dict[str, Any] | None = None, id_: int | None = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if id_ is not None:
        message["id"] = id_
    return message


def tool_call(name: str, arguments: dict[str, Any], id_: int) -> dict[str, Any]:
    return rpc("tools/call", {"name": name, "arguments": arguments}, id_)


class RawSse:
    """One SSE stream read by hand: the endpoint event, then JSON-RPC messages; POSTs go to the endpoint."""

    def __init__(self, http: Any, base: str, response: Any) -> None:  # httpx or httpx2 (in process)
        self.http, self.base, self.response = http, base, response
        self.lines = response.aiter_lines()
        self.endpoint = ""

    @property
    def session_id(self) -> str:
        return self.endpoint.split("session_id=")[1]

    async def _data(self) -> str:
        with anyio.fail_after(WAIT):
            async for line in self.lines:
                if line.startswith("data:"):
                    return line[5:].strip()
        raise AssertionError("the SSE stream ended")

    async def open(self) -> RawSse:
        self.endpoint = await self._data()
        return self

    async def next_message(self) -> dict[str, Any]:
        return dict(json.loads(await self._data()))

    async def post(self, message: dict[str, Any], query: str | None = None, **headers: str) -> httpx.Response:
        url = f"{self.base}{self.endpoint}" if query is None else f"{self.base}/mcp/messages/?{query}"
        return await self.http.post(url, json=message, headers={**HEADERS, **headers})

    async def call(self, message: dict[str, Any], **headers: str) -> dict[str, Any]:
        response = await self.post(message, **headers)
        assert response.status_code == 202, response.text
        answer = await self.next_message()
        assert answer.get("id") == message["id"], answer
        return answer


@asynccontextmanager
async def raw_sse(server: HttpServer | InProcessServer, user: str, token: str | None = None) -> AsyncIterator[RawSse]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client: Any = (
        server.raw(token, timeout=WAIT)
        if isinstance(server, InProcessServer)
        else httpx.AsyncClient(timeout=httpx.Timeout(WAIT), headers=headers)
    )
    async with (
        client as http,
        http.stream("GET", f"{server.url}/mcp/cline/sse/{user}") as response,
    ):
        assert response.status_code == 200, await response.aread()
        sse = await RawSse(http, server.url, response).open()  # held here: dropping it would close the stream
        yield sse


class ServerOnPort(HttpServer):
    """An HttpServer on a given port (to restart a server where its clients expect it)."""

    def __init__(self, env: dict[str, str], tmp_path: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = tmp_path / f"server-{port}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [SCRIPT, "--transport", "sse", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # one event loop for the module, so the in-process servers live across its tests


@pytest.fixture(scope="module")
async def server(tmp_path_factory):
    async with serve_in_process(tmp_path_factory.mktemp("hardening"), TOOL_BLACK_LIST="[]") as running:
        yield running


@pytest.fixture(scope="module")
async def auth_server(tmp_path_factory):
    tokens = f"{ALICE}:alice,{BOB}:bob,{ADMIN}"
    async with serve_in_process(
        tmp_path_factory.mktemp("hardening-auth"), MCP_AUTH_TOKENS=tokens, MEMORY_ALLOW_USER_ID_ARG="true"
    ) as running:
        yield running


# --- SSE sessions that were never initialized ------------------------------------------------------------------


async def test_tool_call_on_an_uninitialized_sse_session_is_served(server):
    async with raw_sse(server, "resumed") as sse:
        listed = await sse.call(rpc("tools/list", {}, 1))
        assert "add_memories" in {tool["name"] for tool in listed["result"]["tools"]}
        added = await sse.call(tool_call("add_memories", {"text": "I sail on Sundays", "infer": False}, 2))
        assert added["result"]["isError"] is False, added
        found = await sse.call(tool_call("list_memories", {}, 3))
        assert found["result"]["structuredContent"]["count"] == 1
        assert found["result"]["structuredContent"]["memories"][0]["memory"] == "I sail on Sundays"


async def test_sse_client_keeps_working_across_a_server_restart(tmp_path):
    env = server_env(tmp_path)
    first = HttpServer(env, tmp_path).wait_ready()
    port = first.port
    second: HttpServer | None = None
    try:
        async with raw_sse(first, "restart") as sse:
            init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "ts", "version": "1"}}
            assert "result" in await sse.call(rpc("initialize", init, 0))
            assert (await sse.post(rpc("notifications/initialized", id_=None))).status_code == 202
            added = await sse.call(tool_call("add_memories", {"text": "before the restart", "infer": False}, 1))
            assert added["result"]["isError"] is False
        assert first.stop() == 0
        second = ServerOnPort(env, tmp_path, port).wait_ready()
        # What a TypeScript client does after the drop: a new stream, then straight on with tool calls.
        async with raw_sse(second, "restart") as sse:
            listed = await sse.call(tool_call("list_memories", {}, 2))
            assert listed["result"]["structuredContent"]["count"] == 1
            added = await sse.call(tool_call("add_memories", {"text": "after the restart", "infer": False}, 3))
            assert added["result"]["isError"] is False
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def test_initialize_still_negotiates_on_sse(server):
    async with raw_sse(server, "negotiates") as sse:
        init = {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
        answer = await sse.call(rpc("initialize", init, 0))
        assert answer["result"]["protocolVersion"] == "2025-03-26"


# --- routes ---------------------------------------------------------------------------------------------------


async def test_get_on_the_streamable_endpoint_is_405_naming_the_sse_url(server):
    async with server.raw() as http:
        response = await http.get("/mcp/cline/http/alice", headers={"Accept": "text/event-stream"})
    assert response.status_code == 405
    assert "/mcp/cline/sse/alice" in response.json()["message"]
    assert "POST" in response.headers["allow"]


@pytest.mark.parametrize("path", ["/index.html", "/mcp/cline/alice", "/.well-known/oauth-authorization-server"])
async def test_unknown_paths_get_404_json_with_a_hint(server, path):
    async with server.raw() as http:
        response = await http.get(path)
    assert response.status_code == 404
    assert "/mcp/<client_name>/sse/<user_id>" in response.json()["message"]


@pytest.mark.parametrize("path", ["/mcp", "/sse"])
async def test_token_identity_urls_without_a_token_user_get_400_with_a_hint(server, path):
    """/mcp and /sse take the user from the token (OAuth or token:user_id); without one they name the other URLs."""
    async with server.raw() as http:
        response = await http.get(path)
    assert response.status_code == 400
    assert "/mcp/<client_name>/sse/<user_id>" in response.json()["message"]


async def test_well_known_is_404_not_401_with_tokens(auth_server):
    async with auth_server.raw() as http:
        for path in ("/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource/mcp/c/http/a"):
            response = await http.get(path)
            assert response.status_code == 404, (path, response.status_code)


async def test_health_is_cheap_and_ready_checks_the_store(server):
    async with server.raw() as http:
        health = (await http.get("/health")).json()
        assert health["status"] == "ok" and health["in_flight"] == 0
        for path in ("/ready", "/health?deep=1"):
            ready = await http.get(path)
            assert ready.status_code == 200, ready.text
            assert ready.json()["store"] == "ok"


# --- session ids ------------------------------------------------------------------------------------------------


def _spellings(victim: str, own: str) -> dict[str, str]:
    dashed = f"{victim[:8]}-{victim[8:12]}-{victim[12:16]}-{victim[16:20]}-{victim[20:]}"
    return {
        "braces": f"session_id=%7B{victim}%7D",
        "urn": f"session_id=urn:uuid:{victim}",
        "duplicated, own first": f"session_id={own}&session_id={victim}",
        "duplicated, victim first": f"session_id={victim}&session_id={own}",
        "same twice": f"session_id={victim}&session_id={victim}",
        "dashes": f"session_id={dashed}",
        "upper case": f"session_id={victim.upper()}",
        "encoded digits": "session_id=" + "".join(f"%{ord(c):02X}" for c in victim[:4]) + victim[4:] + "%20",
        "blank": "session_id=",
        "missing": "other=1",
    }


async def test_session_id_spellings_are_400_for_a_token_bound_to_another_user(auth_server):
    async with raw_sse(auth_server, "alice", ALICE) as alice, raw_sse(auth_server, "bob", BOB) as bob:
        for case, query in _spellings(alice.session_id, bob.session_id).items():
            planted = {"jsonrpc": "2.0", "id": 7, "result": {}}  # a "response" bob would plant in alice's stream
            response = await bob.post(planted, query=query, Authorization=f"Bearer {BOB}")
            assert response.status_code == 400, (case, response.status_code, response.text)
            assert "session_id" in response.json()["error"]["message"], case
            cancel = rpc("notifications/cancelled", {"requestId": 1}, None)
            assert (await bob.post(cancel, query=query, Authorization=f"Bearer {BOB}")).status_code == 400, case
        # The exact form with bob's token: the SDK's own rule treats it as an unknown session.
        exact = await bob.post(
            rpc("ping", {}, 8), query=f"session_id={alice.session_id}", Authorization=f"Bearer {BOB}"
        )
        assert exact.status_code == 404
        assert exact.json()["id"] == 8 and exact.json()["error"]["message"]
        # Nothing reached alice's stream: the next message on it answers her own request.
        answer = await alice.call(rpc("ping", {}, 99), Authorization=f"Bearer {ALICE}")
        assert answer == {"jsonrpc": "2.0", "id": 99, "result": {}}


# --- identities and bound tokens ---------------------------------------------------------------------------------

CONTROL_SPELLINGS = ["alice%0A", "alice%0D", "%00", "al%00ice", "alice%09", "alice%E2%80%A8", "alice%E2%80%A9",
                     "alice%C2%85", "alice%7F", "alice%1B", "%E2%80%8Balice", "alice%C2%A0"]  # fmt: skip


@pytest.mark.parametrize("user", CONTROL_SPELLINGS)
async def test_identities_with_control_characters_are_400(server, user):
    async with server.raw() as http:
        post = await http.post(f"/mcp/cline/http/{user}", json=rpc("ping", {}, 3), headers=HEADERS)
        assert post.status_code == 400, post.text
        assert post.json()["error"]["data"]["error"] == "invalid_identity"
        async with http.stream("GET", f"/mcp/cline/sse/{user}") as stream:
            assert stream.status_code == 400
        async with http.stream("GET", f"/mcp/{user}/sse/alice") as stream:
            assert stream.status_code == 400


def _client(server: HttpServer | InProcessServer, user: str, token: str | None) -> Any:
    if isinstance(server, InProcessServer):
        return server.http("cline", user, token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = create_mcp_http_client(headers=headers)
    return Client(streamable_http_client(f"{server.url}/mcp/cline/http/{user}", http_client=http))


async def test_a_bound_token_cannot_act_as_another_user_through_the_user_id_argument(auth_server):
    async with _client(auth_server, "alice", ALICE) as alice:
        refused = error_text(await alice.call_tool("add_memories", {"text": "mine", "infer": False, "user_id": "bob"}))
        assert "bound to user 'alice'" in refused
        structured(await alice.call_tool("add_memories", {"text": "mine", "infer": False, "user_id": "alice"}))
        assert structured(await alice.call_tool("list_memories", {}))["count"] == 1
    async with _client(auth_server, "carol", ADMIN) as admin:  # an unbound token may still pick the user
        assert structured(await admin.call_tool("list_memories", {"user_id": "alice"}))["count"] == 1
    async with _client(auth_server, "bob", BOB) as bob:
        assert structured(await bob.call_tool("list_memories", {}))["count"] == 0
        assert "bound to user 'bob'" in error_text(await bob.call_tool("list_memories", {"user_id": "alice"}))
    # the warning the CLI logs at startup for these settings (cli.main logs describe_binding's line)
    assert "the user_id argument cannot override the binding" in (describe_binding(auth_server.settings) or "")


# --- JSON-RPC error bodies ---------------------------------------------------------------------------------------


async def test_http_errors_on_mcp_routes_carry_json_rpc_bodies(auth_server):
    url = auth_server.url
    cases = {
        "no token": (f"{url}/mcp/cline/http/alice", {}, 401),
        "wrong token": (f"{url}/mcp/cline/http/alice", {"Authorization": "Bearer nope-nope-nope"}, 401),
        "another user's URL": (f"{url}/mcp/cline/http/bob", {"Authorization": f"Bearer {ALICE}"}, 403),
        "bad host": (f"{url}/mcp/cline/http/alice", {"Authorization": f"Bearer {ALICE}", "Host": "evil.example"}, 421),
        "bad origin": (f"{url}/mcp/cline/http/alice", {"Authorization": f"Bearer {ALICE}", "Origin": "http://x"}, 403),
        "sse post, no token": (f"{url}/mcp/messages/?session_id={'0' * 32}", {}, 401),
        "unknown session": (f"{url}/mcp/messages/?session_id={'0' * 32}", {"Authorization": f"Bearer {ALICE}"}, 404),
        "bad session id": (f"{url}/mcp/messages/?session_id=xyz", {"Authorization": f"Bearer {ALICE}"}, 400),
    }  # fmt: skip
    async with auth_server.raw() as http:
        for case, (target, headers, status) in cases.items():
            response = await http.post(target, json=rpc("tools/list", {}, 41), headers={**HEADERS, **headers})
            assert response.status_code == status, (case, response.status_code, response.text)
            body = response.json()
            assert body["jsonrpc"] == "2.0" and body["id"] == 41, (case, body)
            assert body["error"]["message"] and body["error"]["data"]["status"] == status, (case, body)
        unauthorized = await http.post(f"{url}/mcp/cline/http/alice", json=rpc("ping"), headers=HEADERS)
        assert unauthorized.headers["www-authenticate"].startswith("Bearer")
        not_jsonrpc = await http.post(f"{url}/mcp/cline/http/alice", content=b"hello", headers=HEADERS)
        assert not_jsonrpc.status_code == 401 and "jsonrpc" not in not_jsonrpc.json()


async def test_the_python_sdk_client_shows_the_reason(auth_server):
    with pytest.raises(Exception) as failure:  # the SDK's error type varies; its text is the point
        async with _client(auth_server, "alice", "wrong-token-0000") as client:
            await client.list_tools()
    assert "bearer token" in str(failure.value).lower() or "bearer token" in repr(failure.value).lower()


# --- bounded resources -------------------------------------------------------------------------------------------


async def test_a_session_that_never_reads_is_closed_at_the_cap(tmp_path):
    env = server_env(tmp_path, MCP_SSE_MAX_PENDING="8")
    with HttpServer(env, tmp_path) as server:
        async with _client(server, "reader", None) as writer:  # large answers fill the socket buffers sooner
            for n in range(3):
                structured(await writer.call_tool("add_memories", {"text": f"{n} " + "长" * 15000, "infer": False}))
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(WAIT)) as http,
            http.stream("GET", f"{server.url}/mcp/cline/sse/reader") as stream,
        ):
            sse = await RawSse(http, server.url, stream).open()  # read the endpoint event, then never again
            closed_after = None
            for n in range(5000):
                response = await sse.post(tool_call("list_memories", {}, n))
                if response.status_code == 404:  # the session is gone
                    closed_after = n
                    break
                assert response.status_code == 202, response.text
            assert closed_after is not None, "the session was never closed"
        assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
        wait_for(lambda: "MCP_SSE_MAX_PENDING" in server.log(), "the close is logged", WAIT)
        print(f"\nnon-reading SSE session closed after {closed_after} posts")


def test_a_connection_that_never_finishes_its_headers_is_closed(tmp_path):
    with HttpServer(server_env(tmp_path, MCP_HEADER_TIMEOUT="1"), tmp_path) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as slow:
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never the blank line
            assert slow.recv(1024) == b"", "the server closes the connection"
        assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200


async def test_connection_cap_answers_503_but_health_keeps_answering(tmp_path):
    with HttpServer(server_env(tmp_path, MCP_MAX_CONNECTIONS="3"), tmp_path) as server:
        async with raw_sse(server, "one"), raw_sse(server, "two"), raw_sse(server, "three"):
            busy = httpx.post(f"{server.url}/mcp/cline/http/four", json=rpc("ping"), headers=HEADERS, timeout=30)
            assert busy.status_code == 503 and "MCP_MAX_CONNECTIONS" in busy.json()["error"]["message"]
            assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
            assert httpx.get(f"{server.url}/ready", timeout=30).status_code == 200

        def fourth_accepted() -> bool:
            answer = httpx.post(f"{server.url}/mcp/cline/http/four", json=rpc("ping"), headers=HEADERS, timeout=30)
            return answer.status_code == 200

        wait_for(fourth_accepted, "a slot frees up once the streams close", WAIT)


# --- startup and logs --------------------------------------------------------------------------------------------


def test_port_in_use_is_one_line_and_a_nonzero_exit(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            [SCRIPT, "--port", str(port)], env=server_env(tmp_path), capture_output=True, text=True, timeout=120
        )
        took = time.monotonic() - started
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "in use" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    print(f"\nport in use reported in {took:.2f} s")


def test_access_log_is_off_by_default_and_on_with_log_access(tmp_path):
    quiet = HttpServer(server_env(tmp_path), tmp_path).wait_ready()
    try:
        httpx.get(f"{quiet.url}/health?probe=quiet", timeout=30)
    finally:
        quiet.stop()
    assert "probe=quiet" not in quiet.log_path.read_text(errors="replace")
    with HttpServer(server_env(tmp_path, LOG_ACCESS="true"), tmp_path) as loud:
        httpx.get(f"{loud.url}/health?probe=loud", timeout=30)
        wait_for(lambda: "probe=loud" in loud.log(), "the access line", WAIT)


def test_ready_names_the_store_when_it_is_down(tmp_path, tablestore_emulator):
    from tests.server_process import tablestore_env

    env = server_env(tmp_path, **tablestore_env(tablestore_emulator, TABLESTORE_TIMEOUT="2"))
    with HttpServer(env, tmp_path) as server:
        assert httpx.get(f"{server.url}/ready", timeout=60).json() == {"status": "ok", "store": "ok"}
        tablestore_emulator.inject("*", "OTSServerUnavailable", rate=1.0)
        try:
            down = httpx.get(f"{server.url}/ready", timeout=60)
            assert down.status_code == 503, down.text
            assert down.json()["status"] == "unavailable" and down.json()["store"] != "ok"
            assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200, "/health makes no store call"
        finally:
            tablestore_emulator.clear_faults()
        assert httpx.get(f"{server.url}/ready", timeout=60).status_code == 200
        print(f"\n/ready with the store down: {down.json()}")
