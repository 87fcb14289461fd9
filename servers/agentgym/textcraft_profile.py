"""TextCraft as AgentGym's server plays it: the `profile: agentgym` session option of TextCraftEnv.

Written from a reading of AgentGym's `agentenv-textcraft` (environment.py, crafting_tree.py, utils.py,
env_wrapper.py) and its client (`agentenv/agentenv/envs/textcraft.py`) at AgentGym's main (3ef9235);
no code of theirs is used. What an agent sees and may write is AgentGym's, character for character:

- the crafting model: Minecraft tags come from recipe groups; an ingredient tag that no craftable
  item carries becomes an item of that name (`oak logs`); a recipe that would close a cycle, and a
  recipe that unpacks a block, are dropped;
- task indexing: `data_idx` (taken modulo 544, as AgentGym does) indexes the craftable items of
  crafting depth >= 1, sorted by depth, each depth in the order the recipe files were read;
- the first observation: every recipe of the goal's recipe tree and up to 10 distractors, drawn
  and shuffled by a generator seeded 42 in the same sequence of draws as AgentGym's;
- the grammar (`get N item`, `craft N item using N a, N b`, `inventory`; exact names, one recipe's
  exact counts) and AgentGym's messages; reward 1 and done when the goal is crafted, nothing else
  ends an episode, and steps after that go on being played;
- the client's reading of a model's reply (option `input: "reply"`, the default): the text after
  `Action:` up to the end of its line, characters other than letters, digits, commas and spaces
  dropped, spaces collapsed; no `Action:` sends an empty action; two `Action:` lines are answered
  by the client's error. With `input: "action"` the text is the action as AgentGym's server receives
  it (what `gymwire agentgym-serve` passes on from AgentGym's client).

Two things in AgentGym's server depend on the machine, and are parameters here:

- the order the recipe files are read in is the order of an unsorted directory listing
  (`os.listdir`), which differs between file systems and directories: it decides the order of goals
  of one depth (index -> goal), which of two cycle-closing recipes is kept, and the order of
  commands. Default: sorted by file name. To reproduce an installation, configure the environment
  with `agentgym_order`: its recipe directory (its listing is read) or a file with one recipe file
  name per line (e.g. saved there with `ls -U recipes/`); `gymwire serve` reads
  $GYMWIRE_AGENTGYM_TEXTCRAFT_ORDER as its default.
- the command order and the distractors drawn go through Python sets of strings, whose order
  follows the server process's string hashes, i.e. its PYTHONHASHSEED (random at every start unless
  set). The session option `hash_seed` (default 0) is the PYTHONHASHSEED the AgentGym server ran
  with; its order is recomputed (pyset_order.py). A server started without a fixed PYTHONHASHSEED
  cannot be reproduced: it does not even reproduce itself after a restart.
"""

from __future__ import annotations

import json
import os
import sys
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gymwire.sdk.environment import StepOutcome, Task, TaskError

from .api import ONE_ACTION_ONLY, line_action
from .pyset_order import set_order, str_hash

__all__ = ["AgentGymTextCraft", "CraftingTree", "agentgym_episode", "recipe_order", "shown", "PROFILES"]

PROFILES = ("gymwire", "agentgym")
INPUTS = ("reply", "action")
PREFIX = "minecraft:"
MAX_DISTRACTORS = 10
DISTRACTOR_USES = 10  # recipes drawn per ingredient occurrence when collecting distractors


def shown(name: str) -> str:
    """`minecraft:oak_planks` -> `oak planks`."""
    return name.replace(PREFIX, "").replace("_", " ")


@dataclass(frozen=True, slots=True)
class Ref:
    """An item (`item_id`) or a tag (`tag`); a recipe's output may carry both (its group)."""

    tag: str | None = None
    item_id: str | None = None

    @property
    def name(self) -> str:
        return self.item_id or self.tag or ""


