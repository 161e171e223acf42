"""An MCP server for MAOS's tests, built with the official Python MCP SDK (`mcp` on PyPI).

Streamable HTTP on 127.0.0.1:PORT at /mcp. Every request must carry the header
`Authorization: Bearer <TOKEN>` (argv 2), as a pool's header from a Secret sends it; anything
else gets 401. The tools cover what an agent must handle:

- `lookup(city)`: structured output (a JSON object), and counted per argument, so a test can
  tell whether a call was made once or again (`GET /calls` answers the counts as JSON);
- `fail(reason)`: a tool error (`isError: true`);
- `slow(seconds)`: answers after `seconds` (past a pool's timeout);
- `grow()`: adds the tool `added` and notifies the client that the tool list changed.

Usage: python fixture_server.py PORT TOKEN
"""

import asyncio
import json
import sys
from collections import Counter

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.responses import JSONResponse, PlainTextResponse

PORT = int(sys.argv[1])
TOKEN = sys.argv[2]

server = MCPServer("maos-fixture", version="1.0.0")
calls: Counter = Counter()

POPULATIONS = {"paris": 2102650, "lyon": 522250, "oslo": 717710}


@server.tool(description="Look up a city's population.")
def lookup(city: str) -> dict:
    calls[f"lookup:{city}"] += 1
    population = POPULATIONS.get(city.lower())
    if population is None:
        raise ToolError(f"no city named {city}")
    return {"city": city, "population": population}


@server.tool(description="Always fails, with the given reason.")
def fail(reason: str) -> str:
    calls["fail"] += 1
    raise ToolError(f"failed as asked: {reason}")


@server.tool(description="Answers after the given number of seconds.")
async def slow(seconds: float) -> str:
    calls["slow"] += 1
    await asyncio.sleep(seconds)
    return f"slept {seconds} s"


@server.tool(description="Adds the tool 'added' and says the tool list changed.")
async def grow(ctx: Context) -> str:
    calls["grow"] += 1

    def added() -> str:
        """A tool that did not exist at first."""
        return "added works"

    server.add_tool(added, name="added", description="A tool that did not exist at first.")
    await ctx.session.send_tool_list_changed()
    return "added the tool 'added'"


class RequireToken:
    """Refuses every request without the expected bearer token (ASGI middleware)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            if scope["path"] == "/calls":
                await JSONResponse(dict(calls))(scope, receive, send)
                return
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != f"Bearer {TOKEN}".encode():
                await PlainTextResponse("bad or missing token", status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def main() -> None:
    app = RequireToken(server.streamable_http_app(host="127.0.0.1"))
    print(json.dumps({"listening": PORT}), flush=True)
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning")


if __name__ == "__main__":
    main()
