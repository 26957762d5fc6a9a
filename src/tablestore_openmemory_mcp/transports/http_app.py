"""The HTTP app: SSE, streamable HTTP, health and readiness, behind Host/Origin checks and bearer tokens.

Routes:

* ``GET /mcp/{client_name}/sse/{user_id}`` and ``POST /mcp/messages/?session_id=<hex>``: the reference's SSE
  routes (see :mod:`.sse`).
* ``POST /mcp/{client_name}/http/{user_id}``: streamable HTTP, stateless (the identity comes from each request's
  path, so nothing can be replayed under another user's URL). ``GET`` there is a 405 naming the SSE URL, so an
  SSE client pointed at it fails at once instead of waiting for an endpoint event that never comes.
* ``GET /health``: cheap (no store call; tool calls running now in ``in_flight``); 503 ``starting`` until the
  memory service is built.
* ``GET /ready`` (and ``/health?deep=1``): asks the service which dependency is down; 503 with JSON if any is.
* ``GET /`` (with ``/static/*`` and ``/auth/*``): the memory browser, a web page on the REST API (see ``web``).
* ``POST /mcp`` (streamable HTTP) and ``GET /sse`` (SSE): the user comes from the token (OAuth, or a user-bound
  ``MCP_AUTH_TOKENS`` entry), the client name from the OAuth client (else ``remote``): the URL remote connectors
  such as claude.ai use. ``/mcp/{client_name}/{user_id}/mcp`` and ``/mcp/{client_name}/{user_id}/sse`` are the
  same endpoints as the ``/http/`` and ``/sse/`` forms, for MCP Inspector (which rewrites URLs not ending in
  ``/mcp`` or ``/sse``); where both forms could match (a user named ``sse`` or ``http``) the older one wins.
* ``/.well-known/oauth-protected-resource[/<path>]`` and ``/auth/oauth/*``: with ``MCP_OAUTH_ISSUER`` (see ``auth``).
* Anything else: 404 JSON with a hint to the right URLs.

Middleware, outermost first: CORS (only when ``MCP_CORS_ORIGINS`` is set), JSON-RPC error bodies, connection
cap, Host/Origin, and with tokens or OAuth Starlette's ``AuthenticationMiddleware`` (the SDK's bearer backend on
:class:`~tablestore_openmemory_mcp.auth.verifier.ChainVerifier`), then
:class:`~tablestore_openmemory_mcp.edge.security.RequireToken` and
:class:`~tablestore_openmemory_mcp.auth.gate.ScopeGate`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import anyio
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, TransportSecuritySettings
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

from tablestore_openmemory_mcp import __version__
from tablestore_openmemory_mcp.auth.gate import ScopeGate
from tablestore_openmemory_mcp.auth.setup import build_http_auth
from tablestore_openmemory_mcp.edge.identity import IDENTITY_KEY
from tablestore_openmemory_mcp.edge.security import HostOriginMiddleware, RequireToken, bound_user, error_response
from tablestore_openmemory_mcp.rest.app import api_routes
from tablestore_openmemory_mcp.scope import InvalidIdentity, Scope
from tablestore_openmemory_mcp.settings import Settings
from tablestore_openmemory_mcp.transports.jsonrpc_errors import JsonRpcErrors
from tablestore_openmemory_mcp.transports.listen import is_loopback
from tablestore_openmemory_mcp.transports.sse import SSE_MESSAGE_PATH, SseSessions
from tablestore_openmemory_mcp.web import CookieSession, web_routes
from tablestore_openmemory_mcp.web.throttle import LoginThrottle, ThrottleFailedTokens

logger = logging.getLogger(__name__)

READINESS_TIMEOUT = 10.0
UNCAPPED = ("/health", "/ready")  # keep answering when the connection cap is reached
URL_HINT = (
    "MCP clients connect to /mcp/<client_name>/sse/<user_id> (SSE) or /mcp/<client_name>/http/<user_id> "
    "(streamable HTTP); the memory browser is at / and the REST API at /api/v1 (openapi.json); GET /health and "
    "/ready report the server's state"
)


class ServiceSource(Protocol):
    """What the app needs of the service handle (bootstrap.ServiceHandle)."""

    async def get(self) -> Any: ...

    def in_flight(self) -> int: ...


class _Endpoint:
    """Starlette treats plain functions as request/response endpoints; an instance is called as raw ASGI."""

    def __init__(self, app: Callable[[ASGIScope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class Connections:
    """Requests in progress (SSE streams included) and the cap on them; shown by /health."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0


