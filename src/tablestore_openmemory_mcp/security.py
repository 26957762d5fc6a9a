"""HTTP security in front of every route: Host and Origin checks, then bearer tokens.

* **Host** (DNS rebinding): on loopback only loopback Host headers are accepted (plus
  ``MCP_ALLOWED_HOSTS``); elsewhere the check applies when ``MCP_ALLOWED_HOSTS`` is set. Bad Host: 421.
* **Origin** (MCP spec): a request that carries an ``Origin`` header must come from an allowed origin
  (loopback origins, ``MCP_ALLOWED_ORIGINS`` and ``MCP_CORS_ORIGINS``); otherwise 403. Requests
  without Origin (non-browser clients) pass.
* **Tokens**: with ``MCP_AUTH_TOKENS`` set, every route but ``/health`` needs ``Authorization: Bearer``
  with a known token (401 with ``WWW-Authenticate: Bearer`` otherwise). A token bound to a user
  (``token:user_id``) may only open that user's URLs (403 otherwise); for ``POST /mcp/messages/`` the
  transport checks the session's user against ``scope["state"]["token_user"]``.
"""

from __future__ import annotations

import hmac
import re
from typing import Any
from urllib.parse import unquote

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tablestore_openmemory_mcp.settings import Settings

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]", "127.0.0.1:*", "localhost:*", "[::1]:*"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*",
                    "http://127.0.0.1", "http://localhost", "http://[::1]"]  # fmt: skip
_USER_PATH = re.compile(r"^/mcp/[^/]+/(?:sse|http)/([^/]+)/?$")
UNBOUND = object()


def _matches(value: str, allowed: list[str]) -> bool:
    """Exact match, ``base:*`` for any port, or ``*`` for anything."""
    for pattern in allowed:
        if pattern == "*" or value == pattern:
            return True
        if pattern.endswith(":*") and value.startswith(pattern[:-1]):
            return True
    return False


def _error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


class SecurityMiddleware:
    """Pure ASGI middleware (no buffering), so SSE streams pass through untouched."""

    def __init__(self, app: ASGIApp, settings: Settings, loopback: bool) -> None:
        self.app = app
        self.tokens = {token: user for token, user in settings.auth_tokens}
        self.allowed_hosts = (LOOPBACK_HOSTS if loopback else []) + settings.allowed_hosts
        self.check_hosts = bool(self.allowed_hosts)
        self.allowed_origins = LOOPBACK_ORIGINS + settings.allowed_origins + settings.cors_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        response = self._check(scope, headers)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope, headers: dict[str, str]) -> JSONResponse | None:
        if self.check_hosts and not _matches(headers.get("host", ""), self.allowed_hosts):
            return _error(421, "invalid_host", "Host header not allowed (set MCP_ALLOWED_HOSTS)")
        origin = headers.get("origin")
        if origin and not _matches(origin, self.allowed_origins):
            return _error(403, "invalid_origin", "Origin not allowed (set MCP_ALLOWED_ORIGINS)")
        path = scope.get("path", "")
        if not self.tokens or path == "/health" or scope.get("method") == "OPTIONS":
            return None
        user = self._token_user(headers.get("authorization", ""))
        if user is None:
            return _error(
                401,
                "unauthorized",
                "A valid bearer token is required (Authorization: Bearer <token>)",
                {"WWW-Authenticate": 'Bearer realm="tablestore-openmemory-mcp"'},
            )
        scope.setdefault("state", {})["token_user"] = None if user is UNBOUND else user
        wanted = _USER_PATH.match(path)
        if user is not UNBOUND and wanted and unquote(wanted.group(1)) != user:
            return _error(403, "forbidden", "This token may only access its own user's memories")
        return None

    def _token_user(self, authorization: str) -> Any:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        for known, user in self.tokens.items():
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                return UNBOUND if user is None else user
        return None
