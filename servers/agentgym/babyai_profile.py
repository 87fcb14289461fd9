"""BabyAI as AgentGym's server plays it: the `profile: agentgym` session option of BabyAIEnv.

Written from a reading of AgentGym's `agentenv-babyai` (environment.py, server.py) and its client
(`agentenv/agentenv/envs/babyai.py`) at AgentGym's main (3ef9235, the client as changed in September
2025); no code of theirs is used. Everything an agent sees, and every reward and end, is AgentGym's:

- tasks: `data_idx` i plays level i mod 40 of AgentGym's list with seed i div 40 (any i >= 0).
  AgentGym pins minigrid 2.3.1, whose `BabyAI-GoToObjS6-v0` is registered with a room of size 4 (the
  registry bug minigrid 3 fixed as `-v1`, size 6): level 4 here is that level, minigrid 3's
  `BabyAI-GoToObjS4-v0`, the same class with the same arguments;
- the text: "Your goal: <mission>" with "then" and "after you" rewritten as "and", as AgentGym does;
  objects in view numbered per name from near to far, the wall ahead, what is carried, and
  `Available actions: [...]`; the messages, including the "no path" message of a door that prints
  AgentGym's door counter table;
- the actions and the planner behind them, an action's moves played until one changes nothing
  (also past the episode's end, as AgentGym plays them);
- reward and end: the reward is AgentGym's `reward` field, MiniGrid's reward of the last move, kept
  by invalid actions; done when MiniGrid ends the episode with a reward above 0.5 (a later success,
  and a failure, say "The task is completed." and play on); the level's step limit ends nothing;
- the client's reading of a model's reply (option `input: "reply"`, the default): the text after
  `Action:` up to the end of its line, characters other than letters, digits, commas and spaces
  dropped, spaces collapsed; no `Action:` sends an empty action; two `Action:` lines are answered by
  the client's error. With `input: "action"` the text is what AgentGym's server receives.
"""

from __future__ import annotations

from collections import deque
from types import MethodType
from typing import Any

import numpy as np

from gymwire.sdk.environment import StepOutcome, Task, TaskError

from .api import ONE_ACTION_ONLY, line_action

__all__ = ["AgentGymBabyAI", "agentgym_episode", "agentgym_level", "agentgym_reset", "profile_of", "PROFILES"]

PROFILES = ("gymwire", "agentgym")

# MiniGrid's encoding (minigrid.core.constants), spelled out so the text does not depend on its version.
OBJECTS = {0: "unseen", 1: "empty", 2: "wall", 3: "floor", 4: "door", 5: "key", 6: "ball", 7: "box", 8: "goal", 9: "lava", 10: "agent"}
COLORS = {0: "red", 1: "green", 2: "blue", 3: "purple", 4: "yellow", 5: "grey"}
STATES = {0: "open", 1: "closed", 2: "locked"}
DIRECTIONS = [np.array((1, 0)), np.array((0, 1)), np.array((-1, 0)), np.array((0, -1))]
STEPS = [(1, 0), (0, 1), (-1, 0), (0, -1)]  # DIRECTIONS as plain ints, for the path search
LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE = 0, 1, 2, 3, 4, 5
SEEN = ("door", "key", "ball", "box", "goal", "lava", "wall")
BLOCKING = ("wall", "box", "lava", "ball", "key")  # what a planned path may not cross
CHECK = "check available actions"
DONE_SUFFIX = "\n The task is completed."


INPUTS = ("reply", "action")
# AgentGym's level 4, minigrid 2.3.1's `BabyAI-GoToObjS6-v0`, is GoToObj with room_size 4: minigrid 3's GoToObjS4-v0.
LEVEL_OVERRIDES = {"BabyAI-GoToObjS6-v1": "BabyAI-GoToObjS4-v0"}


def profile_of(task: Task) -> str:
    profile = task.options.get("profile", "gymwire")
    if profile not in PROFILES:
        raise TaskError(f"unknown profile {profile!r}; babyai has profiles {', '.join(PROFILES)}")
    return profile


def agentgym_level(level_id: str) -> str:
    """The MiniGrid level AgentGym's server plays for one of gymwire's level ids."""
    return LEVEL_OVERRIDES.get(level_id, level_id)


