"""GymPool: sessions spread over replicas of the same environments, from one event loop.

The replicas are a list of URLs, or a `members` provider the pool asks every `refresh_s` seconds
(e.g. a Ray fleet's, see gymwire.sdk.fleet): membership follows it at run time. A replica that
leaves gets no new sessions; its sessions finish where they are while it still answers (a scale-down
drains), and fail at once with ServerLost when it does not. A replica whose connection drops is
given up on after a short reconnect budget (about half a second), so its sessions fail with
ServerLost instead of hanging in back-off, and opens go elsewhere meanwhile.

`gymwire.sdk.batching.step_sessions` steps sessions that may live on different replicas: one
batch frame per replica, and a lost replica fails only its own entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import Counter, defaultdict
from typing import Any, Awaitable, Callable, Sequence, Union

import websockets

from gymwire.protocol import EnvInfo, ErrorCode, ProtocolError

from .client import ClientSession, Disconnected, GymClient, closing_session

__all__ = ["GymPool", "Members"]

log = logging.getLogger("gymwire.pool")

# The URLs of the replicas now: a list, or a coroutine function that returns one.
Members = Callable[[], Union[Sequence[str], Awaitable[Sequence[str]]]]

# Reconnects a pool's client tries before giving its server up (~0.35-0.7 s of back-off in all):
# enough for a blip, while the sessions of a dead replica fail fast. Sessions cannot outlive their
# server process anyway, so a longer wait buys nothing in a pool that has other replicas.
POOL_RECONNECT_ATTEMPTS = 3


class GymPool:
    """Spread sessions over several servers (replicas of the same environments).

    One connection per server, made on first use and shared by every session the pool opens there.
    A session opens on the member with the fewest of this pool's sessions (opens in progress count),
    among connected members that are not draining (draining ones last; disconnected ones never). A
    server that refuses the open (CAPACITY, DRAINING) or cannot be reached moves it to the next one;
    an unreachable server is tried again after `retry_unreachable_s`. When every server refuses, the
    pool waits the longest advised retry_after_ms and tries again, up to `open_attempts` rounds.
    """

    def __init__(
        self,
        urls: Sequence[str] = (),
        *,
        members: Members | None = None,
        refresh_s: float = 1.0,
        open_attempts: int = 5,
        retry_unreachable_s: float = 5.0,
        **client_kwargs: Any,
    ) -> None:
        if not urls and members is None:
            raise ValueError("a pool needs server URLs (ws://host:port) or a members provider")
        self.urls: list[str] = list(dict.fromkeys(urls))
        self.members = members
        self.refresh_s = refresh_s
        self.open_attempts = open_attempts
        self.retry_unreachable_s = retry_unreachable_s
        self.clients: dict[str, GymClient] = {}  # url -> connected client
        self._client_kwargs = {"reconnect_attempts": POOL_RECONNECT_ATTEMPTS, **client_kwargs}
        self._connecting: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._unreachable: dict[str, tuple[float, str]] = {}  # url -> (when to try again, why)
        self._opening: Counter[str] = Counter()
        self._infos: dict[str, asyncio.Future[EnvInfo]] = {}
        self._following: asyncio.Task[None] | None = None
        self._first_members: asyncio.Future[None] | None = None

    async def __aenter__(self) -> "GymPool":
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def connect(self) -> "GymPool":
        """Connect to every member now; an error only when none can be reached. (Without it, the
        first open connects where it goes.)"""
        await self._follow_members()
        results = await asyncio.gather(*(self.client(url) for url in self.urls), return_exceptions=True)
        if not self.clients:
            failures = [r for r in results if isinstance(r, BaseException)]
            if any(isinstance(r, ProtocolError) for r in failures):  # e.g. a wrong token: no reason to go on
                raise next(r for r in failures if isinstance(r, ProtocolError))
            why = "; ".join(str(r) for r in failures) or "the members provider lists none"
            raise Disconnected("no server of the pool can be reached: " + why)
        return self

    async def close(self) -> None:
        if self._following is not None:
            self._following.cancel()
        clients, self.clients = list(self.clients.values()), {}
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)

    # ------------------------------------------------------------------ membership

    async def refresh(self) -> None:
        """Ask the members provider for the replicas now and follow its answer."""
        assert self.members is not None
        urls = self.members()
        if inspect.isawaitable(urls):
            urls = await urls
        self.update(urls)  # type: ignore[arg-type]

    async def _follow_members(self) -> None:
        """Learn the members and start following them, once; concurrent callers wait for the first
        answer (a failure is not kept: the next caller asks again)."""
        if self.members is None or self._following is not None:
            return
        if self._first_members is None:
            self._first_members = asyncio.ensure_future(self.refresh())
        first = self._first_members
        try:
            await asyncio.shield(first)
        except Exception:
            if self._first_members is first:
                self._first_members = None
            raise
        if self._following is None:
            self._following = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # the provider's trouble: keep the membership we have
                log.warning("pool: members provider failed (%s: %s); keeping %d member(s)", type(exc).__name__, exc, len(self.urls))

    def update(self, urls: Sequence[str]) -> None:
        """Set the members. A server that left gets no new sessions; given up at once if it is
        not answering, closed once its sessions are done if it is."""
        urls = list(dict.fromkeys(urls))
        joined = [url for url in urls if url not in self.urls]
        left = [url for url in self.urls if url not in urls]
        if joined or left:
            log.info("pool: members %+d %s, %-d %s", len(joined), joined, len(left), left)
        self.urls = urls
        self._sweep()

    def _sweep(self) -> None:
        """Let go of clients given up on, and of those of servers that left once idle or silent."""
        for url, client in list(self.clients.items()):
            member = url in self.urls
            if client.lost is None and not member and not client.connected:
                client.give_up("it left the pool's members")
            if client.lost is not None:
                self._drop(url, str(client.lost))
            elif not member and not client.sessions and not self._opening[url]:
                self._drop(url, "left the pool's members")

    def _drop(self, url: str, why: str) -> None:
        client = self.clients.pop(url)
        self._unreachable[url] = (time.monotonic() + self.retry_unreachable_s, why)
        asyncio.get_running_loop().create_task(client.close())

    # ------------------------------------------------------------------ connections

    async def client(self, url: str) -> GymClient:
        """The connected client of `url`; Disconnected when it cannot be reached (then for a while)."""
        client = self.clients.get(url)
        if client is not None and client.usable:
            return client
        async with self._connecting[url]:  # hundreds of opens start at once: connect once
            client = self.clients.get(url)
            if client is not None and client.usable:
                return client
            retry_at, why = self._unreachable.get(url, (0.0, ""))
            if time.monotonic() < retry_at:
                raise Disconnected(f"{url} is unreachable ({why})")
            try:
                client = await GymClient(url, **self._client_kwargs).connect()
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
                why = f"{type(exc).__name__}: {exc}"
                self._unreachable[url] = (time.monotonic() + self.retry_unreachable_s, why)
                log.warning("pool: cannot reach %s (%s); using the other servers", url, why)
                raise Disconnected(f"{url} is unreachable ({why})") from exc
            self.clients[url] = client
            return client

    def supports(self, capability: str) -> bool:
        """Whether every connected member's welcome lists `capability` (replicas serve alike)."""
        clients = [c for url, c in self.clients.items() if url in self.urls and c.connected]
        return bool(clients) and all(c.supports(capability) for c in clients)

    def _candidates(self) -> list[str]:
        """Members an open may go to, best first: connected (or not yet tried) and not given up
        on, fewest sessions first, draining ones last."""
        self._sweep()
        now = time.monotonic()
        ranked = []
        for url in self.urls:
            client = self.clients.get(url)
            if client is None:
                if now < self._unreachable.get(url, (0.0, ""))[0]:
                    continue
                ranked.append(((False, self._opening[url]), url))
            elif client.connected:  # a reconnecting server would hold the open until it gives up
                ranked.append(((client.draining, len(client.sessions) + self._opening[url]), url))
        return [url for _, url in sorted(ranked)]

    # ------------------------------------------------------------------ sessions

    async def open(self, env: str, **kwargs: Any) -> ClientSession:
        """Open a session (arguments of GymClient.open) on the preferred server that accepts it."""
        await self._follow_members()
        refusal: ProtocolError | None = None
        unreachable: list[str] = []
        for attempt in range(self.open_attempts):
            wait_ms = 0
            unreachable = []
            for url in self._candidates():
                self._opening[url] += 1
                try:
                    return await (await self.client(url)).open(env, **kwargs)
                except ProtocolError as exc:
                    if exc.code not in (ErrorCode.CAPACITY, ErrorCode.DRAINING):
                        raise
                    refusal = exc
                    wait_ms = max(wait_ms, exc.retry_after_ms or 100)
                except ConnectionError as exc:  # unreachable, or given up on meanwhile
                    unreachable.append(str(exc))
                finally:
                    self._opening[url] -= 1
            if attempt + 1 < self.open_attempts:
                await asyncio.sleep(max(wait_ms, 100) / 1000)
        if refusal is None:
            why = "; ".join(unreachable) or f"none of {len(self.urls)} member(s) is connected"
            raise Disconnected("no server of the pool can be reached: " + why)
        raise ProtocolError(
            refusal.code,
            f"every reachable server refused the open for {self.open_attempts} rounds (last: {refusal.message}); "
            "add server replicas or open fewer sessions at once",
            retry_after_ms=refusal.retry_after_ms,
        )

    def session(self, env: str, **kwargs: Any) -> contextlib.AbstractAsyncContextManager[ClientSession]:
        return closing_session(self.open(env, **kwargs))

    async def describe(self, env: str) -> EnvInfo:
        """The environment's description, asked once: concurrent callers share the answer, and a
        failure is not remembered."""
        asked = self._infos.get(env)
        if asked is None:
            asked = self._infos[env] = asyncio.ensure_future(self._describe(env))
        try:
            return await asyncio.shield(asked)  # one waiter cancelled does not cancel the others
        except Exception:
            if asked.done() and self._infos.get(env) is asked:
                del self._infos[env]
            raise

    async def _describe(self, env: str) -> EnvInfo:
        await self._follow_members()
        failures = []
        for url in self._candidates():
            try:
                return await (await self.client(url)).describe(env)
            except ConnectionError as exc:
                failures.append(str(exc))
        raise Disconnected("no server of the pool can be reached: " + ("; ".join(failures) or "no member connected"))
