"""TextCraft as AgentGym serves it: the `profile: agentgym` session option of TextCraftEnv.

Written from a reading of AgentGym's `agentenv-textcraft` (environment.py, crafting_tree.py,
utils.py) and its client (`agentenv/agentenv/envs/textcraft.py`); no code of theirs is used. It keeps
what an agent sees and may write there, word for word:

- the crafting model: Minecraft tags come from recipe groups; an ingredient tag no recipe group
  fills becomes an item of that name (`oak logs`); a recipe that would close a cycle is dropped;
  recipes that unpack a block are dropped;
- task indexing: `data_idx` indexes every craftable item of crafting depth >= 1, sorted by depth;
- the action grammar (exact names, exactly one recipe's counts, `get N item`, `inventory`), the
  client's clean-up of the agent's reply, and the messages ("Crafted 4 minecraft:oak_planks",
  "Could not find stick");
- episode ends: reward 1 and done when the goal item is crafted; nothing else ends an episode.

Where AgentGym's behaviour is a defect it is replaced by the deterministic or correct one (see
docs/agentgym.md for the full list): recipe files are read in sorted order, not the file
system's listing order, so index -> goal is the same on every machine; the distractors and the
command order come from a seeded generator over ordered collections, not from set order (which
follows PYTHONHASHSEED); collecting a goal's recipes does not grow the recipe table as AgentGym's
walk does, so one episode cannot change the next.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gymwire.sdk.environment import StepOutcome, Task, TaskError

__all__ = ["AgentGymTextCraft", "agentgym_episode", "agentgym_tree", "data_idx", "PROFILES"]

PROFILES = ("gymwire", "agentgym")

PREFIX = "minecraft:"
MAX_DISTRACTORS = 10
DISTRACTOR_USES = 10  # recipes drawn per ingredient when collecting distractors
ONE_ACTION_ONLY = "Error: Only one 'Action' is allowed per response. Please adjust your response."


def shown(name: str) -> str:
    """`minecraft:oak_planks` -> `oak planks`."""
    return name.replace(PREFIX, "").replace("_", " ")


@dataclass(frozen=True)
class Ref:
    """An item (`item_id`) or a tag (`tag`); an output may carry both (its group)."""

    tag: str | None = None
    item_id: str | None = None

    @property
    def name(self) -> str:
        return self.item_id or self.tag or ""


@dataclass
class Part:
    ref: Ref
    count: int

    def __repr__(self) -> str:  # AgentGym shows this form in "Could not find a valid recipe for ..."
        return f"ItemTagWithCount(item_tag=ItemTag(tag={self.ref.tag!r}, item_id={self.ref.item_id!r}), count={self.count})"


@dataclass
class Recipe:
    inputs: list[Part]
    output: Part

    @property
    def command(self) -> str:
        parts = ", ".join(f"{p.count} {shown(p.ref.name)}" for p in self.inputs)
        return f"craft {self.output.count} {shown(self.output.ref.name)} using {parts}"


class CraftingTree:
    """AgentGym's recipe model over one directory of recipe JSON files."""

    def __init__(self, directory: str) -> None:
        self.item_recipes: dict[str, list[Recipe]] = {}
        self.tag_recipes: dict[str, list[Recipe]] = {}
        self.tags: set[str] = set()
        self.items: set[str] = set()
        self.tag_of: dict[str, str] = {}  # item id -> the tag its recipe group gives it
        depends: dict[str, set[str]] = {}  # output -> everything it is made from, to drop cycles
        for file in sorted(os.listdir(directory)):  # sorted: AgentGym follows the listing order
            if not file.endswith(".json"):
                continue
            with open(os.path.join(directory, file), encoding="utf-8") as handle:
                self._add(json.load(handle), depends)
        self._untag_unfillable()
        self._depth: dict[str, int] = {}

    def _ingredient(self, value: Any) -> Ref:
        value = value[0] if isinstance(value, list) else value
        if "item" in value:
            self.items.add(value["item"])
            return Ref(item_id=value["item"])
        self.tags.add(value["tag"])
        return Ref(tag=value["tag"])

    def _add(self, data: dict[str, Any], depends: dict[str, set[str]]) -> None:
        inputs: list[Part] = []
        if data["type"] == "minecraft:crafting_shaped":
            for symbol, value in data["key"].items():
                inputs.append(Part(self._ingredient(value), sum(row.count(symbol) for row in data["pattern"])))
        elif data["type"] == "minecraft:crafting_shapeless":
            position: dict[str, int] = {}
            for value in data["ingredients"]:
                ref = self._ingredient(value)
                if ref.name in position:
                    inputs[position[ref.name]].count += 1
                else:
                    position[ref.name] = len(inputs)
                    inputs.append(Part(ref, 1))
        else:
            return
        result = data["result"]
        output_id, count = (result, 1) if isinstance(result, str) else (result["item"], result.get("count") or 1)
        self.items.add(output_id)
        if len(inputs) == 1 and inputs[0].ref.name.endswith("_block"):
            return  # unpacking a block would undo its recipe
        tag = PREFIX + data["group"] if "group" in data else None
        if tag is not None and tag != output_id:
            self.tags.add(tag)
            self.tag_of[output_id] = tag
        recipe = Recipe(inputs, Part(Ref(tag=tag, item_id=output_id), count))
        made_from = depends.setdefault(output_id, set())
        if any(output_id in depends.get(part.ref.name, ()) for part in inputs):
            return  # its inputs are made from its output: a cycle
        self.item_recipes.setdefault(output_id, []).append(recipe)
        for part in inputs:
            made_from.add(part.ref.name)
            made_from.update(depends.get(part.ref.name, ()))
        if tag is not None:
            self.tag_recipes.setdefault(tag, []).append(recipe)

    def _untag_unfillable(self) -> None:
        """An ingredient tag that no craftable item carries becomes an item of that name."""
        converted = set()
        for recipes in self.item_recipes.values():
            for recipe in recipes:
                for part in recipe.inputs:
                    tag = part.ref.tag
                    if part.ref.item_id is None and not any(
                        self.tag_of.get(item) == tag for item in self.item_recipes
                    ):
                        part.ref = Ref(item_id=tag)
                        converted.add(tag)
        self.items |= converted
        self.tags -= converted

    def recipes_of(self, name: str) -> list[Recipe]:
        return self.item_recipes.get(name) or self.tag_recipes.get(name) or []

    def depth(self, name: str) -> int:
        """Crafting depth: 0 for a base item, else the cheapest recipe's deepest input plus one."""
        if name not in self._depth:
            recipes = self.recipes_of(name)
            self._depth[name] = min((max(self.depth(p.ref.name) + 1 for p in r.inputs) for r in recipes), default=0)
        return self._depth[name]

    def goals(self) -> list[str]:
        """AgentGym's task list: craftable items of depth >= 1, by depth (stable)."""
        return sorted((item for item in self.item_recipes if self.depth(item) >= 1), key=self.depth)

    def is_craftable(self, name: str) -> bool:
        return name in self.item_recipes or name in self.tag_recipes

    def closure(self, goal: str) -> list[Recipe]:
        """Every recipe of the goal and, recursively, of its inputs, each once, in walk order."""
        found: dict[int, Recipe] = {}
        stack, seen = [goal], set()
        while stack:
            name = stack.pop(0)
            if name in seen:
                continue
            seen.add(name)
            for recipe in self.recipes_of(name):
                found.setdefault(id(recipe), recipe)
                stack.extend(part.ref.name for part in recipe.inputs)
        return list(found.values())

    def uses(self) -> dict[str, list[Recipe]]:
        """ingredient -> the recipes that take it (a grouped recipe counts twice, as in AgentGym)."""
        table: dict[str, list[Recipe]] = {}
        for recipes in [*self.item_recipes.values(), *self.tag_recipes.values()]:
            for recipe in recipes:
                for part in recipe.inputs:
                    table.setdefault(part.ref.name, []).append(recipe)
        return table

    def matching(self, wanted: Ref, given: list[Part]) -> Part | None:
        for part in given:
            if wanted.item_id is not None:
                if part.ref.item_id == wanted.item_id:
                    return part
            elif wanted.tag is not None and (part.ref.tag == wanted.tag or self.tag_of.get(part.ref.item_id or "") == wanted.tag):
                return part
        return None

    def craft(self, attempt: Recipe) -> Part | None:
        """The output of the recipe of that item whose ingredients `attempt` gives exactly, if any."""
        for recipe in self.item_recipes.get(attempt.output.ref.item_id or "", []):
            given = list(attempt.inputs)
            for needed in recipe.inputs:
                part = self.matching(needed.ref, given)
                if part is None or part.count != needed.count:
                    break
                given.remove(part)
            else:
                if not given:
                    return recipe.output
        return None

    def ref(self, text: str) -> Ref:
        name = PREFIX + text.replace(" ", "_")
        return Ref(tag=name) if name in self.tags else Ref(item_id=name)