def agentgym_reset(env: Any, seed: int) -> dict[str, Any]:
    """Reset a level as AgentGym's server does, returning what the reset returned.

    AgentGym makes the level and resets it twice with the same seed, on minigrid 2.3.1. There a level
    made by BabyAI's level generator (GoToSeq, PickupLoc, Synth*, *BossLevel*) kept its locked room
    from one generation to the next (minigrid 3 clears it first): from a rejected draw into the
    retry, and from the first reset into the second. That stale room steers where objects and the
    agent go and which mission is drawn, so here those levels generate as minigrid 2.3.1 did."""
    from minigrid.envs.babyai.core.levelgen import LevelGen

    if not isinstance(env, LevelGen):
        return env.reset(seed=seed)[0]  # other levels keep nothing between resets: once is the same
    env.locked_room = None  # a freshly made level
    env.gen_mission = MethodType(_mission_keeping_room, env)
    try:
        env.reset(seed=seed)
        return env.reset(seed=seed)[0]
    finally:
        del env.gen_mission


def _mission_keeping_room(level: Any) -> None:
    """LevelGen's mission generation as minigrid 2.3.1 ran it: the last locked room is not cleared."""
    if level._rand_float(0, 1) < level.locked_room_prob:
        level.add_locked_room()
    level.connect_all()
    level.add_distractors(num_distractors=level.num_dists, all_unique=False)
    while True:  # the agent is placed last, never in the locked room
        level.place_agent()
        if level.room_from_pos(*level.agent_pos) is not level.locked_room:
            break
    if not level.unblocking:
        level.check_objs_reachable()
    level.instrs = level.rand_instr(action_kinds=level.action_kinds, instr_kinds=level.instr_kinds)


def agentgym_episode(env: Any, task: Task, first: dict[str, Any]) -> "AgentGymBabyAI | None":
    """AgentGym's rules for the level `env` was just reset to (with `agentgym_level`'s level; `first`
    is what its reset returned), when the task's option `profile` is "agentgym"; None for gymwire's
    own rules (the default)."""
    if profile_of(task) != "agentgym":
        return None
    source = task.options.get("input", "reply")
    if source not in INPUTS:
        raise TaskError(f"option input must be one of {', '.join(INPUTS)}; got {source!r}")
    return AgentGymBabyAI(env, first, parse_replies=source == "reply")


def _cross(a: Any, b: Any) -> int:
    return int(a[0] * b[1] - a[1] * b[0])


