"""Build the HTTP app's authentication from settings: static tokens, OAuth, or both (or neither)."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx2 as httpx  # the HTTP client mcp itself depends on (no extra dependency)
from starlette.routing import BaseRoute

from tablestore_openmemory_mcp.auth.browser import START_PATH, PageLogin
from tablestore_openmemory_mcp.auth.config import OAuthConfig
from tablestore_openmemory_mcp.auth.discovery import ServerMetadata
from tablestore_openmemory_mcp.auth.gate import challenge
from tablestore_openmemory_mcp.auth.metadata import metadata_routes
from tablestore_openmemory_mcp.auth.verifier import ChainVerifier, IntrospectionVerifier, JwtVerifier, Verifier
from tablestore_openmemory_mcp.edge.security import StaticTokenVerifier
from tablestore_openmemory_mcp.settings import Settings


@dataclass
class HttpAuth:
    """What the HTTP app wires in: the verifier (None: no authentication), the challenge, extra public routes."""

    verifier: ChainVerifier | None
    config: OAuthConfig | None
    client: httpx.AsyncClient | None = None
    routes: list[BaseRoute] = field(default_factory=list)
    page_login: str | None = None  # the page's "sign in with the provider" URL, when MCP_OAUTH_CLIENT_ID is set

    @property
    def www_authenticate(self) -> str:
        return challenge(self.config)

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def build_http_auth(settings: Settings) -> HttpAuth:
    verifiers: list[Verifier] = []
    if settings.auth_tokens:
        verifiers.append(StaticTokenVerifier(settings.auth_tokens))
    config = OAuthConfig.from_settings(settings)
    if config is None:
        return HttpAuth(ChainVerifier(verifiers) if verifiers else None, None)
    client = httpx.AsyncClient(follow_redirects=False, trust_env=True)
    metadata = ServerMetadata(config.issuer, client)
    if config.introspection_url:
        verifiers.append(IntrospectionVerifier(config, client))
    else:
        verifiers.append(JwtVerifier(config, metadata, client))
    chain = ChainVerifier(verifiers)
    routes = metadata_routes(config)
    page_login = None
    if config.client_id:
        routes += PageLogin(config, metadata, chain, client).routes()
        page_login = START_PATH
    return HttpAuth(chain, config, client, routes, page_login)
