"""The baseline: an AgentGym-style HTTP/JSON environment server, written for the benchmark.

As in AgentGym, each environment is its own HTTP service with one POST per operation
(`/create`, `/reset`, `/step`, `/close`), integer session ids held in one process, and JSON bodies
validated by FastAPI. To give the baseline its best case the handlers are `async def` and call the
no-op environment inline (no thread-pool hop), just as gymwire runs it inline.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from gymwire.sdk.environment import Task
from pydantic import BaseModel

from .envs import NoopEnv


# Request bodies live at module level: FastAPI resolves the handlers' (string) annotations here.
class IdBody(BaseModel):
    id: int


class ResetBody(BaseModel):
    id: int
    data_idx: int = 0


class StepBody(BaseModel):
    id: int
    action: str


def make_app() -> Any:
    from fastapi import FastAPI, HTTPException

    app = FastAPI()
    envs: dict[int, NoopEnv] = {}
    ids = itertools.count()

    def env_of(env_id: int) -> NoopEnv:
        env = envs.get(env_id)
        if env is None:
            raise HTTPException(404, f"no env {env_id}")
        return env

    @app.post("/create")
    async def create() -> dict[str, int]:
        env_id = next(ids)
        envs[env_id] = NoopEnv()
        return {"id": env_id}

    @app.post("/reset")
    async def reset(body: ResetBody) -> dict[str, Any]:
        return {"observation": env_of(body.id).reset(Task(split="test", index=body.data_idx))}

    @app.post("/step")
    async def step(body: StepBody) -> dict[str, Any]:
        result = env_of(body.id).step(body.action)
        return {
            "observation": result.observation,
            "reward": result.reward,
            "done": result.terminated or result.truncated,
            "info": result.info,
        }

    @app.post("/close")
    async def close(body: IdBody) -> dict[str, bool]:
        envs.pop(body.id, None)
        return {"closed": True}

    app.state.envs = envs
    return app


class HttpEnvClient:
    """One AgentGym-style session over a shared aiohttp session (keep-alive connections)."""

    def __init__(self, http: Any, base: str) -> None:
        self.http = http
        self.base = base
        self.id: int | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.http.post(self.base + path, json=body) as response:
            response.raise_for_status()
            return await response.json()

    async def open(self) -> str:
        self.id = (await self._post("/create", {}))["id"]
        return (await self._post("/reset", {"id": self.id, "data_idx": 0}))["observation"]

    async def step(self, action: str) -> dict[str, Any]:
        return await self._post("/step", {"id": self.id, "action": action})

    async def close(self) -> None:
        await self._post("/close", {"id": self.id})


def new_http_session(connections: int) -> Any:
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections, force_close=False))


async def sequential_steps(port: int, count: int) -> list[float]:
    async with new_http_session(1) as http:
        env = HttpEnvClient(http, f"http://127.0.0.1:{port}")
        await env.open()
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            await env.step("noop")
            latencies.append(time.perf_counter() - started)
        await env.close()
        return latencies
