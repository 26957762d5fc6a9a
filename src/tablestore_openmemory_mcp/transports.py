"""One HTTP app for every network client, plus stdio.

Routes (HTTP modes serve all of them at once):

* ``GET /mcp/{client_name}/sse/{user_id}`` and ``POST /mcp/messages/``: the reference server's SSE
  routes, unchanged, so existing CherryStudio and Cline configurations keep working. The stream's URL
  names the identity; each POST finds it through its session id. The POST answers
  with the SDK's own status codes (400 for a bad body, 404 for an unknown session): never a blanket 200.
* ``/mcp/{client_name}/http/{user_id}``: streamable HTTP (stateless: the identity comes from each
  request's path, so no session can be replayed under another user's URL).
* ``GET /health``.

Every route sits behind :class:`~tablestore_openmemory_mcp.security.SecurityMiddleware` (Host, Origin,
bearer tokens) and, when ``MCP_CORS_ORIGINS`` is set, CORS.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Send
from starlette.types import Scope as ASGIScope

from tablestore_openmemory_mcp import __version__
from tablestore_openmemory_mcp.identity import CONNECTION_SCOPE
from tablestore_openmemory_mcp.scope import InvalidIdentity, Scope
from tablestore_openmemory_mcp.security import SecurityMiddleware
from tablestore_openmemory_mcp.settings import Settings

logger = logging.getLogger(__name__)

SSE_MESSAGE_PATH = "/mcp/messages/"
DRAIN_SECONDS = 10
_SESSION_ID = re.compile(r"session_id=([0-9a-fA-F-]+)")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _ASGIEndpoint:
    """Starlette treats plain functions as request/response endpoints; an instance is called as ASGI."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _bad_identity(exc: InvalidIdentity) -> JSONResponse:
    return JSONResponse({"error": "invalid_identity", "message": str(exc)}, status_code=400)


def build_http_app(server: MCPServer, settings: Settings, health: dict[str, Any]) -> Starlette:
    """The Starlette app serving SSE, streamable HTTP and /health for ``server``."""
    lowlevel = server._lowlevel_server  # the SDK exposes no public handle for custom transports
    # Host/Origin checks and tokens live in SecurityMiddleware, configured from settings, for every route.
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    sse = SseServerTransport(SSE_MESSAGE_PATH, security_settings=security)
    streamable = StreamableHTTPSessionManager(app=lowlevel, stateless=True, security_settings=security)
    shared = settings.share_across_clients

    sessions: dict[str, Scope] = {}  # SSE session id -> the identity in the stream's URL
    AppStatus.disable_automatic_graceful_drain()  # streams close after in-flight calls drain (serve_http)

    async def sse_stream(scope: ASGIScope, receive: Receive, send: Send) -> None:
        params = scope.get("path_params", {})
        try:
            identity = Scope(params.get("client_name", ""), params.get("user_id", ""), shared)
        except InvalidIdentity as exc:
            await _bad_identity(exc)(scope, receive, send)
            return
        opened: list[str] = []

        async def remember_session(message: Any) -> None:
            # The SDK announces the session in its first event ("endpoint"); remember whose it is.
            if not opened and message.get("type") == "http.response.body":
                found = _SESSION_ID.search(message.get("body", b"").decode("latin-1"))
                if found:
                    opened.append(found.group(1).lower())
                    sessions[opened[0]] = identity
            await send(message)

        try:
            async with sse.connect_sse(scope, receive, remember_session) as (reader, writer):
                await lowlevel.run(reader, writer, lowlevel.create_initialization_options())
        finally:
            for session_id in opened:
                sessions.pop(session_id, None)

    async def sse_post(scope: ASGIScope, receive: Receive, send: Send) -> None:
        """Tool calls run in this request's context (the SDK propagates it), so set the identity here."""
        session_id = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_id", [""])[0]
        session_scope = sessions.get(session_id.replace("-", "").lower())
        bound_user = scope.get("state", {}).get("token_user")
        if bound_user is not None and session_scope is not None and session_scope.user_id != bound_user:
            await JSONResponse(
                {"error": "forbidden", "message": "This token may only access its own user's memories"},
                status_code=403,
            )(scope, receive, send)
            return
        token = CONNECTION_SCOPE.set(session_scope)
        try:
            await sse.handle_post_message(scope, receive, send)
        finally:
            CONNECTION_SCOPE.reset(token)

    async def streamable_endpoint(scope: ASGIScope, receive: Receive, send: Send) -> None:
        params = scope.get("path_params", {})
        try:
            Scope(params.get("client_name", ""), params.get("user_id", ""), shared)
        except InvalidIdentity as exc:
            await _bad_identity(exc)(scope, receive, send)
            return
        await streamable.handle_request(scope, receive, send)

    async def health_endpoint(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__, **health})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with streamable.run():
            yield

    routes = [
        Route("/health", health_endpoint, methods=["GET"]),
        Route("/mcp/{client_name}/sse/{user_id}", _ASGIEndpoint(sse_stream), methods=["GET"]),
        Mount(SSE_MESSAGE_PATH, app=sse_post),
        Route(
            "/mcp/{client_name}/http/{user_id}", _ASGIEndpoint(streamable_endpoint), methods=["GET", "POST", "DELETE"]
        ),
    ]
    middleware = [Middleware(SecurityMiddleware, settings=settings, loopback=is_loopback(settings.host))]
    if settings.cors_origins:  # off by default; outermost so preflight requests get CORS headers
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=["mcp-session-id"],
                allow_credentials=False,
            ),
        )
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware)


async def serve_http(app: Starlette, settings: Settings, in_flight: Callable[[], int]) -> None:
    """Serve ``app`` with uvicorn; logs go to stderr like everything else.

    On SIGTERM/SIGINT uvicorn stops accepting and waits for open requests. SSE streams stay open until
    the tool calls in flight have finished and their results were sent (at most DRAIN_SECONDS), then
    they are closed so uvicorn can finish.
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,
        timeout_graceful_shutdown=DRAIN_SECONDS + 2,
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as group:
        group.start_soon(_close_sse_streams_after_drain, server, in_flight)
        await server.serve()
        group.cancel_scope.cancel()


async def _close_sse_streams_after_drain(server: Any, in_flight: Callable[[], int]) -> None:
    while not server.should_exit:
        await anyio.sleep(0.1)
    deadline = anyio.current_time() + DRAIN_SECONDS
    while in_flight() and anyio.current_time() < deadline:
        await anyio.sleep(0.05)
    await anyio.sleep(0.3)  # let the last results reach their streams
    AppStatus.should_exit = True


async def serve_stdio(server: MCPServer) -> None:
    """Serve one client on stdin/stdout; returns when stdin closes."""
    await server.run_stdio_async()


def run(coro_fn: Any, *args: Any) -> None:
    anyio.run(coro_fn, *args)
