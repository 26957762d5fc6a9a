"""Find the caller's scope for a tool call.

* stdio: ``MCP_STDIO_CLIENT_NAME`` / ``MCP_STDIO_USER_ID``.
* HTTP (streamable HTTP and SSE): the HTTP app puts the identity of the URL in the ASGI scope of the request
  carrying the call, under :data:`IDENTITY_KEY`: from the path ``/mcp/{client_name}/http/{user_id}``, or, for
  SSE, from the stream's path ``/mcp/{client_name}/sse/{user_id}`` (the session attaches it to every message
  posted to ``/mcp/messages/``).

With ``MEMORY_ALLOW_USER_ID_ARG=true`` a tool's ``user_id`` argument picks another user, except for a token
bound to a user: the binding always wins, so such a token can never act as anyone else.
"""

from __future__ import annotations

from typing import Any

from tablestore_openmemory_mcp.edge.security import bound_user
from tablestore_openmemory_mcp.edge.validation import UserInputError
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.settings import Settings

#: ASGI scope key holding the :class:`Scope` of an HTTP request (set by the transports, read here).
IDENTITY_KEY = "tablestore_openmemory_mcp.edge.identity"


def _asgi_scope(ctx: Any) -> dict[str, Any] | None:
    request = getattr(getattr(ctx, "request_context", None), "request", None)
    scope = getattr(request, "scope", None)
    return scope if isinstance(scope, dict) else None


class IdentityResolver:
    """Turns a tool call's context into a :class:`Scope`."""

    def __init__(self, settings: Settings) -> None:
        self.shared = settings.share_across_clients
        self.allow_override = settings.allow_user_id_override
        self.stdio_scope = (
            Scope(settings.stdio_client_name, settings.stdio_user_id, self.shared)
            if settings.transport == "stdio"
            else None
        )

    def resolve(self, ctx: Any, user_id: str | None = None) -> Scope:
        asgi_scope = _asgi_scope(ctx)
        scope = self._connection_scope(asgi_scope)
        if user_id is None or not self.allow_override or not user_id.strip():
            return scope
        wanted = user_id.strip()
        bound = bound_user(asgi_scope) if asgi_scope is not None else None
        if bound is not None and wanted != bound:
            raise UserInputError(
                f"this token is bound to user {bound!r}; it cannot act as {wanted[:40]!r} (leave user_id out)"
            )
        return Scope(scope.client_name, wanted, self.shared)

    def _connection_scope(self, asgi_scope: dict[str, Any] | None) -> Scope:
        found = asgi_scope.get(IDENTITY_KEY) if asgi_scope is not None else None
        if isinstance(found, Scope):
            return found
        if self.stdio_scope is not None:
            return self.stdio_scope
        raise UserInputError(
            "this connection has no identity; connect to /mcp/<client_name>/sse/<user_id> or "
            "/mcp/<client_name>/http/<user_id>"
        )
