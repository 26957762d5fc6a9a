"""The OAuth settings, checked once at startup and turned into the values every other auth module uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlparse

if TYPE_CHECKING:
    from tablestore_openmemory_mcp.settings import Settings

LOOPBACK = ("127.0.0.1", "localhost", "::1")
METADATA_PATH = "/.well-known/oauth-protected-resource"


def _check_url(name: str, value: str | None) -> None:
    """https everywhere; plain http only on loopback (a local authorization server for development and tests)."""
    if value is None:
        return
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"Invalid setting {name}: {value!r} is not an http(s) URL with a host")
    if parsed.scheme == "http" and parsed.hostname not in LOOPBACK:
        raise ValueError(f"Invalid setting {name}: {value!r} must use https (plain http only for localhost)")


def check_oauth_settings(settings: Settings) -> None:
    """Refuse a half-configured OAuth setup with one line naming the variable to fix."""
    issuer = settings.oauth_issuer
    if not issuer:
        extra = [
            name
            for name, value in (
                ("MCP_OAUTH_JWKS_URL", settings.oauth_jwks_url),
                ("MCP_OAUTH_AUDIENCE", settings.oauth_audience),
                ("MCP_OAUTH_INTROSPECTION_URL", settings.oauth_introspection_url),
                ("MCP_OAUTH_READ_SCOPE", settings.oauth_read_scope),
                ("MCP_OAUTH_WRITE_SCOPE", settings.oauth_write_scope),
            )
            if value
        ]
        if extra:
            raise ValueError(f"{extra[0]} is set but MCP_OAUTH_ISSUER is not (the authorization server's issuer URL)")
        return
    _check_url("MCP_OAUTH_ISSUER", issuer)
    _check_url("MCP_OAUTH_JWKS_URL", settings.oauth_jwks_url)
    _check_url("MCP_OAUTH_INTROSPECTION_URL", settings.oauth_introspection_url)
    _check_url("MCP_PUBLIC_URL", settings.public_url)
    if not settings.public_url:
        raise ValueError(
            "MCP_OAUTH_ISSUER needs MCP_PUBLIC_URL, the URL clients use to reach this server (e.g. https://memory.example.com)"
        )
    if settings.oauth_audience is not None and not settings.oauth_audience.strip():
        raise ValueError("Invalid setting MCP_OAUTH_AUDIENCE: empty")
    if settings.oauth_introspection_url and not (settings.oauth_client_id and settings.oauth_client_secret):
        raise ValueError(
            "MCP_OAUTH_INTROSPECTION_URL needs MCP_OAUTH_CLIENT_ID and MCP_OAUTH_CLIENT_SECRET (the credentials this "
            "server authenticates with at the introspection endpoint)"
        )
    if settings.transport == "stdio":
        return  # nothing to protect over stdio; the settings are still checked so a typo is caught early


@dataclass(frozen=True)
class OAuthConfig:
    """What the validators, the metadata route and the page login need, derived from settings."""

    issuer: str
    public_url: str
    audience: str
    jwks_url: str | None
    introspection_url: str | None
    client_id: str | None
    client_secret: str | None
    user_claim: str
    read_scope: str | None
    write_scope: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> OAuthConfig | None:
        if not settings.oauth_issuer or not settings.public_url:
            return None
        public = settings.public_url.rstrip("/")
        return cls(
            issuer=settings.oauth_issuer,
            public_url=public,
            audience=(settings.oauth_audience or public).strip(),
            jwks_url=settings.oauth_jwks_url,
            introspection_url=settings.oauth_introspection_url,
            client_id=settings.oauth_client_id,
            client_secret=settings.oauth_client_secret,
            user_claim=settings.oauth_user_claim,
            read_scope=settings.oauth_read_scope,
            write_scope=settings.oauth_write_scope,
        )

    @property
    def metadata_url(self) -> str:
        """The root RFC 9728 document, named in every 401's ``WWW-Authenticate``."""
        return self.public_url + METADATA_PATH

    @property
    def scopes(self) -> list[str]:
        return [scope for scope in (self.read_scope, self.write_scope) if scope]
