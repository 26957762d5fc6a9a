"""Find the caller's scope for a tool call.

* stdio: ``MCP_STDIO_CLIENT_NAME`` / ``MCP_STDIO_USER_ID``.
* streamable HTTP: the path ``/mcp/{client_name}/http/{user_id}`` of the request carrying the call.
* SSE: the path ``/mcp/{client_name}/sse/{user_id}`` of the stream; tool calls arrive on
  ``POST /mcp/messages/`` but run inside the stream's task, which set :data:`CONNECTION_SCOPE`.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.settings import Settings
from tablestore_openmemory_mcp.validation import UserInputError

#: Scope of the SSE stream (or stdio session) whose task is running the current tool call.
CONNECTION_SCOPE: ContextVar[Scope | None] = ContextVar("CONNECTION_SCOPE", default=None)


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
        scope = self._connection_scope(ctx)
        if user_id is not None and self.allow_override and user_id.strip():
            scope = Scope(scope.client_name, user_id.strip(), self.shared)
        return scope

    def _connection_scope(self, ctx: Any) -> Scope:
        request = getattr(getattr(ctx, "request_context", None), "request", None)
        params = getattr(request, "path_params", None) or {}
        if "client_name" in params and "user_id" in params:
            return Scope(params["client_name"], params["user_id"], self.shared)
        scope = CONNECTION_SCOPE.get()
        if scope is not None:
            return scope
        if self.stdio_scope is not None:
            return self.stdio_scope
        raise UserInputError(
            "this connection has no identity; connect to /mcp/<client_name>/sse/<user_id> or "
            "/mcp/<client_name>/http/<user_id>"
        )
