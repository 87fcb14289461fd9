"""Blocking facades over the async client: for scripts and notebooks (Gymnasium: gym_env.py).

    with SyncGymClient(url) as client:
        env = client.open("guess", split="test", index=0)
        result = env.step("50")
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

from gymwire.protocol import EnvInfo, Limits, Observation, StepResult

from .client import ClientSession, GymClient

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running on a private daemon thread, driven from blocking code."""

    def __init__(self, name: str, join_timeout: float = 5) -> None:
        self.loop = asyncio.new_event_loop()
        self._join_timeout = join_timeout
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        """Stop the loop, wait for its thread, close the loop."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=self._join_timeout)
        self.loop.close()

    def connect(self, client: GymClient) -> GymClient:
        """Connect `client` on this loop; if that fails, stop the loop and re-raise."""
        try:
            self.run(client.connect())
        except BaseException:
            self.stop()
            raise
        return client

    def close(self, client: GymClient) -> None:
        """Close `client` on this loop, then stop the loop; nothing if the loop is already closed."""
        if self.closed:
            return
        self.run(client.close())
        self.stop()


class SyncGymClient:
    """A connected GymClient driven from ordinary blocking code. Its event loop runs on a private
    thread and keeps running between calls, so heartbeats are answered while the caller works.
    `client` is the async client and `run` runs any coroutine on its loop (for code above the SDK,
    e.g. the trainer's RolloutClient, that drives several sessions at once)."""

    thread_name = "gymwire-client"

    def __init__(self, url: str, **client_kwargs: Any) -> None:
        self._loop_thread = LoopThread(self.thread_name, join_timeout=10)
        self.client = self._loop_thread.connect(GymClient(url, **client_kwargs))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the client's loop and wait for its result."""
        return self._loop_thread.run(coro)

    @property
    def limits(self) -> Limits:
        """The limits the server announced in its welcome."""
        return self.client.limits

    def list_envs(self) -> list[EnvInfo]:
        return self.run(self.client.list_envs())

    def describe(self, env: str) -> EnvInfo:
        return self.run(self.client.describe(env))

    def open(self, env: str, **kwargs: Any) -> "SyncSession":
        return SyncSession(self, self.run(self.client.open(env, **kwargs)))

    def close(self) -> None:
        self._loop_thread.close(self.client)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncSession:
    def __init__(self, client: SyncGymClient, session: ClientSession) -> None:
        self._client = client
        self.session = session

    @property
    def observation(self) -> Observation | None:
        return self.session.observation

    @property
    def done(self) -> bool:
        return self.session.done

    def step(self, action: str, deadline_ms: int | None = None) -> StepResult:
        return self._client.run(self.session.step(action, deadline_ms))

    def reset(self, **task: Any) -> Observation:
        return self._client.run(self.session.reset(**task))

    def close(self) -> None:
        self._client.run(self.session.close())