class ConnectionCap:
    """At most ``limit`` requests in progress; past it 503, while /health and /ready keep answering."""

    def __init__(self, app: ASGIApp, connections: Connections) -> None:
        self.app = app
        self.connections = connections

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNCAPPED:
            await self.app(scope, receive, send)
            return
        connections = self.connections
        if connections.active >= connections.limit:
            response = error_response(
                503, "busy", f"the server has {connections.limit} connections open (MCP_MAX_CONNECTIONS); retry later"
            )
            response.headers["Retry-After"] = "5"
            await response(scope, receive, send)
            return
        connections.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            connections.active -= 1


class HttpApp:
    """The Starlette app and its state: SSE sessions, the streamable HTTP manager, startup status."""

    def __init__(self, server: Any, settings: Settings, service: ServiceSource) -> None:
        lowlevel: Server[Any] = server._lowlevel_server  # the SDK exposes no public handle for custom transports
        # Host/Origin checks and tokens live in our middleware, configured from settings, for every route.
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        self.settings = settings
        self.service = service
        self.sse = SseSessions(lowlevel, security, settings.sse_max_pending)
        self.streamable = StreamableHTTPSessionManager(app=lowlevel, stateless=True, security_settings=security)
        self.ready = False
        self.connections = Connections(settings.max_connections)
        self.info: dict[str, Any] = {"transport": settings.transport}
        self.auth = build_http_auth(settings)
        # SSE streams end via close(), after the answers in flight, not when uvicorn starts exiting
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]  # sse-starlette leaves it unannotated
        self.throttle = LoginThrottle()  # failed tokens per address: the login form and bearer tokens alike
        self.app = self._build()

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def mark_ready(self, **info: Any) -> None:
        """The memory service is built: /health turns 200 and shows ``info`` (store name, ...)."""
        self.info.update(info)
        self.ready = True

    async def close(self, drain_seconds: float) -> None:
        """Shutdown: let answers in flight reach their SSE streams (bounded), then end every stream."""
        await self.sse.close_all(drain_seconds)

    # --- routes ---------------------------------------------------------------------------------------------

    def _identity(self, scope: ASGIScope) -> Scope | Response:
        params = scope.get("path_params", {})
        if "user_id" not in params:
            return self._token_identity(scope)
        try:
            identity = Scope(
                params.get("client_name", ""), params.get("user_id", ""), self.settings.share_across_clients
            )
        except InvalidIdentity as exc:
            return error_response(400, "invalid_identity", str(exc))
        bound = bound_user(scope)
        if bound is not None and identity.user_id != bound:
            return error_response(403, "forbidden", "This token may only access its own user's memories")
        return identity

    def _token_identity(self, scope: ASGIScope) -> Scope | Response:
        """``/mcp`` and ``/sse``: the user of the token, the client of the OAuth token (or ``remote``)."""
        user = bound_user(scope)
        if user is None:
            return error_response(
                400,
                "no_identity",
                "this URL takes the user from the token (OAuth, or an MCP_AUTH_TOKENS entry token:user_id); "
                "otherwise connect to /mcp/<client_name>/http/<user_id> or /mcp/<client_name>/sse/<user_id>",
            )
        client = (scope["user"].access_token.claims or {}).get("client")
        try:
            return Scope(
                client if isinstance(client, str) and client else "remote", user, self.settings.share_across_clients
            )
        except InvalidIdentity:  # a client id with characters an identity may not have
            return Scope("remote", user, self.settings.share_across_clients)

    async def _sse_stream(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        identity = self._identity(scope)
        if isinstance(identity, Response):
            await identity(scope, receive, send)
            return
        await self.sse.stream(identity, scope, receive, send)

    async def _streamable(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        identity = self._identity(scope)
        if isinstance(identity, Response):
            await identity(scope, receive, send)
            return
        if scope["method"] == "GET":
            client, user = identity.client_name, identity.user_id
            response = error_response(
                405,
                "method_not_allowed",
                f"this is the streamable HTTP endpoint (POST only); SSE clients connect to /mcp/{client}/sse/{user}",
                {"Allow": "POST, DELETE"},
            )
            await response(scope, receive, send)
            return
        scope[IDENTITY_KEY] = identity
        await self.streamable.handle_request(scope, receive, send)

    async def _health(self, request: Request) -> Response:
        if request.query_params.get("deep") in ("1", "true"):
            return await self._ready_endpoint(request)
        if not self.ready:
            return JSONResponse({"status": "starting", "version": __version__, **self.info}, status_code=503)
        return JSONResponse(
            {
                "status": "ok",
                "version": __version__,
                **self.info,
                "in_flight": self.service.in_flight(),
                "connections": self.connections.active,
            }
        )

    async def _ready_endpoint(self, request: Request) -> Response:
        if not self.ready:
            return JSONResponse({"status": "starting", "store": "starting"}, status_code=503)
        checks = await self._readiness()
        healthy = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "unavailable", **checks}, status_code=200 if healthy else 503
        )

    async def _readiness(self) -> dict[str, str]:
        service = await self.service.get()
        readiness = getattr(service, "readiness", None)
        if readiness is None:  # a service without the check: it was built, which is all we know
            return {"store": "ok"}
        with anyio.move_on_after(READINESS_TIMEOUT):
            try:
                checks = await readiness()
            except Exception as exc:  # the check itself failed: report it, never a 500
                return {"store": f"{type(exc).__name__}: {exc}"}
            return {str(key): str(value) for key, value in dict(checks).items()}
        return {"store": f"no answer within {READINESS_TIMEOUT:.0f} s"}

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        if status == 405:
            return error_response(405, "method_not_allowed", f"{request.method} is not allowed here; {URL_HINT}")
        return error_response(status, "not_found", f"no such URL: {request.url.path}; {URL_HINT}")

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            async with self.streamable.run():
                yield
        finally:
            await self.auth.aclose()

    def _build(self) -> ASGIApp:
        settings = self.settings
        routes: list[BaseRoute] = [
            Route("/health", self._health, methods=["GET"]),
            Route("/ready", self._ready_endpoint, methods=["GET"]),
            Route("/mcp/{client_name}/sse/{user_id}", _Endpoint(self._sse_stream), methods=["GET"]),
            Route(SSE_MESSAGE_PATH, _Endpoint(self.sse.post), methods=["POST"]),
            Route("/mcp/{client_name}/http/{user_id}", _Endpoint(self._streamable), methods=["GET", "POST", "DELETE"]),
            Route("/mcp", _Endpoint(self._streamable), methods=["GET", "POST", "DELETE"]),
            Route("/sse", _Endpoint(self._sse_stream), methods=["GET"]),
            Route("/mcp/{client_name}/{user_id}/mcp", _Endpoint(self._streamable), methods=["GET", "POST", "DELETE"]),
            Route("/mcp/{client_name}/{user_id}/sse", _Endpoint(self._sse_stream), methods=["GET"]),
        ]
        routes += self.auth.routes  # OAuth: resource metadata, the page's sign-in
        routes += api_routes(self.service.get, settings)  # REST API and its OpenAPI document
        # the memory browser at / (on the REST API); its sign-in shares the failed-token table
        routes += web_routes(settings, self.throttle, self.auth.verifier, self.auth.page_login)
        middleware = [
            Middleware(JsonRpcErrors, max_body=DEFAULT_MAX_REQUEST_BODY_SIZE),
            Middleware(ConnectionCap, connections=self.connections),
            Middleware(HostOriginMiddleware, settings=settings, loopback=is_loopback(settings.host)),
        ]
        if self.auth.verifier is not None:
            backend = BearerAuthBackend(self.auth.verifier)
            middleware += [
                Middleware(CookieSession),  # the web page's login cookie stands in for the token on /api/*
                # shares the login form's table; OAuth access tokens (JWTs) are refused on their merits, not counted
                Middleware(ThrottleFailedTokens, throttle=self.throttle, spare_jwts=self.auth.config is not None),
                Middleware(AuthenticationMiddleware, backend=backend),
                Middleware(RequireToken, challenge=self.auth.www_authenticate),
                Middleware(ScopeGate, config=self.auth.config),  # OAuth read/write scopes
            ]
        if settings.cors_origins:  # off by default; outermost so preflight requests get CORS headers
            cors = Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=["mcp-session-id"],
                allow_credentials=False,
            )
            middleware.insert(0, cors)
        handlers = {404: self._not_found, 405: self._not_found}
        app = Starlette(routes=routes, middleware=middleware, lifespan=self._lifespan, exception_handlers=handlers)
        return app
