"""BabyAI as text: MiniGrid's BabyAI levels played through high-level actions, the AgentGym way.

Each observation says what the agent sees (objects numbered per name, near to far, placed relative
to the agent), what is straight ahead, what it carries, and the actions valid now. Actions such as
"go to red ball 1" compile to MiniGrid primitives along a path through visible free cells.
An action that cannot be understood or performed is answered with what was wrong and what is
valid, and changes nothing: it is part of learning, not a protocol error.

Options: `images: true` adds a PNG of the whole grid (agent's view highlighted) to every
observation; `image_tile_size` sets pixels per cell (default 16); `profile: "agentgym"` plays with
AgentGym's text, action names and task indices (gymwire.servers.agentgym.babyai_profile, docs/agentgym.md).
"""

from __future__ import annotations

import io
import json
import re
import threading
from typing import Any

from gymwire.sdk.environment import Environment, Image, Observation, StepOutcome, Task, TaskError

from gymwire.servers.agentgym.babyai_profile import AgentGymBabyAI, agentgym_episode, agentgym_level, agentgym_reset, profile_of
from .levels import SPLITS, level_and_seed
from .view import CHECK_ACTIONS, FORWARD, PICKUP, DROP, PRIMITIVE_NAMES, TOGGLE, Plan, View

__all__ = ["BabyAIEnv", "extract_action", "make_level"]

_silence_lock = threading.Lock()
_silenced = False


def _silence_rejection_prints() -> None:
    """minigrid prints "Sampling rejected: ..." while generating some levels. Shadow `print` in
    that one module: redirecting sys.stdout instead is process-wide and races between threads."""
    global _silenced
    with _silence_lock:
        if _silenced:
            return
        from minigrid.envs.babyai.core import roomgrid_level

        roomgrid_level.print = lambda *args, **kwargs: None
        _silenced = True


def make_level(level_id: str) -> Any:
    """A fresh, unwrapped MiniGrid env of a BabyAI level (minigrid is imported only here)."""
    import gymnasium
    import minigrid  # noqa: F401  (registers the BabyAI levels with gymnasium)

    _silence_rejection_prints()
    return gymnasium.make(level_id, disable_env_checker=True).unwrapped


# -- parsing the agent's text ---------------------------------------------------------------------

# The last `Action:` label of a line, at its start or after other text ("Thought: ... Action: x" on one line).
_ACTION_LABEL = re.compile(r"^(?:.*\W)?(?:\*\*)?action(?:\*\*)?\s*:\s*(.*)$", re.IGNORECASE)
_SYNONYMS = {
    "left": "turn left",
    "right": "turn right",
    "forward": "move forward",
    "go forward": "move forward",
    "move ahead": "move forward",
    "go ahead": "move forward",
    "step forward": "move forward",
    "drop it": "drop",
    "put down": "drop",
}
_OBJECT_VERBS = ("toggle and go through", "go through", "go to", "pick up")
MAX_ACTION_CHARS = 1000  # the longest action is under 50 characters; normalizing megabytes would take seconds
TOO_LONG = "(too long)"
_OBJECT_REF = re.compile(r"^(toggle and go through|go through|go to|pick up) (\w+ \w+)(?: (\d+))?$")


def extract_action(text: str) -> str:
    """The action in an agent's reply, normalized: ReAct `Action: ...` (the last one) or a bare action.

    Lenient on purpose: case, quotes, brackets, trailing punctuation, articles, "pickup" and door
    states ("go through red open door 1") are forgiven."""
    lines = [line.strip() for line in text.strip().splitlines()]
    candidate = ""
    for i in range(len(lines) - 1, -1, -1):
        match = _ACTION_LABEL.match(lines[i])
        if match:
            candidate = match.group(1).strip() or next((line for line in lines[i + 1 :] if line), "")
            break
    else:
        candidate = next((line for line in reversed(lines) if line), "")
    if len(candidate) > MAX_ACTION_CHARS:
        return TOO_LONG
    action = candidate.lower()
    action = re.sub(r"[\"'`*\[\]()<>]", " ", action)
    action = action.replace("pick-up", "pick up").replace("pickup", "pick up")
    action = re.sub(r"\b(?:the|a|an)\b", " ", action)
    action = re.sub(r"\b(?:open|closed|locked) door\b", "door", action)
    action = re.sub(r"\s+", " ", action).strip(" .,;:!?")
    if action.startswith("check"):
        return CHECK_ACTIONS
    return _SYNONYMS.get(action, action)


