"""tablestore-openmemory-mcp: long-term memory for MCP clients."""

__version__ = "2.0.0"
