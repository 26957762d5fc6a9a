"""The memory browser's routes: the page at ``/``, its assets under ``/static/``, and login at ``/auth/*``.

The page is plain HTML, CSS and JavaScript shipped inside the package (no build step, no CDN, works offline); all
data comes from the REST API (``/api/v1``). These routes are public (the login form must load without a token);
they reveal nothing but whether tokens are configured and, after login, which user a token is bound to and
(``/auth/connect``) where the embedded store lives and whether clients share memories.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tablestore_openmemory_mcp import __version__
from tablestore_openmemory_mcp.auth.verifier import Verifier
from tablestore_openmemory_mcp.edge.security import StaticTokenVerifier, error_response
from tablestore_openmemory_mcp.settings import Settings
from tablestore_openmemory_mcp.web.session import (
    clear_login_cookie,
    cookie_token,
    has_csrf_header,
    set_login_cookie,
)
from tablestore_openmemory_mcp.web.throttle import LoginThrottle, address_key, too_many

logger = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
MAX_TOKEN_CHARS = 4096
#: Scripts and styles only from this server: an injected <script> or inline handler does not run.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class WebPage:
    """The page, the login endpoints and the static assets, configured from settings."""

    def __init__(
        self,
        settings: Settings,
        throttle: LoginThrottle | None = None,
        verifier: Verifier | None = None,
        oauth_login: str | None = None,
    ) -> None:
        self.settings = settings
        # static tokens and/or OAuth (auth.setup); without one, the static tokens of the settings; None: no sign-in
        if verifier is None and settings.auth_tokens:
            verifier = StaticTokenVerifier(settings.auth_tokens)
        self.verifier = verifier
        self.oauth_login = oauth_login  # the "sign in with the provider" URL, or None
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self._html: str | None = None

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/auth/session", self.session, methods=["GET"]),
            Route("/auth/connect", self.connect, methods=["GET"]),
            Route("/auth/login", self.login, methods=["POST"]),
            Route("/auth/logout", self.logout, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        ]

    async def page(self, request: Request) -> Response:
        if self._html is None:  # read on first use, not at import; the version busts browser caches on upgrade
            self._html = (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace("{{version}}", __version__)
        return HTMLResponse(self._html, headers=PAGE_HEADERS)

    async def _user_of(self, token: str | None) -> tuple[bool, str | None]:
        """(known token, the user it is bound to)."""
        if self.verifier is None or not token:
            return False, None
        access = await self.verifier.verify_token(token)
        return access is not None, access.subject if access is not None else None

    async def session(self, request: Request) -> Response:
        """What the page needs before it shows anything: is a token needed, is this browser signed in, as whom."""
        auth = self.verifier is not None
        token = cookie_token(request.scope)
        host = request.client.host if request.client is not None else None
        if auth and token and self.throttle.retry_after(host) is not None:
            token = None  # a cookie is a token too (the same oracle as the login form): while locked, not checked,
            # and the page shows its sign-in form, whose 429 says how long to wait
        known, user = await self._user_of(token)
        if auth and token and not known:
            self.throttle.failed(host)
        answer = {"auth_required": auth, "authenticated": known or not auth, "user": user, "version": __version__}
        if self.oauth_login:  # the page offers "sign in with your identity provider"
            answer["oauth_login"] = self.oauth_login
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    async def connect(self, request: Request) -> Response:
        """What the dashboard's client snippets need from the server (signed-in browsers only): whether memories
        are shared across clients, and the store settings a stdio client must repeat to write where this page
        reads (never a secret: a Tablestore configuration is left to the user)."""
        known, _ = await self._user_of(cookie_token(request.scope))
        if self.verifier is not None and not known:
            return error_response(401, "unauthorized", "sign in first")
        env: dict[str, str] = {}
        if not self.settings.uses_tablestore:
            env["MEMORY_DATA_DIR"] = str(self.settings.resolved_data_dir)
        if self.settings.share_across_clients:
            env["MEMORY_SHARE_ACROSS_CLIENTS"] = "true"
        shared = self.settings.share_across_clients
        return JSONResponse({"shared": shared, "stdio_env": env}, headers={"Cache-Control": "no-store"})

    async def login(self, request: Request) -> Response:
        """Check a token and keep it in the HttpOnly cookie; 401 for an unknown token, 429 after too many
        (see :mod:`.throttle`). Neither the answer nor the log ever repeats the token."""
        if not has_csrf_header(request.scope):
            return error_response(403, "csrf", "sign in from the page (the X-Requested-With header is missing)")
        if self.verifier is None:
            return error_response(400, "no_tokens", "this server has no MCP_AUTH_TOKENS: no sign-in is needed")
        host = request.client.host if request.client is not None else None
        wait = self.throttle.retry_after(host)
        if wait is not None:
            return too_many(wait)
        token = await _token_from(request)
        known, user = await self._user_of(token)
        if not known or token is None:
            locked = self.throttle.failed(host)
            if locked is not None:
                logger.warning("sign-in: too many failed tokens from %s; refused for %d s", address_key(host), locked)
            return error_response(401, "unauthorized", "unknown token: use one of the server's MCP_AUTH_TOKENS")
        self.throttle.succeeded(host)
        response = JSONResponse({"authenticated": True, "user": user})
        set_login_cookie(response, token, secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        if not has_csrf_header(request.scope):
            return error_response(403, "csrf", "sign out from the page (the X-Requested-With header is missing)")
        response = JSONResponse({"authenticated": False})
        clear_login_cookie(response, secure=request.url.scheme == "https")
        return response


async def _token_from(request: Request) -> str | None:
    raw = await request.body()
    if len(raw) > MAX_TOKEN_CHARS + 64:
        return None
    try:
        data: Any = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        return None
    token = data.get("token") if isinstance(data, dict) else None
    return token.strip() if isinstance(token, str) and token.strip() else None


def web_routes(
    settings: Settings,
    throttle: LoginThrottle | None = None,
    verifier: Verifier | None = None,
    oauth_login: str | None = None,
) -> list[BaseRoute]:
    """The page's routes for the HTTP app (``routes += web_routes(settings, throttle, verifier, oauth_login)``)."""
    return WebPage(settings, throttle, verifier, oauth_login).routes()
