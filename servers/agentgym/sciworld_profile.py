"""ScienceWorld as AgentGym's server plays it: the `profile: agentgym` session option of SciWorldEnv.

Written from a reading of AgentGym's `agentenv-sciworld` (environment.py, server.py) and its client
(`agentenv/agentenv/envs/sciworld.py` with `BaseAdapter.parse_react`) at AgentGym's main (3ef9235);
no code of theirs is used. With it:

- a task index of the split `agentgym` is AgentGym's `data_idx` (any split's task may be played);
- each session drives a simulator of its own through ScienceWorld's Python API
  (`scienceworld.ScienceWorldEnv`, its own Java process), as AgentGym does, and makes the same calls:
  reset = `load`, the task description, then the move `look around`; a step = `step(action)` with
  the action as it is. This is what makes the text identical: ScienceWorld lists a room's objects
  in an order that follows the Java process's identity hash codes, which depend on how that
  process was started (its garbage collector's threads, hence the number of CPUs) and on every
  call made into it before; gymwire's shared simulators (servers/sciworld/jvm.py) list them in
  other orders. It also costs what AgentGym's sessions cost: a Java process each (about 170 MB),
  and the simulator lists the valid actions after every move (not copied into Python here);
- the first observation is the task description, a newline and what `look around` shows: what
  AgentGym's client shows;
- reward: the change of the simulator's score (0-100) over 100 (AgentGym says the change in points;
  `gymwire agentgym-serve` answers in points); the episode's score is the simulator's score;
- done as ScienceWorld's `step` decides it: the task completed, the score negative (failed), or more
  than 100 moves made;
- the client's reading of a model's reply (option `input: "reply"`, the default): a reply ending in
  `</s>` loses its last five characters, then the text after the last `Action:` is sent, stripped
  (none: an empty action, unless the reply contains `search[` or `click[`: then all of it). With
  `input: "action"` the text is what AgentGym's server receives.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gymwire.sdk.environment import StepOutcome, Task, TaskError

from .api import react_action

__all__ = ["AgentGymSciWorld", "profile_of", "PROFILES"]

PROFILES = ("gymwire", "agentgym")
INPUTS = ("reply", "action")
STEP_LIMIT = 100  # ScienceWorldEnv's envStepLimit, which AgentGym keeps: more moves end the episode


def profile_of(task: Task) -> tuple[str, bool]:
    """(the task's profile, whether replies are read as AgentGym's client reads them)."""
    profile = task.options.get("profile", "gymwire")
    if profile not in PROFILES:
        raise TaskError(f"unknown profile {profile!r}; sciworld has profiles {', '.join(PROFILES)}")
    source = task.options.get("input", "reply")
    if source not in INPUTS:
        raise TaskError(f"option input must be one of {', '.join(INPUTS)}; got {source!r}")
    return profile, source == "reply"


class AgentGymSciWorld:
    """A session's own ScienceWorld (Python API, own Java process), played as AgentGym's server plays it."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sciworld-agentgym")
        self._world: Any = None
        self._score = 0
        self.parse_replies = True

    async def _run(self, work: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)

    async def reset(self, task_name: str, variation: int, parse_replies: bool) -> tuple[str, dict[str, Any]]:
        """(first observation as AgentGym's client shows it, the fields of AgentGym's reset answer)."""
        self.parse_replies = parse_replies
        return await self._run(self._reset, task_name, variation)

    def _reset(self, task_name: str, variation: int) -> tuple[str, dict[str, Any]]:
        if self._world is None:
            from scienceworld import ScienceWorldEnv

            self._world = ScienceWorldEnv()
        self._world.load(task_name, variation)
        self._score = 0  # the score the next move's points are counted from
        description = self._world.get_task_description()
        look, points, done, score, _ = self._move("look around")  # a move: a task may score at once
        answer = {"task_description": description, "observation": look, "reward": points, "score": score, "done": done}
        return f"{description}\n{look}", answer

    def _move(self, action: str) -> tuple[str, int, bool, int, int]:
        """ScienceWorldEnv.step (scienceworld 1.2.3) call for call into the simulator: (observation,
        points gained, done, score, moves). Its info dict's calls are made too, in its order, since
        every call into the JVM can shape the order objects are listed in; only the valid-action
        list is not copied into Python (one py4j round trip per action: a third of a reset)."""
        server = self._world.server
        observation = server.step(action)
        score = int(round(100 * server.getScore()))
        done = bool(server.getCompleted())
        moves = int(server.getNumMoves())
        points, self._score = score - self._score, score
        done = done or moves > STEP_LIMIT or score < 0
        server.freeActionLook()
        server.freeActionInventory()
        server.freeActionTaskDesc()
        server.getValidActionObjectCombinations()
        return observation, points, done, score, moves

    async def step(self, text: str) -> StepOutcome:
        """One move, as AgentGym's server makes it."""
        action = react_action(text) if self.parse_replies else text
        observation, points, done, score, moves = await self._run(self._move, action)
        failed = score < 0
        out_of_moves = done and moves > STEP_LIMIT and 0 <= score < 100
        completed = done and not out_of_moves
        return StepOutcome(
            observation, reward=points / 100, terminated=completed, truncated=out_of_moves,
            success=completed and not failed, score=float(score), info={"score": score, "points": points},
        )

    async def close(self) -> None:
        world, self._world = self._world, None
        if world is not None:
            await self._run(world.close)
        self._thread.shutdown(wait=False)

