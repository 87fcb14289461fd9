"""Environments for trainer tests, served by a real GymServer on loopback."""

from __future__ import annotations

import threading

from gymwire.sdk.environment import Environment, StepOutcome, Task


class CoinEnv(Environment):
    """One turn: the observation shows a coin, and any answer earns 1 on heads, 0 on tails. The
    return is a function of the state alone, so a critic can explain all of its variance."""

    name = "coin"
    description = "A coin is shown; answer anything."
    instructions = "Answer with one word."
    splits = {"train": 1000, "test": 10}
    default_max_turns = 1
    inline = True

    def reset(self, task: Task) -> str:
        _, index = self.task_index(task)
        self.heads = index % 2 == 0
        return "the coin shows heads" if self.heads else "the coin shows tails"

    def step(self, action: str) -> StepOutcome:
        return StepOutcome("done", reward=1.0 if self.heads else 0.0, terminated=True)


class HangingCoinEnv(CoinEnv):
    """CoinEnv whose step on train task `hangs_on` blocks until `release` is set: a hung environment."""

    name = "hanging-coin"
    inline = False  # runs in the server's thread pool, so the server itself stays responsive
    hangs_on = 7
    release: threading.Event = threading.Event()

    def reset(self, task: Task) -> str:
        self.hangs = task.index == self.hangs_on
        return super().reset(task)

    def step(self, action: str) -> StepOutcome:
        if self.hangs:
            type(self).release.wait(timeout=60)
        return super().step(action)
