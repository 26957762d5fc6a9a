"""HTTP security in front of every route: Host and Origin checks, then bearer tokens in Starlette's auth slots.

* **Host** (DNS rebinding): on loopback only loopback Host headers are accepted (plus
  ``MCP_ALLOWED_HOSTS``); elsewhere the check applies when ``MCP_ALLOWED_HOSTS`` is set. Bad Host: 421.
* **Origin** (MCP spec): a request that carries an ``Origin`` header must come from its own origin or an allowed origin
  (loopback origins, ``MCP_ALLOWED_ORIGINS`` and ``MCP_CORS_ORIGINS``); otherwise 403. Requests
  without Origin (non-browser clients) pass.
* **Tokens**: with ``MCP_AUTH_TOKENS`` set, Starlette's ``AuthenticationMiddleware`` runs the SDK's
  ``BearerAuthBackend`` with :class:`StaticTokenVerifier`, so the caller lands in ``scope["user"]`` /
  ``scope["auth"]`` like any MCP server with auth. That is what lets the SDK's own SSE rule apply (a session
  can only be used with the credential that created it). :class:`RequireToken` then answers 401 on every
  route except the public ones (``/health``, ``/ready``, ``/.well-known/*``; the web page's ``/``, ``/static/*``
  and ``/auth/*``, whose data comes from ``/api``). A token bound to a user
  (``token:user_id``) carries that user as its ``subject``; the HTTP app refuses it any other user's URL (403)
  and the identity resolver refuses it any other ``user_id`` argument.
"""

from __future__ import annotations

import hmac
import json

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tablestore_openmemory_mcp.settings import Settings

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]", "127.0.0.1:*", "localhost:*", "[::1]:*"]
LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*",
                    "http://127.0.0.1", "http://localhost", "http://[::1]"]  # fmt: skip
# the web page, its assets and its login must load without a token (its data comes from /api, which needs one)
PUBLIC_PATHS = ("/health", "/ready", "/", "/auth/session", "/auth/login", "/auth/logout", "/auth/connect")
PUBLIC_PREFIXES = ("/.well-known/", "/static/", "/auth/oauth/")  # /auth/oauth/: the page's OAuth sign-in
WWW_AUTHENTICATE = 'Bearer realm="tablestore-openmemory-mcp"'


def _matches(value: str, allowed: list[str]) -> bool:
    """Exact match, ``base:*`` for any port, or ``*`` for anything."""
    for pattern in allowed:
        if pattern == "*" or value == pattern:
            return True
        if pattern.endswith(":*") and value.startswith(pattern[:-1]):
            return True
    return False


def error_response(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The plain JSON error every route uses; JSON-RPC requests get it reshaped by ``transports.errors``."""
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


class StaticTokenVerifier:
    """The SDK's ``TokenVerifier`` for ``MCP_AUTH_TOKENS``: constant-time comparison, one principal per token.

    Each token's ``client_id`` is ``token-<n>`` (its position), so two tokens are two principals for the SDK's
    session-ownership rule; a bound token's user is its ``subject``.
    """

    def __init__(self, tokens: list[tuple[str, str | None]]) -> None:
        self._tokens = [
            (token.encode(), AccessToken(token="", client_id=f"token-{index}", scopes=[], subject=user))
            for index, (token, user) in enumerate(tokens)
        ]

    async def verify_token(self, token: str) -> AccessToken | None:
        presented = token.strip().encode()
        found = None
        for known, access in self._tokens:  # no early exit: the time taken does not depend on which token matched
            if hmac.compare_digest(known, presented):
                found = access
        return found


def bound_user(scope: Scope) -> str | None:
    """The user a request's token is bound to, or None (no token, or an unbound token)."""
    user = scope.get("user")
    return user.access_token.subject if isinstance(user, AuthenticatedUser) else None


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class HostOriginMiddleware:
    """Pure ASGI middleware (no buffering), so SSE streams pass through untouched."""

    def __init__(self, app: ASGIApp, settings: Settings, loopback: bool) -> None:
        self.app = app
        self.allowed_hosts = (LOOPBACK_HOSTS if loopback else []) + settings.allowed_hosts
        self.check_hosts = bool(self.allowed_hosts)
        self.allowed_origins = LOOPBACK_ORIGINS + settings.allowed_origins + settings.cors_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
            if self.check_hosts and not _matches(headers.get("host", ""), self.allowed_hosts):
                await error_response(421, "invalid_host", "Host header not allowed (set MCP_ALLOWED_HOSTS)")(
                    scope, receive, send
                )
                return
            origin = headers.get("origin")
            same_origin = origin in (f"http://{headers.get('host')}", f"https://{headers.get('host')}")
            if origin and not same_origin and not _matches(origin, self.allowed_origins):
                await error_response(403, "invalid_origin", "Origin not allowed (set MCP_ALLOWED_ORIGINS)")(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


class RequireToken:
    """401 (with ``WWW-Authenticate: Bearer``) unless ``AuthenticationMiddleware`` found a known token.

    Fails closed: every path needs the token except :data:`PUBLIC_PATHS` / :data:`PUBLIC_PREFIXES` and CORS
    preflights.
    """

    def __init__(self, app: ASGIApp, challenge: str = WWW_AUTHENTICATE) -> None:
        self.app = app
        self.challenge = challenge  # with OAuth it names the resource metadata (auth.gate.challenge)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get("method") != "OPTIONS"
            and not is_public(scope.get("path", ""))
            and not isinstance(scope.get("user"), AuthenticatedUser)
        ):
            response = error_response(
                401,
                "unauthorized",
                "A valid bearer token is required (Authorization: Bearer <token>)",
                {"WWW-Authenticate": self.challenge},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def describe_binding(settings: Settings) -> str | None:
    """The startup line for ``MEMORY_ALLOW_USER_ID_ARG=true`` with bound tokens, or None when it does not apply."""
    bound = sorted({user for _, user in settings.auth_tokens if user is not None})
    if not (settings.allow_user_id_override and bound):
        return None
    return (
        "MEMORY_ALLOW_USER_ID_ARG=true with user-bound tokens: a bound token can still act only as its own user "
        f"(the user_id argument cannot override the binding; bound users: {json.dumps(bound, ensure_ascii=False)})"
    )
