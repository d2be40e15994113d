"""The official MCP Python SDK (streamable HTTP client) against the gateway's own /mcp server.

Env: SWITCHYARD_URL, SWITCHYARD_ADMIN_TOKEN (optional). Prints "interop: ok" on success.
"""

import asyncio
import os

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def main() -> None:
    url = os.environ["SWITCHYARD_URL"] + "/mcp"
    token = os.environ.get("SWITCHYARD_ADMIN_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                assert init.server_info.name == "switchyard", init.server_info
                tools = (await session.list_tools()).tools
                names = sorted(t.name for t in tools)
                assert "calc__add" in names and "calc__sqrt" in names, names
                add = next(t for t in tools if t.name == "calc__add")
                assert "a" in add.input_schema["properties"], add.input_schema
                r = await session.call_tool("calc__add", {"a": 20, "b": 22})
                assert not r.is_error, r
                assert r.content[0].text == "42", r.content
                r = await session.call_tool("calc__div", {"a": 1, "b": 0})
                assert r.is_error, r
                assert "zero" in r.content[0].text, r.content
                r = await session.call_tool("nope__missing", {})
                assert r.is_error, r
                print("tools:", ",".join(names))
    print("interop: ok")


asyncio.run(main())
