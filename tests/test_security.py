"""Bearer tokens, user-bound tokens, Host/Origin checks, CORS and the refusal to listen unprotected.

The HTTP checks run on the real app built in process (tests/inprocess.py); the refusal to listen, the startup
warning and stdio run the server process.
"""

import subprocess

import pytest

from tests.inprocess import serve_in_process
from tests.server_process import SCRIPT, HttpServer, free_port, server_env, stdio_client, structured

pytestmark = pytest.mark.anyio

ADMIN = "admin-token-0123456789"
ALICE = "alice-token-0123456789"
ACCEPT = {"Accept": "application/json, text/event-stream"}
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # one event loop for the module, so the module's server lives across its tests


@pytest.fixture(scope="module")
async def server(tmp_path_factory):
    async with serve_in_process(tmp_path_factory.mktemp("auth"), MCP_AUTH_TOKENS=f"{ADMIN},{ALICE}:alice") as running:
        yield running


def http_client(server, client, user, token):
    return server.http(client, user, token)


async def test_missing_or_wrong_token_gets_401_with_www_authenticate(server):
    async with server.raw() as http:
        for headers in ({}, {"Authorization": "Bearer wrong-token-000"}, {"Authorization": f"Basic {ADMIN}"}):
            response = await http.post("/mcp/cline/http/alice", json=PING, headers={**ACCEPT, **headers})
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")
            async with http.stream("GET", "/mcp/cline/sse/alice", headers=headers) as stream:
                assert stream.status_code == 401
        assert (await http.post("/mcp/messages/?session_id=00", json=PING)).status_code == 401
        assert (await http.get("/health")).status_code == 200, "/health needs no token"


async def test_bound_token_cannot_reach_another_users_url(server):
    headers = {**ACCEPT, "Authorization": f"Bearer {ALICE}"}
    async with server.raw() as http:
        assert (await http.post("/mcp/cline/http/bob", json=PING, headers=headers)).status_code == 403
        async with http.stream("GET", "/mcp/cline/sse/bob", headers=headers) as stream:
            assert stream.status_code == 403


async def test_valid_tokens_work_and_bound_token_cannot_use_another_users_sse_session(server):
    async with http_client(server, "cline", "alice", ALICE) as alice:
        structured(await alice.call_tool("add_memories", {"text": "alice's note"}))
    async with http_client(server, "cline", "bob", ADMIN) as admin_as_bob:
        assert structured(await admin_as_bob.call_tool("list_memories", {}))["count"] == 0

    sessions: list[str] = []
    bob_sse = server.sse("cline", "bob", ADMIN, on_session_created=sessions.append)
    async with bob_sse as bob, server.raw() as http:
        structured(await bob.call_tool("list_memories", {}))
        hijack = await http.post(
            f"{server.url}/mcp/messages/?session_id={sessions[0]}",
            json={"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                  "params": {"name": "list_memories", "arguments": {}}},
            headers={"Authorization": f"Bearer {ALICE}"},
        )  # fmt: skip
        # The SDK's own rule: a session only answers the credential that created it, as if it did not exist.
        assert hijack.status_code == 404
        assert hijack.json()["id"] == 9 and "Could not find session" in hijack.json()["error"]["message"]


async def test_origin_and_host_checks(server):
    headers = {**ACCEPT, "Authorization": f"Bearer {ADMIN}"}
    async with server.raw() as http:
        evil = await http.post("/mcp/cline/http/alice", json=PING, headers={**headers, "Origin": "http://evil.example"})
        assert evil.status_code == 403
        local = await http.post(
            "/mcp/cline/http/alice", json=PING, headers={**headers, "Origin": "http://localhost:3000"}
        )
        assert local.status_code == 200
        rebound = await http.post("/mcp/cline/http/alice", json=PING, headers={**headers, "Host": "evil.example"})
        assert rebound.status_code == 421
    assert "access-control-allow-origin" not in local.headers, "CORS is off by default"


async def test_cors_when_configured(tmp_path):
    async with serve_in_process(tmp_path, MCP_CORS_ORIGINS="http://app.example") as server, server.raw() as http:
        preflight = await http.options(
            "/mcp/cline/http/alice",
            headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers.get("access-control-allow-origin") == "http://app.example"
        other = await http.post(
            "/mcp/cline/http/alice", json=PING, headers={**ACCEPT, "Origin": "http://other.example"}
        )
        assert other.status_code == 403


def test_refuses_a_public_address_without_tokens(tmp_path):
    done = subprocess.run(
        [SCRIPT, "--host", "0.0.0.0", "--port", str(free_port())],
        env=server_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "MCP_AUTH_TOKENS" in done.stderr and "MCP_ALLOW_UNAUTHENTICATED" in done.stderr


def test_explicit_opt_out_starts_with_a_loud_warning(tmp_path):
    env = server_env(tmp_path, MCP_ALLOW_UNAUTHENTICATED="true", SERVER_HOST="0.0.0.0")
    server = HttpServer(env, tmp_path)
    try:
        server.wait_ready()
        assert "!!! Listening on 0.0.0.0" in server.log()
    finally:
        server.stop()


async def test_stdio_takes_no_token(tmp_path):
    async with stdio_client(server_env(tmp_path, MCP_AUTH_TOKENS=ADMIN)) as client:
        structured(await client.call_tool("add_memories", {"text": "stdio needs no token"}))
