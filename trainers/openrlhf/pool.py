"""One gymwire.sdk GymPool per event loop, shared by every agent of the process.

vLLM's Ray actor runs every agent of the process on one event loop, so one pool per loop serves
them all: one connection per server URL, shared by every session on it. A connection belongs to
the loop that opened it, so each loop gets its own pool. With GYMWIRE_FLEET the pool's members
follow that gym fleet, which runs in the same Ray cluster (gymwire.sdk.fleet).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any

from gymwire.sdk.pool import GymPool

if TYPE_CHECKING:
    from .agent import AgentSettings

__all__ = ["pool_for_running_loop", "close_pools", "OPEN_ATTEMPTS"]

# Rounds of refusals (CAPACITY, DRAINING) one open sits through before its error reaches OpenRLHF:
# a rollout opens batch_size x n_samples_per_prompt sessions at once, and servers free up as
# episodes end.
OPEN_ATTEMPTS = 30

_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], GymPool]]" = (
    weakref.WeakKeyDictionary()
)


def pool_for_running_loop(settings: "AgentSettings") -> GymPool:
    """The pool for the settings' servers (or fleet) on the running event loop, created on first use."""
    per_loop = _pools.setdefault(asyncio.get_running_loop(), {})
    key = (settings.urls, settings.fleet, settings.token)
    if key not in per_loop:
        members = None
        if settings.fleet is not None:
            from gymwire.sdk.fleet import Fleet

            members = Fleet.get(settings.fleet).members
        per_loop[key] = GymPool(
            settings.urls, members=members, token=settings.token, name="gymwire-openrlhf", open_attempts=OPEN_ATTEMPTS
        )
    return per_loop[key]


async def close_pools() -> None:
    """Close the running loop's pools (their connections); the next episode opens new ones."""
    for pool in _pools.pop(asyncio.get_running_loop(), {}).values():
        await pool.close()
