"""The server runtime against a real WebSocket server on loopback, driven by the SDK client."""

from __future__ import annotations

import asyncio
import threading
import time

import msgpack
import pytest
import websockets
from sdk_fault_envs import CountingEnv

from gymwire.protocol import ErrorCode, Limits, ProtocolError
from gymwire.sdk.client import GymClient
from gymwire.sdk.pool import GymPool
from gymwire.sdk.server import GymServer


async def test_guess_episode_with_metrics(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        async with client.session("guess", split="test", index=3) as env:
            assert "from 1 to 100" in env.observation.text
            low, high = 1, 100
            while not env.done:
                guess = (low + high) // 2
                result = await env.step(f"Thought: halve it. Action: {guess}")
                if "higher" in result.observation.text:
                    low = guess + 1
                elif "lower" in result.observation.text:
                    high = guess - 1
            assert result.terminated and result.reward == 1.0
            assert result.metrics is not None and result.metrics.success and result.metrics.turns == env.turns


async def test_replies_come_out_of_order_on_one_connection(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        slow = await client.open("async-sleep")
        fast = await client.open("async-sleep")
        order: list[str] = []

        async def run(session, delay, label):
            await session.step(str(delay))
            order.append(label)

        await asyncio.gather(run(slow, 0.4, "slow"), run(fast, 0.01, "fast"))
        assert order == ["fast", "slow"]


async def test_steps_of_one_session_are_serialized_others_concurrent(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        a = await client.open("counting", seed=1)
        b = await client.open("counting", seed=2)
        started = time.perf_counter()
        # Two sync sessions each sleeping 0.3 s run in parallel threads: ~0.3 s, not 0.6 s.
        await asyncio.gather(a.step("sleep 0.3"), b.step("sleep 0.3"))
        elapsed = time.perf_counter() - started
        assert elapsed < 0.55, elapsed
        # Two pipelined steps on one session run one after the other, in order.
        results = await asyncio.gather(a.step("sleep 0.1"), a.step("second"))
        assert [r.observation.text for r in results] == ["step 2: sleep 0.1", "step 3: second"]


async def test_env_exception_is_reported_to_its_session_only(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        broken = await client.open("faulty")
        healthy = await client.open("faulty")
        with pytest.raises(ProtocolError) as info:
            await broken.step("raise")
        assert info.value.code is ErrorCode.ENV_CRASHED and "environment bug" in info.value.message
        with pytest.raises(ProtocolError) as again:
            await broken.step("anything")
        assert again.value.code is ErrorCode.ENV_CRASHED
        assert (await healthy.step("still fine")).observation.text == "echo still fine"
        with pytest.raises(ProtocolError) as bad:
            await healthy.step("bad-return")
        assert bad.value.code is ErrorCode.ENV_CRASHED
        other = await client.open("faulty")
        assert (await other.step("x")).observation.text == "echo x"


async def test_deadline_answers_timeout_and_other_sessions_keep_stepping(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        stuck = await client.open("faulty")
        other = await client.open("counting", seed=5)
        hang = asyncio.ensure_future(stuck.step("hang 1.0", deadline_ms=100))
        await asyncio.sleep(0.02)
        for _ in range(5):
            await other.step("go")
        with pytest.raises(ProtocolError) as info:
            await hang
        assert info.value.code is ErrorCode.TIMEOUT and info.value.retryable
        # The timed-out step finishes in the background and is recorded: the client re-syncs
        # through resume and its next step gets the next sequence number.
        await asyncio.sleep(1.1)
        result = await stuck.step("after")
        assert result.observation.text == "echo after" and stuck.seq == 2


async def test_deadline_on_a_queued_step_leaves_no_trace(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        session = await client.open("counting", seed=9)
        first = asyncio.ensure_future(session.step("sleep 0.4"))
        await asyncio.sleep(0.05)
        with pytest.raises(ProtocolError) as info:
            await session.step("queued", deadline_ms=50)
        assert info.value.code is ErrorCode.TIMEOUT
        await first
        result = await session.step("next")
        assert CountingEnv.executed[9] == 2  # the queued step never ran
        assert result.observation.text == "step 2: next"


async def test_cancel_of_a_queued_request(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        session = await client.open("counting", seed=4)
        first = asyncio.ensure_future(session.step("sleep 0.3"))
        await asyncio.sleep(0.05)
        from gymwire.protocol import Cancel, Step

        step_id = client.next_id()
        queued = asyncio.ensure_future(
            client.request(Step(id=step_id, session=session.id, seq=2, action="queued"))
        )
        await asyncio.sleep(0.02)
        ack = await client.request(Cancel(id=client.next_id(), target=step_id))
        assert ack.found is True
        with pytest.raises(ProtocolError) as info:
            await queued
        assert info.value.code is ErrorCode.CANCELLED
        await first
        assert CountingEnv.executed[4] == 1
        unknown = await client.request(Cancel(id=client.next_id(), target=999_999))
        assert unknown.found is False


@pytest.mark.parametrize("isolation", ["process"])
async def test_process_isolation_survives_an_env_that_kills_itself(make_server, isolation):
    async with make_server(isolation=isolation) as server, GymClient(server.url) as client:
        doomed = await client.open("faulty")
        survivor = await client.open("faulty")
        pid_doomed = (await doomed.step("who")).info["pid"]
        pid_survivor = (await survivor.step("who")).info["pid"]
        assert pid_doomed != pid_survivor
        with pytest.raises(ProtocolError) as info:
            await doomed.step("die")
        assert info.value.code is ErrorCode.ENV_CRASHED and "exit code 3" in info.value.message
        assert (await survivor.step("alive")).observation.text == "echo alive"
        await doomed.close()
        await survivor.close()
        assert server.stats()["sessions"] == 0


async def test_process_isolation_close_kills_a_hung_child(make_server):
    async with make_server(isolation="process") as server, GymClient(server.url) as client:
        session = await client.open("faulty")
        pid = (await session.step("who")).info["pid"]
        with pytest.raises(ProtocolError):
            await session.step("hang 30", deadline_ms=100)
        await session.close()
        await asyncio.sleep(0.2)
        with pytest.raises(ProcessLookupError):
            import os

            os.kill(pid, 0)


async def test_dropped_connection_resumes_without_losing_or_doubling_steps(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        session = await client.open("counting", seed=7)
        await session.step("one")
        # Drop the connection while the next step runs: the server finishes it, its answer is
        # lost, the client reconnects, resumes and re-sends; the server answers from record.
        pending = asyncio.ensure_future(session.step("sleep 0.3"))
        await asyncio.sleep(0.1)
        client._ws.transport.abort()
        result = await pending
        assert result.observation.text == "step 2: sleep 0.3"
        assert CountingEnv.executed[7] == 2
        # Drop again with nothing in flight; the episode continues.
        client._ws.transport.abort()
        result = await session.step("three")
        assert result.observation.text == "step 3: three"
        assert CountingEnv.executed[7] == 3
        assert server.stats()["sessions"] == 1


async def test_a_resent_sequence_number_is_answered_from_record(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        from gymwire.protocol import Step

        session = await client.open("counting", seed=3)
        first = await client.request(Step(id=client.next_id(), session=session.id, seq=1, action="x"))
        again = await client.request(Step(id=client.next_id(), session=session.id, seq=1, action="x"))
        assert again.observation == first.observation and again.id != first.id
        assert CountingEnv.executed[3] == 1
        with pytest.raises(ProtocolError) as info:
            await client.request(Step(id=client.next_id(), session=session.id, seq=5, action="x"))
        assert info.value.code is ErrorCode.BAD_SEQUENCE


async def test_sessions_are_private_to_their_connection(make_server):
    async with make_server() as server, GymClient(server.url) as owner, GymClient(server.url) as thief:
        session = await owner.open("counting", seed=1)
        from gymwire.protocol import Close, Step

        with pytest.raises(ProtocolError) as info:
            await thief.request(Step(id=thief.next_id(), session=session.id, seq=1, action="steal"))
        assert info.value.code is ErrorCode.UNKNOWN_SESSION
        with pytest.raises(ProtocolError):
            await thief.request(Close(id=thief.next_id(), session=session.id))
        assert (await session.step("mine")).observation.text == "step 1: mine"


async def test_capacity_refusals_carry_retry_after(make_server):
    limits = Limits(max_sessions=2, max_sessions_per_connection=2)
    async with make_server(limits=limits) as server, GymClient(server.url) as client:
        await client.open("counting")
        await client.open("counting")
        with pytest.raises(ProtocolError) as info:
            await client.open("counting")
        assert info.value.code is ErrorCode.CAPACITY and info.value.retry_after_ms and info.value.retryable


async def test_per_connection_cap(make_server):
    limits = Limits(max_sessions=10, max_sessions_per_connection=1)
    async with make_server(limits=limits) as server:
        async with GymClient(server.url) as a, GymClient(server.url) as b:
            await a.open("counting")
            with pytest.raises(ProtocolError) as info:
                await a.open("counting")
            assert info.value.code is ErrorCode.CAPACITY
            await b.open("counting")  # another connection still has room


async def test_pool_moves_to_a_server_with_room(make_server):
    limits = Limits(max_sessions=1)
    async with make_server(limits=limits) as one, make_server(limits=limits) as two:
        async with GymPool([one.url, two.url]) as pool:
            first = await pool.open("counting")
            second = await pool.open("counting")
            assert {first.client.url, second.client.url} == {one.url, two.url}
            with pytest.raises(ProtocolError) as info:
                pool.open_attempts = 1
                await pool.open("counting")
            assert info.value.code is ErrorCode.CAPACITY


async def test_auth_refuses_before_any_environment_exists(make_server):
    async with make_server(token="s3cret") as server:
        for token in (None, "wrong"):
            with pytest.raises(ProtocolError) as info:
                await GymClient(server.url, token=token, reconnect_attempts=0).connect()
            assert info.value.code is ErrorCode.UNAUTHORIZED
        assert CountingEnv.instances == 0
        async with GymClient(server.url, token="s3cret") as client:
            assert "auth" in client.welcome.capabilities
            await client.open("counting")
        assert CountingEnv.instances == 1


async def test_unknown_env_task_and_states(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        for kwargs, code in [
            ({"env": "nope"}, ErrorCode.UNKNOWN_ENV),
            ({"env": "strict", "split": "train", "index": 0}, ErrorCode.INVALID_TASK),
            ({"env": "strict", "split": "test", "index": 3}, ErrorCode.INVALID_TASK),
        ]:
            with pytest.raises(ProtocolError) as info:
                await client.open(**kwargs)
            assert info.value.code is code
        session = await client.open("strict", split="test", index=2)
        await session.step("go")
        with pytest.raises(ProtocolError) as info:
            await session.step("again")
        assert info.value.code is ErrorCode.EPISODE_FINISHED
        observation = await session.reset()
        assert observation.text == "test 2"
        unreset = await client.open("strict", split="test", index=1, reset=False)
        with pytest.raises(ProtocolError) as info:
            await unreset.step("early")
        assert info.value.code is ErrorCode.INVALID_STATE
        await session.close()
        with pytest.raises(ProtocolError) as info:
            await session.step("closed")
        assert info.value.code is ErrorCode.UNKNOWN_SESSION


async def test_turn_limit_truncates(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        session = await client.open("counting", max_turns=2)
        assert not (await session.step("a")).truncated
        last = await session.step("b")
        assert last.truncated and not last.terminated and last.metrics.turns == 2 and not last.metrics.success


async def test_batched_steps(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        sessions = [await client.open("counting", seed=i) for i in range(5)]
        results = await client.step_batch([(s, f"go {i}") for i, s in enumerate(sessions)])
        assert [r.observation.text for r in results] == [f"step 1: go {i}" for i in range(5)]
        await sessions[0].close()
        client.sessions[sessions[0].id] = sessions[0]  # pretend we still think it is open
        mixed = await client.step_batch([(sessions[0], "x"), (sessions[1], "y")])
        assert isinstance(mixed[0], ProtocolError) and mixed[0].code is ErrorCode.UNKNOWN_SESSION
        assert mixed[1].observation.text == "step 2: y"


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
async def test_bad_frames_get_typed_errors_and_the_connection_lives(make_server, encoding):
    async with make_server() as server:
        subprotocol = f"gymwire.v1+{encoding}"
        async with websockets.connect(server.url, subprotocols=[subprotocol]) as ws:
            def encode(obj):
                return msgpack.packb(obj) if encoding == "msgpack" else __import__("json").dumps(obj)

            def decode(frame):
                return msgpack.unpackb(frame) if encoding == "msgpack" else __import__("json").loads(frame)

            await ws.send(encode({"type": "list_envs", "id": 1}))
            assert decode(await ws.recv())["name"] == "HANDSHAKE_REQUIRED"
            await ws.send(encode({"type": "hello", "id": 2, "version": "1.0", "client": {"name": "t"}}))
            assert decode(await ws.recv())["type"] == "welcome"
            for frame, code in [
                (b"\xc1\xff garbage" if encoding == "msgpack" else "{not json", "BAD_FRAME"),
                (encode({"type": "teleport", "id": 3}), "UNKNOWN_MESSAGE"),
                (encode({"type": "step", "id": 4, "session": "x", "seq": "one", "action": 5}), "BAD_FRAME"),
            ]:
                await ws.send(frame)
                reply = decode(await ws.recv())
                assert reply["type"] == "error" and reply["name"] == code, reply
            await ws.send(encode({"type": "ping", "id": 9}))
            assert decode(await ws.recv()) == {"type": "pong", "id": 9}


async def test_oversized_frame_and_unknown_subprotocol(make_server):
    async with make_server(limits=Limits(max_frame_bytes=1000)) as server:
        async with websockets.connect(server.url, subprotocols=["gymwire.v1+msgpack"]) as ws:
            await ws.send(msgpack.packb({"type": "hello", "id": 1, "version": "1.0"}))
            await ws.recv()
            await ws.send(msgpack.packb({"type": "ping", "id": 2, "pad": "x" * 1500}))
            assert msgpack.unpackb(await ws.recv())["name"] == "FRAME_TOO_LARGE"
        for offered in (["gymwire.v2+msgpack"], ["chat"]):
            with pytest.raises(websockets.InvalidStatus) as info:
                await websockets.connect(server.url, subprotocols=offered)
            assert info.value.response.status_code == 400
            assert b"gymwire.v1+msgpack" in info.value.response.body
        with pytest.raises(ProtocolError) as version:
            async with websockets.connect(server.url, subprotocols=["gymwire.v1+msgpack"]) as ws:
                await ws.send(msgpack.packb({"type": "hello", "id": 1, "version": "2.0"}))
                reply = msgpack.unpackb(await ws.recv())
                raise ProtocolError(ErrorCode[reply["name"]], reply["message"])
        assert version.value.code is ErrorCode.UNSUPPORTED_VERSION


async def test_drain_finishes_inflight_steps_and_refuses_new_sessions(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        session = await client.open("counting", seed=1)
        step = asyncio.ensure_future(session.step("sleep 0.3"))
        await asyncio.sleep(0.05)
        drain = asyncio.ensure_future(server.drain(timeout=5))
        await asyncio.sleep(0.05)
        assert client.draining
        with pytest.raises(ProtocolError) as info:
            await client.open("counting")
        assert info.value.code is ErrorCode.DRAINING and info.value.retryable
        assert (await step).observation.text == "step 1: sleep 0.3"
        await drain


async def test_idle_sessions_are_reaped_and_closed(make_server):
    limits = Limits(idle_timeout_ms=200, resume_grace_ms=200)
    async with make_server(limits=limits) as server, GymClient(server.url) as client:
        await client.open("counting")
        assert server.stats()["sessions"] == 1
        await asyncio.sleep(0.6)
        assert server.stats()["sessions"] == 0
        assert CountingEnv.closed == 1


async def test_a_private_server_waits_for_its_client_however_slow():
    # eval, collect and training serve their own sessions: a model slower than the default idle
    # timeout (10 minutes for a batch's turn on a loaded CPU) must not lose them.
    with GymServer.private([CountingEnv]).run_in_thread() as url:
        async with GymClient(url) as client:
            assert client.limits.idle_timeout_ms >= 24 * 3600 * 1000 > Limits().idle_timeout_ms
            session = await client.open("counting")
            assert (await session.step("a")).observation.text


async def test_half_open_connection_is_closed_and_its_sessions_reaped(make_server):
    limits = Limits(heartbeat_interval_ms=100, resume_grace_ms=200)
    async with make_server(limits=limits) as server:
        # A raw peer that opens a session then never reads or answers again (a half-open link).
        ws = await websockets.connect(server.url, subprotocols=["gymwire.v1+msgpack"])
        await ws.send(msgpack.packb({"type": "hello", "id": 1, "version": "1.0"}))
        await ws.send(msgpack.packb({"type": "open", "id": 2, "env": "counting"}))
        await asyncio.sleep(0.1)
        assert server.stats() == {"sessions": 1, "connections": 1, "inflight": 0}
        ws.transport.pause_reading()
        await asyncio.sleep(0.5)
        assert server.stats()["connections"] == 0
        await asyncio.sleep(0.5)
        assert server.stats()["sessions"] == 0 and CountingEnv.closed == 1
        ws.transport.abort()


async def test_client_heartbeat_keeps_an_idle_connection_alive(make_server):
    limits = Limits(heartbeat_interval_ms=100)
    async with make_server(limits=limits) as server, GymClient(server.url) as client:
        session = await client.open("counting")
        await asyncio.sleep(0.8)  # server pings, client pongs
        assert server.stats()["connections"] == 1
        assert (await session.step("still here")).observation.text == "step 1: still here"


async def test_no_threads_or_sessions_leak(make_server):
    before = threading.active_count()
    async with make_server() as server:
        async with GymClient(server.url) as client:
            sessions = [await client.open("counting", seed=i) for i in range(20)]
            await asyncio.gather(*(s.step("go") for s in sessions))
        await asyncio.sleep(0.1)
        assert server.stats() == {"sessions": 0, "connections": 0, "inflight": 0}
        assert CountingEnv.closed == 20
    await asyncio.sleep(0.1)
    assert threading.active_count() <= before + 1


async def test_images_only_for_clients_that_ask(make_server):
    async with make_server() as server:
        async with GymClient(server.url) as plain:
            session = await plain.open("picture")
            assert session.observation.text == "look" and session.observation.images is None
        async with GymClient(server.url, capabilities=["images"]) as viewer:
            session = await viewer.open("picture")
            assert session.observation.images[0].data == b"\x89PNG fake"
            assert (await session.step("x")).observation.images[0].data == b"\x00" * 16


async def test_an_open_answered_timeout_leaves_no_session(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        with pytest.raises(ProtocolError) as info:
            await client.open("picture", options={"slow_reset": 0.3}, deadline_ms=50)
        assert info.value.code is ErrorCode.TIMEOUT
        await asyncio.sleep(0.5)
        assert server.stats()["sessions"] == 0


async def test_oversized_batch_and_action_are_refused_unexecuted(make_server):
    async with make_server(limits=Limits(max_batch=2, max_action_bytes=10)) as server, GymClient(server.url) as client:
        sessions = [await client.open("counting", seed=i) for i in range(3)]
        with pytest.raises(ProtocolError) as info:
            await client.step_batch([(s, "go") for s in sessions])
        assert info.value.code is ErrorCode.INVALID_ACTION
        with pytest.raises(ProtocolError) as info:
            await sessions[0].step("x" * 11)
        assert info.value.code is ErrorCode.INVALID_ACTION
        assert CountingEnv.executed == {}
        assert (await sessions[0].step("fits")).observation.text == "step 1: fits"


async def test_a_connection_that_never_says_hello_is_closed(make_server):
    async with make_server(limits=Limits(heartbeat_interval_ms=100)) as server:
        ws = await websockets.connect(server.url, subprotocols=["gymwire.v1+json"])
        await asyncio.sleep(0.4)
        assert server.stats()["connections"] == 0
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()


async def test_guess_answers_any_text_with_an_observation(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        session = await client.open("guess", split="test", index=3)
        for action in ("", "no digits", "9" * 5000, "-3", "Thought: 7? Action: 200"):
            result = await session.step(action)
            assert not result.terminated and result.observation.text
        assert (await session.step("Action: 15")).terminated


async def test_guess_show_range_narrows_with_each_hint(make_server):
    async with make_server() as server, GymClient(server.url) as client:
        options = {"low": 1, "high": 7, "show_range": True}
        async with client.session("guess", split="test", index=3, options=options) as env:
            # test/3 hides 1 in 1..7
            assert (await env.step("4")).observation.text == "4 is wrong. Go lower: it is from 1 to 3."
            assert (await env.step("2")).observation.text == "2 is wrong. Go lower: it is from 1 to 1."
            assert (await env.step("1")).terminated
