"""Sessions spread over one or more gymwire servers, from one event loop.

vLLM's Ray actor runs every agent of the process on one event loop, so one `GymPool` per loop
serves them all: one connection per server URL (opened lazily, shared by every session on it),
sessions placed round-robin, and a server that answers CAPACITY skipped for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import weakref
from typing import Any, Sequence

from gymwire.protocol import EnvInfo, ErrorCode, ProtocolError
from gymwire.sdk.client import ClientSession, GymClient

__all__ = ["GymPool", "pool_for_running_loop", "close_pools"]


class GymPool:
    """`urls`: server URLs. `capacity_rounds`: how many times every server may answer CAPACITY to
    one open before the error reaches the caller."""

    def __init__(self, urls: Sequence[str], *, token: str | None = None, capacity_rounds: int = 30) -> None:
        if not urls:
            raise ValueError("a GymPool needs at least one server URL (ws://host:port)")
        self.urls = list(urls)
        self.token = token
        self.capacity_rounds = capacity_rounds
        self._clients: dict[str, GymClient] = {}
        self._connecting: dict[str, asyncio.Lock] = {url: asyncio.Lock() for url in self.urls}
        self._turn = itertools.count()
        self._infos: dict[str, asyncio.Future[EnvInfo]] = {}

    async def client(self, url: str) -> GymClient:
        client = self._clients.get(url)
        if client is not None:
            return client
        async with self._connecting[url]:  # hundreds of agents start at once: connect once
            if url not in self._clients:
                self._clients[url] = await GymClient(url, token=self.token, name="gymwire-openrlhf").connect()
            return self._clients[url]

    async def describe(self, env: str) -> EnvInfo:
        # Hundreds of episodes start together: the first asks, the others wait for its answer.
        asked = self._infos.get(env)
        if asked is None:
            asked = self._infos[env] = asyncio.ensure_future(self._describe(env))
        try:
            return await asyncio.shield(asked)  # one waiter cancelled does not cancel the others
        except Exception:
            if asked.done() and self._infos.get(env) is asked:
                del self._infos[env]  # ask again next time rather than remember a failure
            raise

    async def _describe(self, env: str) -> EnvInfo:
        return await (await self.client(self.urls[0])).describe(env)

    async def open(self, env: str, **kwargs: Any) -> ClientSession:
        """Open a session on the next server in turn; CAPACITY moves on to the next one, and after a
        full round of refusals waits the longest retry_after the servers asked for."""
        first = next(self._turn)  # taken once: other opens advance the turn meanwhile
        for _ in range(self.capacity_rounds):
            wait_ms = 0
            for offset in range(len(self.urls)):
                url = self.urls[(first + offset) % len(self.urls)]
                try:
                    return await (await self.client(url)).open(env, **kwargs)
                except ProtocolError as exc:
                    if exc.code is not ErrorCode.CAPACITY:
                        raise
                    wait_ms = max(wait_ms, exc.retry_after_ms or 500)
            await asyncio.sleep(wait_ms / 1000)
        raise ProtocolError(
            ErrorCode.CAPACITY,
            f"every server ({', '.join(self.urls)}) stayed full for {self.capacity_rounds} rounds; "
            "add server replicas to GYMWIRE_URLS or lower rollout.batch_size x n_samples_per_prompt",
        )

    async def close(self) -> None:
        for client in list(self._clients.values()):
            with contextlib.suppress(Exception):
                await client.close()
        self._clients.clear()


_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], GymPool]]" = (
    weakref.WeakKeyDictionary()
)


def pool_for_running_loop(urls: Sequence[str], token: str | None) -> GymPool:
    """The pool for these servers on the running event loop, created on first use. A connection
    belongs to the loop that opened it, so each loop gets its own."""
    per_loop = _pools.setdefault(asyncio.get_running_loop(), {})
    key = (tuple(urls), token)
    if key not in per_loop:
        per_loop[key] = GymPool(urls, token=token)
    return per_loop[key]


async def close_pools() -> None:
    """Close the running loop's pools (their connections); the next episode opens new ones."""
    for pool in _pools.pop(asyncio.get_running_loop(), {}).values():
        await pool.close()
