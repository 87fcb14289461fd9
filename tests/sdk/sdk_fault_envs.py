"""Environments that misbehave on purpose, for the server's fault tests."""

from __future__ import annotations

import asyncio
import os
import threading
import time

from gymwire.sdk import Environment, Image, Observation, StepOutcome, Task


class CountingEnv(Environment):
    """Counts executed steps per task seed across all instances (exactly-once checks)."""

    name = "counting"
    splits = {"test": 10}
    default_max_turns = 50
    executed: dict[int, int] = {}
    instances = 0
    closed = 0
    step_delay = 0.0
    lock = threading.Lock()

    def __init__(self) -> None:
        with CountingEnv.lock:
            CountingEnv.instances += 1

    def reset(self, task: Task) -> str:
        self.key = task.seed if task.seed is not None else (task.index or 0)
        self.n = 0
        return f"counting {self.key}"

    def step(self, action: str) -> StepOutcome:
        if action.startswith("sleep "):
            time.sleep(float(action.split()[1]))
        elif self.step_delay:
            time.sleep(self.step_delay)
        self.n += 1
        with CountingEnv.lock:
            CountingEnv.executed[self.key] = CountingEnv.executed.get(self.key, 0) + 1
        done = action == "finish"
        return StepOutcome(f"step {self.n}: {action}", reward=1.0 if done else 0.0, terminated=done, info={"n": self.n})

    def close(self) -> None:
        with CountingEnv.lock:
            CountingEnv.closed += 1


class FaultyEnv(Environment):
    """`raise` raises, `hang S` blocks S seconds, `die` kills its own process, else echoes."""

    name = "faulty"
    default_max_turns = 100

    def reset(self, task: Task) -> str:
        return "ready"

    def step(self, action: str) -> StepOutcome:
        if action == "raise":
            raise RuntimeError("environment bug")
        if action.startswith("hang "):
            time.sleep(float(action.split()[1]))
        if action == "die":
            os._exit(3)
        if action == "bad-return":
            return "not a StepOutcome"  # type: ignore[return-value]
        return StepOutcome(f"echo {action}", info={"pid": os.getpid()})


class AsyncSleepEnv(Environment):
    """An async environment: `S` sleeps S seconds on the event loop (without blocking it)."""

    name = "async-sleep"
    default_max_turns = 100

    async def reset(self, task: Task) -> str:
        return "async ready"

    async def step(self, action: str) -> StepOutcome:
        await asyncio.sleep(float(action))
        return StepOutcome(f"slept {action}")


class BadTaskEnv(Environment):
    name = "strict"
    splits = {"test": 3}

    def reset(self, task: Task) -> str:
        split, index = self.task_index(task)
        return f"{split} {index}"

    def step(self, action: str) -> StepOutcome:
        return StepOutcome("ok", terminated=True, reward=1.0)


class PictureEnv(Environment):
    """Returns a tiny image with every observation; `slow_reset` option delays the reset."""

    name = "picture"
    images = True

    def reset(self, task: Task) -> Observation:
        time.sleep(float(task.options.get("slow_reset", 0)))
        return Observation(text="look", images=[Image(mime="image/png", data=b"\x89PNG fake")])

    def step(self, action: str) -> StepOutcome:
        return StepOutcome(Observation(text="again", images=[Image(data=b"\x00" * 16)]))
