"""TextCraft in-process: recipe book, task splits, rules, lenient parsing, unchanged state on bad actions."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gymwire.sdk.env_spec import EnvSpec
from gymwire.sdk.environment import Task, TaskError
from gymwire.servers.textcraft import TextCraftEnv
from gymwire.servers.textcraft.actions import ActionParseError, Craft, Get, ShowInventory, parse_action
from gymwire.servers.textcraft.recipes import RecipeDataError, load_book
from gymwire.servers.textcraft.solver import plan

BOOK = load_book()


def fresh(split: str = "test", index: int = 0, recipes_dir: Path | None = None) -> TextCraftEnv:
    env = TextCraftEnv(recipes_dir)
    env.reset(Task(split=split, index=index))
    return env


def env_with_goal(goal: str) -> TextCraftEnv:
    for split, goals in BOOK.splits.items():
        if goal in goals:
            return fresh(split, goals.index(goal))
    raise AssertionError(f"{goal} is no task")


def state(env: TextCraftEnv) -> dict:
    return copy.deepcopy({k: v for k, v in vars(env).items() if k != "_book"})


def write_recipes(directory: Path, recipes: dict[str, dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, recipe in recipes.items():
        (directory / f"{name}.json").write_text(json.dumps(recipe))
    return directory


def shapeless(result: str, *ingredients: str, count: int = 1, group: str | None = None) -> dict:
    recipe = {
        "type": "minecraft:crafting_shapeless",
        "ingredients": [{"tag": i[4:]} if i.startswith("tag:") else {"item": i} for i in ingredients],
        "result": {"item": result, "count": count},
    }
    if group:
        recipe["group"] = group
    return recipe


# ------------------------------------------------------------------------------ recipe book


def test_depths_are_the_least_fixpoint_of_the_recipe_graph():
    assert BOOK.recipes, "the packaged ADaPT recipe set should load"
    for item in BOOK.items:
        if BOOK.is_craftable(item):
            assert BOOK.depth[item] == min(BOOK.recipe_depth(r) for r in BOOK.recipes[item]) >= 1
        else:
            assert BOOK.depth[item] == 0


def test_splits_are_disjoint_depth_1_to_4_with_a_test_split_of_100_spread_over_depths():
    train, test = BOOK.splits["train"], BOOK.splits["test"]
    assert len(test) == 100 and TextCraftEnv.info().splits == {"train": len(train), "test": 100}
    assert not set(train) & set(test)
    tasks = {item for item in BOOK.recipes if 1 <= BOOK.depth[item] <= 4}
    assert set(train) | set(test) == tasks
    per_depth = BOOK.split_depths("test")
    assert set(per_depth) == {1, 2, 3, 4}
    # Depth 4 is small (11 goals): half of it is tested, the rest trains; depths 1-3 share the other places.
    depth4 = sum(1 for item in tasks if BOOK.depth[item] == 4)
    assert per_depth[4] == depth4 // 2 and BOOK.split_depths("train")[4] == depth4 - depth4 // 2
    assert max(per_depth[d] for d in (1, 2, 3)) - min(per_depth[d] for d in (1, 2, 3)) <= 1
    # Ordered by depth, and the metadata says where each depth starts and ends.
    assert [BOOK.depth[g] for g in test] == sorted(BOOK.depth[g] for g in test)
    ranges = TextCraftEnv.info().metadata["depth_index_ranges"]["test"]
    assert ranges["4"] == [100 - per_depth[4], 99]


def test_iron_ingot_and_nugget_cycle_is_grounded_and_blocks_stay_craftable():
    assert BOOK.is_base("iron ingot") and BOOK.is_base("iron nugget")
    assert BOOK.is_craftable("iron block") and BOOK.depth["iron block"] == 1
    assert BOOK.is_craftable("bucket")


def test_deep_shared_recipe_graph_is_linear_not_a_tree_walk(tmp_path):
    # Item k has two recipes, each needing items k-1 and k-2: a tree walk visits ~1.6^k nodes
    # (10^16 at k=80); the book must count 2 recipes per item.
    levels = 80
    recipes = {}
    for k in range(2, levels):
        recipes[f"item{k}_a"] = shapeless(f"item{k}", f"item{k - 1}", f"item{k - 2}")
        recipes[f"item{k}_b"] = shapeless(f"item{k}", f"item{k - 2}", f"item{k - 1}", f"item{k - 1}")
    book = load_book(write_recipes(tmp_path / "deep", recipes))
    top = f"item{levels - 1}"
    assert book.depth[top] == levels - 2
    assert len(book.closure(top)) == 2 * (levels - 2)


def test_custom_recipe_directory_by_constructor_and_spec(tmp_path):
    directory = write_recipes(
        tmp_path / "toy",
        {
            "plank": shapeless("toy:plank", "tag:toy:logs", count=4, group="planks"),
            "stick": shapeless("toy:stick", "tag:toy:planks", "tag:toy:planks", count=4),
            "torch": shapeless("toy:torch", "toy:stick", "toy:coal", count=4),
            "ingot": shapeless("toy:ingot", *["toy:nugget"] * 9),
            "nugget": shapeless("toy:nugget", "toy:ingot", count=9),
            "block": shapeless("toy:ingot_block", *["toy:ingot"] * 9),
            "unpack": shapeless("toy:ingot", "toy:ingot_block", count=9),
            "smelt": {"type": "minecraft:smelting", "ingredient": {"item": "toy:ore"}, "result": "toy:ingot"},
        },
    )
    book = load_book(directory)
    assert book.is_base("ingot") and book.is_base("nugget") and book.depth["ingot block"] == 1
    assert book.depth["torch"] == 3 and book.kinds == {"planks": ("plank",)}

    toy_goals = {"plank", "stick", "torch", "ingot block"}
    assert set(book.splits["train"]) | set(book.splits["test"]) == toy_goals
    assert fresh("train", 0, recipes_dir=directory).goal in toy_goals

    toy = EnvSpec.of(TextCraftEnv, recipes_dir=str(directory), name="toycraft")
    assert toy.info().name == "toycraft"
    assert sum(toy.info().splits.values()) == 4
    assert sum(toy.make().splits.values()) == 4
    assert TextCraftEnv.info().splits["test"] == TextCraftEnv().splits["test"] == 100


@st.composite
def recipe_sets(draw) -> dict[str, dict]:
    """Small random recipe sets: a DAG over items i0..iN (each made from lower ones), with kinds
    (groups), alternatives, and sometimes a recipe back down the DAG that closes a cycle."""
    size = draw(st.integers(3, 9))
    names = [f"test:i{k}" for k in range(size)]
    recipes: dict[str, dict] = {}
    for k in range(1, size):
        if k < size - 1 and draw(st.booleans()):
            continue  # i_k stays a base item
        parts = draw(st.lists(st.sampled_from(names[:k]), min_size=1, max_size=3, unique=True))
        ingredients = [{"item": part} for part in parts for _ in range(draw(st.integers(1, 2)))]
        if draw(st.booleans()):  # the first ingredient may be filled by either of two items
            ingredients[0] = [ingredients[0], {"item": draw(st.sampled_from(names[:k]))}]
        recipe = {"type": "minecraft:crafting_shapeless", "ingredients": ingredients,
                  "result": {"item": names[k], "count": draw(st.integers(1, 4))}}
        if draw(st.booleans()):
            recipe["group"] = "gadget"
        recipes[f"r{k}"] = recipe
    if draw(st.booleans()):
        low, high = sorted(draw(st.lists(st.integers(0, size - 1), min_size=2, max_size=2, unique=True)))
        recipes["back"] = shapeless(names[low], names[high], count=draw(st.integers(1, 4)))
    if draw(st.booleans()):
        recipes["uses_kind"] = shapeless("test:kind_user", "tag:test:gadget", "test:i0")
    return recipes


@settings(max_examples=60, deadline=None)
@given(recipe_sets())
def test_planner_and_rules_agree_on_random_recipe_sets(recipes):
    with tempfile.TemporaryDirectory() as directory:
        book = load_book(write_recipes(Path(directory), recipes))
        assert all(0 <= book.depth[item] < len(book.items) for item in book.items)  # every item is reachable
        for split, goals in book.splits.items():
            for index in range(len(goals)):
                env = TextCraftEnv(directory)
                env.reset(Task(split=split, index=index))
                results = [env.step(action) for action in plan(book, env.goal)]
                assert results[-1].terminated and results[-1].success, [r.observation for r in results]
                assert not any(r.terminated for r in results[:-1])
                assert all(r.observation.startswith(("Got ", "Crafted ")) for r in results)


def test_one_item_may_fill_two_slots_of_a_recipe(tmp_path):
    # Found by the property test above: a slot of alternatives [a | b] next to a slot of a.
    directory = write_recipes(tmp_path / "overlap", {
        "lamp": {
            "type": "minecraft:crafting_shapeless",
            "ingredients": [[{"item": "t:a"}, {"item": "t:b"}], {"item": "t:a"}, {"item": "t:wick"}],
            "result": {"item": "t:lamp"},
        },
    })
    env = TextCraftEnv(directory)
    with pytest.raises(TaskError, match="'test' has no tasks with these recipes; use 'train'"):
        env.reset(Task(split="test", index=0))
    env.reset(Task(split="train", index=0))
    env.step("get 2 a")
    env.step("get 1 wick")
    assert "Wrong quantities" in env.step("craft 1 lamp using 1 a, 1 wick").observation
    assert env.step("craft 1 lamp using 2 a, 1 wick").success


def test_newer_minecraft_recipe_format_is_read(tmp_path):
    directory = write_recipes(
        tmp_path / "new",
        {
            "flint_tool": {
                "type": "crafting_shapeless",
                "ingredients": ["#minecraft:planks", "minecraft:flint", "minecraft:flint"],
                "result": {"id": "minecraft:flint_tool", "count": 2},
            },
            "plank_pair": {
                "type": "minecraft:crafting_shaped",
                "pattern": ["##", "  "],
                "key": {"#": "minecraft:oak_planks", "x": "minecraft:unused"},
                "result": {"id": "minecraft:plank_pair"},
            },
        },
    )
    book = load_book(directory)
    assert [r.command for rs in book.recipes.values() for r in rs] == [
        "craft 2 flint tool using 1 planks, 2 flint",
        "craft 1 plank pair using 2 oak planks",
    ]


def test_bad_recipe_data_names_the_file_and_bad_tasks_are_task_errors(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.json").write_text('{"type": "minecraft:crafting_shapeless", "result": {"item": "x"}}')
    with pytest.raises(RecipeDataError, match="bad.json.*ingredients"):
        load_book(broken)
    with pytest.raises(RecipeDataError, match="does not exist"):
        TextCraftEnv(tmp_path / "missing")
    with pytest.raises(TaskError, match="0..99"):
        fresh("test", 100)
    with pytest.raises(TaskError, match="unknown split 'dev'"):
        TextCraftEnv().reset(Task(split="dev", index=0))
    # A client must not point the server at paths of its choosing.
    with pytest.raises(TaskError, match="operator.s configuration"):
        TextCraftEnv().reset(Task(split="test", index=0, options={"recipes_dir": str(broken)}))


# ------------------------------------------------------------------------------ episodes


def test_first_observation_lists_needed_recipes_and_the_goal():
    env = fresh("test", 0)
    obs = env.reset(Task(split="test", index=0))
    head, goal_line = obs.text.split("\n\n")
    assert goal_line == f"Goal: craft {env.goal}."
    lines = head.splitlines()[1:]
    assert {r.command for r in BOOK.closure(env.goal)} <= set(lines)
    assert len(lines) <= len(BOOK.closure(env.goal)) + 10
    assert obs.data["goal"] == env.goal and obs.data["depth"] == BOOK.depth[env.goal]


@pytest.mark.parametrize("split", ["test", "train"])
def test_planner_solves_every_task_in_process(split):
    failures = []
    for index in range(len(BOOK.splits[split])):
        env = fresh(split, index)
        result = None
        for action in plan(BOOK, env.goal):
            result = env.step(action)
            if result.terminated:
                break
        if not (result and result.terminated and result.reward == 1.0 and result.success):
            failures.append((index, env.goal, result.observation if result else None))
    assert failures == []


def test_crafting_a_multiple_of_a_recipe_and_reaching_the_goal():
    env = env_with_goal("crafting table")
    assert env.step("get 2 oak logs").observation == "Got 2 oak logs."
    assert env.step("craft 8 oak planks using 2 oak logs").observation == "Crafted 8 oak planks."
    assert env.inventory == {"oak planks": 8}
    result = env.step("Thought: planks are enough.\nAction: craft 1 crafting table using 4 oak planks")
    assert (result.reward, result.terminated, result.success, result.score) == (1.0, True, True, 1.0)
    assert env.inventory == {"oak planks": 4, "crafting table": 1}


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("Action: Get 2 Minecraft:Oak_Logs.", "Got 2 oak logs."),
        ("  get   2   oak log ", "Got 2 oak log."),
        ("`get 2x oak logs`", "Got 2 oak logs."),
        ("Thought: I need wood.\nAction: [get 2 oak logs]\n", "Got 2 oak logs."),
        ("Action: get 1 oak logs\nAction: get 2 oak logs", "Got 2 oak logs."),
        ("get oak logs", "Got 1 oak logs."),
        ("Check inventory", "Inventory: You are not carrying anything."),
    ],
)
def test_lenient_parsing(action, expected):
    env = env_with_goal("crafting table")
    assert env.step(action).observation == expected


def test_plural_names_and_the_item_a_memberless_tag_is_named_after_both_work():
    env = env_with_goal("crafting table")
    env.step("get 1 oak log")
    assert env.step("craft 4 Oak Plank using 1 oak_log").observation == "Crafted 4 oak planks."


@pytest.mark.parametrize(
    ("actions", "bad", "says"),
    [
        ([], "jump around", ["not an action I know", "Valid actions"]),
        ([], "Thought: I should craft.", ["no `Action:`"]),
        ([], "Action:   ", ["no action"]),
        ([], "get 0 oak logs", ["counts go from 1"]),
        ([], "get 1 unobtainium", ["no item called `unobtainium`"]),
        ([], "get 1 oak plonks", ["Did you mean oak planks"]),
        ([], "get 1 " + "x" * 5000, ["no item called `xxx", "...`"]),
        ([], "get 1 crafting table", ["cannot get crafting table", "craft 1 crafting table using 4 planks"]),
        ([], "get 4 planks", ["kind of item", "oak planks"]),
        ([], "craft 1 oak logs using 1 stick", ["base item", "get N oak logs"]),
        ([], "craft 1 crafting table using 4 oak planks", ["need 4 oak planks (you have 0)"]),
        (["get 1 oak logs", "craft 4 oak planks using 1 oak logs"], "craft 1 crafting table using 3 oak planks",
         ["Wrong quantities", "craft 1 crafting table using 4 planks"]),
        (["get 1 oak logs", "craft 4 oak planks using 1 oak logs"], "craft 1 crafting table using 4 planks",
         ["kind of item", "specific one"]),
        (["get 1 oak logs", "craft 4 oak planks using 1 oak logs"], "craft 1 crafting table using 4 oak planks, 1 oak logs",
         ["No recipe makes crafting table"]),
        (["get 2 oak logs"], "craft 4 oak planks using 2 oak logs", ["make 8 oak planks, not 4", "craft 4 oak planks using 1 oak logs"]),
        ([], "craft 1 crafting table", ["does not say what to craft with"]),
    ],
)
def test_impossible_or_unreadable_actions_explain_and_change_nothing(actions, bad, says):
    env = env_with_goal("crafting table")
    for action in actions:
        env.step(action)
    before = state(env)
    result = env.step(bad)
    assert state(env) == before
    assert (result.reward, result.terminated, result.success) == (0.0, False, False)
    for phrase in says:
        assert phrase in result.observation


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_any_text_that_does_not_act_leaves_the_environment_unchanged(text):
    env = env_with_goal("crafting table")
    env.step("get 1 oak logs")
    before = state(env)
    result = env.step(text)
    if result.observation.startswith(("Got ", "Crafted ")):
        return  # it was a valid command after all (hypothesis can write one)
    assert state(env) == before
    assert result.reward == 0.0 and not result.terminated


def test_parse_action_forms():
    assert parse_action("inventory") == ShowInventory()
    assert parse_action("craft 4 stick from 2 oak planks") == Craft("stick", 4, (("oak planks", 2),))
    assert parse_action("craft stick using 1 a and 2 b, 3 a") == Craft("stick", None, (("a", 4), ("b", 2)))
    assert parse_action("GET 3 X minecraft:string") == Get("string", 3)
    with pytest.raises(ActionParseError):
        parse_action("get")


def test_seed_picks_a_train_task_deterministically():
    env = TextCraftEnv()
    first = env.reset(Task(seed=1234)).text
    assert env.reset(Task(seed=1234)).text == first
    assert env.goal == BOOK.splits["train"][1234 % len(BOOK.splits["train"])]


_FIRST_OBSERVATIONS = """
import json, sys
from gymwire.sdk.environment import Task
from gymwire.servers.textcraft import TextCraftEnv
env = TextCraftEnv()
print(json.dumps([env.reset(Task(split=s, index=i)).text for s, i in json.loads(sys.argv[1])]))
"""


def test_same_task_gives_the_same_first_observation_across_processes():
    tasks = [["test", 0], ["test", 57], ["test", 99], ["train", 3], ["train", 400]]
    here = [TextCraftEnv().reset(Task(split=s, index=i)).text for s, i in tasks]
    for hash_seed in ("1", "987"):
        env = os.environ | {"PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", _FIRST_OBSERVATIONS, json.dumps(tasks)],
            capture_output=True, text=True, env=env, check=True, timeout=120,
        )
        assert json.loads(out.stdout) == here


def test_option_depth_plays_only_goals_of_that_depth_wrapping_around():
    env = TextCraftEnv()
    first, last = TextCraftEnv.info().metadata["depth_index_ranges"]["train"]["1"]
    count = last - first + 1
    goals = [env.reset(Task(split="train", index=i, options={"depth": 1})).data for i in (0, count - 1, count, 447)]
    assert all(g["depth"] == 1 for g in goals)
    assert goals[0]["goal"] == goals[2]["goal"] and goals[0]["goal"] != goals[1]["goal"]
    deep = env.reset(Task(split="test", index=0, options={"depth": 3})).data
    assert deep["depth"] == 3 and deep["index"] == TextCraftEnv.info().metadata["depth_index_ranges"]["test"]["3"][0]
    for bad in (9, "1", True):
        with pytest.raises(TaskError, match="option depth must be one of the crafting depths"):
            env.reset(Task(split="test", index=0, options={"depth": bad}))
