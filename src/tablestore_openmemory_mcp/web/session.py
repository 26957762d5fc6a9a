"""The web page's login: the bearer token kept in an HttpOnly cookie, accepted for ``/api/*`` only, CSRF-safe.

Why a cookie: the page must not hold the token where a script (or an injected one) could read it. The cookie is
``HttpOnly`` and ``SameSite=Strict`` (never sent by another site's page), and it only ever stands in for the
``Authorization`` header on ``/api/*``: MCP routes still need the real header. A request authenticated by the
cookie that changes something (any method but GET/HEAD/OPTIONS) must also carry :data:`CSRF_HEADER`; a cross-site
form cannot set a custom header and a cross-site ``fetch`` that sets one needs a CORS preflight this server does
not grant for credentials, so such a request is refused (403) before it reaches the API.

:class:`CookieSession` sits just before Starlette's ``AuthenticationMiddleware``: it turns the cookie into the
header, and the usual token check (and the binding of a token to its user) does the rest.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from starlette.requests import cookie_parser
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tablestore_openmemory_mcp.edge.security import error_response

COOKIE = "openmemory_token"
CSRF_HEADER = "x-requested-with"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_PREFIX = "/api/"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def cookie_token(scope: Scope) -> str | None:
    """The token the login cookie carries, or None."""
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    value = cookie_parser(raw.decode("latin-1")).get(COOKIE)
    return unquote(value) if value else None


def has_csrf_header(scope: Scope) -> bool:
    """True when the request carries the page's custom header (which a cross-site form cannot send)."""
    return bool(_header(scope, CSRF_HEADER.encode()))


def set_login_cookie(response: Response, token: str, secure: bool) -> None:
    """Keep ``token`` for this browser session: HttpOnly, SameSite=Strict, Secure over HTTPS."""
    response.set_cookie(COOKIE, quote(token, safe=""), path="/", httponly=True, samesite="strict", secure=secure)


def clear_login_cookie(response: Response, secure: bool) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=secure)


class CookieSession:
    """Pure ASGI: on ``/api/*`` without an ``Authorization`` header, the login cookie becomes the bearer token.

    Unsafe methods authenticated this way need :data:`CSRF_HEADER` (403 otherwise). Requests that bring their
    own ``Authorization`` header are untouched, so scripts and MCP clients work as before.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and str(scope.get("path", "")).startswith(API_PREFIX)
            and _header(scope, b"authorization") is None
        ):
            token = cookie_token(scope)
            if token is not None:
                if scope.get("method") not in SAFE_METHODS and not has_csrf_header(scope):
                    response = error_response(
                        403,
                        "csrf",
                        "a request authenticated by the login cookie must carry the X-Requested-With header",
                    )
                    await response(scope, receive, send)
                    return
                try:
                    bearer = f"Bearer {token}".encode("latin-1")
                except UnicodeEncodeError:  # no configured token has such characters: let the token check refuse it
                    bearer = b"Bearer -"
                scope = {**scope, "headers": [*scope["headers"], (b"authorization", bearer)]}
        await self.app(scope, receive, send)