@lru_cache(maxsize=8)
def agentgym_tree(directory: str) -> CraftingTree:
    return CraftingTree(directory)


def data_idx(tree: CraftingTree, split: str | None, index: int | None, seed: int | None) -> int:
    """AgentGym's task index: the index of any split name, or a seed (taken modulo the goals, as AgentGym does)."""
    count = len(tree.goals())
    if split is None:
        return (seed or 0) % count
    if not 0 <= (index or 0) < count:
        raise TaskError(f"profile agentgym: data_idx {index} out of range 0..{count - 1}")
    return index or 0


def agentgym_episode(directory: str, task: Task) -> "AgentGymTextCraft | None":
    """The episode of `task` under AgentGym's rules when its option `profile` is "agentgym"; None
    for gymwire's own rules (the default)."""
    profile = task.options.get("profile", "gymwire")
    if profile not in PROFILES:
        raise TaskError(f"unknown profile {profile!r}; textcraft has profiles {', '.join(PROFILES)}")
    if profile != "agentgym":
        return None
    tree = agentgym_tree(directory)
    return AgentGymTextCraft(tree, data_idx(tree, task.split, task.index, task.seed))


class _Failed(Exception):
    pass


_ACTION_LINE = re.compile(r"Action:\s*(.*?)(?=\n|$)", re.DOTALL)
_GRAMMAR = [("craft", re.compile(r"craft (.*) using (.*)")), ("get", re.compile(r"get ([0-9]+) (.*)")), ("inventory", re.compile(r"inventory"))]
_COUNTED = re.compile(r"([0-9]+) (.*)")


