"""Run the suite without a separate server process: for environment authors' own test suites."""

from __future__ import annotations

import asyncio
from typing import Any

from .runner import ConformanceReport, run_conformance

# Short timers so the heartbeat, half-open and resume-grace checks take about a second each, and
# small caps so the limit checks can reach them. Only for servers made to be checked.
QUICK_LIMITS: dict[str, int] = {
    "heartbeat_interval_ms": 500,
    "resume_grace_ms": 800,
    "max_inflight": 12,
    "max_sessions_per_connection": 8,
    "max_batch": 16,
    "max_frame_bytes": 256 * 1024,
    "max_action_bytes": 8 * 1024,
}


async def check_environment(
    env_class: Any, *, isolation: str = "thread", token: str | None = None, **options: Any
) -> ConformanceReport:
    """Serve `env_class` (a gymwire.sdk.Environment subclass or an EnvSpec) on loopback with QUICK_LIMITS and run
    the suite against it, the drain check included (it stops the server at the end); `options`
    are those of run_conformance (slow_action, level, ...)."""
    from gymwire.protocol import Limits
    from gymwire.sdk.server import GymServer

    server = GymServer([env_class], host="127.0.0.1", port=0, limits=Limits(**QUICK_LIMITS), token=token, isolation=isolation)
    async with server:
        return await run_conformance(
            server.url, env=next(iter(server.envs)), token=token, shutdown=lambda: server.stop(drain_timeout=30), **options
        )


def run_conformance_sync(url: str, **options: Any) -> ConformanceReport:
    """run_conformance for code without an event loop (plain pytest functions, scripts)."""
    return asyncio.run(run_conformance(url, **options))
