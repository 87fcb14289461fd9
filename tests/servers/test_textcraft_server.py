"""TextCraft through a real gymwire server: the planner solves every test task; bad actions are answered, not errors."""

from __future__ import annotations

import asyncio

import pytest

from gymwire.protocol import ErrorCode, ProtocolError
from gymwire.sdk.client import GymClient
from gymwire.sdk.registry import resolve_env
from gymwire.sdk.server import GymServer
from gymwire.servers.textcraft import TextCraftEnv
from gymwire.servers.textcraft.recipes import load_book
from gymwire.servers.textcraft.solver import plan

BOOK = load_book()


def test_textcraft_is_a_builtin_environment():
    assert resolve_env("textcraft").env_class is TextCraftEnv


async def test_planner_reaches_the_goal_through_the_server_on_every_test_task():
    async with GymServer([TextCraftEnv], port=0) as server, GymClient(server.url) as client:
        (info,) = await client.list_envs()
        assert info.name == "textcraft" and info.splits == {"train": len(BOOK.splits["train"]), "test": 100}

        async def play(index: int):
            async with client.session("textcraft", split="test", index=index) as session:
                goal = session.observation.data["goal"]
                assert session.observation.text.endswith(f"Goal: craft {goal}.")
                result = None
                for action in plan(BOOK, goal):
                    result = await session.step(action)
                    if session.done:
                        break
                return index, goal, result

        results = await asyncio.gather(*(play(index) for index in range(100)))
    failures = [
        (index, goal, result.observation.text if result else None)
        for index, goal, result in results
        if not (result and result.reward == 1.0 and result.metrics and result.metrics.success)
    ]
    assert failures == []
    assert all(result.metrics.score == 1.0 and result.metrics.turns >= 1 for _, _, result in results)


async def test_unreadable_action_is_an_observation_and_changes_nothing_over_the_wire():
    async with GymServer([TextCraftEnv], port=0) as server, GymClient(server.url, encoding="json") as client:
        async with client.session("textcraft", split="test", index=0, max_turns=4) as session:
            await session.step("get 3 oak logs")
            before = (await session.step("inventory")).observation.text
            bad = await session.step("Thought: hmm, what now?")
            assert "no `Action:`" in bad.observation.text and bad.reward == 0.0 and not bad.terminated
            last = await session.step("inventory")
            assert last.observation.text == before == "Inventory: [oak logs] (3)"
            # The fourth turn hits the limit: the episode ends unsolved.
            assert last.truncated and last.metrics and not last.metrics.success and last.metrics.turns == 4


async def test_a_client_cannot_choose_the_recipe_directory():
    async with GymServer([TextCraftEnv], port=0) as server, GymClient(server.url) as client:
        with pytest.raises(ProtocolError) as caught:
            await client.open("textcraft", split="test", index=0, options={"recipes_dir": "/etc"})
        assert caught.value.code is ErrorCode.INVALID_TASK and "operator's configuration" in str(caught.value)
