"""Declare only what exists: tools, no prompts or resources, no change notifications; unknown tools are errors.

The SDK's ``MCPServer`` serves ``prompts/*`` and ``resources/*`` (with empty lists) and ``subscriptions/listen``
on its own, so the handshake would claim ``prompts``, ``resources`` (``subscribe``) and ``listChanged`` for a
server that has none of them and whose tool list never changes while it runs. This removes those handlers (a
client that asks anyway gets JSON-RPC -32601 "method not found"), and answers a call to a tool that does not exist
(or is hidden by ``TOOL_BLACK_LIST``) with JSON-RPC -32602, as the MCP specification's error example shows,
instead of a tool result.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolRequestParams

UNSERVED = (
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
    "completion/complete",
)


def declare_only_tools(server: MCPServer) -> None:
    """Drop the handlers of capabilities this server does not have; unknown tool names become -32602."""
    lowlevel: Any = server._lowlevel_server  # no public switch for these in the SDK (tests/unit guard it)
    for method in UNSERVED:
        lowlevel._request_handlers.pop(method, None)
    entry = lowlevel._request_handlers["tools/call"]
    call_tool = entry.handler

    async def known_tools_only(ctx: Any, params: CallToolRequestParams) -> Any:
        if params.name not in {tool.name for tool in await server.list_tools()}:
            raise MCPError(code=INVALID_PARAMS, message=f"Unknown tool: {params.name[:200]}")
        return await call_tool(ctx, params)

    lowlevel.add_request_handler("tools/call", entry.params_type, known_tools_only)
