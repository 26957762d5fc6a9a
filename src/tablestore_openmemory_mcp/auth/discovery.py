"""The authorization server's metadata: OpenID Connect discovery first, then RFC 8414, cached after success.

Fetched lazily (the first token or the first page login), so the server starts while the authorization server is
down; a failed fetch is retried on the next request, at most once per :data:`RETRY_SECONDS`.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlparse

import anyio
import httpx2 as httpx  # the HTTP client mcp itself depends on (no extra dependency)

logger = logging.getLogger(__name__)

TIMEOUT = 10.0
RETRY_SECONDS = 10.0
MAX_DOCUMENT_BYTES = 512 * 1024


class DiscoveryError(Exception):
    """The authorization server's metadata could not be had (message says which URL and why)."""


def metadata_urls(issuer: str) -> list[str]:
    """OIDC (``issuer + /.well-known/openid-configuration``) then RFC 8414 (well-known inserted before the path)."""
    base = issuer.rstrip("/")
    parsed = urlparse(base)
    origin = f"{parsed.scheme}://{parsed.netloc}"
    path = parsed.path
    urls = [f"{base}/.well-known/openid-configuration", f"{origin}/.well-known/oauth-authorization-server{path}"]
    if path:
        urls.append(f"{origin}/.well-known/openid-configuration{path}")
    return urls


async def fetch_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """GET a JSON object, bounded in size; :class:`DiscoveryError` on anything else."""
    try:
        response = await client.get(url, timeout=TIMEOUT, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise DiscoveryError(f"{url}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise DiscoveryError(f"{url}: HTTP {response.status_code}")
    if len(response.content) > MAX_DOCUMENT_BYTES:
        raise DiscoveryError(f"{url}: document larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        data = response.json()
    except ValueError:
        raise DiscoveryError(f"{url}: not JSON") from None
    if not isinstance(data, dict):
        raise DiscoveryError(f"{url}: not a JSON object")
    return data


class ServerMetadata:
    """The issuer's metadata document, fetched once and kept (it changes far more rarely than keys)."""

    def __init__(self, issuer: str, client: httpx.AsyncClient) -> None:
        self.issuer = issuer
        self._client = client
        self._document: dict[str, Any] | None = None
        self._failed_at = -RETRY_SECONDS
        self._lock = anyio.Lock()

    async def get(self) -> dict[str, Any]:
        if self._document is not None:
            return self._document
        async with self._lock:
            if self._document is not None:
                return self._document
            if time.monotonic() - self._failed_at < RETRY_SECONDS:
                raise DiscoveryError(f"the metadata of {self.issuer} could not be fetched; retrying shortly")
            errors = []
            for url in metadata_urls(self.issuer):
                try:
                    document = await fetch_json(self._client, url)
                except DiscoveryError as exc:
                    errors.append(str(exc))
                    continue
                if str(document.get("issuer", "")).rstrip("/") != self.issuer.rstrip("/"):
                    errors.append(f"{url}: issuer {document.get('issuer')!r} is not MCP_OAUTH_ISSUER")
                    continue
                self._document = document
                return document
            self._failed_at = time.monotonic()
            logger.warning("OAuth discovery failed: %s", "; ".join(errors))
            raise DiscoveryError("; ".join(errors))

    async def endpoint(self, name: str) -> str:
        value = (await self.get()).get(name)
        if not isinstance(value, str) or not value:
            raise DiscoveryError(f"the metadata of {self.issuer} has no {name}")
        return value
