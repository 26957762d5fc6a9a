"""RFC 9728 protected resource metadata at ``/.well-known/oauth-protected-resource`` and under every MCP path.

MCP clients look for ``/.well-known/oauth-protected-resource/<path of the MCP URL>`` first, then the root
document; both answer with the same document, whose ``resource`` (``MCP_PUBLIC_URL``) is a parent of every MCP URL
of this server, so a client's RFC 8707 check accepts it for any of them.
"""

from __future__ import annotations

from typing import Any

from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tablestore_openmemory_mcp.auth.config import METADATA_PATH, OAuthConfig


def metadata_document(config: OAuthConfig) -> dict[str, Any]:
    document = ProtectedResourceMetadata(
        resource=AnyHttpUrl(config.public_url),
        authorization_servers=[AnyHttpUrl(config.issuer)],
        scopes_supported=config.scopes or None,
        resource_name="tablestore-openmemory-mcp",
        resource_documentation=None,
    )
    dumped = document.model_dump(mode="json", exclude_none=True)
    # exactly as configured: pydantic adds a "/" to a bare origin, and clients compare the issuer byte for byte
    dumped["resource"] = config.public_url
    dumped["authorization_servers"] = [config.issuer]
    return dumped


def metadata_routes(config: OAuthConfig) -> list[BaseRoute]:
    document = metadata_document(config)
    headers = {"Cache-Control": "public, max-age=3600", "Access-Control-Allow-Origin": "*"}

    async def serve(request: Request) -> Response:
        return JSONResponse(document, headers=headers)

    return [
        Route(METADATA_PATH, serve, methods=["GET"]),
        Route(METADATA_PATH + "/{path:path}", serve, methods=["GET"]),
    ]