class AgentGymTextCraft:
    """One episode with AgentGym's rules."""

    def __init__(self, tree: CraftingTree, index: int) -> None:
        self.tree = tree
        self.goal = tree.goals()[index]
        self.inventory: dict[str, int] = {}
        rng = random.Random(42)  # AgentGym seeds with 42 on every reset
        needed = tree.closure(self.goal)
        commands = list(dict.fromkeys(r.command for r in needed))
        uses = tree.uses()
        drawn: list[str] = []
        for recipe in needed:
            for part in recipe.inputs:
                pool = uses.get(part.ref.name, [])
                drawn += [r.command for r in rng.sample(pool, min(len(pool), DISTRACTOR_USES))]
        distractors = [c for c in dict.fromkeys(drawn) if c not in commands]
        commands += rng.sample(distractors, min(len(distractors), MAX_DISTRACTORS))
        rng.shuffle(commands)
        self.observation = "Crafting commands:\n{}\n\nGoal: craft {}.".format("\n".join(commands), shown(self.goal))

    @staticmethod
    def clean(reply: str) -> str | None:
        """What AgentGym's client sends for a reply; None when it has two `Action:` lines. A reply
        without `Action:` is sent whole (AgentGym's client would send an empty action)."""
        found = _ACTION_LINE.findall(reply)
        if len(found) > 1:
            return None
        action = found[-1] if found else reply
        action = " ".join(re.sub(r"[^A-Za-z0-9, ]+", "", action).split())
        return "inventory" if action.lower() == "look" else action

    def step(self, reply: str) -> StepOutcome:
        action = self.clean(reply)
        if action is None:
            return StepOutcome(ONE_ACTION_ONLY)
        text, done = None, False
        try:
            for kind, pattern in _GRAMMAR:
                match = pattern.match(action)
                if match is None:
                    continue
                if kind == "craft":
                    text, done = self._craft(match.group(1), match.group(2))
                elif kind == "get":
                    text, done = self._get(int(match.group(1)), match.group(2))
                else:
                    text = "Inventory: " + ("" if self.inventory else "You are not carrying anything.")
                    text += "".join(f"[{shown(item)}] ({count}) " for item, count in self.inventory.items())
            if text is None:
                raise _Failed(f"Could not execute {action}")
        except _Failed as failed:
            text, done = str(failed), False
        return StepOutcome(text, reward=1.0 if done else 0.0, terminated=done, success=done, score=1.0 if done else 0.0)

    def _craft(self, output_text: str, inputs_text: str) -> tuple[str, bool]:
        counted = _COUNTED.match(output_text)
        output = self.tree.ref(counted.group(2) if counted else output_text)
        inputs = []
        for piece in inputs_text.split(","):
            match = _COUNTED.match(piece.strip())
            if match is None:
                raise _Failed(f"Wrong item format: {piece.strip()}")
            inputs.append(Part(self.tree.ref(match.group(2)), int(match.group(1))))
        attempt = Recipe(inputs, Part(output, int(counted.group(1)) if counted else 1))
        if any(self.inventory.get(p.ref.item_id or "", 0) < p.count or p.ref.item_id is None for p in inputs):
            raise _Failed(f"Could not find enough items to craft {output.item_id}")
        made = self.tree.craft(attempt)
        if made is None:
            raise _Failed(f"Could not find a valid recipe for {attempt.output!r}")
        for part in inputs:
            self.inventory[part.ref.item_id] -= part.count  # type: ignore[index]
            if self.inventory[part.ref.item_id] == 0:  # type: ignore[index]
                del self.inventory[part.ref.item_id]  # type: ignore[arg-type]
        item = made.ref.item_id or ""
        self.inventory[item] = self.inventory.get(item, 0) + made.count
        return f"Crafted {made.count} {item}", item == self.goal

    def _get(self, amount: int, text: str) -> tuple[str, bool]:
        ref = self.tree.ref(text)
        if self.tree.is_craftable(ref.name) or ref.item_id is None or ref.item_id in self.tree.tags or ref.item_id not in self.tree.items:
            raise _Failed(f"Could not find {text}")
        self.inventory[ref.item_id] = self.inventory.get(ref.item_id, 0) + amount
        return f"Got {amount} {text}", ref.item_id == self.goal
