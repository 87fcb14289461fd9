"""One replica of a fleet: a GymServer in a Ray actor's event loop, on its node's address.

Ray only places and supervises it; clients talk WebSocket to `url` directly. When Ray restarts the
actor after a crash, the constructor runs again and the next call starts a new server (on a new
port): the manager reads the new URL from `status`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from .spec import ReplicaGroup, env_specs


class Replica:
    """The body of the replica actor (gymwire.sdk.fleet.manager makes it a Ray actor class)."""

    def __init__(self, group: ReplicaGroup, token: str | None) -> None:
        self.group = group
        self.token = token
        self.server: Any = None
        self._starting: asyncio.Lock | None = None
        self.started_at = time.time()

    async def _ensure_started(self) -> Any:
        if self.server is not None:
            return self.server
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.server is None:
                import ray

                from ..server import GymServer

                server = GymServer(
                    env_specs(self.group),
                    host=ray.util.get_node_ip_address(),  # the address other nodes reach this one at
                    port=0,
                    token=self.token,
                    limits=self.group.server_limits(),
                    isolation=self.group.isolation,
                    name=f"gymwire-fleet/{self.group.name}",
                )
                await server.start()
                self.server = server
        return self.server

    async def status(self) -> dict[str, Any]:
        """Starts the server if it is not running yet; its URL and load."""
        import ray

        server = await self._ensure_started()
        stats = server.stats()
        return {
            "url": server.url,
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "sessions": stats["sessions"],
            "connections": stats["connections"],
            "draining": server.draining,
            "started_at": self.started_at,
        }

    async def drain(self, timeout: float) -> int:
        """Refuse new sessions, tell clients to move, then wait (up to `timeout` s) for the sessions
        to end; stops the server. Returns the sessions still open when it stopped."""
        if self.server is None:
            return 0
        await self.server.drain(timeout=0)
        deadline = time.monotonic() + timeout
        while self.server.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        left = len(self.server.sessions)
        await self.server.stop(drain_timeout=0)
        return left
