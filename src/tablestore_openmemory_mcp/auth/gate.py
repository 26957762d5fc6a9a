"""Read and write scopes, mapped to REST routes and MCP tools, and the ``WWW-Authenticate`` challenges.

* Static tokens (``MCP_AUTH_TOKENS``) carry every right, as before.
* An OAuth token holds ``read`` when it has ``MCP_OAUTH_READ_SCOPE`` or ``MCP_OAUTH_WRITE_SCOPE`` (write implies
  read), and ``write`` when it has ``MCP_OAUTH_WRITE_SCOPE``; an unset scope is not checked.
* REST: ``GET``/``HEAD`` and the export need read; every other method needs write.
  MCP endpoints need read to connect at all; each write tool then needs write (checked in the tool, which knows
  whether it writes). Missing scope on HTTP: 403 with ``error="insufficient_scope"`` and the scope to ask for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from starlette.types import ASGIApp, Receive, Scope, Send

from tablestore_openmemory_mcp.auth.config import OAuthConfig

GRANT_KEY = "tablestore_openmemory_mcp.grant"
REALM = "tablestore-openmemory-mcp"
READ_ONLY_POSTS = frozenset({"/api/v1/backup/export"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Grant:
    read: bool
    write: bool


FULL = Grant(read=True, write=True)


def grant_of(user: Any, config: OAuthConfig | None) -> Grant:
    """What a caller may do: static tokens everything; OAuth tokens per their scopes."""
    if config is None or not isinstance(user, AuthenticatedUser):
        return FULL
    if not user.access_token.client_id.startswith("oauth"):
        return FULL  # a static token
    scopes = set(user.scopes)
    read = config.read_scope is None or config.read_scope in scopes or config.write_scope in scopes
    write = config.write_scope in scopes if config.write_scope is not None else read
    return Grant(read=read, write=write)


def challenge(config: OAuthConfig | None, error: str | None = None, scope: str | None = None) -> str:
    """``WWW-Authenticate``: the realm, then (with OAuth) RFC 9728's ``resource_metadata``, the error, the scope."""
    parts = [f'realm="{REALM}"']
    if config is not None:
        parts.append(f'resource_metadata="{config.metadata_url}"')
    if error:
        parts.append(f'error="{error}"')
    if scope:
        parts.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(parts)


def needs_write(method: str, path: str) -> bool:
    return method not in READ_METHODS and path not in READ_ONLY_POSTS


def tool_refusal(ctx: Any, writes: bool) -> str | None:
    """The tool error for a token that lacks the scope a write tool needs, or None when the call may proceed."""
    request = getattr(getattr(ctx, "request_context", None), "request", None)
    scope = getattr(request, "scope", None)
    grant = scope.get(GRANT_KEY) if isinstance(scope, dict) else None
    if writes and isinstance(grant, Grant) and not grant.write:  # no grant: stdio, or no OAuth
        return "this token may only read memories; sign in again granting the write scope to change them"
    return None


class ScopeGate:
    """Pure ASGI, after authentication: puts the :class:`Grant` in the scope and refuses what it does not allow."""

    def __init__(self, app: ASGIApp, config: OAuthConfig | None) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.config is None:
            await self.app(scope, receive, send)
            return
        grant = grant_of(scope.get("user"), self.config)
        scope[GRANT_KEY] = grant
        path = str(scope.get("path", ""))
        method = str(scope.get("method", "GET"))
        missing: str | None = None
        if path.startswith("/api/") and needs_write(method, path) and not grant.write:
            missing = self.config.write_scope
        elif (path.startswith(("/api/", "/mcp")) or path == "/sse") and not grant.read:
            missing = self.config.read_scope
        if missing is not None:
            await _insufficient(self.config, missing)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _insufficient(config: OAuthConfig, scope_needed: str) -> Any:
    from tablestore_openmemory_mcp.edge.security import error_response

    return error_response(
        403,
        "insufficient_scope",
        f"this token lacks the {scope_needed} scope",
        {"WWW-Authenticate": challenge(config, "insufficient_scope", scope_needed)},
    )
