"""The MCP front door: ``pdpctl mcp-gateway`` (see :mod:`pdp.mcp.gateway`, docs/mcp.md)."""
