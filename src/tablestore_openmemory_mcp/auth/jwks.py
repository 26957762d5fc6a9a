"""The authorization server's signing keys: fetched, cached, and refetched when a token names an unknown key.

A token with an unknown ``kid`` triggers a refetch (the server rotated its keys), but at most once per
:data:`MIN_REFRESH_SECONDS`, so a stream of forged kids cannot turn this server into a load on the authorization
server. Keys are kept for :data:`MAX_AGE_SECONDS` at most and refetched after that on next use.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2 as httpx  # the HTTP client mcp itself depends on (no extra dependency)
from jwt import PyJWK, PyJWKError

from tablestore_openmemory_mcp.auth.discovery import DiscoveryError, fetch_json

logger = logging.getLogger(__name__)

MIN_REFRESH_SECONDS = 30.0
MAX_AGE_SECONDS = 3600.0
#: Asymmetric algorithms only: a symmetric (HS*) or "none" token could be forged from public data.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class KeyNotFound(Exception):
    """No signing key matches the token (after a refetch where one was allowed)."""


class JwksCache:
    """``kid`` -> key, from a JWKS URL that ``locate`` finds (discovery, or ``MCP_OAUTH_JWKS_URL``)."""

    def __init__(
        self,
        locate: Callable[[], Awaitable[str]],
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._locate = locate
        self._client = client
        self._clock = clock
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = anyio.Lock()
        self.fetches = 0  # how many times the JWKS was fetched (tests and the benchmark read it)

    async def key(self, kid: str | None) -> PyJWK:
        """The key for ``kid``; a refetch when it is unknown or the set is old (rate limited)."""
        found = self._lookup(kid)
        if found is not None and not self._stale():
            return found
        async with self._lock:
            found = self._lookup(kid)
            if found is not None and not self._stale():
                return found
            if self._fetched_at is None or self._clock() - self._fetched_at >= MIN_REFRESH_SECONDS:
                try:
                    await self._refresh()
                except DiscoveryError as exc:
                    if found is None:
                        raise
                    logger.warning("keeping the cached signing keys: %s", exc)  # an old key beats no key
                    self._fetched_at = self._clock()
                found = self._lookup(kid) or found
        if found is None:
            raise KeyNotFound(f"no signing key {kid!r} in the authorization server's JWKS")
        return found

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= MAX_AGE_SECONDS

    def _lookup(self, kid: str | None) -> PyJWK | None:
        if kid is None and len(self._keys) == 1:  # a token without kid, from a server with one key
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        url = await self._locate()
        document = await fetch_json(self._client, url)
        self._fetched_at = self._clock()
        self.fetches += 1
        self._keys = _parse(document, url)
        logger.debug("fetched %d signing key(s) from %s", len(self._keys), url)


def _parse(document: dict[str, Any], url: str) -> dict[str | None, PyJWK]:
    keys: dict[str | None, PyJWK] = {}
    raw_keys = document.get("keys")
    if not isinstance(raw_keys, list):
        logger.warning("%s is not a JWKS (no keys list)", url)
        return keys
    for raw in raw_keys:
        if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
            continue
        if raw.get("alg") is not None and raw.get("alg") not in ALGORITHMS:
            continue
        try:
            keys[raw.get("kid")] = PyJWK.from_json(json.dumps(raw))
        except PyJWKError as exc:  # a key type this build cannot use: skip it, keep the others
            logger.debug("skipping key %r from %s: %s", raw.get("kid"), url, exc)
    return keys
