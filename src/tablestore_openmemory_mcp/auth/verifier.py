"""Bearer token verifiers (the SDK's ``TokenVerifier`` protocol): JWT via JWKS, RFC 7662 introspection, and the
chain that puts static tokens first.

A refused token is ``None`` for the SDK (which answers 401); the reason is logged at most once per
:data:`LOG_INTERVAL` per reason, without the token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx2 as httpx  # the HTTP client mcp itself depends on (no extra dependency)
import jwt
from mcp.server.auth.provider import AccessToken

from tablestore_openmemory_mcp.auth.claims import Refused, access_token, check_audience, check_times
from tablestore_openmemory_mcp.auth.config import OAuthConfig
from tablestore_openmemory_mcp.auth.discovery import DiscoveryError, ServerMetadata
from tablestore_openmemory_mcp.auth.jwks import ALGORITHMS, JwksCache, KeyNotFound

logger = logging.getLogger(__name__)

LEEWAY_SECONDS = 30
LOG_INTERVAL = 10.0
MAX_TOKEN_CHARS = 16 * 1024
INTROSPECTION_CACHE = 10_000
INTROSPECTION_TTL = 60.0


class Verifier(Protocol):
    async def verify_token(self, token: str) -> AccessToken | None: ...


class _RefusalLog:
    """One log line per reason per interval: a flood of bad tokens cannot flood the log."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def __call__(self, reason: str) -> None:
        now = time.monotonic()
        key = reason[:60]
        if now - self._last.get(key, -LOG_INTERVAL) >= LOG_INTERVAL:
            if len(self._last) > 1000:
                self._last.clear()
            self._last[key] = now
            logger.warning("bearer token refused: %s", reason)


class JwtVerifier:
    """Validates JWT access tokens: signature (JWKS), ``iss``, ``aud``, ``exp``/``nbf``, the user claim."""

    def __init__(
        self,
        config: OAuthConfig,
        metadata: ServerMetadata,
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metadata = metadata
        self.jwks = JwksCache(self._jwks_url, client, clock)
        self._log = _RefusalLog()

    async def _jwks_url(self) -> str:
        return self.config.jwks_url or await self.metadata.endpoint("jwks_uri")

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            return await self.validate(token)
        except Refused as exc:
            self._log(str(exc))
            return None

    async def validate(self, token: str) -> AccessToken:
        """The principal of a valid token; :class:`Refused` with the reason otherwise."""
        if len(token) > MAX_TOKEN_CHARS:
            raise Refused("the token is too long")
        header = jose_header(token)
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise Refused(f"algorithm {alg!r} is not accepted")
        try:
            key = await self.jwks.key(header.get("kid"))
        except KeyNotFound as exc:
            raise Refused(str(exc)) from None
        except DiscoveryError as exc:
            raise Refused(f"the signing keys could not be fetched: {exc}") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iss": False},
            )
        except jwt.PyJWTError as exc:
            raise Refused(f"bad signature or format ({type(exc).__name__})") from None
        if str(claims.get("iss", "")).rstrip("/") != self.config.issuer.rstrip("/"):
            raise Refused(f"issuer {claims.get('iss')!r} is not MCP_OAUTH_ISSUER")
        check_audience(claims, self.config.audience)
        check_times(claims, LEEWAY_SECONDS)
        return access_token(claims, self.config)


def jose_header(token: str) -> dict[str, Any]:
    """The JOSE header alone (PyJWT's get_unverified_header decodes and checks the whole token, which decode()
    then does again: a third of the time per token)."""
    head, dot, _ = token.partition(".")
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise Refused("not a JWT") from None
    if not dot or not isinstance(header, dict):
        raise Refused("not a JWT")
    return header


class IntrospectionVerifier:
    """RFC 7662: asks the authorization server about each token (opaque or not); results cached briefly."""

    def __init__(self, config: OAuthConfig, client: httpx.AsyncClient) -> None:
        assert config.introspection_url and config.client_id and config.client_secret
        self.config = config
        self.client = client
        self._cache: dict[bytes, tuple[float, AccessToken]] = {}
        self._log = _RefusalLog()
        self.requests = 0

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            return await self.validate(token)
        except Refused as exc:
            self._log(str(exc))
            return None

    async def validate(self, token: str) -> AccessToken:
        if len(token) > MAX_TOKEN_CHARS:
            raise Refused("the token is too long")
        digest = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            check_times({"exp": cached[1].expires_at}, 0)
            return cached[1]
        claims = await self._introspect(token)
        if claims.get("active") is not True:
            raise Refused("the authorization server says the token is not active")
        if "iss" in claims and str(claims["iss"]).rstrip("/") != self.config.issuer.rstrip("/"):
            raise Refused(f"issuer {claims.get('iss')!r} is not MCP_OAUTH_ISSUER")
        check_audience(claims, self.config.audience)
        exp = check_times(claims, 0)
        principal = access_token(claims, self.config)
        if len(self._cache) >= INTROSPECTION_CACHE:
            self._cache.clear()
        self._cache[digest] = (min(now + INTROSPECTION_TTL, now + exp - time.time()), principal)
        return principal

    async def _introspect(self, token: str) -> dict[str, Any]:
        assert self.config.introspection_url and self.config.client_id and self.config.client_secret
        self.requests += 1
        try:
            response = await self.client.post(
                self.config.introspection_url,
                data={"token": token, "token_type_hint": "access_token"},
                auth=(self.config.client_id, self.config.client_secret),
                timeout=10.0,
            )
        except httpx.HTTPError as exc:
            raise Refused(f"introspection failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise Refused(f"introspection answered HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise Refused("introspection answered non-JSON") from None
        if not isinstance(data, dict):
            raise Refused("introspection answered non-object JSON")
        return data


class ChainVerifier:
    """Static tokens first (constant time), then OAuth: one Authorization header, either kind of token."""

    def __init__(self, verifiers: list[Verifier]) -> None:
        self.verifiers = verifiers

    async def verify_token(self, token: str) -> AccessToken | None:
        for verifier in self.verifiers:
            found = await verifier.verify_token(token)
            if found is not None:
                return found
        return None