@dataclass(slots=True)
class Part:
    ref: Ref
    count: int

    def __repr__(self) -> str:  # the form AgentGym's "Could not find a valid recipe for ..." shows
        return f"ItemTagWithCount(item_tag=ItemTag(tag={self.ref.tag!r}, item_id={self.ref.item_id!r}), count={self.count})"


@dataclass(slots=True)
class Recipe:
    inputs: list[Part]
    output: Part

    @property
    def command(self) -> str:
        parts = ", ".join(f"{p.count} {shown(p.ref.name)}" for p in self.inputs)
        return f"craft {self.output.count} {shown(self.output.ref.name)} using {parts}"


@lru_cache(maxsize=8)
def recipe_order(directory: str, source: str | None = None) -> tuple[str, ...]:
    """The order recipe files are read in: `source`'s (a directory whose listing is read, or a file
    of file names), else sorted."""
    files = sorted(os.listdir(directory))
    if source is None:
        return tuple(files)
    if os.path.isdir(source):
        order = os.listdir(source)
    else:
        with open(source, encoding="utf-8") as handle:
            order = [line.strip() for line in handle if line.strip()]
    if sorted(order) != files:
        missing, extra = sorted(set(files) - set(order)), sorted(set(order) - set(files))
        raise ValueError(
            f"agentgym_order={source}: it must name exactly the {len(files)} recipe files of {directory} "
            f"(missing {missing[:3]}, unknown {extra[:3]})"
        )
    return tuple(order)


class CraftingTree:
    """AgentGym's recipe model over one directory of recipe JSON files, read in the given order."""

    def __init__(self, directory: str, order: tuple[str, ...]) -> None:
        self.item_recipes: dict[str, list[Recipe]] = {}
        self.tag_recipes: dict[str, list[Recipe]] = {}
        self.tags: set[str] = set()
        self.items: set[str] = set()
        self.tag_of: dict[str, str] = {}  # item id -> the tag its recipe group gives it
        depends: dict[str, set[str]] = {}  # output -> everything it is made from, to drop cycles
        for file in order:
            with open(os.path.join(directory, file), encoding="utf-8") as handle:
                self._add(json.load(handle), depends)
        self._untag_unfillable()
        self._depth: dict[str, int] = {}
        self.goals = [item for item, _ in sorted(((i, self.depth(i)) for i in self.item_recipes if self.depth(i) >= 1), key=lambda p: p[1])]
        self.uses = self._uses()
        self._hashes: dict[int, dict[str, int]] = {}  # hash seed -> command -> its string hash
        self._first: dict[tuple[int, int], str] = {}  # (goal index, hash seed) -> first observation

    def _ingredient(self, value: Any) -> Ref:
        value = value[0] if isinstance(value, list) else value
        if "item" in value:
            self.items.add(value["item"])
            return Ref(item_id=value["item"])
        if "tag" in value:
            self.tags.add(value["tag"])
            return Ref(tag=value["tag"])
        raise ValueError(f"unknown ingredient {value!r}")

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
        craftable_tags = {self.tag_of[item] for item in self.item_recipes if item in self.tag_of}
        converted = set()
        for recipes in self.item_recipes.values():
            for recipe in recipes:
                for part in recipe.inputs:
                    if part.ref.item_id is None and part.ref.tag not in craftable_tags:
                        converted.add(part.ref.tag)
                        part.ref = Ref(item_id=part.ref.tag)
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

    def is_craftable(self, name: str) -> bool:
        return name in self.item_recipes or name in self.tag_recipes

    def walk(self, name: str, path: frozenset[str] = frozenset()) -> list[Recipe]:
        """AgentGym's walk of a recipe tree: an item's recipes, then each input's walk, depth first,
        repeats kept (they decide how often the distractor generator is drawn from)."""
        if name in path:
            return []
        recipes = self.recipes_of(name)
        found = list(recipes)
        path = path | {name}
        for recipe in recipes:
            for part in recipe.inputs:
                found += self.walk(part.ref.name, path)
        return found

    def _uses(self) -> dict[str, list[Recipe]]:
        """ingredient -> the recipes that take it (a grouped recipe counts twice, as in AgentGym)."""
        table: dict[str, list[Recipe]] = {}
        for recipes in [*self.item_recipes.values(), *self.tag_recipes.values()]:
            for recipe in recipes:
                for part in recipe.inputs:
                    table.setdefault(part.ref.name, []).append(recipe)
        return table

    def first_observation(self, index: int, hash_seed: int) -> str:
        """What AgentGym's reset answers for goal `index` in a server run with PYTHONHASHSEED=hash_seed."""
        key = (index, hash_seed)
        text = self._first.get(key)
        if text is None:
            text = self._first[key] = self._compose(index, hash_seed)
        return text

    def _compose(self, index: int, hash_seed: int) -> str:
        goal = self.goals[index]
        rng = random.Random(42)  # AgentGym seeds its global generator with 42 on every reset
        needed = self.walk(goal)
        drawn: list[Recipe] = []
        for recipe in needed:
            for part in recipe.inputs:
                pool = self.uses.get(part.ref.name)
                if pool is not None:
                    drawn += rng.sample(pool, min(len(pool), DISTRACTOR_USES))
        commands = [r.command for r in needed]
        known = set(commands)
        distractors = [r.command for r in drawn if r.command not in known]
        hashes = self._hashes.setdefault(hash_seed, {})
        for text in (*commands, *distractors):
            if text not in hashes:
                hashes[text] = str_hash(text, hash_seed)
        shown_commands = set_order(commands, hashes)
        pool = set_order(distractors, hashes)
        shown_commands += rng.sample(pool, min(len(pool), MAX_DISTRACTORS))
        rng.shuffle(shown_commands)
        return "Crafting commands:\n{}\n\nGoal: craft {}.".format("\n".join(shown_commands), shown(goal))

    def matching(self, wanted: Ref, given: list[Part]) -> Part | None:
        for part in given:
            if wanted.item_id is not None:
                if part.ref.item_id == wanted.item_id:
                    return part
            elif wanted.tag is not None and (part.ref.tag == wanted.tag or self.tag_of.get(part.ref.item_id or "") == wanted.tag):
                return part
        return None

    def craft(self, attempt: Recipe) -> Part | None:
        """The output of the first recipe of that item whose ingredients `attempt` gives exactly."""
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
def _tree(directory: str, order: tuple[str, ...]) -> CraftingTree:
    return CraftingTree(directory, order)


