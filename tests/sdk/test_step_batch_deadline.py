"""A step_batch deadline applies to each step: a TIMEOUT of the batch costs only the slow steps."""

from __future__ import annotations

import asyncio

from sdk_fault_envs import CountingEnv

from gymwire.protocol import ErrorCode, ProtocolError
from gymwire.sdk.client import GymClient


async def test_a_batch_timeout_returns_the_fast_steps_results_and_times_out_the_slow_one(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        sessions = [await client.open("counting", seed=seed) for seed in range(4)]
        actions = ["sleep 1.5", "a", "b", "c"]
        results = await client.step_batch(list(zip(sessions, actions)), deadline_ms=300)
        slow, *fast = results
        assert isinstance(slow, ProtocolError) and slow.code is ErrorCode.TIMEOUT
        assert [r.observation.text for r in fast] == ["step 1: a", "step 1: b", "step 1: c"]
        assert all(CountingEnv.executed[seed] == 1 for seed in (1, 2, 3))  # each ran once, answered from the record
        await asyncio.sleep(1.5)
        # The slow session carries on: the client learns where it stands before its next step.
        assert (await sessions[0].step("again")).observation.text == "step 2: again"
        assert CountingEnv.executed[0] == 2
