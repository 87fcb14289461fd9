"""ScienceWorld through a real gymwire server: gold paths reach success; a dead or hung Java process
takes down only its own sessions and is replaced."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from gymwire.protocol import ErrorCode, ProtocolError
from gymwire.sdk.client import GymClient
from gymwire.sdk.env_spec import EnvSpec
from gymwire.sdk.registry import resolve_env
from gymwire.sdk.server import GymServer
from gymwire.servers.sciworld import SciWorldEnv
from gymwire.servers.sciworld import tasks
from gymwire.servers.sciworld.solver import gold_actions, solve

# Short test tasks from five task families (power, find, paint, lifespan, life stages); the whole
# test split is `python -m gymwire.servers.sciworld.solver`.
SOLVER_TASKS = (70, 110, 150, 180, 195)


def test_sciworld_is_a_builtin_environment():
    assert resolve_env("sciworld").env_class is SciWorldEnv


async def test_gold_paths_reach_success_through_the_server():
    env = EnvSpec.of(SciWorldEnv, jvms=2, sessions_per_jvm=8)
    gold_pool = SciWorldEnv(jvms=1).pool
    try:
        async with GymServer([env], port=0) as server, GymClient(server.url) as client:
            outcomes = await asyncio.gather(*(solve(client, "test", index, gold_pool) for index in SOLVER_TASKS))
    finally:
        env.make().pool.shutdown()
        gold_pool.shutdown()
    assert [(o.index, o.reason) for o in outcomes if not o.success] == []
    assert all(o.score == 100 and 1 <= o.steps <= o.gold_steps for o in outcomes)


def java_process(server: GymServer, session_id: str):
    """The Java process hosting a session's simulator (the server runs in this test's loop)."""
    return server.sessions[session_id].runner.env._simulator.process


async def test_the_score_is_in_the_rewards_unit():
    """However an episode ends — the server's turn limit or success — its metric score is the sum of
    its rewards (progress in [0, 1]), so an episode a client ends early, scored by its rewards, is
    averaged in the same unit (an evaluation once mixed 17.0 with 0.17)."""
    env = EnvSpec.of(SciWorldEnv, jvms=1)
    gold_pool = SciWorldEnv(jvms=1).pool
    index = SOLVER_TASKS[0]
    try:
        actions = await gold_actions(gold_pool, tasks.task_at("test", index))
        async with GymServer([env], port=0) as server, GymClient(server.url) as client:

            async def play(max_turns: int) -> tuple[Any, float, int]:
                """The gold path until the episode ends: its last result, total reward and steps."""
                async with client.session("sciworld", split="test", index=index, max_turns=max_turns) as session:
                    result, total, steps = None, 0.0, 0
                    while not session.done:
                        result = await session.step(actions[steps])
                        total, steps = total + result.reward, steps + 1
                return result, total, steps

            # The whole gold path (it ends in success), then the same cut by the turn limit one step short.
            whole, whole_total, whole_steps = await play(len(actions) + 1)
            cut, cut_total, _ = await play(whole_steps - 1)
    finally:
        env.make().pool.shutdown()
        gold_pool.shutdown()
    assert whole.metrics.success and not cut.metrics.success
    for result, total in ((whole, whole_total), (cut, cut_total)):
        assert result.metrics.score == pytest.approx(total) and result.info["score"] == round(total * 100)
    assert whole_total == pytest.approx(1.0) and 0 < cut_total < 1


async def test_a_killed_java_process_crashes_only_its_sessions_and_is_replaced():
    # Two JVMs, two sessions each: a, c share one JVM, b, d the other.
    env = EnvSpec.of(SciWorldEnv, jvms=2, sessions_per_jvm=2)
    try:
        async with GymServer([env], port=0) as server, GymClient(server.url) as client:
            sessions = [await client.open("sciworld", split="test", index=i, max_turns=50) for i in (110, 111, 112, 113)]
            a, b, c, d = sessions
            for session in sessions:
                await session.step("look around")
            victim = java_process(server, a.id)
            assert java_process(server, c.id) is victim and java_process(server, b.id) is not victim
            os.kill(victim.pid, signal.SIGKILL)
            with pytest.raises(ProtocolError) as crashed:
                await a.step("look around")
            assert crashed.value.code is ErrorCode.ENV_CRASHED and "died" in str(crashed.value)
            with pytest.raises(ProtocolError) as also:
                await c.step("look around")
            assert also.value.code is ErrorCode.ENV_CRASHED
            # The other JVM's sessions play on.
            for session in (b, d):
                result = await session.step("look around")
                assert "is called the" in result.observation.text
            # A new session gets a fresh JVM, and plays.
            fresh = await client.open("sciworld", split="test", index=110, max_turns=50)
            assert java_process(server, fresh.id) is not victim and java_process(server, fresh.id).pid != victim.pid
            assert "is called the" in (await fresh.step("look around")).observation.text
            assert not any(p.dead for p in env.make().pool.live)
    finally:
        env.make().pool.shutdown()


async def test_a_hung_java_process_is_killed_after_the_call_timeout():
    env = EnvSpec.of(SciWorldEnv, jvms=2, sessions_per_jvm=1)
    try:
        async with GymServer([env], port=0) as server, GymClient(server.url) as client:
            hung, healthy = [await client.open("sciworld", split="test", index=i, max_turns=50) for i in (110, 111)]
            victim = java_process(server, hung.id)
            victim.call_timeout_s = 3  # only now: a cold JVM's first load on a busy machine takes longer
            os.kill(victim.pid, signal.SIGSTOP)  # alive but silent
            with pytest.raises(ProtocolError) as caught:
                await hung.step("look around")
            assert caught.value.code is ErrorCode.ENV_CRASHED and "no answer within 3 s" in str(caught.value)
            assert victim.process.wait(timeout=10) is not None  # killed, not left stopped
            assert "is called the" in (await healthy.step("look around")).observation.text
    finally:
        env.make().pool.shutdown()


async def test_unusable_action_over_the_wire_is_an_observation():
    env = EnvSpec.of(SciWorldEnv, jvms=1, sessions_per_jvm=2)
    try:
        async with GymServer([env], port=0) as server, GymClient(server.url, encoding="json") as client:
            async with client.session("sciworld", split="test", index=110, max_turns=3) as session:
                assert session.observation.data["task_id"] == "4-2"
                bad = await session.step("Thought: let me think")
                assert "no `Action:`" in bad.observation.text and bad.reward == 0.0 and not bad.terminated
                await session.step("dance")
                last = await session.step("look around")
                assert last.truncated and last.metrics and not last.metrics.success and last.metrics.turns == 3
                assert last.metrics.score == 0.0
    finally:
        env.make().pool.shutdown()
