"""ScienceWorld: elementary-science tasks in a text world, on the real simulator (AgentGym's SciWorld).

The first observation is the task description and what `look around` shows. Actions are
ScienceWorld's action templates as text (`open door to kitchen`, `focus on water`, ...), read from a
ReAct `Action:` line or a bare reply. A command the simulator cannot match is answered with the
valid templates and changes nothing. When a command is ambiguous ScienceWorld lists numbered
choices; the agent answers with the number (or the choice's text), and anything else is answered
with the choices again, the game unchanged.

Reward: ScienceWorld's score (0-100) as progress in [0, 1]; each step's reward is the change in
progress, so an episode's rewards add up to its final score / 100 (a step that undoes progress is
rewarded negatively). The episode ends when the task is completed (success) or failed (the
simulator's score goes negative, e.g. after focusing on the wrong object: score 0). Metrics:
success, score (the progress in [0, 1], as every environment's score is in its rewards' unit: an
episode a client ends early, e.g. at its token budget, is scored by its rewards, and the two must
agree), turns; `info["score"]` is the simulator's raw score (0-100, negative when failed).

Tasks: see `tasks.py` (splits train, dev, test of 200, and `agentgym` indexed by AgentGym's
data_idx). A seed picks a train task. The session option `profile: "agentgym"` plays as AgentGym's
server does, on a simulator of the session's own (gymwire.servers.agentgym.sciworld_profile).

Simulators run in a pool of Java processes, many per process (see `jvm.py`); the pool is sized by
the constructor's arguments (`gymwire serve sciworld:jvms=4,sessions_per_jvm=32`), and sessions
configured alike share one pool per server process.
"""

from __future__ import annotations

import os
import threading
from typing import ClassVar

from pydantic import PositiveFloat, PositiveInt

from gymwire.protocol import EnvInfo, Observation
from gymwire.sdk.environment import Environment, StepOutcome, Task

from . import tasks
from gymwire.servers.agentgym.sciworld_profile import AgentGymSciWorld, profile_of

from .actions import AMBIGUOUS, NO_MATCH, USAGE, ActionParseError, ambiguity_options, parse_action, quote
from .jvm import MISSING_EXTRA, JavaPool, Simulator

try:  # fail at import, with the install line, rather than at the first session
    import py4j  # noqa: F401
    import scienceworld  # noqa: F401
except ImportError as exc:  # pragma: no cover - CI installs the extra
    raise ImportError(f"{MISSING_EXTRA} ({exc})") from exc

__all__ = ["SciWorldEnv"]


# JVMs sessions are spread over first: one per CPU for parallel steps, at most 8 by default as each
# costs ~200 MB before its first session.
DEFAULT_JVMS = min(os.cpu_count() or 1, 8)
DEFAULT_SESSIONS_PER_JVM = 64
DEFAULT_JVM_HEAP_MB = 2048
DEFAULT_CALL_TIMEOUT_S = 120.0
_pools: dict[tuple[int, int, int, float], JavaPool] = {}
_pools_lock = threading.Lock()


def java_pool(jvms: int, sessions_per_jvm: int, jvm_heap_mb: int, call_timeout_s: float) -> JavaPool:
    """The process's pool of Java processes of these settings, made on first use."""
    key = (jvms, sessions_per_jvm, jvm_heap_mb, call_timeout_s)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = JavaPool(*key)
        return _pools[key]


