"""GymPool when replicas come and go: a crashed replica (its process killed) is let go of at once,
membership follows a provider at run time, and a lost replica fails only its own sessions' steps."""

from __future__ import annotations

import asyncio
import time

from server_process import server_processes

from gymwire.sdk.client import ServerLost
from gymwire.sdk.batching import step_sessions
from gymwire.sdk.pool import GymPool

ENVS = ("sdk_fault_envs:AsyncSleepEnv", "sdk_fault_envs:CountingEnv")


async def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_killed_replica_fails_its_sessions_at_once_and_gets_no_new_opens():
    with server_processes(3, ENVS) as servers:
        dying = servers[0]
        async with GymPool([s.url for s in servers]) as pool:
            sessions = await asyncio.gather(*(pool.open("async-sleep") for _ in range(30)))
            on_dying = [s for s in sessions if s.client.url == dying.url]
            assert len(on_dying) == 10  # spread evenly: fewest sessions first
            steps = [asyncio.ensure_future(s.step("30")) for s in on_dying]  # would answer in 30 s
            await asyncio.sleep(0.2)
            killed_at = time.monotonic()
            dying.kill()
            done, _ = await asyncio.wait(steps, timeout=15)
            noticed_after = time.monotonic() - killed_at
            assert len(done) == 10 and all(isinstance(step.exception(), ServerLost) for step in steps)
            # Before: ~19 s of reconnect back-off. The bound is loose for a loaded machine.
            assert noticed_after < 8, noticed_after
            more = await asyncio.gather(*(pool.open("async-sleep") for _ in range(12)))
            assert {s.client.url for s in more} == {servers[1].url, servers[2].url}
            assert dying.url not in pool.clients
            survivor = next(s for s in sessions if s.client.url != dying.url)
            assert (await survivor.step("0")).observation.text == "slept 0"


async def test_membership_follows_the_provider_at_run_time():
    with server_processes(2, ENVS) as (first, second):
        members = [first.url]
        async with GymPool(members=lambda: list(members), refresh_s=0.05) as pool:
            old = [await pool.open("counting") for _ in range(3)]
            assert {s.client.url for s in old} == {first.url}
            members[:] = [first.url, second.url]  # a scale-up
            await wait_for(lambda: pool.urls == members)
            new = [await pool.open("counting") for _ in range(3)]
            assert {s.client.url for s in new} == {second.url}  # the one with fewest sessions
            members[:] = [second.url]  # a scale-down: its sessions finish where they are
            await wait_for(lambda: pool.urls == members)
            assert {(await pool.open("counting")).client.url for _ in range(4)} == {second.url}
            assert (await old[0].step("still here")).observation.text == "step 1: still here"
            for session in old:
                await session.close()
            await wait_for(lambda: first.url not in pool.clients)  # idle and gone: let go


async def test_a_replica_that_leaves_while_down_is_given_up_on_without_waiting():
    with server_processes(2, ENVS) as (first, second):
        members = [first.url, second.url]
        # A long reconnect budget: only leaving the members can end the wait early.
        async with GymPool(members=lambda: list(members), refresh_s=0.05, reconnect_attempts=50) as pool:
            sessions = await asyncio.gather(*(pool.open("async-sleep") for _ in range(4)))
            on_first = [s for s in sessions if s.client.url == first.url]
            steps = [asyncio.ensure_future(s.step("30")) for s in on_first]
            await asyncio.sleep(0.2)
            first.kill()
            await asyncio.sleep(1.0)
            assert not any(step.done() for step in steps)  # still reconnecting
            members[:] = [second.url]
            done, _ = await asyncio.wait(steps, timeout=10)
            assert len(done) == len(steps) and all(isinstance(step.exception(), ServerLost) for step in steps)


async def test_a_lost_replica_fails_only_its_own_entries_of_a_batch():
    with server_processes(2, ENVS) as (first, second):
        async with GymPool([first.url, second.url]) as pool:
            sessions = await asyncio.gather(*(pool.open("counting") for _ in range(6)))
            lost_client = pool.clients[first.url]
            first.kill()
            await wait_for(lambda: lost_client.lost is not None)
            results = await step_sessions([(s, "go") for s in sessions])
            for session, result in zip(sessions, results):
                if session.client.url == first.url:
                    assert isinstance(result, ServerLost)
                else:
                    assert result.observation.text == "step 1: go"


async def test_opens_before_the_first_members_answer_wait_for_it():
    with server_processes(1, ENVS) as (server,):
        asked = []

        async def slow_members():
            asked.append(1)
            await asyncio.sleep(0.3)
            return [server.url]

        pool = GymPool(members=slow_members, refresh_s=60)  # not connected: the opens learn the members
        try:
            sessions = await asyncio.gather(*(pool.open("counting") for _ in range(5)))
            assert {s.client.url for s in sessions} == {server.url} and len(asked) == 1
        finally:
            await pool.close()
