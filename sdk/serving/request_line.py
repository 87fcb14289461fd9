"""A session's line of requests: they reach its environment one at a time, in arrival order."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any


class RequestLine:
    """A FIFO lock whose place is taken synchronously, when a request arrives, so that requests run
    in arrival order whatever path they take to the environment (a batch entry starts one task hop
    later than a single step; asyncio.Lock queues at first await)."""

    def __init__(self) -> None:
        self._tail: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # kept: get_running_loop() is a getpid call on 3.11

    def busy(self) -> bool:
        return self._tail is not None and not self._tail.done()

    def join(self) -> "LinePlace":
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        place = LinePlace(self._tail, loop.create_future())
        self._tail = place.finished
        return place


@dataclass(eq=False, slots=True)
class LinePlace:
    """One request's place in a RequestLine: `async with place:` waits for the requests ahead."""

    ahead: asyncio.Future[None] | None
    finished: asyncio.Future[None]

    async def __aenter__(self) -> None:
        if self.ahead is not None and not self.ahead.done():
            await asyncio.shield(self.ahead)  # a cancelled waiter must not cancel the place ahead of it

    async def __aexit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        """Let the next request go, never before the requests ahead are done (also for unused places)."""
        if self.finished.done():
            return
        if self.ahead is None or self.ahead.done():
            self.finished.set_result(None)
        else:
            self.ahead.add_done_callback(lambda _: self.release())
