"""The request edge: what every MCP call passes through before the memory service (tools, identity, security,
input validation, the handshake's capabilities)."""
