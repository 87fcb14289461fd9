"""TextCraft: craft a goal item from Minecraft recipes, one text command per turn (ADaPT / AgentGym).

The first observation lists crafting commands (every recipe needed for the goal plus up to 10
distractors that share its ingredients, shuffled) and the goal. Actions: `get N item` for base
items, `craft N item using N a, N b, ...` and `inventory`. Crafting a multiple of a recipe at once
is allowed (`craft 8 stick using 4 oak planks`). Reward 1, and the episode ends, when the goal
item is in the inventory. A command that cannot be read or carried out is answered with what was
wrong and what is valid, and changes nothing.

Tasks: each goal is a craftable item of crafting depth 1-4; the test split holds 100 goals spread
over the depths, the train split the rest; both are ordered by depth (the env's `info().metadata`
gives the index range of each depth). A seed picks a train task. The session option `depth: N`
plays only goals of crafting depth N: the task index counts among the split's goals of that depth,
wrapping around (a trainer that samples indices of the whole split then trains on depth N only).

Recipe data: the `textcraft` package's ADaPT recipe set by default; another directory of recipe
JSON files is the server operator's configuration: `TextCraftEnv(recipes_dir=...)`, served with
`gymwire serve textcraft:recipes_dir=PATH` (in code: `EnvSpec.of(TextCraftEnv, recipes_dir=PATH)`).
It is not a session option: a remote client must not make the server read paths of its choosing.
The session option `profile: "agentgym"` plays AgentGym's TextCraft instead: its 544 task indices,
text, grammar and messages (gymwire.servers.agentgym.textcraft_profile, docs/agentgym.md).
Each directory's recipe book is built once per process and shared by all sessions.
"""

from __future__ import annotations

import difflib
import os
import random
from collections import Counter
from functools import lru_cache
from typing import Any, Iterator

from gymwire.protocol import EnvInfo, Observation
from gymwire.sdk.environment import Environment, StepOutcome, Task, TaskError

from gymwire.servers.agentgym.textcraft_profile import AgentGymTextCraft, agentgym_episode, shown
from .actions import USAGE, ActionParseError, Craft, Get, ShowInventory, parse_action, quote
from .recipes import CraftingRecipe, Ingredient, RecipeBook, load_book

__all__ = ["TextCraftEnv", "CommandRefused"]

MAX_DISTRACTORS = 10


class CommandRefused(Exception):
    """A well-formed command that cannot be carried out; the message is the observation."""


def _split_sizes(book: RecipeBook) -> dict[str, int]:
    return {name: len(goals) for name, goals in book.splits.items()}


