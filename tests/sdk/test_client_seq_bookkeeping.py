"""A session's seq, turns and done stay true to the server however a request ends on the client:
a local timeout, the caller cancelling, or an action refused before sending."""

from __future__ import annotations

import asyncio

import pytest
from sdk_fault_envs import CountingEnv

from gymwire.protocol import ErrorCode, ProtocolError
from gymwire.sdk.client import GymClient
from gymwire.sdk.server import GymServer


async def test_a_local_timeout_resyncs_the_session_before_its_next_request():
    async with GymServer([CountingEnv], port=0) as server, GymClient(server.url, request_timeout=0.2) as client:
        session = await client.open("counting", seed=5)
        CountingEnv.step_delay = 0.5
        with pytest.raises(asyncio.TimeoutError):
            await session.step("finish")  # the server goes on and ends the episode
        CountingEnv.step_delay = 0.0
        await asyncio.sleep(0.6)
        with pytest.raises(ProtocolError) as refused:
            await session.step("x")  # asks the server first: the finishing step did run
        assert refused.value.code is ErrorCode.EPISODE_FINISHED
        assert (session.seq, session.turns, session.done) == (1, 1, True)
        await session.reset()
        assert (await session.step("y")).observation.text == "step 1: y" and session.seq == 3
    assert CountingEnv.executed[5] == 2


async def test_a_cancelled_step_is_counted_once_it_ran():
    async with GymServer([CountingEnv], port=0) as server, GymClient(server.url) as client:
        session = await client.open("counting", seed=6)
        pending = asyncio.create_task(session.step("sleep 0.4"))
        await asyncio.sleep(0.1)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        await asyncio.sleep(0.5)
        result = await session.step("y")
        assert result.observation.text == "step 2: y"
        assert (session.seq, session.turns) == (2, 2)  # the cancelled step ran, and counts


async def test_an_action_that_is_not_text_uses_no_seq():
    async with GymServer([CountingEnv], port=0) as server, GymClient(server.url) as client:
        a = await client.open("counting", seed=7)
        b = await client.open("counting", seed=8)
        with pytest.raises(TypeError, match="an action is text"):
            await a.step(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="an action is text"):
            await client.step_batch([(b, "fine"), (a, None)])  # type: ignore[list-item]
        assert (a.seq, b.seq) == (0, 0)
        results = await client.step_batch([(a, "x"), (b, "y")])
        assert [r.observation.text for r in results] == ["step 1: x", "step 1: y"]


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
async def test_an_action_no_frame_can_carry_uses_no_seq(encoding):
    # A lone surrogate is a Python str but no UTF-8: it used to fail while encoding, after the seq
    # was taken, and the session's next step was refused BAD_SEQUENCE.
    async with GymServer([CountingEnv], port=0) as server, GymClient(server.url, encoding=encoding) as client:
        session = await client.open("counting", seed=9)
        with pytest.raises(ValueError, match="lone surrogate at 2"):
            await session.step("go\ud800")
        with pytest.raises(ValueError, match="lone surrogate"):
            await client.step_batch([(session, "\udfff")])
        assert session.seq == 0
        assert (await session.step("gö 北")).observation.text == "step 1: gö 北"
