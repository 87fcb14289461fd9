"""How the training step reaches the agents: a step board the trainer writes and agents read.

OpenRLHF calls the agent without the training step, so the trainer publishes it (see
publishing.py) and every agent reads it when an episode starts. The step published is the 1-based
step whose rollouts are being collected: `global_step + 1`, where `global_step` counts finished
policy updates (and comes back from the checkpoint on resume).

Boards, chosen by a spec string (`GYMWIRE_STEP_SOURCE`):
    memory            in this process only (tests, single-process runs)
    file:/shared/step.json   a small JSON file; every node must see the same path
    ray:NAME          a detached Ray named actor (namespace "gymwire"), created on first use by either side
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

__all__ = [
    "StepBoard",
    "MemoryStepBoard",
    "FileStepBoard",
    "RayStepBoard",
    "StepNotPublished",
    "StepBoardConfigError",
    "step_board_from_spec",
    "RAY_NAMESPACE",
]

RAY_NAMESPACE = "gymwire"


class StepNotPublished(RuntimeError):
    """An agent asked for the step before any trainer published one."""


class StepBoardConfigError(ValueError):
    """A step-board spec that cannot be used."""


def _checked(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"a published step is the 1-based step being collected, got {step!r}")
    return step


class StepBoard(ABC):
    """Written by the trainer (`publish`, sync: it runs in the trainer's plain loop), read by the
    agents (`current_step`, async: they run on vLLM's event loop)."""

    @abstractmethod
    def publish(self, step: int) -> None:
        """Announce that rollouts for 1-based training step `step` are being collected from now on."""

    @abstractmethod
    async def current_step(self) -> int:
        """The step last published; raises StepNotPublished when there is none."""

    def _missing(self) -> StepNotPublished:
        return StepNotPublished(
            f"no training step has been published on {self}; start training through "
            "`gymwire openrlhf launch` (or `python -m gymwire.trainers.openrlhf.train`), which publishes it"
        )


class MemoryStepBoard(StepBoard):
    def __init__(self, step: int | None = None) -> None:
        self._step = None if step is None else _checked(step)

    def publish(self, step: int) -> None:
        self._step = _checked(step)

    async def current_step(self) -> int:
        if self._step is None:
            raise self._missing()
        return self._step

    def __str__(self) -> str:
        return "memory"


class FileStepBoard(StepBoard):
    """A JSON file replaced atomically (write to a temporary file, then rename), so a reader
    never sees half a write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def publish(self, step: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        with os.fdopen(fd, "w") as handle:
            json.dump({"step": _checked(step)}, handle)
        os.replace(tmp, self.path)

    def _read(self) -> int:
        try:
            return _checked(json.loads(self.path.read_text())["step"])
        except FileNotFoundError:
            raise self._missing() from None
        except (ValueError, KeyError, TypeError) as exc:
            raise StepBoardConfigError(f"{self.path} is not a gymwire step file: {exc}") from None

    async def current_step(self) -> int:
        # A file read can stall on a network file system: keep it off vLLM's event loop.
        return await asyncio.to_thread(self._read)

    def __str__(self) -> str:
        return f"file:{self.path}"


class _StepActor:
    """The Ray named actor's body: one integer."""

    def __init__(self) -> None:
        self.step: int | None = None

    def set(self, step: int) -> None:
        self.step = step

    def get(self) -> int | None:
        return self.step


class RayStepBoard(StepBoard):
    """A Ray named actor. Either side may come first: both get-or-create it. It is detached: a
    non-detached actor dies with the last handle to it, and the side that created it may let go
    first. It so outlives the job until `ray stop`; a new or resumed job publishes its step in
    `init_checkpoint_states`, before it asks for any rollout, so a previous run's value is never read."""

    def __init__(self, name: str = "gymwire-step") -> None:
        self.name = name
        self._handle: Any = None

    def _actor(self) -> Any:
        if self._handle is None:
            import ray

            remote_cls = ray.remote(num_cpus=0)(_StepActor)
            self._handle = remote_cls.options(
                name=self.name, namespace=RAY_NAMESPACE, get_if_exists=True, lifetime="detached"
            ).remote()
        return self._handle

    def publish(self, step: int) -> None:
        import ray

        ray.get(self._actor().set.remote(_checked(step)))

    async def current_step(self) -> int:
        step = await self._actor().get.remote()
        if step is None:
            raise self._missing()
        return step

    def __str__(self) -> str:
        return f"ray:{self.name}"


def step_board_from_spec(spec: str) -> StepBoard:
    """`memory`, `file:PATH` or `ray:NAME` (see the module docstring)."""
    kind, _, arg = spec.partition(":")
    if kind == "memory" and not arg:
        return MemoryStepBoard()
    if kind == "file" and arg:
        return FileStepBoard(arg)
    if kind == "ray":
        return RayStepBoard(arg or "gymwire-step")
    raise StepBoardConfigError(f"step source {spec!r} is not one of: memory, file:/shared/path.json, ray:NAME")
