"""A loopback HTTP server that answers like one of AgentGym's environment servers, from a script.

Each script is a list of (method, path, what the request must carry, answer): the request's JSON body
for POST, its query for GET (values as strings, as they arrive). The server records every request it
gets, answers the next scripted one, and answers anything unexpected with HTTP 500 so the test sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from aiohttp import web


@dataclass
class ScriptedAgentGymServer:
    script: list[tuple[str, str, Any, Any]] = field(default_factory=list)
    received: list[tuple[str, str, Any]] = field(default_factory=list)
    delay_s: float = 0.0  # wait this long before answering /step (a slow server)
    answer_any: dict[str, Any] = field(default_factory=dict)  # path -> answer, for requests outside the script
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path.lstrip("/")
        if request.method == "POST":
            body = await request.json() if request.can_read_body else None
        else:
            body = dict(request.query)
        self.received.append((request.method, path, body))
        if path == "step" and self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.script and self.script[0][:2] == (request.method, path):
            _, _, expected, answer = self.script.pop(0)
            if body != expected:
                return web.Response(status=500, text=f"expected {expected}, got {body}")
            return web.json_response(answer)
        if path in self.answer_any:
            return web.json_response(self.answer_any[path])
        return web.Response(status=500, text=f"unscripted {request.method} /{path} {body}")


@contextlib.asynccontextmanager
async def scripted_server(server: ScriptedAgentGymServer) -> AsyncIterator[ScriptedAgentGymServer]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        await runner.cleanup()
