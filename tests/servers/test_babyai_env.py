"""BabyAI in-process: levels and splits, the text view, action compilation, lenient parsing,
unchanged state on bad actions, reward, images, determinism across processes, quiet generation."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gymwire.sdk.environment import Task, TaskError
from gymwire.servers.babyai import BabyAIEnv
from gymwire.servers.babyai.env import extract_action
from gymwire.servers.babyai.expert import BabyAIExpert
from gymwire.servers.babyai.levels import LEVELS, SPLITS, TEST_SEED_BASE, TRAIN_SEEDS, level_and_seed
from gymwire.servers.babyai.view import DIR_VECS


def fresh(split: str = "test", index: int = 0, **options) -> BabyAIEnv:
    env = BabyAIEnv()
    env.reset(Task(split=split, index=index, options=options))
    return env


def snapshot(env: BabyAIEnv) -> tuple:
    """Everything a step could change in the MiniGrid episode."""
    grid = env._env
    carrying = (grid.carrying.type, grid.carrying.color) if grid.carrying else None
    return (tuple(grid.agent_pos), grid.agent_dir, carrying, grid.step_count, grid.grid.encode().tobytes())


def available(text: str) -> list[str]:
    return json.loads(text.rsplit("Available actions: ", 1)[1])


# ------------------------------------------------------------------------------ levels and splits


def test_forty_distinct_registered_levels():
    import minigrid  # noqa: F401  (registers the levels)

    assert len(LEVELS) == len(set(LEVELS)) == 40
    missing = [level for level in LEVELS if level not in gymnasium.registry]
    assert missing == []
    assert "BabyAI-GoToObjS6-v1" in LEVELS


def test_index_rule_and_disjoint_splits():
    assert SPLITS == {"train": 40 * TRAIN_SEEDS, "test": 90}
    assert level_and_seed("train", 0) == (LEVELS[0], 0)
    assert level_and_seed("train", 81) == (LEVELS[1], 2)
    assert level_and_seed("test", 41) == (LEVELS[1], TEST_SEED_BASE + 1)
    assert level_and_seed("train", SPLITS["train"] - 1) == (LEVELS[-1], TRAIN_SEEDS - 1)
    test = {level_and_seed("test", i) for i in range(SPLITS["test"])}
    # Train seeds are 0..TRAIN_SEEDS-1; every test seed lies above them.
    assert len(test) == 90 and min(seed for _, seed in test) == TEST_SEED_BASE > TRAIN_SEEDS - 1


def test_task_errors_say_what_is_valid():
    with pytest.raises(TaskError, match="0..89"):
        BabyAIEnv().reset(Task(split="test", index=90))
    with pytest.raises(TaskError, match="splits"):
        BabyAIEnv().reset(Task(split="dev", index=0))
    with pytest.raises(TaskError, match="images"):
        BabyAIEnv().reset(Task(split="test", index=0, options={"images": "yes"}))


def test_seed_picks_a_train_task():
    by_seed = BabyAIEnv().reset(Task(seed=81))
    by_index = BabyAIEnv().reset(Task(split="train", index=81))
    assert by_seed.text == by_index.text and by_seed.data["level"] == LEVELS[1]


# ------------------------------------------------------------------------------ the view


def test_first_observation_describes_mission_objects_ahead_carrying_and_actions():
    env = BabyAIEnv()
    obs = env.reset(Task(split="test", index=0))
    assert obs.data == {"level": LEVELS[0], "seed": TEST_SEED_BASE, "mission": env._env.mission}
    lines = obs.text.splitlines()
    assert lines[0] == f"Your goal: {env._env.mission}"
    assert lines[1].startswith("You see ")
    assert "Straight ahead" in lines[2] or "in front of you" in lines[2] or "floor is clear" in lines[2]
    assert lines[3] == "You are not carrying anything."
    actions = available(obs.text)
    assert actions[:2] == ["turn left", "turn right"] and actions[-1] == "check available actions"
    for thing in env._things:
        assert thing.label in obs.text


def test_objects_are_numbered_per_name_from_near_to_far():
    for index in range(90):
        things = fresh("test", index)._things
        by_name: dict[str, list] = {}
        for thing in things:
            by_name.setdefault(thing.name, []).append(thing)
        for same in by_name.values():
            assert [t.number for t in same] == list(range(1, len(same) + 1))
            distances = [abs(t.ahead) + abs(t.right) for t in same]
            assert distances == sorted(distances)


def test_positions_are_relative_to_the_agent():
    env = fresh("test", 0)
    grid = env._env
    fx, fy = DIR_VECS[grid.agent_dir]
    for thing in env._things:
        expected = (grid.agent_pos[0] + fx * thing.ahead - fy * thing.right, grid.agent_pos[1] + fy * thing.ahead + fx * thing.right)
        assert thing.pos == expected
        assert grid.grid.get(*thing.pos).type == thing.kind


# ------------------------------------------------------------------------------ action compilation


def _tasks_offering(prefix: str, limit: int = 6):
    found = []
    for index in range(400):
        env = fresh("train", index)
        if any(a.startswith(prefix) for a in env._valid):
            found.append(index)
        if len(found) == limit:
            break
    assert found, f"no task offers {prefix!r} at the start"
    return found


def test_go_to_ends_facing_the_object():
    checked = 0
    for index in _tasks_offering("go to "):
        for action in [a for a in fresh("train", index)._valid if a.startswith("go to ")]:
            env = fresh("train", index)
            target = next(t for t in env._things if f"go to {t.label}" == action)
            result = env.step(action)
            assert result.info["valid"]
            assert tuple(env._env.front_pos) == target.pos or result.terminated, action
            checked += 1
    assert checked >= 5


def test_pick_up_carries_the_object():
    picked = 0
    for index in _tasks_offering("pick up ", limit=12):
        env = fresh("train", index)
        action = next(a for a in env._valid if a.startswith("pick up "))
        target = next(t for t in env._things if f"pick up {t.label}" == action)
        result = env.step(action)
        if result.info["primitives"][-1] != "pickup":
            assert result.terminated  # a "go to" mission completed on the way
            continue
        picked += 1
        assert "You picked up" in result.observation.text
        assert (env._env.carrying.type, env._env.carrying.color) == (target.kind, target.color)
        if not result.terminated:
            drop = env.step("drop")
            assert drop.info["primitives"] == ["drop"] and env._env.carrying is None
    assert picked >= 3


def test_toggle_and_go_through_crosses_the_door_and_go_through_comes_back():
    crossings = 0
    for index in _tasks_offering("toggle and go through "):
        env = fresh("train", index)
        action = next(a for a in env._valid if a.startswith("toggle and go through "))
        door = next(t for t in env._things if action.endswith(t.label))
        before = tuple(env._env.agent_pos)
        result = env.step(action)
        if result.terminated:
            continue
        assert env._env.grid.get(*door.pos).is_open
        after = tuple(env._env.agent_pos)
        # The door lies between where the agent stood and where it stands now (or it stands in it).
        crossed = [(b - d) * (a - d) for a, b, d in zip(after, before, door.pos)]
        assert after == door.pos or min(crossed) < 0, (before, door.pos, after)
        if after == door.pos:
            continue  # stopped in the doorway: the way beyond was blocked
        env.step("turn left")
        env.step("turn left")
        behind = next(t for t in env._things if t.pos == door.pos)
        assert behind.state == "open" and f"go through {behind.label}" in env._valid
        env.step(f"Action: go through {behind.name} {behind.number}")
        back = tuple(env._env.agent_pos)
        assert back == door.pos or min((b - d) * (a - d) for a, b, d in zip(after, back, door.pos)) < 0
        crossings += 1
    assert crossings >= 1


def test_move_forward_into_a_wall_is_refused_with_the_reason():
    env = fresh("test", 38)  # BossLevel seed: starts facing a wall
    assert "Right in front of you is a wall" in env.reset(Task(split="test", index=38)).text
    before = snapshot(env)
    result = env.step("Action: move forward")
    assert result.info["valid"] is False and "a wall is in front of you" in result.observation.text
    assert snapshot(env) == before


# ------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "reply, action",
    [
        ("Thought: the ball is left.\nAction: go to red ball 1", "go to red ball 1"),
        ("Thought: x\nAction: turn left\nThought: y\nAction: Turn Right.", "turn right"),
        ("Action:\n  pickup the red ball 2", "pick up red ball 2"),
        ('**Action:** "go through the blue open door 1"', "go through blue door 1"),
        ("toggle and go through yellow locked door 2", "toggle and go through yellow door 2"),
        ("move forward", "move forward"),
        ("I will go forward", "i will go forward"),
        ("forward", "move forward"),
        ("[check available actions]", "check available actions"),
        ("check actions please", "check available actions"),
        ("", ""),
    ],
)
def test_extract_action_is_lenient(reply, action):
    assert extract_action(reply) == action


def test_missing_object_number_is_filled_in_when_unambiguous():
    env = fresh("test", 0)
    names = [t.name for t in env._things]
    unique = next(n for n in names if names.count(n) == 1) if any(names.count(n) == 1 for n in names) else None
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:
        result = env.step(f"go to {twice}")
        assert result.info["valid"] is False and f"say which {twice}" in result.observation.text
    if unique:
        assert env.step(f"Action: go to the {unique}").info["valid"]
    assert unique or twice


def test_invalid_actions_say_why_and_list_valid_actions():
    env = fresh("test", 0)
    cases = {
        "dance": "not an action here",
        "go to purple key 9": "you see no purple key",
        "drop": "not carrying anything",
        "toggle": "no door or box",
        "": "no action found",
    }
    for reply, reason in cases.items():
        before = snapshot(env)
        result = env.step(reply)
        assert result.info == {"valid": False, "primitives": []}
        assert result.reward == 0 and not result.terminated and not result.truncated
        assert reason in result.observation.text and "Nothing changed" in result.observation.text
        assert available(result.observation.text) == list(env._valid)
        assert snapshot(env) == before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
def test_unparseable_text_never_changes_the_episode(reply):
    env = fresh("test", 3)
    if extract_action(reply) in env._valid:
        return  # a real action, however it was written
    before, observation = snapshot(env), env._description
    result = env.step(reply)
    assert result.info["valid"] is False
    assert snapshot(env) == before and env._description == observation


def test_a_bad_turn_does_not_change_what_follows():
    plain, noisy = fresh("test", 4), fresh("test", 4)
    for action in ["turn left", "move forward", "turn right", "move forward"]:
        noisy.step("Action: fly to the moon")
        a, b = plain.step(action), noisy.step(action)
        assert a.observation.text == b.observation.text and a.info == b.info


def test_check_available_actions_changes_nothing():
    env = fresh("test", 1)
    before = snapshot(env)
    result = env.step("Action: check available actions")
    assert result.info == {"valid": True, "primitives": []}
    assert available(result.observation.text) == list(env._valid)
    assert snapshot(env) == before


# ------------------------------------------------------------------------------ reward and metrics


def test_success_reward_is_minigrids_and_episode_reports_success():
    env, expert = fresh("test", 1), BabyAIExpert("test", 1)
    for _ in range(100):
        result = env.step(expert.act())
        expert.observe(result.info)
        if result.terminated:
            break
    grid = env._env
    assert result.success is True and result.terminated
    assert result.reward == pytest.approx(1 - 0.9 * grid.step_count / grid.max_steps)
    assert result.score == result.reward and "The task is completed" in result.observation.text


def test_expert_go_to_shortcuts_save_turns_not_success():
    turns = {True: 0, False: 0}
    for macros in (True, False):
        for index in (4, 16, 30):  # GoToLocal, Pickup, ActionObjDoor
            env, expert = fresh("test", index), BabyAIExpert("test", index, macros=macros)
            for turn in range(1, 300):
                result = env.step(expert.act())
                expert.observe(result.info)
                if result.terminated or result.truncated:
                    break
            assert result.success, (index, macros, result.observation.text)
            turns[macros] += turn
            if not macros:
                assert turn == env._env.step_count  # one primitive per turn
    assert turns[True] < turns[False]


def test_running_out_of_primitive_steps_truncates():
    env = fresh("test", 0)
    env._env.max_steps = env._env.step_count + 2
    env.step("turn left")
    result = env.step("turn left")
    assert result.truncated and not result.terminated
    assert result.success is False and result.score == 0.0 and "Out of time" in result.observation.text


# ------------------------------------------------------------------------------ images


def test_images_only_when_asked():
    assert fresh("test", 0)._observation("x").images is None
    env = BabyAIEnv()
    obs = env.reset(Task(split="test", index=0, options={"images": True, "image_tile_size": 8}))
    (image,) = obs.images
    assert image.data.startswith(b"\x89PNG\r\n\x1a\n") and image.mime == "image/png"
    assert (image.width, image.height) == (env._env.width * 8, env._env.height * 8)
    assert env.step("turn left").observation.images[0].data != image.data
    assert BabyAIEnv.info().images is True


# ------------------------------------------------------------------------------ determinism and quiet


_FIRST_OBSERVATIONS = """
import json, sys
from gymwire.sdk.environment import Task
from gymwire.servers.babyai import BabyAIEnv
tasks = [("test", 0), ("test", 7), ("test", 38), ("train", 12345)]
print(json.dumps([BabyAIEnv().reset(Task(split=s, index=i)).text for s, i in tasks]))
"""


def test_same_task_same_first_observation_across_processes():
    tasks = [("test", 0), ("test", 7), ("test", 38), ("train", 12345)]
    here = [BabyAIEnv().reset(Task(split=s, index=i)).text for s, i in tasks]
    run = subprocess.run([sys.executable, "-c", _FIRST_OBSERVATIONS], capture_output=True, text=True, check=True)
    assert json.loads(run.stdout) == here
    assert len(set(here)) == len(here)


_REJECTING_RESETS = """
import gymnasium, minigrid
from gymwire.sdk.environment import Task
from gymwire.servers.babyai import BabyAIEnv
from gymwire.servers.babyai.levels import level_and_seed
level, seed = level_and_seed("test", 8)
gymnasium.make(level, disable_env_checker=True).unwrapped.reset(seed=seed)
print("-- ours --", flush=True)
BabyAIEnv().reset(Task(split="test", index=8))
"""


def test_rejected_samples_are_not_printed():
    run = subprocess.run([sys.executable, "-c", _REJECTING_RESETS], capture_output=True, text=True, check=True)
    raw, ours = run.stdout.split("-- ours --\n")
    assert "Sampling rejected" in raw  # minigrid itself prints while generating this task...
    assert ours == ""  # ...the environment does not
