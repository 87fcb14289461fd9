"""BabyAI as AgentGym serves it: the `profile: agentgym` session option of BabyAIEnv.

Written from a reading of AgentGym's `agentenv-babyai` (environment.py, server.py) and its client
(`agentenv/agentenv/envs/babyai.py`); no code of theirs is used. Kept word for word: the
observation text (objects in view numbered per name near to far, "N steps in front of you and M
steps to your left", the wall ahead, what is carried), the action names and the path planner
behind them (`go to red ball 1`, `pickup red ball 1`, `go through grey open door 1`, `toggle and go
through ...`, `toggle`, `drop`, `check available actions`), the error messages, the
`Available actions: [...]` list, "Your goal: ..." and " The task is completed.".

Corrected where AgentGym's behaviour is a defect (docs/agentgym.md lists every difference):
the mission is shown as the level states it (AgentGym rewrites "then" and "after you" as "and",
which loses the order); the episode ends when MiniGrid ends it, whatever the reward (AgentGym keeps
`done` false after a success worth <= 0.5 and after a failure); a multi-move action stops at the
move that ends the episode; the level's step limit ends the episode as truncated (AgentGym never
ends there); the "no path" message of a door names its number (AgentGym prints its counter table).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gymwire.sdk.environment import StepOutcome, Task, TaskError

__all__ = ["AgentGymBabyAI", "agentgym_episode", "PROFILES"]

PROFILES = ("gymwire", "agentgym")

# MiniGrid's encoding (minigrid.core.constants), spelled out so the text does not depend on its version.
OBJECTS = {0: "unseen", 1: "empty", 2: "wall", 3: "floor", 4: "door", 5: "key", 6: "ball", 7: "box", 8: "goal", 9: "lava", 10: "agent"}
COLORS = {0: "red", 1: "green", 2: "blue", 3: "purple", 4: "yellow", 5: "grey"}
STATES = {0: "open", 1: "closed", 2: "locked"}
DIRECTIONS = [np.array((1, 0)), np.array((0, 1)), np.array((-1, 0)), np.array((0, -1))]
LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE = 0, 1, 2, 3, 4, 5
SEEN = ("door", "key", "ball", "box", "goal", "lava", "wall")
BLOCKING = ("wall", "box", "lava", "ball", "key")  # what a planned path may not cross
CHECK = "check available actions"
DONE_SUFFIX = "\n The task is completed."


def agentgym_episode(env: Any, task: Task) -> "AgentGymBabyAI | None":
    """AgentGym's rules for the level `env` was just reset to, when the task's option `profile` is
    "agentgym"; None for gymwire's own rules (the default)."""
    profile = task.options.get("profile", "gymwire")
    if profile not in PROFILES:
        raise TaskError(f"unknown profile {profile!r}; babyai has profiles {', '.join(PROFILES)}")
    return AgentGymBabyAI(env) if profile == "agentgym" else None


def _cross(a: Any, b: Any) -> int:
    return int(a[0] * b[1] - a[1] * b[0])


class AgentGymBabyAI:
    """One episode of a reset MiniGrid BabyAI level, told and played as AgentGym does."""

    def __init__(self, env: Any) -> None:
        self.env = env
        obs = env.gen_obs()
        self.image = obs["image"]
        self.mission = env.mission
        self.text, self.actions, self.errors = self._look(obs)

    # -- what the agent is told -------------------------------------------------------------------

    def available(self) -> str:
        return "\nAvailable actions: [" + ", ".join(f'"{action}"' for action in self.actions) + "]"

    def first_observation(self) -> str:
        return f"Your goal: {self.mission}\n{self.text}{self.available()}"

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
            else:
                errors[f"toggle and go through {label}"] = f"You cannot toggle and go through {label}, as there is no path leading to it."
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

    @staticmethod
    def clean(reply: str) -> str:
        """What AgentGym's client sends for a reply (the text after the first `Action:`), as its
        server reads it (lower case, stripped)."""
        parts = reply.split("Action:")
        return (parts[1] if len(parts) > 1 else parts[0]).strip().lower()

    def step(self, reply: str) -> StepOutcome:
        action = self.clean(reply)
        if "check" in action:
            message = "You can take the following actions: " + ", ".join(self.actions)
            return StepOutcome(message + self.available())
        if action not in self.actions:
            if action == "":
                message = "No change in state."
            else:
                message = self.errors.get(action, "The action is not recognized. Please check valid actions.")
            return StepOutcome(message + self.available())
        if not self.actions[action]:  # already there: e.g. `go to` the object just ahead
            return StepOutcome("No change in state." + self.available())
        reward, terminated, truncated, obs = 0.0, False, False, None
        for primitive in self.actions[action]:
            obs, reward, terminated, truncated, _ = self.env.step(primitive)
            if terminated or truncated:
                break
            if not (obs["image"] != self.image).any():
                break  # the move changed nothing: the way is blocked, stop here as AgentGym does
            self.image = obs["image"]
        assert obs is not None
        self.image = obs["image"]
        self.text, self.actions, self.errors = self._look(obs)
        success = bool(terminated and reward > 0)
        text = self.text + (DONE_SUFFIX if success else "")
        return StepOutcome(
            text + self.available(),
            reward=float(reward),
            terminated=bool(terminated),
            truncated=bool(truncated and not terminated),
            success=success,
            score=float(reward),
        )


def _find_path(start: tuple[int, int], goal: tuple[int, int], things: list, facing: int, xs: range, ys: range, arrive: bool) -> list[int] | None:
    """AgentGym's breadth-first search over (cell, direction) with forward/left/right moves inside
    the view; `arrive`: end on the goal cell, else end facing it. Other objects block the way,
    except doors and goals."""
    graph: dict[tuple, tuple] = {}
    queue = [(start, facing)]
    visited: set[tuple] = set()
    while queue:
        pos, heading = queue.pop(0)
        visited.add((pos, heading))
        step = DIRECTIONS[heading]
        if (pos == goal) if arrive else (goal[0] - pos[0] == step[0] and goal[1] - pos[1] == step[1]):
            moves = []
            while (pos, heading) != (start, facing):
                (pos, heading), move = graph[(pos, heading)]
                moves.append(move)
            return moves[::-1]
        for move in (FORWARD, LEFT, RIGHT):
            if move == FORWARD:
                nxt = ((pos[0] + int(step[0]), pos[1] + int(step[1])), heading)
            else:
                nxt = (pos, (heading - 1) % 4 if move == LEFT else (heading + 1) % 4)
            blocked = False
            for thing in things:  # as in AgentGym: with nothing in view, nothing is checked
                if nxt[0][0] not in xs or nxt[0][1] not in ys or nxt in visited:
                    blocked = True
                    break
                if thing["pos"] == nxt[0] and any(kind in thing["name"] for kind in BLOCKING):
                    blocked = True
                    break
            if not blocked:
                queue.append(nxt)
                graph[nxt] = ((pos, heading), move)
    return None
