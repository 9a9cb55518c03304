"""A user's MCP server for the tests: stdio, one tool, run by the agent's CLI inside its
sandbox (listed in the notebook's `.omnikernel/mcp.toml`)."""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("calc")


@server.tool(structured_output=False)
def add(a: int, b: int) -> str:
    """Add two numbers; also says where the server runs."""
    return f"{a + b} (home seen by the server: {os.path.expanduser('~')})"


if __name__ == "__main__":
    server.run("stdio")
