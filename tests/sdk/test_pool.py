"""GymPool, the one pool of gymwire (the OpenRLHF agents use it too): replicas down, full and
draining, on real loopback servers."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gymwire.protocol import ErrorCode, Limits, ProtocolError
from gymwire.sdk.client import Disconnected
from gymwire.sdk.pool import GymPool


def unreachable_url() -> str:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{probe.getsockname()[1]}"


async def test_a_replica_that_is_down_leaves_the_others_in_use(make_server):
    down = unreachable_url()
    async with make_server() as up:
        async with GymPool([down, up.url]) as pool:
            sessions = await asyncio.gather(*(pool.open("counting") for _ in range(10)))
            assert {s.client.url for s in sessions} == {up.url}
            assert (await pool.describe("counting")).name == "counting"
            assert list(pool.clients) == [up.url]


async def test_every_replica_down_is_one_clear_error():
    urls = [unreachable_url(), unreachable_url()]
    with pytest.raises(Disconnected, match="no server of the pool can be reached"):
        async with GymPool(urls):
            pass
    pool = GymPool(urls, open_attempts=2)
    with pytest.raises(Disconnected, match="no server of the pool can be reached"):
        await pool.open("counting")


async def test_full_replicas_send_opens_to_the_one_with_room_even_when_they_all_start_at_once(make_server):
    async with make_server(limits=Limits(max_sessions=1)) as small, make_server() as big:
        # One round: an open that meets the full server must try the other before giving up.
        async with GymPool([small.url, big.url], open_attempts=1) as pool:
            sessions = await asyncio.gather(*(pool.open("counting") for _ in range(20)))
            placed = [s.client.url for s in sessions]
            assert (placed.count(small.url), placed.count(big.url)) == (1, 19)
        async with GymPool([small.url], open_attempts=2) as pool:
            await pool.open("counting")
            with pytest.raises(ProtocolError) as refused:
                await pool.open("counting")
            assert refused.value.code is ErrorCode.CAPACITY and "add server replicas" in refused.value.message


async def test_a_draining_replica_gets_no_new_sessions(make_server):
    async with make_server() as draining, make_server() as healthy:
        async with GymPool([draining.url, healthy.url]) as connected_before:
            await draining.drain(timeout=0)
            for _ in range(50):  # the drain notice is on its way to the pool's client
                if connected_before.clients[draining.url].draining:
                    break
                await asyncio.sleep(0.01)
            sessions = await asyncio.gather(*(connected_before.open("counting") for _ in range(6)))
            assert {s.client.url for s in sessions} == {healthy.url}
        # A pool that connects after the drain gets DRAINING answers and moves on.
        async with GymPool([draining.url, healthy.url], open_attempts=1) as connected_after:
            sessions = [await connected_after.open("counting") for _ in range(3)]
            assert {s.client.url for s in sessions} == {healthy.url}
        async with GymPool([draining.url], open_attempts=1) as only_draining:
            with pytest.raises(ProtocolError) as refused:
                await only_draining.open("counting")
            assert refused.value.code is ErrorCode.DRAINING
