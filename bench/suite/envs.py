"""No-op environments: every figure measured with them is pure protocol and runtime overhead."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from gymwire.sdk.environment import Environment, StepOutcome, Task

OBSERVATION = "ok"


class NoopEnv(Environment):
    """Sync, runs on the event loop (`inline`): a step costs nothing but the runtime around it."""

    name = "noop"
    description = "Does nothing; for benchmarks."
    splits: ClassVar[dict[str, int]] = {"test": 1}
    default_max_turns = 1_000_000_000
    inline = True

    def reset(self, task: Task) -> str:
        return OBSERVATION

    def step(self, action: str) -> StepOutcome:
        return StepOutcome(OBSERVATION)


class AsyncNoopEnv(NoopEnv):
    """The same as `NoopEnv` written with `async def`."""

    name = "noop_async"
    inline = False

    async def reset(self, task: Task) -> str:
        return OBSERVATION

    async def step(self, action: str) -> StepOutcome:
        return StepOutcome(OBSERVATION)


class SleepEnv(NoopEnv):
    """A step that waits one second without using the CPU, as an environment waiting on a
    simulator or a tool does: the sessions benchmark (OpenEnv's) counts how many fit."""

    name = "sleep1"
    inline = False

    async def reset(self, task: Task) -> str:
        return OBSERVATION

    async def step(self, action: str) -> StepOutcome:
        await asyncio.sleep(1.0)
        return StepOutcome(OBSERVATION)