# -- the environment -------------------------------------------------------------------------------


class BabyAIEnv(Environment):
    name = "babyai"
    requires = ("minigrid", "gymnasium")
    extra = "babyai"
    version = "1.0.0"
    description = (
        "BabyAI grid-world levels (minigrid) as text: follow a mission such as 'pick up the red ball' "
        "using high-level actions. Reward on success is 1 - 0.9 * steps / max_steps."
    )
    instructions = (
        "Each observation lists what you see, each object with a number (e.g. 'red ball 1' is the nearest "
        "red ball), and the actions available now. Answer with exactly one of them, e.g. "
        "`Thought: the ball is to my left. Action: go to red ball 1`. Actions: turn left, turn right, "
        "move forward, go to <object> <n>, pick up <object> <n>, drop, toggle, go through <door> <n>, "
        "toggle and go through <door> <n>, check available actions."
    )
    splits = dict(SPLITS)
    default_max_turns = 20
    observation_fields = ["text", "data", "images"]
    images = True
    known_options = {"images": "add an RGB image of the view, default false", "image_tile_size": "pixels per grid cell, default 16",
                     "profile": "gymwire (default) or agentgym: AgentGym's server's game, character for character",
                     "input": "with profile agentgym: reply (default: a model's reply, read as AgentGym's client reads it) or action (what AgentGym's server receives)"}
    _agentgym: AgentGymBabyAI | None = None  # the episode, when played with `profile: agentgym`

    def __init__(self) -> None:
        self._env: Any = None
        self._level: str | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def reset(self, task: Task) -> Observation:
        split, index = self.task_index(task, default_split="train")
        self._images = task.options.get("images", False)
        self._tile_size = task.options.get("image_tile_size", 16)
        if not isinstance(self._images, bool):
            raise TaskError(f"option images must be true or false, got {self._images!r}")
        if not isinstance(self._tile_size, int) or not 4 <= self._tile_size <= 64:
            raise TaskError(f"option image_tile_size must be a whole number from 4 to 64, got {self._tile_size!r}")
        level, seed = level_and_seed(split, index)
        if profile_of(task) == "agentgym":
            level = agentgym_level(level)
        if level != self._level:
            self._env = make_level(level)
            self._level = level
        first = agentgym_reset(self._env, seed) if profile_of(task) == "agentgym" else self._env.reset(seed=seed)[0]
        self._obs_image = first["image"]
        self._data = {"level": level, "seed": seed, "mission": self._env.mission}
        self._agentgym = agentgym_episode(self._env, task, first)  # None unless `profile: agentgym`
        if self._agentgym is not None:
            self._data["profile"] = "agentgym"
            return self._observation(self._agentgym.first_observation())
        self._look()
        text = f"Your goal: {self._env.mission}\n{self._description}\n{self._available()}"
        return self._observation(text)

    def close(self) -> None:
        self._env = None
        self._level = None

    # -- acting -----------------------------------------------------------------------------------

    def step(self, action: str) -> StepOutcome:
        if self._agentgym is not None:
            result = self._agentgym.step(action)
            result.observation = self._observation(str(result.observation))
            return result
        command = extract_action(action)
        plan = self._valid.get(self._resolve(command))
        if plan is None:
            reason = self._why_invalid(command)
            shown = (command or action.strip())[:80]  # echoing a huge action back helps no one
            text = f"Invalid action \"{shown}\": {reason}. Nothing changed.\n{self._description}\n{self._available()}"
            return StepOutcome(self._observation(text), info={"valid": False, "primitives": []})
        if command == CHECK_ACTIONS:
            text = f"{self._description}\n{self._available()}"
            return StepOutcome(self._observation(text), info={"valid": True, "primitives": []})

        reward, terminated, truncated, done, events = self._run(plan)
        self._look()
        info = {"valid": True, "primitives": [PRIMITIVE_NAMES[p] for p in done], "steps": int(self._env.step_count)}
        lines = [f"You did: {self._resolve(command)}." + "".join(f" {e}" for e in events)]
        if terminated:
            success = reward > 0
            lines.append(
                f"The task is completed! Reward {reward:.3f}." if success else "The episode ended: the task failed."
            )
            return StepOutcome(self._observation("\n".join(lines)), reward=reward, terminated=True, info=info, success=success, score=reward)
        if truncated:
            lines.append(f"Out of time: the level allows {self._env.max_steps} primitive steps. The task failed.")
            return StepOutcome(self._observation("\n".join(lines)), truncated=True, info=info, success=False, score=0.0)
        lines += [self._description, self._available()]
        return StepOutcome(self._observation("\n".join(lines)), info=info)

    def _run(self, plan: Plan) -> tuple[float, bool, bool, list[int], list[str]]:
        """Run a plan's primitives, stopping at the episode's end or where the way turns out blocked."""
        env = self._env
        reward, terminated, truncated = 0.0, False, False
        done: list[int] = []
        events: list[str] = []
        for primitive in plan.primitives:
            front = env.grid.get(*env.front_pos)
            if primitive == FORWARD and front is not None and not front.can_overlap():
                events.append(f"You stopped: a {front.color} {front.type} blocks the way.")
                break
            carried_before = env.carrying
            obs, r, terminated, truncated, _ = env.step(primitive)
            self._obs_image = obs["image"]
            reward += float(r)
            done.append(primitive)
            events += self._effect(primitive, front, carried_before)
            if terminated or truncated:
                break
        return reward, terminated, truncated, done, events

    def _effect(self, primitive: int, front: Any, carried_before: Any) -> list[str]:
        env = self._env
        if primitive == PICKUP and env.carrying is not None and carried_before is None:
            return [f"You picked up the {env.carrying.color} {env.carrying.type}."]
        if primitive == DROP and carried_before is not None and env.carrying is None:
            return [f"You dropped the {carried_before.color} {carried_before.type}."]
        if primitive == TOGGLE and front is not None:
            if front.type == "door":
                return [f"The {front.color} door is now {'open' if front.is_open else 'closed'}."]
            if front.type == "box":
                inside = env.grid.get(*env.front_pos)
                found = f"inside was a {inside.color} {inside.type}" if inside is not None else "it was empty"
                return [f"You opened the {front.color} box: {found}."]
        return []

    # -- what the agent is told -------------------------------------------------------------------

    def _look(self) -> None:
        # Keep what the session needs of the view (its text, objects and actions), not the view: its
        # cell map would cost each open session more memory than AgentGym's.
        view = View.of(self._env, self._obs_image)
        self._valid, self._why_not = view.actions()
        self._description = view.describe()
        self._things = view.things

    def _available(self) -> str:
        return "Available actions: " + json.dumps(list(self._valid))

    def _resolve(self, command: str) -> str:
        """Fill in a missing object number when only one such object is in view."""
        match = _OBJECT_REF.match(command)
        if match and match.group(3) is None:
            same = [t for t in self._things if t.name == match.group(2)]
            if len(same) == 1:
                return f"{match.group(1)} {same[0].label}"
        return command

    def _why_invalid(self, command: str) -> str:
        if not command:
            return "no action found; answer with one of the available actions"
        if command == TOO_LONG:
            return f"an action is at most {MAX_ACTION_CHARS} characters long"
        resolved = self._resolve(command)
        if resolved in self._why_not:
            return self._why_not[resolved]
        match = _OBJECT_REF.match(command)
        if match:
            verb, name, number = match.groups()
            same = [t.label for t in self._things if t.name == name]
            if not same:
                return f"you see no {name}"
            if number is None:
                return f"say which {name}: you see {', '.join(same)}"
            if f"{name} {number}" not in same:
                return f"there is no {name} {number} in view; you see {', '.join(same)}"
            return f"you cannot {verb} the {name} {number}"
        if any(command.startswith(verb) for verb in _OBJECT_VERBS):
            return "name the object as it is listed, with its color, kind and number (e.g. red ball 1)"
        return "this is not an action here; answer with one of the available actions"

    def _observation(self, text: str) -> Observation:
        images = [self._image()] if self._images else None
        return Observation(text=text, data=dict(self._data), images=images)

    def _image(self) -> Image:
        from PIL import Image as PILImage

        frame = self._env.get_frame(highlight=True, tile_size=self._tile_size)
        buffer = io.BytesIO()
        PILImage.fromarray(frame).save(buffer, format="PNG")
        return Image(mime="image/png", width=int(frame.shape[1]), height=int(frame.shape[0]), data=buffer.getvalue())

