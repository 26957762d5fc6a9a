"""The memory browser's sign-in through the authorization server: authorization code + PKCE (S256).

``GET /auth/oauth/start`` remembers a random ``state`` and PKCE verifier (server-side, bounded, ten minutes) and
binds the state to this browser with a ``SameSite=Lax`` cookie (sent on the provider's redirect back, never by
another site's request or script), then redirects to the authorization endpoint. ``GET /auth/oauth/callback``
checks the state against that cookie, redeems the code with the verifier, validates the access token exactly as
the API will, and keeps it in the page's HttpOnly login cookie (see ``web.session``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from urllib.parse import urlencode

import httpx2 as httpx  # the HTTP client mcp itself depends on (no extra dependency)
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from tablestore_openmemory_mcp.auth.claims import Refused
from tablestore_openmemory_mcp.auth.config import OAuthConfig
from tablestore_openmemory_mcp.auth.discovery import DiscoveryError, ServerMetadata
from tablestore_openmemory_mcp.auth.verifier import ChainVerifier
from tablestore_openmemory_mcp.edge.security import error_response
from tablestore_openmemory_mcp.web.session import set_login_cookie

logger = logging.getLogger(__name__)

START_PATH = "/auth/oauth/start"
CALLBACK_PATH = "/auth/oauth/callback"
STATE_COOKIE = "openmemory_oauth_state"
PENDING_SECONDS = 600.0
MAX_PENDING = 1000


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge) as RFC 7636 describes."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class PageLogin:
    """The two routes, the pending logins, and the token exchange."""

    def __init__(
        self, config: OAuthConfig, metadata: ServerMetadata, verifier: ChainVerifier, client: httpx.AsyncClient
    ) -> None:
        assert config.client_id
        self.config = config
        self.metadata = metadata
        self.verifier = verifier
        self.client = client
        self._pending: OrderedDict[str, tuple[float, str]] = OrderedDict()

    @property
    def redirect_uri(self) -> str:
        return self.config.public_url + CALLBACK_PATH

    def routes(self) -> list[BaseRoute]:
        return [Route(START_PATH, self.start, methods=["GET"]), Route(CALLBACK_PATH, self.callback, methods=["GET"])]

    def _remember(self, state: str, verifier: str) -> None:
        now = time.monotonic()
        while self._pending and (
            len(self._pending) >= MAX_PENDING or next(iter(self._pending.values()))[0] < now - PENDING_SECONDS
        ):
            self._pending.popitem(last=False)
        self._pending[state] = (now, verifier)

    def _take(self, state: str) -> str | None:
        found = self._pending.pop(state, None)
        if found is None or found[0] < time.monotonic() - PENDING_SECONDS:
            return None
        return found[1]

    async def start(self, request: Request) -> Response:
        try:
            endpoint = await self.metadata.endpoint("authorization_endpoint")
        except DiscoveryError as exc:
            return error_response(502, "oauth_unavailable", f"the authorization server cannot be reached: {exc}")
        state = secrets.token_urlsafe(32)
        verifier, challenge = pkce_pair()
        self._remember(state, verifier)
        params = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(["openid", *self.config.scopes]),
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": self.config.public_url,
        }
        separator = "&" if "?" in endpoint else "?"
        response = RedirectResponse(endpoint + separator + urlencode(params), status_code=302)
        secure = self.config.public_url.startswith("https://")
        response.set_cookie(
            STATE_COOKIE, state, max_age=int(PENDING_SECONDS), path="/auth/oauth", httponly=True, samesite="lax",
            secure=secure,
        )  # fmt: skip
        return response

    async def callback(self, request: Request) -> Response:
        query = request.query_params
        if query.get("error"):
            description = query.get("error_description") or query["error"]
            return error_response(401, "oauth_denied", f"the authorization server refused: {description[:200]}")
        issuer = query.get("iss")  # RFC 9207: a response from another server (mix-up attack) is refused
        if issuer is not None and issuer.rstrip("/") != self.config.issuer.rstrip("/"):
            return error_response(400, "oauth_issuer", "this sign-in answer came from another authorization server")
        state, code = query.get("state", ""), query.get("code", "")
        bound = request.cookies.get(STATE_COOKIE, "")
        if not state or not code or not bound or not hmac.compare_digest(state, bound):
            return error_response(400, "oauth_state", "this sign-in was not started from this browser; start again")
        verifier = self._take(state)
        if verifier is None:
            return error_response(400, "oauth_state", "this sign-in expired or was already used; start again")
        try:
            token = await self._redeem(code, verifier)
        except Refused as exc:
            logger.warning("page sign-in failed: %s", exc)
            return error_response(401, "oauth_failed", f"sign-in failed: {exc}")
        if await self.verifier.verify_token(token) is None:
            return error_response(
                401, "oauth_failed", "the authorization server issued a token this server does not accept (see its log)"
            )
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(STATE_COOKIE, path="/auth/oauth")
        set_login_cookie(response, token, secure=self.config.public_url.startswith("https://"))
        return response

    async def _redeem(self, code: str, verifier: str) -> str:
        try:
            endpoint = await self.metadata.endpoint("token_endpoint")
        except DiscoveryError as exc:
            raise Refused(str(exc)) from None
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
            "resource": self.config.public_url,
        }
        auth = None
        if self.config.client_secret:
            auth = (self.config.client_id or "", self.config.client_secret)
        else:
            data["client_id"] = self.config.client_id or ""
        try:
            # request("POST") is what post() calls; its signature also admits auth=None (no authentication)
            response = await self.client.request("POST", endpoint, data=data, auth=auth, timeout=10.0)
        except httpx.HTTPError as exc:
            raise Refused(f"token endpoint: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        token = body.get("access_token") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(token, str):
            error = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
            raise Refused(f"token endpoint answered HTTP {response.status_code} {error or ''}".strip())
        return token
