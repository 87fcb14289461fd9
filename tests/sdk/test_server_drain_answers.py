"""Every request gets an answer through a shutdown (GW-DRAIN-3, GW-DRAIN-6): steps sent after the drain
notice are answered (a result, or DRAINING), a step still running when the drain time is up is
answered DRAINING before the goodbye, and the client fails what is pending at the goodbye instead of
waiting for a server that is gone (the review saw 32 steps sent after the notice go unanswered)."""

from __future__ import annotations

import asyncio

import websockets
from sdk_fault_envs import CountingEnv

from gymwire.protocol import Codec, ErrorCode, ProtocolError
from gymwire.sdk.client import Disconnected, GymClient
from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv

WAIT = 60


async def test_steps_sent_after_the_drain_notice_all_end():
    server = await GymServer([GuessEnv], port=0).start()
    async with GymClient(server.url, reconnect_attempts=1) as client:
        sessions = [await client.open("guess", split="test", index=i, max_turns=100) for i in range(32)]
        stopping = asyncio.ensure_future(server.stop(drain_timeout=5))
        while not client.draining:
            await asyncio.sleep(0.01)

        async def step(session):  # type: ignore[no-untyped-def]
            try:
                return await session.step("50")
            except (ProtocolError, Disconnected) as exc:
                return exc

        outcomes = await asyncio.wait_for(asyncio.gather(*(step(s) for s in sessions)), WAIT)
        await stopping
    kinds = {o.code.name if isinstance(o, ProtocolError) else "Disconnected" if isinstance(o, Disconnected) else type(o).__name__ for o in outcomes}
    assert kinds <= {"StepResult", "DRAINING", "Disconnected"}, kinds  # Disconnected: ServerLost, once given up


async def test_a_step_still_running_when_the_drain_time_is_up_is_answered_before_goodbye():
    codec = Codec("msgpack")
    server = await GymServer([CountingEnv], port=0).start()
    async with websockets.connect(server.url, subprotocols=["gymwire.v1+msgpack"]) as ws:  # type: ignore[list-item]
        await ws.send(codec.encode_object({"type": "hello", "id": 1, "version": "1.0"}))
        await ws.recv()
        await ws.send(codec.encode_object({"type": "open", "id": 2, "env": "counting", "task": {"split": "test", "index": 0}}))
        session = codec.decode(await ws.recv()).session
        await ws.send(codec.encode_object({"type": "step", "id": 3, "session": session, "seq": 1, "action": "sleep 3"}))
        await asyncio.sleep(0.2)  # the step is running
        stopping = asyncio.ensure_future(server.stop(drain_timeout=0.3))
        received = []
        async for frame in ws:
            received.append(codec.decode(frame))
        await asyncio.wait_for(stopping, WAIT)
    kinds = [(m.type, getattr(m, "kind", None) or getattr(m, "name", None)) for m in received]
    assert kinds == [("notice", "drain"), ("error", "DRAINING"), ("notice", "goodbye")], kinds
    assert received[1].id == 3


async def test_the_client_fails_what_is_pending_at_goodbye():
    server = await GymServer([CountingEnv], port=0).start()
    async with GymClient(server.url, reconnect_attempts=0) as client:
        session = await client.open("counting", split="test", index=0)
        running = asyncio.ensure_future(session.step("sleep 3"))
        await asyncio.sleep(0.2)
        await server.stop(drain_timeout=0.3)
        try:
            await asyncio.wait_for(running, WAIT)
        except ProtocolError as exc:
            assert exc.code is ErrorCode.DRAINING and exc.retryable
        else:
            raise AssertionError("a step cut short by the stop returned a result")
