"""The client uses only the capabilities the server's welcome lists (GW-HANDSHAKE-5)."""

from __future__ import annotations

import asyncio
import time

import pytest
from sdk_fault_envs import CountingEnv, FaultyEnv

from gymwire.protocol import Cancel, ErrorCode, Limits, ProtocolError, ServerConnection
from gymwire.sdk.client import GymClient, MissingCapability
from gymwire.sdk.server import GymServer

class ServerWithout(GymServer):
    """The reference server lacking some capabilities, consistently: they are not in its welcome,
    their requests are refused, and without `heartbeat` it neither pings nor closes silent
    connections (the server's connection rules follow its capability list). It records the type
    of every message it receives."""

    def __init__(self, *lacking: str, **kwargs: object) -> None:
        super().__init__([CountingEnv, FaultyEnv], port=0, **kwargs)  # type: ignore[arg-type]
        self.lacking = set(lacking)
        self.capabilities = [c for c in self.capabilities if c not in self.lacking]
        received: list[str] = []
        self.received = received

        class RecordingRules(ServerConnection):  # every message the connection decodes reaches its rules
            def receive(self, message):  # type: ignore[no-untyped-def]
                received.append(message.type)
                return super().receive(message)

        self.connection_rules = RecordingRules


@pytest.mark.parametrize("lacking", [(), ("batch",)], ids=["with-batch", "without-batch"])
async def test_step_batch_without_batch_steps_one_by_one_with_the_same_results(lacking):
    async with ServerWithout(*lacking) as server, GymClient(server.url) as client:
        a = await client.open("counting", seed=1)
        b = await client.open("counting", seed=2)
        done = await client.open("counting", seed=3)
        await done.step("finish")
        results = await client.step_batch([(a, "x"), (b, "y"), (done, "more"), (a, "z")])
        assert [getattr(r, "observation", None) and r.observation.text for r in results] == [
            "step 1: x", "step 1: y", None, "step 2: z"
        ]
        assert isinstance(results[2], ProtocolError) and results[2].code is ErrorCode.EPISODE_FINISHED
        assert (a.seq, a.turns, b.seq, done.seq) == (2, 2, 1, 1)  # the refused step used no seq
        assert ("step_batch" in server.received) == (not lacking)


async def test_step_batch_without_batch_steps_sessions_concurrently():
    async with ServerWithout("batch") as server, GymClient(server.url) as client:
        a = await client.open("counting", seed=1)
        b = await client.open("counting", seed=2)
        started = time.perf_counter()
        results = await client.step_batch([(a, "sleep 0.5"), (b, "sleep 0.5")])
        elapsed = time.perf_counter() - started
        assert [r.observation.text for r in results] == ["step 1: sleep 0.5"] * 2
        assert elapsed < 0.9, elapsed  # one after the other would take 1 s


async def test_deadline_without_deadlines_raises_before_sending():
    async with ServerWithout("deadlines") as server, GymClient(server.url) as client:
        with pytest.raises(MissingCapability) as info:
            await client.open("counting", deadline_ms=1000)
        assert info.value.capability == "deadlines" and "without deadline_ms" in str(info.value)
        session = await client.open("counting", seed=4)
        received = list(server.received)
        for call in (
            lambda: session.step("x", deadline_ms=100),
            lambda: session.reset(seed=5, deadline_ms=100),
            lambda: client.step_batch([(session, "x")], deadline_ms=100),
        ):
            with pytest.raises(MissingCapability, match="deadlines"):
                await call()
        assert server.received == received and session.seq == 0
        assert (await session.step("ok")).observation.text == "step 1: ok"  # no seq was burned


async def test_cancel_without_cancel_raises_before_sending():
    async with ServerWithout("cancel") as server, GymClient(server.url) as client:
        received = list(server.received)
        with pytest.raises(MissingCapability) as info:
            await client.request(Cancel(id=client.next_id(), target=1))
        assert isinstance(info.value, RuntimeError) and info.value.capability == "cancel"
        assert server.received == received


async def test_no_pings_without_heartbeat_and_the_connection_stays_up():
    server = ServerWithout("heartbeat", limits=Limits(heartbeat_interval_ms=100))
    async with server, GymClient(server.url) as client:
        session = await client.open("counting")
        ws = client._ws
        await asyncio.sleep(0.8)  # 8 intervals of silence: past the 3 that mean half-open
        assert "ping" not in server.received
        assert client._ws is ws and server.received.count("hello") == 1
        assert (await session.step("still here")).observation.text == "step 1: still here"


async def test_reconnect_without_resume_fails_pending_requests_and_sends_no_resume():
    async with ServerWithout("resume") as server, GymClient(server.url) as client:
        session = await client.open("counting", seed=7)
        pending = asyncio.ensure_future(session.step("sleep 0.3"))
        await asyncio.sleep(0.1)
        client._ws.transport.abort()
        with pytest.raises(ProtocolError) as info:
            await pending
        assert info.value.code is ErrorCode.UNKNOWN_SESSION and "does not support resume" in info.value.message
        assert session.id not in client.sessions
        assert "resume" not in server.received and server.received.count("hello") == 2
        fresh = await client.open("counting", seed=8)  # the client itself reconnected
        assert (await fresh.step("go")).observation.text == "step 1: go"


async def test_unknown_state_after_timeout_without_resume_raises_before_sending():
    async with ServerWithout("resume") as server, GymClient(server.url) as client:
        session = await client.open("faulty")
        other = await client.open("counting", seed=6)
        with pytest.raises(ProtocolError) as timeout:
            await session.step("hang 0.3", deadline_ms=50)
        assert timeout.value.code is ErrorCode.TIMEOUT
        received = list(server.received)
        with pytest.raises(MissingCapability) as info:
            await session.step("next")
        assert info.value.capability == "resume" and "unknown state" in str(info.value)
        with pytest.raises(MissingCapability, match="unknown state"):
            await client.step_batch([(other, "x"), (session, "next")])
        assert server.received == received and other.seq == 0
        assert (await other.step("ok")).observation.text == "step 1: ok"
        await session.close()
