"""The fleet's manager: a detached, named Ray actor that keeps each group at its size.

It creates the replica actors (placed by Ray on nodes with the group's resources and labels; a
per_node group pinned to each node that fits, nodes that join later included), asks each for its
status every `health_every_s`, lists the ones that answer as the fleet's endpoints, and:
- a replica that crashed is restarted by Ray (max_restarts=-1) on a new port, and listed again
  once it answers; one Ray gave up on (its node is gone) is replaced;
- a scale-down drains the surplus replicas first (no new sessions, open ones may finish within
  `drain_timeout_s`), then removes them; they leave the endpoints at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .replica import Replica
from .spec import FleetSpec, ReplicaGroup

log = logging.getLogger("gymwire.fleet")

NAMESPACE = "gymwire"  # the Ray namespace of every fleet's manager
NODES_EVERY_S = 2.0  # how often the manager reads the cluster's nodes (per_node groups)


@dataclass
class ReplicaState:
    id: str
    group: str
    actor: Any
    node: str | None  # the node a per_node replica is pinned to
    state: str = "starting"  # starting, up, down (not answering), draining, failed (cannot serve)
    error: str | None = None  # why it failed: an environment that cannot load there
    url: str | None = None
    node_id: str | None = None
    pid: int | None = None
    sessions: int = 0
    restarts: int = 0  # times it came back on a new URL
    created_at: float = field(default_factory=time.time)
    probe: asyncio.Task[None] | None = None

    def row(self) -> dict[str, Any]:
        return {
            "replica": self.id, "group": self.group, "state": self.state, "url": self.url, "node_id": self.node_id,
            "pid": self.pid, "sessions": self.sessions, "restarts": self.restarts, "error": self.error,
        }


class FleetManager:
    def __init__(self, spec: FleetSpec, token: str | None, health_every_s: float = 0.5, drain_timeout_s: float = 30.0) -> None:
        self.spec = spec
        self.token = token
        self.health_every_s = health_every_s
        self.drain_timeout_s = drain_timeout_s
        self.groups: dict[str, ReplicaGroup] = {group.name: group for group in spec.groups}
        self.replicas: dict[str, ReplicaState] = {}
        self._ids = itertools.count(1)
        self._nodes: list[dict[str, Any]] = []
        self._nodes_at = 0.0
        self._supervising: asyncio.Task[None] | None = None
        self._draining: set[asyncio.Task[None]] = set()
        self._stopped = False

    # ------------------------------------------------------------------ calls from drivers and pools

    async def start(self) -> None:
        self._ensure_supervising()
        await self.reconcile()

    async def endpoints(self, group: str | None = None) -> list[dict[str, Any]]:
        """The replicas that answer and take sessions (of `group`, or all)."""
        self._ensure_supervising()
        return [r.row() for r in self.replicas.values() if r.state == "up" and group in (None, r.group)]

    async def status(self) -> dict[str, Any]:
        self._ensure_supervising()
        return {
            "name": self.spec.name,
            "groups": {name: _group_row(group) for name, group in self.groups.items()},
            "replicas": [r.row() for r in sorted(self.replicas.values(), key=lambda r: (r.group, r.created_at))],
            "auth": self.token is not None,
        }

    async def get_token(self) -> str | None:
        return self.token

    async def scale(self, group: str, count: int) -> None:
        """`count` replicas for `group` (per node, for a per_node group), without a restart."""
        if group not in self.groups:
            raise ValueError(f"no group {group!r}; the fleet has {sorted(self.groups)}")
        self.groups[group] = self.groups[group].scaled(count)
        await self.reconcile()

    async def down(self, drain_timeout_s: float | None = None) -> None:
        """Drain every replica (open sessions may finish within the timeout), then remove them."""
        self._stopped = True
        if self._supervising is not None:
            self._supervising.cancel()
        timeout = self.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        await asyncio.gather(*(self._retire(r, timeout) for r in list(self.replicas.values())), *self._draining)

    # ------------------------------------------------------------------ supervision

    def _ensure_supervising(self) -> None:
        # Also after Ray restarted this actor: the first call starts the loop again.
        if not self._stopped and (self._supervising is None or self._supervising.done()):
            self._supervising = asyncio.get_running_loop().create_task(self._supervise())

    async def _supervise(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:  # a Ray hiccup must not end supervision
                log.exception("fleet %s: reconcile failed", self.spec.name)
            await asyncio.sleep(self.health_every_s)

    async def reconcile(self) -> None:
        import ray

        if time.monotonic() - self._nodes_at > NODES_EVERY_S or not self._nodes:
            self._nodes = [n for n in await asyncio.to_thread(ray.nodes) if n.get("Alive")]
            self._nodes_at = time.monotonic()
        for group in self.groups.values():
            serving = [r for r in self.replicas.values() if r.group == group.name and r.state != "draining"]
            if group.per_node is None:
                self._resize(group, serving, group.replicas, node=None)
            else:
                fitting = {n["NodeID"] for n in self._nodes if _fits(group, n)}
                for replica in serving:
                    if replica.node not in fitting:  # its node left, or no longer fits
                        self._spawn_retire(replica, 0)
                for node in sorted(fitting):
                    self._resize(group, [r for r in serving if r.node == node], group.per_node, node=node)
        for replica in list(self.replicas.values()):
            if replica.state != "draining" and (replica.probe is None or replica.probe.done()):
                replica.probe = asyncio.get_running_loop().create_task(self._probe(replica))

    def _resize(self, group: ReplicaGroup, serving: list[ReplicaState], count: int, node: str | None) -> None:
        for _ in range(count - len(serving)):
            self._create(group, node)
        if len(serving) > count:  # the least loaded go first
            for replica in sorted(serving, key=lambda r: (r.sessions, -r.created_at))[: len(serving) - count]:
                self._spawn_retire(replica, self.drain_timeout_s)

    def _create(self, group: ReplicaGroup, node: str | None) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options: dict[str, Any] = {
            "num_cpus": group.num_cpus,
            "resources": dict(group.resources),
            "max_restarts": -1,  # a crashed replica comes back (on a new port)
            "max_concurrency": 64,
        }
        if group.memory_mb is not None:
            options["memory"] = group.memory_mb * 2**20
        if node is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
        else:
            options["scheduling_strategy"] = "SPREAD"
            if group.labels:
                options["label_selector"] = dict(group.labels)
        actor = ray.remote(Replica).options(**options).remote(group, self.token)
        replica_id = f"{group.name}-{next(self._ids)}"
        self.replicas[replica_id] = ReplicaState(replica_id, group.name, actor, node)
        log.info("fleet %s: replica %s created", self.spec.name, replica_id)

    async def _probe(self, replica: ReplicaState) -> None:
        from ray.exceptions import ActorDiedError, RayActorError

        # A replica starting up imports its environments first: give it longer.
        timeout = 120.0 if replica.state == "starting" else 10.0
        try:
            status = await asyncio.wait_for(replica.actor.status.remote(), timeout)
        except ActorDiedError:  # Ray will not restart it (e.g. its node is gone): replace it
            log.warning("fleet %s: replica %s is dead; replacing it", self.spec.name, replica.id)
            self.replicas.pop(replica.id, None)
            return
        except (RayActorError, asyncio.TimeoutError) as exc:  # restarting, or too busy to answer
            if replica.state not in ("starting", "draining", "failed"):
                log.warning("fleet %s: replica %s not answering (%s)", self.spec.name, replica.id, type(exc).__name__)
                replica.state = "down"
            return
        except Exception as exc:  # its server cannot start there (an environment that cannot load)
            cause = getattr(exc, "cause", exc)
            replica.state, replica.error = "failed", f"{type(cause).__name__}: {cause}"
            return
        if replica.state == "draining" or replica.id not in self.replicas:
            return
        if replica.url is not None and status["url"] != replica.url:
            replica.restarts += 1
        replica.url, replica.node_id, replica.pid = status["url"], status["node_id"], status["pid"]
        replica.sessions = status["sessions"]
        replica.state, replica.error = "up", None

    def _spawn_retire(self, replica: ReplicaState, timeout: float) -> None:
        task = asyncio.get_running_loop().create_task(self._retire(replica, timeout))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def _retire(self, replica: ReplicaState, timeout: float) -> None:
        import ray

        if replica.state == "draining":
            return
        replica.state = "draining"  # out of the endpoints at once
        if replica.probe is not None:
            replica.probe.cancel()
        try:
            await asyncio.wait_for(replica.actor.drain.remote(timeout), timeout + 10)
        except Exception as exc:  # dead or stuck: it goes anyway
            log.info("fleet %s: replica %s did not drain (%s)", self.spec.name, replica.id, type(exc).__name__)
        ray.kill(replica.actor, no_restart=True)
        self.replicas.pop(replica.id, None)
        log.info("fleet %s: replica %s removed", self.spec.name, replica.id)


def _fits(group: ReplicaGroup, node: dict[str, Any]) -> bool:
    """Whether a node has the group's labels and (in total) the resources one replica holds."""
    labels, resources = node.get("Labels") or {}, node.get("Resources") or {}
    if any(labels.get(key) != value for key, value in group.labels.items()):
        return False
    wanted = {"CPU": group.num_cpus, **group.resources}
    if group.memory_mb is not None:
        wanted["memory"] = group.memory_mb * 2**20
    return all(resources.get(name, 0) >= amount for name, amount in wanted.items() if amount)


def _group_row(group: ReplicaGroup) -> dict[str, Any]:
    return {"envs": list(group.envs), "replicas": group.replicas, "per_node": group.per_node}


