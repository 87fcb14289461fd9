"""ScienceWorld environment, in-process on the real simulator: task list and splits as AgentGym
indexes them, lenient action parsing, unusable and ambiguous actions, rewards, flat memory."""

from __future__ import annotations

import functools

import pytest
from scienceworld.constants import ID2TASK

from gymwire.sdk.environment import Task, TaskError
from gymwire.servers.sciworld import SciWorldEnv, tasks
from gymwire.servers.sciworld.actions import ActionParseError, parse_action

# One Java process for this file's sessions.
Env = functools.partial(SciWorldEnv, jvms=1, sessions_per_jvm=8)


@pytest.fixture(scope="module", autouse=True)
def java_pool():
    yield Env().pool
    Env().pool.shutdown()


async def new_env(split: str, index: int) -> tuple[SciWorldEnv, str]:
    env = Env()
    observation = await env.reset(Task(split=split, index=index))
    return env, observation.text


# -- tasks -----------------------------------------------------------------------------------------


async def test_task_table_is_the_simulators():
    assert [task_id for task_id, *_ in tasks.TASKS] == list(ID2TASK)
    assert [name for _, name, *_ in tasks.TASKS] == list(ID2TASK.values())
    simulator = await Env().pool.acquire()
    try:
        for _, name, *counts in tasks.TASKS:
            assert await simulator.variation_counts(name) == tuple(counts), name
    finally:
        Env().pool.release(simulator)


def test_agentgym_list_and_splits():
    pairs = tasks.agentgym_pairs()
    assert len(pairs) == SciWorldEnv.splits["agentgym"] == 4639
    assert {p.task_id for p in pairs}.isdisjoint(tasks.EXCLUDED_BY_AGENTGYM)
    assert [p.agentgym_index for p in pairs] == list(range(len(pairs)))
    # AgentGym's order: tasks in simulator order, variations ascending.
    assert (pairs[0].task_id, pairs[0].variation, pairs[30].task_id, pairs[30].variation) == ("1-1", 0, "1-2", 0)
    assert SciWorldEnv.splits == {"train": 2312, "dev": 1156, "test": 200, "agentgym": 4639}
    seen = set()
    ranges = {task_id: (train, dev) for task_id, _, train, dev, _ in tasks.TASKS}
    for split in ("train", "dev", "test"):
        for index in range(SciWorldEnv.splits[split]):
            task = tasks.task_at(split, index)
            train, dev = ranges[task.task_id]
            expected = "train" if task.variation < train else "dev" if task.variation < train + dev else "test"
            assert expected == split and (task.task_id, task.variation) not in seen
            seen.add((task.task_id, task.variation))
            assert tasks.locate(task.task_id, task.variation) == {split: index, "agentgym": task.agentgym_index}
    # A fixed test split: these values are what the docs and reported results refer to.
    test = [tasks.task_at("test", i) for i in (0, 199)]
    assert [(t.task_id, t.variation, t.agentgym_index) for t in test] == [("1-1", 21, 21), ("8-2", 9, 4638)]
    assert tasks.locate("5-1", 0) == {}


# -- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, command",
    [
        ("open door to kitchen", "open door to kitchen"),
        ("Thought: it is closed.\nAction: Open door to kitchen.", "open door to kitchen"),
        ("Action: `focus on  water`", "focus on water"),
        ("Action: wait\nAction: look around\nmore text", "look around"),
        ("  pick up thermometer  \nbecause I need it", "pick up thermometer"),
        ("Action: 1", "1"),
        ("Action: focus on book (moby dick).", "focus on book (moby dick)"),
        ("`[open door to kitchen]`", "open door to kitchen"),
    ],
)
def test_parse_action(text, command):
    assert parse_action(text) == command


@pytest.mark.parametrize("text, message", [("", "no action"), ("Thought: hmm", "no `Action:`"), ("Action:  ", "after `Action:`")])
def test_parse_action_refuses_replies_without_an_action(text, message):
    with pytest.raises(ActionParseError, match=message):
        parse_action(text)


# -- episodes --------------------------------------------------------------------------------------


async def test_first_observation_is_task_and_room_and_repeats():
    env, first = await new_env("test", 0)
    assert first.startswith("Your task is to boil") and "\n\nThis room is called" in first
    other, again = await new_env("test", 0)
    assert again == first
    await env.reset(Task(split="test", index=5))
    assert (await env.reset(Task(split="test", index=0))).text == first
    with pytest.raises(TaskError):
        await env.reset(Task(split="test", index=200))
    for e in (env, other):
        await e.close()


async def test_unusable_and_ambiguous_actions_leave_the_game_unchanged():
    env, first = await new_env("train", 0)  # boil, variation 0: the hallway, with several doors
    try:
        look = (await env.step("look around")).observation
        for bad in ("dance wildly", "Thought: no action here", "open door to nowhere"):
            result = await env.step(bad)
            assert "Valid actions:" in result.observation and result.reward == 0 and not result.terminated
        ambiguous = (await env.step("open door")).observation
        assert ambiguous.startswith("Ambiguous request")
        # Anything but a choice is answered with the choices, and the simulator still waits for one.
        again = await env.step("pick up thermometer")
        assert "Answer with the number" in again.observation and "0: " in again.observation
        opened = await env.step("Action: 0")
        assert "door is now open" in opened.observation
        after = (await env.step("look around")).observation
        assert after != look and "(that is open)" in after
    finally:
        await env.close()


async def test_rewards_follow_the_score_and_failure_ends_the_episode():
    env, _ = await new_env("test", 195)  # identify-life-stages-1
    try:
        results = [await env.step("focus on agent")]
        assert results[-1].terminated and results[-1].success is False and results[-1].score == 0
        assert results[-1].info["score"] < 0
    finally:
        await env.close()


async def test_resets_keep_java_memory_flat():
    env, _ = await new_env("train", 0)
    process = env._simulator.process
    try:
        for index in range(10):  # warm: the first loads fill the JVM's caches
            await env.reset(Task(split="train", index=index))
        before = await process.heap_used_bytes()
        for index in range(60):
            await env.reset(Task(split="train", index=index % 10))
            await env.step("look around")
        after = await process.heap_used_bytes()
    finally:
        await env.close()
    # One loaded world is ~10 MB: a leak of one world per reset would add ~600 MB.
    assert after - before < 40 * 2**20, (before, after)