class TextCraftEnv(Environment):
    name = "textcraft"
    version = "1.0.0"
    description = "Craft a Minecraft item from the listed crafting commands (ADaPT TextCraft recipes)."
    instructions = (
        "Craft the goal item. Actions: `get N item` gets a base item (one that has no crafting command); "
        "`craft N item using N ingredient, N ingredient` crafts with exactly the ingredients of one crafting "
        "command (or the same multiple of all of them); `inventory` lists what you hold. A kind such as "
        "`planks` in a command means any item of that kind, e.g. `oak planks`. Answer with "
        "`Thought: ...` then `Action: <one action>`."
    )
    default_max_turns = 30
    seedable = True
    _agentgym: AgentGymTextCraft | None = None  # the episode, when played with `profile: agentgym`
    requires = ("textcraft",)  # its recipe data; not needed with a recipe directory of one's own
    extra = "textcraft"
    known_options = {"depth": "play a goal of this crafting depth (1-4)",
                     "profile": "gymwire (default) or agentgym: AgentGym's server's game, character for character",
                     "hash_seed": "with profile agentgym: the PYTHONHASHSEED AgentGym's server ran with (default 0)",
                     "input": "with profile agentgym: reply (default: a model's reply, read as AgentGym's client reads it) or action (what AgentGym's server receives)"}

    @classmethod
    def check_requirements(cls, recipes_dir: str | os.PathLike[str] | None = None) -> None:
        if recipes_dir is None:
            super().check_requirements()

    @classmethod
    def info(cls, recipes_dir: str | os.PathLike[str] | None = None) -> EnvInfo:
        # The recipe book (read once per process; a bad file fails here, before a server starts)
        # gives the split sizes and the depth range of each split's tasks.
        book = load_book(recipes_dir)
        depth_ranges = {}
        for split, goals in book.splits.items():
            ranges: dict[str, list[int]] = {}
            for index, goal in enumerate(goals):
                ranges.setdefault(str(book.depth[goal]), [index, index])[1] = index
            depth_ranges[split] = ranges
        metadata = {"depth_index_ranges": depth_ranges, "recipes": sum(map(len, book.recipes.values()))}
        return super().info().model_copy(update={"splits": _split_sizes(book), "metadata": metadata})

    def __init__(self, recipes_dir: str | os.PathLike[str] | None = None, agentgym_order: str | os.PathLike[str] | None = None) -> None:
        """`recipes_dir`: a directory of Minecraft recipe JSON files (default: the ADaPT set).
        `agentgym_order`: with profile agentgym, the order an AgentGym installation reads its recipe
        files in (its recipe directory, or a file of file names; default: sorted), see
        gymwire.servers.agentgym.textcraft_profile."""
        self._book = load_book(recipes_dir)
        self._agentgym_order = None if agentgym_order is None else os.fspath(agentgym_order)
        self.splits = _split_sizes(self._book)

    # -- episode --------------------------------------------------------------------------------

    def reset(self, task: Task) -> Observation:
        self.check_options(task.options)
        self._agentgym = agentgym_episode(self._book.source, task, self._agentgym_order)  # None unless `profile: agentgym`
        if self._agentgym is not None:
            return Observation(text=self._agentgym.observation, data={"goal": shown(self._agentgym.goal), "profile": "agentgym"})
        split, index = self._resolve(task)
        if task.options.get("depth") is not None:
            index = self._index_at_depth(split, index, task.options["depth"])
        self.goal = self._book.splits[split][index]
        self.inventory: Counter[str] = Counter()
        return Observation(
            text=_first_observation(self._book, split, index),
            data={"goal": self.goal, "depth": self._book.depth[self.goal], "split": split, "index": index},
        )

    def step(self, action: str) -> StepOutcome:
        if self._agentgym is not None:
            return self._agentgym.step(action)
        try:
            command = parse_action(action)
            if isinstance(command, ShowInventory):
                return self._result(self._inventory_text())
            if isinstance(command, Get):
                return self._result(self._get(command))
            return self._craft(command)
        except (ActionParseError, CommandRefused) as exc:
            return self._result(str(exc))

    # -- helpers --------------------------------------------------------------------------------

    def _resolve(self, task: Task) -> tuple[str, int]:
        sizes = self.splits
        if task.split is None:
            return "train", (task.seed or 0) % sizes["train"]
        if task.split not in sizes:
            raise TaskError(f"unknown split {task.split!r}; textcraft has splits {sorted(sizes)}")
        index = task.index or 0
        if not sizes[task.split]:
            raise TaskError(f"split {task.split!r} has no tasks with these recipes; use {max(sizes, key=sizes.__getitem__)!r}")
        if not 0 <= index < sizes[task.split]:
            raise TaskError(f"index {index} out of range: split {task.split!r} has tasks 0..{sizes[task.split] - 1}")
        return task.split, index

    def _index_at_depth(self, split: str, index: int, depth: object) -> int:
        """The split's index of its goal number `index` (wrapping around) among those of `depth`."""
        goals = self._book.splits[split]
        at_depth = [i for i, goal in enumerate(goals) if self._book.depth[goal] == depth]
        if isinstance(depth, bool) or not at_depth:
            depths = sorted({self._book.depth[goal] for goal in goals})
            raise TaskError(f"option depth must be one of the crafting depths of split {split!r}: {depths}; got {depth!r}")
        return at_depth[index % len(at_depth)]

    def _result(self, text: str, done: bool = False) -> StepOutcome:
        return StepOutcome(text, reward=1.0 if done else 0.0, terminated=done, success=done, score=1.0 if done else 0.0)

    def _inventory_text(self) -> str:
        if not self.inventory:
            return "Inventory: You are not carrying anything."
        return "Inventory: " + " ".join(f"[{item}] ({count})" for item, count in sorted(self.inventory.items()))

    def _lookup(self, name: str) -> str:
        """The item or kind `name` means, forgiving a plural or singular last word."""
        book = self._book
        last = name.rsplit(" ", 1)[-1]
        stem = name[: len(name) - len(last)]
        variants = [name, stem + last + "s", stem + last + "es"]
        if last.endswith("ies"):
            variants.append(stem + last[:-3] + "y")
        if last.endswith("es"):
            variants.append(stem + last[:-2])
        if last.endswith("s"):
            variants.append(stem + last[:-1])
        for variant in variants:
            if variant in book.items or variant in book.kinds:
                return variant
        # Short names only: matching a long string against every name would cost more than it helps.
        near = difflib.get_close_matches(name, [*book.items, *book.kinds], n=3, cutoff=0.75) if len(name) <= 60 else []
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise CommandRefused(f"There is no item called {quote(name)}.{hint} Use the names in the crafting commands. {USAGE}")

    def _get(self, command: Get) -> str:
        item = self._lookup(command.item)
        if item in self._book.kinds:
            raise CommandRefused(f"{item} is a kind of item, not an item; get a specific one, e.g. {self._kind_examples(item)}.")
        if self._book.is_craftable(item):
            raise CommandRefused(
                f"You cannot get {item}: it is crafted, not gathered. Craft it with: {self._recipes_text(item)}."
            )
        self.inventory[item] += command.count
        return f"Got {command.count} {item}."

    def _craft(self, command: Craft) -> StepOutcome:
        item = self._lookup(command.item)
        if item in self._book.kinds:
            raise CommandRefused(f"{item} is a kind of item; craft a specific one, e.g. {self._kind_examples(item)}.")
        if not self._book.is_craftable(item):
            raise CommandRefused(f"{item} cannot be crafted; it is a base item: get it with `get N {item}`.")
        given: dict[str, int] = {}
        for name, count in command.ingredients:
            part = self._lookup(name)
            if part in self._book.kinds:
                raise CommandRefused(
                    f"{part} is a kind of item; name the specific one you use, e.g. {self._kind_examples(part)}."
                )
            given[part] = given.get(part, 0) + count
        recipe, multiple = self._match(item, given)
        made = recipe.count * multiple
        if command.count is not None and command.count != made:
            raise CommandRefused(self._wrong_output_count(recipe, given, command.count, made))
        missing = [f"{need} {part} (you have {self.inventory[part]})" for part, need in given.items() if self.inventory[part] < need]
        if missing:
            raise CommandRefused(f"You do not have enough to craft {item}: you need {', '.join(missing)}. Get or craft them first.")
        for part, need in given.items():
            self.inventory[part] -= need
            if not self.inventory[part]:
                del self.inventory[part]
        self.inventory[item] += made
        if item == self.goal:
            return self._result(f"Crafted {made} {item}. You have the goal item: task complete.", done=True)
        return self._result(f"Crafted {made} {item}.")

    def _match(self, item: str, given: dict[str, int]) -> tuple[CraftingRecipe, int]:
        """The recipe of `item` the given ingredients fill, and how many times over; else why not."""
        for recipe in self._book.recipes[item]:
            for totals in _fillings(recipe.ingredients, given, within_counts=True):
                multiples = {given[part] // total if given[part] % total == 0 else 0 for part, total in totals.items()}
                if len(multiples) == 1 and 0 not in multiples:
                    return recipe, multiples.pop()
        same_items = [r for r in self._book.recipes[item] if next(_fillings(r.ingredients, given), None) is not None]
        if same_items:
            per_craft = "; or ".join(r.command for r in same_items)
            raise CommandRefused(
                f"Wrong quantities for {item}: one craft takes exactly {per_craft}. "
                "Use those counts, or the same multiple of every one of them."
            )
        raise CommandRefused(f"No recipe makes {item} from those ingredients. {item} is crafted with: {self._recipes_text(item)}.")

    def _wrong_output_count(self, recipe: CraftingRecipe, given: dict[str, int], asked: int, made: int) -> str:
        advice = f"Those ingredients make {made} {recipe.output}, not {asked}: write `craft {made} {recipe.output} using ...`"
        if asked % recipe.count == 0:
            times = asked // recipe.count
            totals = next(_fillings(recipe.ingredients, given, within_counts=True))
            parts = ", ".join(f"{total * times} {part}" for part, total in totals.items())
            advice += f", or for {asked} use `craft {asked} {recipe.output} using {parts}`"
        return advice + "."

    def _recipes_text(self, item: str) -> str:
        return "; or ".join(f"`{r.command}`" for r in self._book.recipes[item])

    def _kind_examples(self, kind: str) -> str:
        members = self._book.kinds[kind]
        return ", ".join(members[:5]) + (f" ({len(members)} in all)" if len(members) > 5 else "")


@lru_cache(maxsize=4096)
def _first_observation(book: RecipeBook, split: str, index: int) -> str:
    """The task's crafting commands (needed ones plus distractors, shuffled by the task's own seed) and goal."""
    goal = book.splits[split][index]
    rng = random.Random(f"textcraft:{split}:{index}")
    pool = book.distractor_pool(goal)
    shown = [r.command for r in book.closure(goal)] + [r.command for r in rng.sample(pool, min(MAX_DISTRACTORS, len(pool)))]
    rng.shuffle(shown)
    commands = "\n".join(dict.fromkeys(shown))  # two files may hold the same recipe
    return f"Crafting commands:\n{commands}\n\nGoal: craft {goal}."


def _fillings(slots: tuple[Ingredient, ...], given: dict[str, int], within_counts: bool = False) -> Iterator[dict[str, int]]:
    """Every way to fill each slot with one given item it accepts, using every given item, as
    item -> the slot counts it covers (one item may fill two slots). `within_counts` skips
    fillings that need more of an item than given, even for a single craft."""
    chosen: dict[str, int] = {}

    def extend(index: int) -> Iterator[dict[str, int]]:
        if len(slots) - index < len(given) - len(chosen):
            return  # too few slots left to use every given item
        if index == len(slots):
            yield dict(chosen)
            return
        slot = slots[index]
        for item in given:
            if item not in slot.accepts:
                continue
            total = chosen.get(item, 0) + slot.count
            if within_counts and total > given[item]:
                continue
            before = chosen.get(item)
            chosen[item] = total
            yield from extend(index + 1)
            if before is None:
                del chosen[item]
            else:
                chosen[item] = before

    yield from extend(0)
