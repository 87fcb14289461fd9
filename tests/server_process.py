"""A gymwire server in a child process of its own, to be killed (SIGKILL) as a crashed replica is."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
from typing import Iterator


def _serve(conn: "multiprocessing.connection.Connection", envs: tuple[str, ...]) -> None:
    from gymwire.sdk.registry import resolve_env
    from gymwire.sdk.server import GymServer

    async def main() -> None:
        server = GymServer([resolve_env(env) for env in envs], port=0)
        await server.start()
        conn.send(server.url)
        await asyncio.Event().wait()

    asyncio.run(main())


class ServerProcess:
    """Serves `envs` (names or module:Class paths, as `gymwire serve` takes them) on a free port."""

    def __init__(self, envs: tuple[str, ...]) -> None:
        parent, child = multiprocessing.get_context("spawn").Pipe()
        self.process = multiprocessing.get_context("spawn").Process(target=_serve, args=(child, envs), daemon=True)
        self.process.start()
        if not parent.poll(60):
            self.kill()
            raise RuntimeError("the server process did not start within 60 s")
        self.url: str = parent.recv()

    def kill(self) -> None:
        """SIGKILL: the kernel resets its connections, as when a replica crashes."""
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(10)


@contextlib.contextmanager
def server_processes(count: int, envs: tuple[str, ...]) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    try:
        for _ in range(count):
            servers.append(ServerProcess(envs))
        yield servers
    finally:
        for server in servers:
            server.kill()
