"""Deadlines: a step_batch deadline applies to each step (a TIMEOUT of the batch costs only the
slow steps), and a step abandoned at its deadline does not outlive the server."""

from __future__ import annotations

import asyncio

from sdk_fault_envs import CountingEnv

import pytest

from gymwire.protocol import ErrorCode, ProtocolError
from gymwire.sdk import Environment, StepOutcome, Task
from gymwire.sdk.client import GymClient
from gymwire.sdk.server import GymServer
from gymwire.sdk.sync import SyncGymClient


async def test_a_batch_timeout_returns_the_fast_steps_results_and_times_out_the_slow_one(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        # Seeds no other test uses: a slow step another test abandoned may still finish in a
        # thread and count against its seed after this test's counters were reset.
        seeds = range(700, 704)
        sessions = [await client.open("counting", seed=seed) for seed in seeds]
        actions = ["sleep 1.5", "a", "b", "c"]
        results = await client.step_batch(list(zip(sessions, actions)), deadline_ms=300)
        slow, *fast = results
        assert isinstance(slow, ProtocolError) and slow.code is ErrorCode.TIMEOUT
        assert [r.observation.text for r in fast] == ["step 1: a", "step 1: b", "step 1: c"]
        assert all(CountingEnv.executed[seed] == 1 for seed in seeds[1:])  # each ran once, answered from the record
        await asyncio.sleep(1.5)
        # The slow session carries on: the client learns where it stands before its next step.
        assert (await sessions[0].step("again")).observation.text == "step 2: again"
        assert CountingEnv.executed[seeds[0]] == 2


class StoppedMidStepEnv(Environment):
    """Its step sleeps 30 s and records whether it was ended (cancelled) before finishing."""

    name = "stopped-mid-step"
    ended: list[str] = []

    async def reset(self, task: Task) -> str:
        return "ready"

    async def step(self, action: str) -> StepOutcome:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            StoppedMidStepEnv.ended.append("cancelled")
            raise
        return StepOutcome("slept")


def test_stopping_the_server_ends_a_step_whose_client_was_answered_timeout():
    # A step abandoned at its deadline runs on (its seq may be re-sent); the server's stop must
    # still end it, or it outlives the server's event loop (and is destroyed half-run at exit).
    StoppedMidStepEnv.ended.clear()
    server = GymServer([StoppedMidStepEnv], port=0)
    with server.run_in_thread() as url, SyncGymClient(url) as client:
        session = client.open("stopped-mid-step")
        with pytest.raises(ProtocolError) as timeout:
            session.step("nap", deadline_ms=100)
        assert timeout.value.code is ErrorCode.TIMEOUT
    assert StoppedMidStepEnv.ended == ["cancelled"]
    assert not server._abandoned