def agentgym_tree(directory: str, order_source: str | None = None) -> CraftingTree:
    return _tree(directory, recipe_order(directory, order_source))


def _hash_seed(options: dict[str, Any]) -> int:
    seed = options.get("hash_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 0xFFFFFFFF:
        raise TaskError(f"option hash_seed must be a PYTHONHASHSEED value, 0..4294967295; got {seed!r}")
    return seed


def agentgym_episode(directory: str, task: Task, order_source: str | None = None) -> "AgentGymTextCraft | None":
    """The episode of `task` under AgentGym's rules when its option `profile` is "agentgym"; None
    for gymwire's own rules (the default). Any split's index, or a seed, is AgentGym's `data_idx`."""
    options = task.options
    profile = options.get("profile", "gymwire")
    if profile not in PROFILES:
        raise TaskError(f"unknown profile {profile!r}; textcraft has profiles {', '.join(PROFILES)}")
    if profile != "agentgym":
        return None
    source = options.get("input", "reply")
    if source not in INPUTS:
        raise TaskError(f"option input must be one of {', '.join(INPUTS)}; got {source!r}")
    try:
        tree = agentgym_tree(directory, order_source)
    except ValueError as exc:
        raise TaskError(str(exc)) from None
    data_idx = task.index if task.split is not None else task.seed
    index = (data_idx or 0) % len(tree.goals)  # AgentGym wraps any index (544 -> 0)
    return AgentGymTextCraft(tree, index, _hash_seed(options), source == "reply")


class _Unreadable(Exception):
    """A count Python's int() refuses (over 4,300 digits): AgentGym's server would fail on it; here the
    action is one that could not be executed."""


def _count(digits: str) -> int:
    limit = sys.get_int_max_str_digits()
    if limit and len(digits) > limit:
        raise _Unreadable(digits[:12])
    return int(digits)


class _Failed(Exception):
    pass


_GRAMMAR = (("craft", re.compile(r"craft (.*) using (.*)")), ("get", re.compile(r"get ([0-9]+) (.*)")), ("inventory", re.compile(r"inventory")))
_COUNTED = re.compile(r"([0-9]+) (.*)")


class AgentGymTextCraft:
    """One episode with AgentGym's rules (small: the text is shared, only the inventory is its own)."""

    __slots__ = ("tree", "goal", "observation", "inventory", "parse_replies")

    def __init__(self, tree: CraftingTree, index: int, hash_seed: int, parse_replies: bool) -> None:
        self.tree = tree
        self.goal = tree.goals[index]
        self.observation = tree.first_observation(index, hash_seed)
        self.inventory: dict[str, int] = {}
        self.parse_replies = parse_replies

    def step(self, text: str) -> StepOutcome:
        action = line_action(text) if self.parse_replies else text
        if action is None:
            return StepOutcome(ONE_ACTION_ONLY)
        observation, done = None, False
        try:
            for kind, pattern in _GRAMMAR:  # every pattern is tried, as AgentGym's loop does
                match = pattern.match(action)
                if match is None:
                    continue
                if kind == "craft":
                    observation, done = self._craft(match.group(1), match.group(2))
                elif kind == "get":
                    observation, done = self._get(_count(match.group(1)), match.group(2))
                else:
                    observation = "Inventory: " + ("" if self.inventory else "You are not carrying anything.")
                    observation += "".join(f"[{shown(item)}] ({count}) " for item, count in self.inventory.items())
            if observation is None:
                raise _Failed(f"Could not execute {action}")
        except _Failed as failed:
            observation, done = str(failed), False
        except _Unreadable:
            observation, done = f"Could not execute {action}", False
        return StepOutcome(observation, reward=1.0 if done else 0.0, terminated=done, success=done, score=1.0 if done else 0.0)

    def _craft(self, output_text: str, inputs_text: str) -> tuple[str, bool]:
        counted = _COUNTED.match(output_text)
        output = self.tree.ref(counted.group(2) if counted else output_text)
        inputs = []
        for piece in inputs_text.split(","):
            match = _COUNTED.match(piece.strip())
            if match is None:
                raise _Failed(f"Wrong item format: {piece.strip()}")
            inputs.append(Part(self.tree.ref(match.group(2)), _count(match.group(1))))
        attempt = Recipe(inputs, Part(output, _count(counted.group(1)) if counted else 1))
        if any(p.ref.item_id not in self.inventory or self.inventory[p.ref.item_id] < p.count for p in inputs):
            raise _Failed(f"Could not find enough items to craft {output.item_id}")
        made = self.tree.craft(attempt)
        if made is None:
            raise _Failed(f"Could not find a valid recipe for {attempt.output!r}")
        for part in inputs:
            item = part.ref.item_id or ""
            self.inventory[item] -= part.count
            if self.inventory[item] == 0:
                del self.inventory[item]
        item = made.ref.item_id or ""
        self.inventory[item] = self.inventory.get(item, 0) + made.count
        return f"Crafted {made.count} {item}", item == self.goal

    def _get(self, amount: int, text: str) -> tuple[str, bool]:
        ref = self.tree.ref(text)
        if self.tree.is_craftable(ref.name) or ref.item_id is None or ref.item_id in self.tree.tags or ref.item_id not in self.tree.items:
            raise _Failed(f"Could not find {text}")
        self.inventory[ref.item_id] = self.inventory.get(ref.item_id, 0) + amount
        return f"Got {amount} {text}", ref.item_id == self.goal
