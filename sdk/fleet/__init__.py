"""A gym fleet on Ray: replicas of configured environments placed and supervised across a cluster.

    import ray
    from gymwire.sdk.fleet import Fleet, FleetSpec, ReplicaGroup

    ray.init(address="auto")
    fleet = Fleet.up(FleetSpec(groups=(ReplicaGroup("games", envs=("textcraft",), replicas=8),)))
    async with fleet.pool() as pool:           # follows the fleet: scale-ups, restarts, losses
        async with pool.session("textcraft") as env:
            ...
    fleet.scale("games", 16)
    fleet.down()

Ray only places and supervises: each replica is an async actor running a GymServer on its node's
address, and clients talk WebSocket to it directly. The fleet's manager is a detached named actor,
so `gymwire fleet ls|scale|down` and pools in other processes of the cluster find it by name.
Needs the `ray` extra (pip install 'gymwire[ray]'); Ray is imported only when a fleet is used.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from ..pool import GymPool
from .spec import FleetSpec, FleetSpecError, ReplicaGroup, load_fleet_spec

__all__ = ["Fleet", "FleetError", "FleetSpec", "FleetSpecError", "ReplicaGroup", "load_fleet_spec", "MISSING_RAY"]

MISSING_RAY = "gymwire fleets need Ray: pip install 'gymwire[ray]'"


class FleetError(RuntimeError):
    """A fleet cannot be found, brought up or changed; the message says what to do."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise FleetError(MISSING_RAY) from None
    if not ray.is_initialized():
        raise FleetError("connect to the Ray cluster first: ray.init(address='auto') (or `gymwire fleet --address`)")
    return ray


class Fleet:
    """A handle on a running fleet's manager actor."""

    def __init__(self, name: str, manager: Any) -> None:
        self.name = name
        self.manager = manager
        self._token: str | None = None
        self._token_known = False

    @classmethod
    def up(cls, spec: FleetSpec, *, token: str | None = None, wait_s: float = 300.0, **manager_options: Any) -> "Fleet":
        """Start the fleet's manager in the connected Ray cluster and wait (up to `wait_s`) until
        each group has its replicas answering. The auth token is `token`, else a fresh one (unless
        spec.auth is false). `manager_options`: health_every_s, drain_timeout_s."""
        ray = _ray()
        from .manager import NAMESPACE, FleetManager

        if cls._find(spec.name) is not None:
            raise FleetError(f"a fleet named {spec.name!r} is already up; take it down first (gymwire fleet down --name {spec.name})")
        token = (token or secrets.token_urlsafe(24)) if spec.auth else None
        manager = (
            ray.remote(FleetManager)
            .options(name=spec.name, namespace=NAMESPACE, lifetime="detached", num_cpus=0, max_restarts=-1, max_concurrency=1000)
            .remote(spec, token, **manager_options)
        )
        ray.get(manager.start.remote())
        fleet = cls(spec.name, manager)
        fleet._token, fleet._token_known = token, True
        try:
            fleet.wait_ready(wait_s)
        except FleetError:
            fleet.down(drain_timeout_s=0)  # nothing half up is left behind
            raise
        return fleet

    @classmethod
    def get(cls, name: str = "gymwire") -> "Fleet":
        manager = cls._find(name)
        if manager is None:
            raise FleetError(f"no fleet named {name!r} in this Ray cluster; bring one up with `gymwire fleet up`")
        return cls(name, manager)

    @staticmethod
    def _find(name: str) -> Any:
        ray = _ray()
        from .manager import NAMESPACE

        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return None

    # ------------------------------------------------------------------ blocking calls (drivers, CLI)

    def status(self) -> dict[str, Any]:
        return _ray().get(self.manager.status.remote())

    def endpoints(self, group: str | None = None) -> list[dict[str, Any]]:
        return _ray().get(self.manager.endpoints.remote(group))

    def urls(self, group: str | None = None) -> list[str]:
        return [row["url"] for row in self.endpoints(group)]

    @property
    def token(self) -> str | None:
        if not self._token_known:
            self._token, self._token_known = _ray().get(self.manager.get_token.remote()), True
        return self._token

    def scale(self, group: str, count: int) -> None:
        try:
            _ray().get(self.manager.scale.remote(group, count))
        except Exception as exc:  # RayTaskError wraps the manager's ValueError / FleetSpecError
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ValueError):
                raise FleetError(str(cause)) from None
            raise

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Wait until every group has all its replicas answering."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            failed = [r for r in status["replicas"] if r["state"] == "failed"]
            if failed:
                raise FleetError(f"fleet {self.name!r}: replica {failed[0]['replica']} cannot serve: {failed[0]['error']}")
            waiting = [r["replica"] for r in status["replicas"] if r["state"] != "up"]
            counts = {name: 0 for name in status["groups"]}
            for row in status["replicas"]:
                if row["state"] == "up":
                    counts[row["group"]] += 1
            short = [name for name, group in status["groups"].items() if group["per_node"] is None and counts[name] < group["replicas"]]
            if not waiting and not short:
                return
            if time.monotonic() > deadline:
                raise FleetError(
                    f"fleet {self.name!r}: replicas {waiting or short} not up after {timeout:.0f}s; "
                    "check that the cluster has the resources and labels the groups ask for (gymwire fleet ls)"
                )
            time.sleep(0.2)

    def down(self, drain_timeout_s: float | None = None) -> None:
        """Drain and remove every replica, then the manager."""
        ray = _ray()
        ray.get(self.manager.down.remote(drain_timeout_s))
        ray.kill(self.manager, no_restart=True)

    # ------------------------------------------------------------------ for pools (async)

    async def members(self, group: str | None = None) -> list[str]:
        """The URLs of the replicas that answer now: a GymPool `members` provider."""
        return [row["url"] for row in await self.manager.endpoints.remote(group)]

    def pool(self, group: str | None = None, **pool_kwargs: Any) -> GymPool:
        """A GymPool whose members follow the fleet (of `group`, or all), with its token."""
        return GymPool(members=lambda: self.members(group), token=self.token, **pool_kwargs)