class AgentGymBabyAI:
    """One episode of a reset MiniGrid BabyAI level, told and played as AgentGym's server does."""

    __slots__ = ("env", "image", "goal", "text", "actions", "errors", "reward", "done", "parse_replies")

    def __init__(self, env: Any, obs: dict[str, Any], parse_replies: bool = True) -> None:
        self.env = env
        # What the level's reset returned, as AgentGym reads it: for the levels that start with an
        # object carried, it still shows that object on the floor (MiniGrid takes it up after).
        self.image = obs["image"]
        goal = env.mission
        if "then" in goal:
            goal = goal.replace("then", "and")
        if "after you" in goal:
            goal = goal.replace("after you", "and")
        self.goal = goal
        self.text, self.actions, self.errors = self._look(obs)
        self.reward: float = 0
        self.done = False
        self.parse_replies = parse_replies

    # -- what the agent is told -------------------------------------------------------------------

    def available(self) -> str:
        listed = ", ".join(f'"{action}"' for action in self.actions)
        return "\nAvailable actions: [" + (listed + "]" if listed else "")

    def first_observation(self) -> str:
        return f"Your goal: {self.goal}\n{self.text}{self.available()}"

    def _look(self, obs: dict[str, Any]) -> tuple[str, dict[str, list[int]], dict[str, str]]:
        env = self.env
        size = env.agent_view_size
        pos, ahead, right = np.array(env.agent_pos), env.dir_vec, env.right_vec
        top_left = pos + ahead * (size - 1) - right * (size // 2)
        corner = top_left + size * (right - ahead)
        xs = range(corner[0], top_left[0] + 1) if corner[0] < top_left[0] else range(top_left[0], corner[0])
        ys = range(corner[1], top_left[1] + 1) if corner[1] < top_left[1] else range(top_left[1], corner[1])
        grid, facing = obs["image"], obs["direction"]
        forward, rightward = DIRECTIONS[facing], DIRECTIONS[(facing + 1) % 4]
        things: list[dict[str, Any]] = []
        barriers: list[dict[str, Any]] = []
        for j in range(size):
            for i in range(size):
                x, y = top_left - ahead * j + right * i
                distance = abs(pos[0] - x) + abs(pos[1] - y)
                if x < 0 or y < 0 or distance == 0:
                    continue
                kind, color, state = OBJECTS[grid[i, j, 0]], COLORS[grid[i, j, 1]], STATES[grid[i, j, 2]]
                if kind in SEEN:
                    name = f"{color} {state} door" if kind == "door" else f"{color} {kind}"
                    things.append({"name": name, "pos": (x, y), "dis": distance})
                if kind in ("box", "wall"):
                    offset = (x - pos[0], y - pos[1])
                    if _cross(forward, offset) == 0:
                        barriers.append({"name": kind, "pos": (x, y), "dis": int(np.dot(forward, offset))})
        things.sort(key=lambda thing: thing["dis"])
        barriers.sort(key=lambda barrier: barrier["dis"])

        def where(thing: dict[str, Any]) -> str:
            offset = (thing["pos"][0] - pos[0], thing["pos"][1] - pos[1])
            front, side = int(np.dot(forward, offset)), int(np.dot(rightward, offset))
            if side == 0:
                return f"right in front of you {front} steps away. "
            if side > 0:
                return f"{front} steps in front of you and {side} steps to your right. "
            return f"{front} steps in front of you and {-side} steps to your left. "

        if things:
            text = "In front of you in this room, you can see several objects: "
            seen: dict[str, int] = {}
            for thing in things:
                if "wall" in thing["name"]:
                    continue
                seen[thing["name"]] = seen.get(thing["name"], 0) + 1
                text += f"There is a {thing['name']} {seen[thing['name']]} {where(thing)} "
        else:
            text = "You cannot see any objects within sight."
        text += "The room has walls around you. "
        if barriers:
            text += f"You are facing a {barriers[0]['name']} {barriers[0]['dis']} steps away. "
        carrying = env.carrying
        text += f"You are carrying a {carrying.color} {carrying.type}." if carrying is not None else "You are not carrying anything."
        actions, errors = self._action_space(tuple(int(v) for v in pos), facing, things, barriers, xs, ys)
        return text, actions, errors

    def _action_space(self, pos: tuple[int, int], facing: int, things: list, barriers: list, xs: range, ys: range):
        actions: dict[str, list[int]] = {"turn left": [LEFT], "turn right": [RIGHT]}
        errors: dict[str, str] = {}
        carrying = self.env.carrying

        def path(goal: tuple[int, int], arrive: bool) -> list[int] | None:
            return _find_path(pos, goal, things + barriers, facing, xs, ys, arrive)

        if not barriers or barriers[0]["dis"] > 1:
            actions["move forward"] = [FORWARD]
        else:
            errors["move forward"] = "There is a barrier in front of you, you can't move forward."
        if carrying is None:
            picked: dict[str, int] = {}
            for thing in things:
                name = thing["name"]
                if "wall" in name or "door" in name or "goal" in name:
                    continue
                route = path(thing["pos"], arrive=False)
                if route is not None:
                    picked[name] = picked.get(name, 0) + 1
                    actions[f"pickup {name} {picked[name]}"] = route + [PICKUP]
                else:
                    number = picked.get(name, 0) + 1
                    errors[f"pickup {name} {number}"] = f"You cannot pickup {name} {number}, as there is no path leading to it."
            errors["drop"] = "You cannot drop the object, as you are not carrying anything."
        else:
            in_front = tuple(int(v) for v in np.array(pos) + DIRECTIONS[facing])
            blocked = any(t["pos"] == in_front and any(kind in t["name"] for kind in BLOCKING) for t in things)
            if blocked:
                errors["drop"] = "You cannot drop the object, as there is already an object in front of you."
            else:
                actions["drop"] = [DROP]
        doors: dict[str, int] = {}
        for thing in things:
            name = thing["name"]
            if "door" not in name:
                continue
            doors[name] = doors.get(name, 0) + 1
            label = f"{name} {doors[name]}"
            if "open door" in name:
                route = path(thing["pos"], arrive=True)
                if route is not None:
                    actions[f"go through {label}"] = route
                else:
                    errors[f"go through {label}"] = f"You cannot go through {label}, as there is no path leading to it."
                continue
            if "locked door" in name:
                if carrying is None or carrying.type != "key":
                    errors[f"toggle and go through {label}"] = f"You cannot toggle and go through {label}, as you are not carrying a key."
                    continue
                if carrying.color != name.split(" ")[0]:
                    errors[f"toggle and go through {label}"] = (
                        f"You cannot toggle and go through {label}, as the color of the key you are carrying does not match the color of door."
                    )
                    continue
            route = path(thing["pos"], arrive=False)
            if route is not None:
                actions[f"toggle and go through {label}"] = route + [TOGGLE, FORWARD]
            else:  # AgentGym prints its door counter table here, not the door's number
                errors[f"toggle and go through {label}"] = f"You cannot toggle and go through {name} {doors}, as there is no path leading to it."
            if route == []:
                actions["toggle"] = [TOGGLE]
            if "closed door" in name:
                errors[f"go through {label}"] = f"You cannot go through {label}, as it is closed. You should toggle it first."
        for thing in things:
            if "goal" in thing["name"]:
                route = path(thing["pos"], arrive=True)
                if route is not None:
                    actions["go to goal"] = route
                else:
                    errors["go to goal"] = "You cannot go to the goal, as there is no path leading to it."
        reached: dict[str, int] = {}
        for thing in things:
            name = thing["name"]
            if "wall" in name or "goal" in name:
                continue
            route = path(thing["pos"], arrive=False)
            if route is not None:
                reached[name] = reached.get(name, 0) + 1
                actions[f"go to {name} {reached[name]}"] = route
            else:
                number = reached.get(name, 0) + 1
                errors[f"go to {name} {number}"] = f"You cannot go to {name} {number}, as there is no path leading to it."
        actions[CHECK] = []
        return actions, errors

    # -- acting -----------------------------------------------------------------------------------

    def step(self, text: str) -> StepOutcome:
        action = line_action(text) if self.parse_replies else text
        if action is None:
            return StepOutcome(ONE_ACTION_ONLY)
        action = action.lower().strip()
        if "check" in action:
            message = "You can take the following actions: " + ", ".join(self.actions)
        elif action == "":
            message = "No change in state."
        elif action not in self.actions:
            message = self.errors.get(action, "The action is not recognized. Please check valid actions.")
        elif not self.actions[action]:  # already there: e.g. `go to` the object just ahead
            message = "No change in state."
        else:
            message = self._act(self.actions[action])
        return StepOutcome(
            message + self.available(), reward=float(self.reward), terminated=self.done,
            success=self.done, score=float(self.reward),
        )

    def _act(self, moves: list[int]) -> str:
        obs: Any = None
        reward: float = 0
        terminated = False
        for move in moves:
            obs, reward, terminated, _, _ = self.env.step(move)
            if not (obs["image"] != self.image).any():
                break  # the move changed nothing: the way is blocked; AgentGym stops here (and only here)
            self.image = obs["image"]
        self.done = bool(terminated)
        text, self.actions, self.errors = self._look(obs)
        if self.done:
            text += DONE_SUFFIX
        self.reward = reward
        if self.done and reward <= 0.5:
            self.done = False  # AgentGym's rule: a late success, or a failure, plays on
        if reward == 1 and not self.done:
            self.done = True
            text += DONE_SUFFIX
        self.image = obs["image"]
        self.text = text
        return text


def _find_path(start: tuple[int, int], goal: tuple[int, int], things: list, facing: int, xs: range, ys: range, arrive: bool) -> list[int] | None:
    """AgentGym's breadth-first search over (cell, direction) with forward/left/right moves inside
    the view; `arrive`: end on the goal cell, else end facing it. Other objects block the way,
    except doors and goals. The same search as AgentGym's (same order, and a state reached twice
    before it is expanded keeps its last parent, as there), with the blocking cells looked up in a
    set rather than by a scan of every object per move."""
    blocking = {thing["pos"] for thing in things if any(kind in thing["name"] for kind in BLOCKING)}
    checked = bool(things)  # as in AgentGym: with nothing in view, nothing is checked
    gx, gy = goal
    graph: dict[tuple, tuple] = {}
    queue = deque([(start, facing)])
    visited: set[tuple] = set()
    while queue:
        state = queue.popleft()
        pos, heading = state
        visited.add(state)
        dx, dy = STEPS[heading]
        if (pos[0] == gx and pos[1] == gy) if arrive else (gx - pos[0] == dx and gy - pos[1] == dy):
            moves = []
            while state != (start, facing):
                state, move = graph[state]
                moves.append(move)
            return moves[::-1]
        for move, nxt in ((FORWARD, ((pos[0] + dx, pos[1] + dy), heading)), (LEFT, (pos, (heading - 1) % 4)), (RIGHT, (pos, (heading + 1) % 4))):
            cell = nxt[0]
            if checked and (cell[0] not in xs or cell[1] not in ys or nxt in visited or cell in blocking):
                continue
            queue.append(nxt)
            graph[nxt] = (state, move)
    return None
