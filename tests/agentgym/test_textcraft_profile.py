"""TextCraft's `profile: agentgym`: AgentGym's task list, observation text, grammar and messages
(read from WooooDyy/AgentGym agentenv-textcraft/agentenv_textcraft/environment.py, crafting_tree.py,
utils.py and the client agentenv/agentenv/envs/textcraft.py). Equality with AgentGym's own server,
episode by episode, is tests/agentgym/test_agentgym_fidelity.py's."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from gymwire.sdk.client import GymClient
from gymwire.sdk.environment import Task, TaskError
from gymwire.sdk.server import GymServer
from gymwire.servers.agentgym.textcraft_profile import CraftingTree, agentgym_tree, shown
from gymwire.servers.textcraft import TextCraftEnv
from gymwire.servers.textcraft.recipes import load_book

AGENTGYM = {"profile": "agentgym"}


@pytest.fixture(scope="module")
def tree() -> CraftingTree:
    return agentgym_tree(load_book().source)


def reset(index: int) -> TextCraftEnv:
    env = TextCraftEnv()
    env.reset(Task(split="train", index=index, options=AGENTGYM))
    return env


def test_data_idx_indexes_agentgyms_544_goals_by_depth_and_wraps_as_agentgym(tree):
    goals = tree.goals
    assert len(goals) == 544  # the count measured on AgentGym's own server (agentgym-facts.md)
    depths = [tree.depth(goal) for goal in goals]
    assert depths == sorted(depths) and depths[0] == 1 and depths[-1] == 4
    env = TextCraftEnv()
    observation = env.reset(Task(split="test", index=543, options=AGENTGYM))
    assert observation.text.endswith(f"Goal: craft {shown(goals[543])}.")
    assert env.reset(Task(seed=544 + 7, options=AGENTGYM)).text == env.reset(Task(split="x", index=7, options=AGENTGYM)).text
    assert env.reset(Task(split="train", index=544, options=AGENTGYM)).text == env.reset(Task(split="train", index=0, options=AGENTGYM)).text
    with pytest.raises(TaskError, match="unknown profile"):
        env.reset(Task(split="train", index=0, options={"profile": "adapt"}))
    with pytest.raises(TaskError, match="hash_seed"):
        env.reset(Task(split="train", index=0, options={**AGENTGYM, "hash_seed": -1}))


def test_first_observation_follows_the_hash_seed_and_the_listing_order(tree, tmp_path):
    env = reset(300)
    text = env._agentgym.observation
    assert text.startswith("Crafting commands:\n") and "\n\nGoal: craft " in text
    shown_commands = text.split("\n\n")[0].splitlines()[1:]
    needed = {recipe.command for recipe in tree.walk(env._agentgym.goal)}
    assert needed <= set(shown_commands) and len(shown_commands) <= len(needed) + 10
    other_seed = TextCraftEnv().reset(Task(split="train", index=300, options={**AGENTGYM, "hash_seed": 7})).text
    assert other_seed != text and sorted(other_seed.split("\n")[1:len(needed) + 1]) != sorted(shown_commands[: len(needed)])
    # The same in another process (whatever its own hash seed): the order is computed, not taken from Python's sets.
    script = (
        "from gymwire.servers.textcraft import TextCraftEnv\n"
        "from gymwire.sdk.environment import Task\n"
        "print(repr([TextCraftEnv().reset(Task(split='train', index=i, options={'profile': 'agentgym'})).text for i in (0, 300, 543)]))"
    )
    outputs = {
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={"PYTHONHASHSEED": seed}, check=True).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    # Another listing order of the recipe files: other goals at the same index (and, where two recipes
    # would close a cycle, the other one kept: gold ingot <-> gold nugget).
    files = sorted(os.listdir(load_book().source))
    order = tmp_path / "order.txt"
    order.write_text("\n".join(reversed(files)))
    reversed_tree = agentgym_tree(load_book().source, str(order))
    assert reversed_tree.goals != tree.goals and len(set(reversed_tree.goals) & set(tree.goals)) > 500
    order.write_text("\n".join(files[1:]))
    with pytest.raises(Exception):
        agentgym_tree(load_book().source, str(order) + "x")


GET_LOGS = ["Action: get 2 oak logs"]


@pytest.mark.parametrize(
    "before, reply, observation",
    [
        ([], "Thought: wood.\n\nAction: get 2 oak logs", "Got 2 oak logs"),
        (GET_LOGS, "Action:\ninventory", "Inventory: [oak logs] (2) "),
        (GET_LOGS, "Action: look", "Could not execute look"),  # `look` as inventory is an unmerged pull request
        ([], "Thought: no action line", "Could not execute "),  # the client sends an empty action
        (GET_LOGS, "Action: craft 1 stick using 0 sticks", "Could not find enough items to craft minecraft:stick"),
        ([], "Action: get 0 oak logs", "Got 0 oak logs"),
        ([], "Action: inventory", "Inventory: You are not carrying anything."),
        (GET_LOGS, "Action: craft 4 oak planks using 1 oak logs", "Crafted 4 minecraft:oak_planks"),
        (GET_LOGS, "Action: craft 8 oak planks using 2 oak logs", "Could not find a valid recipe for "
         "ItemTagWithCount(item_tag=ItemTag(tag=None, item_id='minecraft:oak_planks'), count=8)"),
        ([], "Action: craft 4 oak planks using 1 oak logs", "Could not find enough items to craft minecraft:oak_planks"),
        (GET_LOGS, "Action: Inventory", "Could not execute Inventory"),
        (GET_LOGS, "Action: check inventory", "Could not execute check inventory"),
        ([], "Action: get 1 planks", "Could not find planks"),
        ([], "Action: get 1 oak planks", "Could not find oak planks"),
        ([], "Action: craft 4 oak planks using oak logs", "Wrong item format: oak logs"),
        ([], "Action: get 1 oak logs.", "Got 1 oak logs"),  # the client drops punctuation
        ([], "Action: get 1 oak logs\nAction: inventory", "Error: Only one 'Action' is allowed per response. Please adjust your response."),
    ],
)
def test_grammar_and_messages(before, reply, observation):
    env = reset(0)
    for action in before:
        env.step(action)
    result = env.step(reply)
    assert (result.observation, result.reward, result.terminated) == (observation, 0.0, False)


def test_a_wrong_recipe_names_the_attempt_as_agentgym_does():
    env = reset(0)
    env.step("Action: get 3 oak logs")
    result = env.step("Action: craft 4 oak planks using 3 oak logs")
    assert result.observation == (
        "Could not find a valid recipe for "
        "ItemTagWithCount(item_tag=ItemTag(tag=None, item_id='minecraft:oak_planks'), count=4)"
    )


def agentgym_plan(tree: CraftingTree, goal: str) -> list[str]:
    """Commands that craft `goal` under AgentGym's rules: one recipe's exact counts per craft."""
    have: dict[str, int] = {}
    commands: list[str] = []

    def cheapest(name: str):
        return min(tree.recipes_of(name), key=lambda r: max(tree.depth(p.ref.name) + 1 for p in r.inputs))

    def resolve(name: str) -> str:
        """An item for a tag: the first craftable one carrying it."""
        return next(item for item in tree.item_recipes if tree.tag_of.get(item) == name) if name in tree.tags else name

    def obtain(name: str, amount: int) -> None:
        while have.get(name, 0) < amount:
            if not tree.is_craftable(name):
                commands.append(f"get {amount - have.get(name, 0)} {shown(name)}")
                have[name] = amount
                return
            recipe = cheapest(name)
            used = [(resolve(part.ref.name), part.count) for part in recipe.inputs]
            # Crafting one input may use up another: obtain them until all are held at once.
            while any(have.get(item, 0) < count for item, count in used):
                for item, count in used:
                    obtain(item, count)
            for item, count in used:
                have[item] -= count
            commands.append(f"craft {recipe.output.count} {shown(name)} using " + ", ".join(f"{c} {shown(i)}" for i, c in used))
            have[name] = have.get(name, 0) + recipe.output.count

    obtain(goal, 1)
    return commands


def test_every_agentgym_task_is_solvable_with_its_rules(tree):
    failures = []
    for index, goal in enumerate(tree.goals):
        env = reset(index)
        result = None
        for command in agentgym_plan(tree, goal):
            result = env.step(f"Thought: next.\n\nAction: {command}")
            if result.terminated:
                break
        if result is None or not (result.terminated and result.reward == 1.0):
            failures.append((index, goal, result.observation if result else None))
    assert not failures, failures[:5]


async def test_profile_is_a_session_option_over_the_server():
    async with GymServer([TextCraftEnv], port=0) as server, GymClient(server.url) as client:
        async with client.session("textcraft", split="train", index=0, options=AGENTGYM, max_turns=20) as session:
            assert session.observation.data == {"goal": "acacia planks", "profile": "agentgym"}
            result = await session.step("Action: get 1 acacia logs")
            assert result.observation.text == "Got 1 acacia logs"
            result = await session.step("Action: craft 4 acacia planks using 1 acacia logs")
            assert result.observation.text == "Crafted 4 minecraft:acacia_planks" and result.terminated
            assert result.metrics.success is True and math.isclose(result.metrics.score, 1.0)
        async with client.session("textcraft", split="test", index=0) as session:  # the default stays gymwire's own
            assert "profile" not in session.observation.data
