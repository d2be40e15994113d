"""A legacy HTTP+SSE MCP server built with the official MCP Python SDK, for the gateway's SSE client.

Usage: mcp_sse_server.py PORT   (serves GET /sse and POST /messages/ on 127.0.0.1:PORT)
"""

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("legacy-sse-shouter")


@server.tool()
def shout(text: str) -> str:
    """Return the text in capitals."""
    return text.upper()


server.run("sse", host="127.0.0.1", port=int(sys.argv[1]))
