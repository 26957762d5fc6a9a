"""The transport's parts in-process: session-id parsing, JSON-RPC error bodies, readiness, tokens, accept-error
logging, binding. Milliseconds each; the end-to-end behaviour is in tests/test_transport_hardening.py."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import httpx
import pytest
from mcp.server.mcpserver import MCPServer

from tablestore_openmemory_mcp.edge.identity import IDENTITY_KEY, IdentityResolver
from tablestore_openmemory_mcp.edge.security import StaticTokenVerifier, describe_binding
from tablestore_openmemory_mcp.edge.validation import UserInputError
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.settings import Settings
from tablestore_openmemory_mcp.transports import PortInUse, bind_socket
from tablestore_openmemory_mcp.transports.http_app import HttpApp
from tablestore_openmemory_mcp.transports.jsonrpc_errors import jsonrpc_error_body
from tablestore_openmemory_mcp.transports.serve import AcceptErrorLimiter
from tablestore_openmemory_mcp.transports.sse import parse_session_id

pytestmark = pytest.mark.anyio

SID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "query,expected",
    [
        (f"session_id={SID}", SID),
        (f"other=1&session_id={SID}", SID),
        (f"session_id={SID}&session_id={SID}", None),
        (f"session_id=%7B{SID}%7D", None),
        (f"session_id=urn:uuid:{SID}", None),
        (f"session_id={SID.upper()}", None),
        (f"session_id={SID[:8]}-{SID[8:12]}-{SID[12:16]}-{SID[16:20]}-{SID[20:]}", None),
        (f"session_id={SID}%0A", None),
        ("session_id=", None),
        ("", None),
        (f"session_id={SID}&session_id", None),
    ],
)
def test_session_id_is_exactly_one_value_in_the_sdk_form(query, expected):
    assert parse_session_id(query.encode()) == expected


def test_error_bodies_keep_the_request_id_and_the_reason():
    body = json.loads(jsonrpc_error_body(7, 403, json.dumps({"error": "forbidden", "message": "not yours"})))
    assert body == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": -32600, "message": "not yours", "data": {"status": 403, "error": "forbidden"}},
    }
    plain = json.loads(jsonrpc_error_body("a", 404, "Could not find session"))
    assert plain["id"] == "a" and plain["error"]["message"] == "Could not find session"
    assert json.loads(jsonrpc_error_body(None, 413, ""))["error"]["message"] == "HTTP 413"


class _Source:
    def __init__(self, service: Any) -> None:
        self.service = service

    async def get(self) -> Any:
        return self.service

    def in_flight(self) -> int:
        return 0


class _Service:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def readiness(self) -> dict[str, str]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return dict(self.answer)


async def _get(app: HttpApp, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.get(path)


async def test_health_and_ready_while_starting_and_when_the_store_is_down():
    settings = Settings(_env_file=None)
    app = HttpApp(MCPServer(name="t"), settings, _Source(_Service({"store": "ConnectionError: refused"})))
    starting = await _get(app, "/health")
    assert starting.status_code == 503 and starting.json()["status"] == "starting"
    ready = await _get(app, "/ready")
    assert ready.status_code == 503 and ready.json() == {"status": "starting", "store": "starting"}
    app.mark_ready(store="embedded")
    assert (await _get(app, "/health")).status_code == 200, "/health stays cheap: no store call"
    down = await _get(app, "/ready")
    assert down.status_code == 503 and down.json() == {"status": "unavailable", "store": "ConnectionError: refused"}
    assert (await _get(app, "/health?deep=1")).json()["store"] == "ConnectionError: refused"


async def test_ready_reports_a_failing_check_and_a_service_without_one():
    settings = Settings(_env_file=None)
    failing = HttpApp(MCPServer(name="t"), settings, _Source(_Service(TimeoutError("store timed out"))))
    failing.mark_ready()
    answer = await _get(failing, "/ready")
    assert answer.status_code == 503 and answer.json()["store"] == "TimeoutError: store timed out"
    plain = HttpApp(MCPServer(name="t"), settings, _Source(object()))
    plain.mark_ready()
    assert (await _get(plain, "/ready")).json() == {"status": "ok", "store": "ok"}


async def test_static_tokens_are_distinct_principals_with_their_bound_user():
    verifier = StaticTokenVerifier([("tok-a", "alice"), ("tok-admin", None)])
    alice, admin = await verifier.verify_token("tok-a"), await verifier.verify_token(" tok-admin ")
    assert alice is not None and alice.subject == "alice"
    assert admin is not None and admin.subject is None and admin.client_id != alice.client_id
    assert await verifier.verify_token("tok-b") is None


class _Ctx:
    def __init__(self, scope: dict[str, Any]) -> None:
        self.request_context = type("R", (), {"request": type("Q", (), {"scope": scope})()})()


def test_the_binding_wins_over_the_user_id_argument():
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
    from mcp.server.auth.provider import AccessToken

    settings = Settings(_env_file=None, allow_user_id_override=True, auth_tokens="token-aaaa:alice,token-admin")
    resolver = IdentityResolver(settings)
    bound = AuthenticatedUser(AccessToken(token="", client_id="token-0", scopes=[], subject="alice"))
    ctx = _Ctx({IDENTITY_KEY: Scope("cline", "alice"), "user": bound})
    assert resolver.resolve(ctx, "alice").user_id == "alice"
    with pytest.raises(UserInputError, match="bound to user 'alice'"):
        resolver.resolve(ctx, "bob")
    unbound = _Ctx({IDENTITY_KEY: Scope("cline", "carol")})
    assert resolver.resolve(unbound, "bob").user_id == "bob"
    assert "cannot override the binding" in (describe_binding(settings) or "")
    assert describe_binding(Settings(_env_file=None, auth_tokens="token-aaaa:alice")) is None


def test_accept_errors_are_one_line_per_interval(caplog):
    now = [100.0]
    limiter = AcceptErrorLimiter(interval=10.0, clock=lambda: now[0])
    context = {"message": "socket.accept() out of system resource", "exception": OSError(24, "Too many open files")}
    with caplog.at_level(logging.ERROR, logger="tablestore_openmemory_mcp.transports.serve"):
        for _ in range(500):
            limiter(None, context)  # type: ignore[arg-type]
        now[0] += 11
        limiter(None, context)  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "499 more" in lines[1]
    assert all(record.exc_info is None for record in caplog.records), "no traceback"


def test_port_in_use_names_the_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port} on 127.0.0.1 is already in use"):
            bind_socket("127.0.0.1", port)
    bind_socket("127.0.0.1", 0).close()


def test_accepted_connections_get_tcp_nodelay() -> None:
    """Without TCP_NODELAY every small response waits ~40 ms (Nagle + delayed ACK): asyncio sets it on accepted
    sockets only when the listening socket says IPPROTO_TCP."""
    import asyncio
    import socket

    from tablestore_openmemory_mcp.transports.listen import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("socket")
            seen.append(peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(200):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0
