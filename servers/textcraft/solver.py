"""A scripted TextCraft player that plans from the recipe book: the reference for "every task is solvable".

`plan(book, goal)` returns the commands that craft `goal` from an empty inventory: it takes the
shallowest recipe of each item (ties broken by name), gets base items in exactly the amounts
needed and crafts each intermediate item in one command, as a multiple of its recipe.
"""

from __future__ import annotations

from collections import Counter

from .recipes import CraftingRecipe, RecipeBook

__all__ = ["plan", "PlanError"]

# A recipe tree of depth <= 4 needs a handful of passes; this bound only stops a bad data set
# from looping forever.
_MAX_PASSES = 50


class PlanError(RuntimeError):
    """The goal cannot be crafted from this recipe book."""


def _best_recipe(book: RecipeBook, item: str) -> CraftingRecipe:
    return min(book.recipes[item], key=lambda r: (book.recipe_depth(r), len(r.ingredients), r.source))


def plan(book: RecipeBook, goal: str) -> list[str]:
    if not book.is_craftable(goal):
        raise PlanError(f"{goal!r} has no recipe in {book.source}")
    inventory: Counter[str] = Counter()
    actions: list[str] = []

    def obtain(item: str, amount: int) -> None:
        short = amount - inventory[item]
        if short <= 0:
            return
        if not book.is_craftable(item):
            actions.append(f"get {short} {item}")
            inventory[item] += short
            return
        recipe = _best_recipe(book, item)
        times = -(-short // recipe.count)
        needs: Counter[str] = Counter()
        for slot in recipe.ingredients:  # two slots may take the same item: add them up
            needs[book.cheapest(slot)[0]] += slot.count * times
        parts = list(needs.items())
        # Getting one ingredient may use up another made earlier (both built from the same
        # thing), so repeat until all are there at once.
        for _ in range(_MAX_PASSES):
            if all(inventory[part] >= need for part, need in parts):
                break
            for part, need in parts:
                obtain(part, need)
        else:
            raise PlanError(f"could not gather the ingredients of {recipe.command!r} for {goal!r}")
        for part, need in parts:
            inventory[part] -= need
        inventory[item] += recipe.count * times
        actions.append(f"craft {recipe.count * times} {item} using " + ", ".join(f"{need} {part}" for part, need in parts))

    obtain(goal, 1)
    return actions