class SciWorldEnv(Environment):
    name = "sciworld"
    version = "1.0.0"
    description = "ScienceWorld: elementary-science experiments in a simulated text world (scienceworld, Java)."
    instructions = (
        "Complete the science task. " + USAGE + " If an action is ambiguous you are shown numbered choices: answer "
        "with the number. Answer with `Thought: ...` then `Action: <one action>`."
    )
    splits = tasks.split_sizes()
    default_max_turns = 20  # AgentGym-RL's fixed baseline; its ScalingInter-RL schedule is 10, 20, 30
    seedable = True
    requires: ClassVar[tuple[str, ...]] = ("scienceworld", "py4j")
    extra: ClassVar[str] = "sciworld"
    known_options: ClassVar[dict[str, str]] = {
        "profile": "gymwire (default) or agentgym: AgentGym's server's game, character for character, on a simulator of its own",
        "input": "with profile agentgym: reply (default: a model's reply, read as AgentGym's client reads it) or action (what AgentGym's server receives)",
    }

    @classmethod
    def info(cls) -> EnvInfo:
        test_tasks: dict[str, int] = {}
        for index in range(cls.splits["test"]):
            task_id = tasks.task_at("test", index).task_id
            test_tasks[task_id] = test_tasks.get(task_id, 0) + 1
        metadata = {"simulator": f"scienceworld {scienceworld.__version__}", "test_tasks_per_task_id": test_tasks}
        return super().info().model_copy(update={"metadata": metadata})

    def __init__(
        self, jvms: PositiveInt = DEFAULT_JVMS, sessions_per_jvm: PositiveInt = DEFAULT_SESSIONS_PER_JVM,
        jvm_heap_mb: PositiveInt = DEFAULT_JVM_HEAP_MB, call_timeout_s: PositiveFloat = DEFAULT_CALL_TIMEOUT_S,
    ) -> None:
        """The Java pool: `jvms` JVMs first (more start when all hold `sessions_per_jvm`), each with
        `jvm_heap_mb` of heap; a call into one that takes over `call_timeout_s` kills it."""
        self.pool = java_pool(jvms, sessions_per_jvm, jvm_heap_mb, call_timeout_s)
        self._simulator: Simulator | None = None
        self._progress = 0.0
        self._choices: list[str] | None = None  # pending numbered choices of an ambiguous command
        self._agentgym: AgentGymSciWorld | None = None  # with `profile: agentgym`: its own simulator

    async def reset(self, task: Task) -> Observation:
        split, index = self.task_index(task, default_split="train")
        sci_task = tasks.task_at(split, index)
        data = {
            "task_id": sci_task.task_id, "task": sci_task.name, "variation": sci_task.variation,
            "split": split, "index": index, "agentgym_index": sci_task.agentgym_index,
        }
        profile, parse_replies = profile_of(task)
        if profile == "agentgym":  # a simulator of its own, played as AgentGym's server plays it
            self._release()
            self._agentgym = self._agentgym or AgentGymSciWorld()
            text, answer = await self._agentgym.reset(sci_task.name, sci_task.variation, parse_replies)
            return Observation(text=text, data={**data, "task_description": answer["task_description"], "agentgym": answer})
        await self._close_agentgym()
        if self._simulator is not None and not self._simulator.alive:
            self._release()  # its Java process died: play on in a fresh one
        if self._simulator is None:
            self._simulator = await self.pool.acquire()
        description, look = await self._simulator.load(sci_task.name, sci_task.variation)
        self._progress = 0.0
        self._choices = None
        return Observation(text=f"{description}\n\n{look}", data={**data, "task_description": description})

    async def step(self, action: str) -> StepOutcome:
        if self._agentgym is not None:
            return await self._agentgym.step(action)
        if self._simulator is None:
            raise RuntimeError("step before reset")
        try:
            command = self._command(parse_action(action))
        except ActionParseError as exc:
            return self._unchanged(str(exc))
        outcome = await self._simulator.step(command)
        text = outcome.observation
        if text.startswith(AMBIGUOUS):
            self._choices = ambiguity_options(text)
        elif text.strip() == NO_MATCH:
            text = f"{NO_MATCH} ({quote(command)}) {USAGE}"
        failed = outcome.score < 0
        score = 0 if failed else min(outcome.score, 100)
        progress = score / 100
        reward, self._progress = progress - self._progress, progress
        success = outcome.completed and not failed
        return StepOutcome(
            text, reward=reward, terminated=success or failed, success=success, score=progress,
            info={"score": outcome.score},
        )

    async def close(self) -> None:
        self._release()
        await self._close_agentgym()

    async def _close_agentgym(self) -> None:
        if self._agentgym is not None:
            agentgym, self._agentgym = self._agentgym, None
            await agentgym.close()

    def _release(self) -> None:
        if self._simulator is not None:
            simulator, self._simulator = self._simulator, None
            self.pool.release(simulator)

    def _command(self, command: str) -> str:
        """The command to send; while ScienceWorld waits for a numbered choice, only a choice."""
        if self._choices is None:
            return command
        choices, self._choices = self._choices, None
        # ASCII digits only ('²'.isdigit() holds, int() refuses it), and few of them (int() refuses past 4300).
        if command.isascii() and command.isdigit() and len(command) <= 6 and int(command) < len(choices):
            return str(int(command))
        if command in choices:
            return str(choices.index(command))
        self._choices = choices
        listed = "\n".join(f"{number}: {choice}" for number, choice in enumerate(choices))
        raise ActionParseError(f"Your last action was ambiguous. Answer with the number of the one you mean:\n{listed}")

    def _unchanged(self, text: str) -> StepOutcome:
        return StepOutcome(text, reward=0.0, success=False, score=self._progress, info={"score": round(self._progress * 100)})
