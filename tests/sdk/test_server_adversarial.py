"""Adversarial tests of the server runtime and the client: hostile traffic on loopback beside a
well-behaved connection, resource leaks over thousands of sessions, dropped and restarted servers.

Every test runs a real GymServer on 127.0.0.1 and talks to it over WebSockets: a raw peer (plain
`websockets`, both encodings) for what the SDK client would never send, the SDK client otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import multiprocessing
import os
import random
import tracemalloc
import warnings
from pathlib import Path
from collections import Counter
from typing import Any

import msgpack
import numpy
import pytest
import websockets
from gymwire.protocol import Codec, ErrorCode, Limits, Pong, ProtocolError, Step
from gymwire.protocol.messages import MAX_ID, MESSAGE_TYPES
from gymwire.sdk import Environment, Task
from gymwire.sdk import StepOutcome
from gymwire.sdk.client import Disconnected, GymClient
from gymwire.sdk.server import GymServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sdk_fault_envs import CountingEnv

ENCODINGS = ["msgpack", "json"]


class RawPeer:
    """A WebSocket peer that sends whatever it is given: maps, raw bytes or raw text."""

    def __init__(self, ws: Any, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding
        self.next_id = 1

    @classmethod
    async def connect(cls, url: str, encoding: str, hello: bool = True) -> RawPeer:
        ws = await websockets.connect(url, subprotocols=[f"gymwire.v1+{encoding}"], ping_interval=None, max_size=None)
        peer = cls(ws, encoding)
        if hello:
            welcome = await peer.request({"type": "hello", "version": "1.0", "client": {"name": "raw"}})
            assert welcome["type"] == "welcome", welcome
        return peer

    def fresh_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def encode(self, obj: Any) -> bytes | str:
        return msgpack.packb(obj, use_bin_type=True) if self.encoding == "msgpack" else json.dumps(obj)

    def decode(self, frame: bytes | str) -> dict[str, Any]:
        return msgpack.unpackb(frame, raw=False) if self.encoding == "msgpack" else json.loads(frame)

    async def send(self, obj: Any) -> None:
        await self.ws.send(obj if isinstance(obj, (bytes, str)) else self.encode(obj))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.decode(await asyncio.wait_for(self.ws.recv(), timeout))

    async def request(self, obj: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """Send a request (a fresh id unless it has one) and return its answer, skipping others."""
        obj = {"id": self.fresh_id(), **obj}
        await self.send(obj)
        while True:
            reply = await self.recv(timeout)
            if reply.get("id") == obj["id"]:
                return reply

    async def open(self, env: str = "counting", seed: int | None = None, **fields: Any) -> dict[str, Any]:
        task = {} if seed is None else {"task": {"seed": seed}}
        opened = await self.request({"type": "open", "env": env, **task, **fields})
        assert opened["type"] == "opened", opened
        return opened

    async def close(self) -> None:
        await self.ws.close()


async def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    """Poll a condition of the server's state (not a timing assertion: the bound is generous)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def quiet(server: GymServer) -> bool:
    return server.stats() == {"sessions": 0, "connections": 0, "inflight": 0}


def child_pids() -> set[int]:
    """Live (not zombie) processes whose parent is this process or one of its children."""
    me = os.getpid()
    parents: dict[int, int] = {}
    states: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        states[int(entry)] = fields[0]
        parents[int(entry)] = int(fields[1])
    children = {pid for pid, parent in parents.items() if parent == me}
    grandchildren = {pid for pid, parent in parents.items() if parent in children}
    return {pid for pid in children | grandchildren if states.get(pid) != "Z"}


def zombie_children() -> set[int]:
    me = os.getpid()
    zombies = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
                if fields[0] == "Z" and int(fields[1]) == me:
                    zombies.add(int(entry))
    return zombies


# ----------------------------------------------------------------------------- targeted findings


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_cancel_right_behind_its_request_still_gets_the_request_answered(make_server, encoding):
    # Both frames arrive in one read: the cancel reaches the request's task before it ran a line.
    async with make_server() as server:
        peer = await RawPeer.connect(server.url, encoding)
        opened = await peer.open(seed=1)
        step = {"type": "step", "id": 500, "session": opened["session"], "seq": 1, "action": "x"}
        cancel = {"type": "cancel", "id": 501, "target": 500}
        await peer.ws.send(peer.encode(step))
        await peer.ws.send(peer.encode(cancel))
        answers = {}
        for _ in range(2):
            reply = await peer.recv()
            answers[reply["id"]] = reply
        assert answers[501] == {"type": "cancel_ack", "id": 501, "target": 500, "found": True}
        assert answers[500]["type"] == "error" and answers[500]["name"] == "CANCELLED", answers
        assert server.stats()["inflight"] == 0
        # The cancelled step never ran: seq 1 is still the next one.
        result = await peer.request({"type": "step", "session": opened["session"], "seq": 1, "action": "y"})
        assert result["type"] == "step_result" and result["observation"]["text"] == "step 1: y"
        await peer.close()


async def test_a_batch_entry_whose_seq_was_a_reset_does_not_break_the_batch(make_server):
    async with make_server() as server:
        peer = await RawPeer.connect(server.url, "msgpack")
        a = await peer.open(seed=1)
        b = await peer.open(seed=2)
        reset = await peer.request({"type": "reset", "session": a["session"], "seq": 1})
        assert reset["type"] == "reset_result"
        batch = await peer.request(
            {
                "type": "step_batch",
                "steps": [
                    {"session": a["session"], "seq": 1, "action": "replay of a reset?"},
                    {"session": b["session"], "seq": 1, "action": "fine"},
                ],
            }
        )
        assert batch["type"] == "step_batch_result", batch
        first, second = batch["results"]
        assert first["type"] == "error" and first["name"] == "BAD_SEQUENCE" and first["session"] == a["session"]
        assert second["type"] == "step_result" and second["observation"]["text"] == "step 1: fine"
        # The same mix-up on a single step is refused the same way, not answered with a reset_result.
        single = await peer.request({"type": "step", "session": a["session"], "seq": 1, "action": "x"})
        assert single["type"] == "error" and single["name"] == "BAD_SEQUENCE", single
        step = await peer.request({"type": "step", "session": a["session"], "seq": 2, "action": "x"})
        again = await peer.request({"type": "reset", "session": a["session"], "seq": 2})
        assert step["type"] == "step_result" and again["name"] == "BAD_SEQUENCE", again
        await peer.close()


class SlowStartEnv(Environment):
    """Takes a while to construct, as environments that load data do."""

    name = "slow-start"
    built = 0
    closed = 0

    def __init__(self) -> None:
        import time

        time.sleep(0.3)
        SlowStartEnv.built += 1

    def reset(self, task: Task) -> str:
        return "ready"

    def step(self, action: str) -> StepOutcome:
        return StepOutcome("ok")

    def close(self) -> None:
        SlowStartEnv.closed += 1


async def test_an_open_whose_connection_died_meanwhile_leaves_no_session(make_server):
    # Nobody can ever learn that session's id or token, so it must not wait for idle_timeout_ms.
    SlowStartEnv.built = SlowStartEnv.closed = 0
    limits = Limits(resume_grace_ms=100, idle_timeout_ms=600_000)
    async with make_server(envs=[SlowStartEnv], limits=limits) as server:
        peer = await RawPeer.connect(server.url, "msgpack")
        await peer.send({"type": "open", "id": 7, "env": "slow-start"})
        await asyncio.sleep(0.1)
        peer.ws.transport.abort()
        assert await wait_until(lambda: SlowStartEnv.built == 1)
        assert await wait_until(lambda: quiet(server), timeout=2.0), server.stats()
        assert await wait_until(lambda: SlowStartEnv.closed == 1, timeout=2.0)


async def test_a_peer_that_chatters_without_hello_is_closed(make_server):
    # GW-HANDSHAKE-7: the hello deadline counts from the upgrade, not from the last frame heard.
    async with make_server(limits=Limits(heartbeat_interval_ms=100)) as server:
        peer = await RawPeer.connect(server.url, "json", hello=False)
        closed = False
        for _ in range(40):
            try:
                await peer.send({"type": "list_envs", "id": 1})
                assert (await peer.recv())["name"] == "HANDSHAKE_REQUIRED"
            except websockets.ConnectionClosed:
                closed = True
                break
            await asyncio.sleep(0.025)
        assert closed, "a peer that never said hello kept its connection for 1 s"
        assert await wait_until(lambda: server.stats()["connections"] == 0)


async def test_a_ping_before_hello_is_answered(make_server):
    # GW-HANDSHAKE-2: every request before the welcome gets HANDSHAKE_REQUIRED with its id.
    async with make_server() as server:
        peer = await RawPeer.connect(server.url, "msgpack", hello=False)
        await peer.send({"type": "ping", "id": 42})
        reply = await peer.recv(timeout=2.0)
        assert reply["type"] == "error" and reply["name"] == "HANDSHAKE_REQUIRED" and reply["id"] == 42
        await peer.close()


async def test_batch_results_carry_images_only_for_clients_that_ask(make_server):
    # GW-STEP-8 holds for observations inside a step_batch_result too.
    async with make_server() as server, GymClient(server.url) as plain:
        session = await plain.open("picture")
        (result,) = await plain.step_batch([(session, "x")])
        assert result.observation.text == "again" and result.observation.images is None


class NanRewardEnv(Environment):
    name = "nan-reward"

    def reset(self, task: Task) -> str:
        return "ready"

    def step(self, action: str) -> StepOutcome:
        return StepOutcome("weird", reward=float(action))


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_non_finite_reward_is_a_typed_error_not_a_hang(make_server, encoding):
    # JSON has no NaN (GW-FRAME-9): it used to travel as null, the client could not decode the
    # reply and the step waited forever.
    async with make_server(envs=[NanRewardEnv]) as server, GymClient(server.url, encoding=encoding) as client:
        for bad in ("nan", "inf", "-inf"):
            session = await client.open("nan-reward")
            with pytest.raises(ProtocolError) as info:
                await asyncio.wait_for(session.step(bad), 5)
            assert info.value.code is ErrorCode.ENV_CRASHED and "finite" in info.value.message
        fine = await client.open("nan-reward")
        assert (await fine.step("0.5")).reward == 0.5


class OddOutcomeEnv(Environment):
    """Steps whose outcome no answer can hold as it is: the action says which part is wrong."""

    name = "odd-outcome"
    inline = True
    steps = 0

    def reset(self, task: Task) -> str:
        return "ready"

    def step(self, action: str) -> StepOutcome:
        OddOutcomeEnv.steps += 1
        odd = {
            "success-array": {"success": numpy.array([True, False]), "terminated": True},
            "success-text": {"success": "no", "terminated": True},
            "terminated-array": {"terminated": numpy.array([1, 0])},
            "info-int-keys": {"info": {1: "a"}},
            "info-list": {"info": ["a"]},
        }[action]
        return StepOutcome("odd", **odd)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("odd", ["success-array", "success-text", "terminated-array", "info-int-keys", "info-list"])
async def test_an_outcome_no_answer_can_hold_crashes_the_session_once(make_server, encoding, odd):
    # Checked before the answer is recorded: ENV_CRASHED, and a re-sent seq does not run the step
    # again (success's bool() used to raise after the step ran and before its answer was kept:
    # INTERNAL, retryable, and the retry ran the environment a second time).
    async with make_server(envs=[OddOutcomeEnv]) as server, GymClient(server.url, encoding=encoding) as client:
        session = await client.open("odd-outcome")
        OddOutcomeEnv.steps = 0
        for _ in range(2):
            with pytest.raises(ProtocolError) as info:
                await client.request(Step(id=client.next_id(), session=session.id, seq=1, action=odd))
            assert info.value.code is ErrorCode.ENV_CRASHED
        assert OddOutcomeEnv.steps == 1


async def test_client_fails_a_request_whose_answer_it_cannot_decode(make_server):
    # A reply the client cannot read but whose id it can must fail that request, not leave it hanging.
    async with make_server() as server, GymClient(server.url, encoding="json") as client:
        server_conn = next(iter(server.connections))
        request = Step(id=client.next_id(), session="nope", seq=1, action="x")
        original_send = server_conn.transport.ws.send

        async def corrupt(frame: Any) -> None:
            await original_send(frame.replace('"retryable":false', '"retryable":"no"'))

        server_conn.transport.ws.send = corrupt
        with pytest.raises(ProtocolError) as info:
            await asyncio.wait_for(client.request(request), 5)
        assert info.value.code is ErrorCode.BAD_FRAME and info.value.request_id == request.id
        server_conn.transport.ws.send = original_send
        assert client.sessions == {} and (await client.list_envs())


async def test_a_reset_refused_invalid_task_leaves_the_session_task_as_it_was(make_server):
    # GW-SESSION-2: the refused task must not become the one a later plain reset replays.
    async with make_server() as server, GymClient(server.url) as client:
        session = await client.open("strict", split="test", index=1)
        with pytest.raises(ProtocolError) as info:
            await session.reset(split="test", index=99)
        assert info.value.code is ErrorCode.INVALID_TASK
        assert (await session.reset()).text == "test 1"


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_invalid_utf8_in_a_text_frame_is_bad_frame_and_the_connection_lives(make_server, encoding):
    # GW-FRAME-3 names invalid UTF-8 among the frames answered BAD_FRAME on an open connection; the
    # reference server does so for text frames too, rather than RFC 6455's 1007 close.
    async with make_server() as server:
        peer = await RawPeer.connect(server.url, encoding)
        await peer.ws.send(b'{"type": "ping", "id": 3, "x": "\xff"}', text=True)
        reply = await peer.recv()
        assert reply["type"] == "error" and reply["name"] == "BAD_FRAME" and "id" not in reply, reply
        if encoding == "msgpack":
            await peer.ws.send('{"type": "ping", "id": 4}')  # JSON text on a msgpack connection
            reply = await peer.recv()
            assert reply["name"] == "BAD_FRAME" and "it looks like JSON" in reply["message"], reply
        await peer.ws.send(b"\x81\xa4type\xa4ping", text=False)  # a map without id: still one answer
        assert (await peer.recv())["name"] == "BAD_FRAME"
        assert (await peer.request({"type": "ping"}))["type"] == "pong"
        await peer.close()


class UnencodableInfoEnv(Environment):
    name = "unencodable"

    def reset(self, task: Task) -> str:
        return "ready"

    def step(self, action: str) -> StepOutcome:
        return StepOutcome("odd", info={"handle": object()})


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_an_unencodable_reply_is_an_internal_error_as_the_table_says(make_server, encoding):
    # GW-ERROR-1 (INTERNAL is retryable) and GW-ERROR-3 (an error about a session names it).
    async with make_server(envs=[UnencodableInfoEnv]) as server:
        peer = await RawPeer.connect(server.url, encoding)
        opened = await peer.open("unencodable")
        reply = await peer.request({"type": "step", "session": opened["session"], "seq": 1, "action": "x"})
        assert (reply["type"], reply["name"], reply["code"]) == ("error", "INTERNAL", 99), reply
        assert reply["retryable"] is True and reply["session"] == opened["session"], reply
        await peer.close()


async def test_requests_of_a_session_run_in_arrival_order_whatever_their_kind(make_server):
    # GW-STEP-1. A batch entry starts a task hop later than a single step: the step sent right
    # behind a batch used to overtake it and get BAD_SEQUENCE.
    async with make_server() as server:
        peer = await RawPeer.connect(server.url, "msgpack")
        a, b = (await peer.open(seed=1))["session"], (await peer.open(seed=2))["session"]
        frames = [
            {"type": "step_batch", "id": 50, "steps": [{"session": a, "seq": 1, "action": "a1"}, {"session": b, "seq": 1, "action": "b1"}]},
            {"type": "step", "id": 51, "session": b, "seq": 2, "action": "b2"},
            {"type": "reset", "id": 52, "session": a, "seq": 2},
            {"type": "step_batch", "id": 53, "steps": [{"session": a, "seq": 3, "action": "a3"}, {"session": a, "seq": 4, "action": "a4"}]},
            {"type": "step", "id": 54, "session": a, "seq": 5, "action": "a5"},
            {"type": "step", "id": 56, "session": b, "seq": 3, "action": "never"},
            {"type": "cancel", "id": 55, "target": 56},  # a cancelled request gives its place up
            {"type": "step", "id": 57, "session": b, "seq": 3, "action": "b3"},
        ]
        for frame in frames:
            await peer.send(frame)
        replies = {}
        while len(replies) < len(frames):
            reply = await peer.recv()
            replies[reply["id"]] = reply
        texts = {
            rid: [r.get("observation", {}).get("text", r.get("name")) for r in reply.get("results", [reply])]
            for rid, reply in replies.items()
            if rid != 55
        }
        assert texts == {
            50: ["step 1: a1", "step 1: b1"], 51: ["step 2: b2"], 52: ["counting 1"],
            53: ["step 1: a3", "step 2: a4"], 54: ["step 3: a5"], 56: ["CANCELLED"], 57: ["step 3: b3"],
        }
        assert CountingEnv.executed == {1: 4, 2: 3}
        await peer.close()


class BigObservationEnv(Environment):
    name = "big"
    inline = True

    def reset(self, task: Task) -> str:
        return "ready"

    def step(self, action: str) -> StepOutcome:
        return StepOutcome("o" * 500_000)


async def test_a_half_open_peer_with_unread_replies_is_still_closed(make_server):
    # A network partition: the peer neither reads nor writes, and the server has megabytes queued
    # for it. The heartbeat's ping waits behind them; it must not wait forever (GW-HEARTBEAT-3).
    limits = Limits(heartbeat_interval_ms=100, resume_grace_ms=100)
    async with make_server(envs=[BigObservationEnv], limits=limits) as server:
        peer = await RawPeer.connect(server.url, "msgpack")
        opened = await peer.open("big")
        peer.ws.transport.pause_reading()
        for seq in range(1, 41):
            await peer.send({"type": "step", "id": 100 + seq, "session": opened["session"], "seq": seq, "action": "x"})
        assert await wait_until(lambda: server.stats()["connections"] == 0, timeout=5), server.stats()
        assert await wait_until(lambda: quiet(server), timeout=5), server.stats()
        peer.ws.transport.abort()


async def test_error_messages_do_not_echo_a_long_action(make_server):
    # GW-ERROR-8: the environment's exception quotes the 60 kB action; the error must not.
    async with make_server() as server, GymClient(server.url) as client:
        session = await client.open("counting")
        with pytest.raises(ProtocolError) as info:
            await session.step("sleep " + "x" * 60_000)
        assert info.value.code is ErrorCode.ENV_CRASHED and len(info.value.message) < 1000


# ----------------------------------------------------------------------------- client robustness


async def test_a_restarted_server_fails_the_lost_sessions_requests_with_a_typed_error():
    first = await GymServer([CountingEnv], port=0).start()
    port = first.port
    async with GymClient(first.url, reconnect_attempts=20) as client:
        session = await client.open("counting", seed=1)
        await session.step("one")
        pending = asyncio.ensure_future(session.step("sleep 0.5"))
        await asyncio.sleep(0.1)
        await first.stop(drain_timeout=0)
        second = await GymServer([CountingEnv], port=port).start()
        try:
            # The stopping server answered the step it could not finish (GW-DRAIN-6).
            with pytest.raises(ProtocolError) as info:
                await asyncio.wait_for(pending, 10)
            assert info.value.code is ErrorCode.DRAINING and info.value.retryable
            with pytest.raises(ProtocolError) as again:
                await asyncio.wait_for(session.step("after"), 5)
            assert again.value.code is ErrorCode.UNKNOWN_SESSION
            # The connection itself works: a new session on the new server plays from seq 1.
            fresh = await asyncio.wait_for(client.open("counting", seed=2), 5)
            assert (await fresh.step("x")).observation.text == "step 1: x"
            assert not client.draining  # the old server's drain notice does not stick to the new one
        finally:
            await second.stop(drain_timeout=0)


@pytest.mark.parametrize("attempts", [0, 2])
async def test_an_exhausted_reconnect_budget_fails_every_request_quickly(make_server, attempts):
    async with make_server() as server:
        client = await GymClient(server.url, reconnect_attempts=attempts).connect()
        # A seed no exactly-once test counts: the sleeping step outlives this test in its thread.
        session = await client.open("counting", seed=901)
        pending = asyncio.ensure_future(session.step("sleep 0.3"))
        await asyncio.sleep(0.05)
    # The server is gone for good: the in-flight step (answered DRAINING as the server stopped,
    # GW-DRAIN-6) and every later request fail, none hangs.
    with pytest.raises(ProtocolError) as stopped:
        await asyncio.wait_for(pending, 5)
    assert stopped.value.code is ErrorCode.DRAINING
    with pytest.raises(Disconnected):
        await asyncio.wait_for(session.step("later"), 5)
    with pytest.raises(Disconnected):
        await asyncio.wait_for(client.open("counting"), 5)
    await asyncio.wait_for(client.close(), 5)


async def test_requests_sent_while_sessions_are_being_resumed_are_not_refused(make_server):
    # After a reconnect, a step on a session that is not resumed yet must wait for its resume.
    async with make_server() as server, GymClient(server.url) as client:
        sessions = [await client.open("counting", seed=100 + i) for i in range(3)]
        original = client._resume_all
        racing: list[asyncio.Future[Any]] = []

        async def resume_while_the_user_steps(*args: Any) -> None:
            # What user code does at any time: step a session that is not resumed yet.
            racing.append(asyncio.ensure_future(sessions[-1].step("racing")))
            await asyncio.sleep(0.05)
            await original(*args)

        client._resume_all = resume_while_the_user_steps
        client._ws.transport.abort()
        result = await asyncio.wait_for(sessions[0].step("go"), 10)
        assert result.observation.text == "step 1: go"
        assert (await asyncio.wait_for(racing[0], 10)).observation.text == "step 1: racing"
        assert {seed: CountingEnv.executed.get(seed) for seed in (100, 101, 102)} == {100: 1, 101: None, 102: 1}


async def test_a_drop_during_the_resume_does_not_strand_the_client(make_server):
    async with make_server() as server, GymClient(server.url, open_timeout=2) as client:
        sessions = [await client.open("counting", seed=i) for i in range(5)]
        original = client._resume_all
        drops = 0

        async def drop_then_resume(*args: Any) -> None:
            nonlocal drops
            if drops < 2:
                drops += 1
                client._ws.transport.abort()  # the new connection dies before its resumes are done
            await original(*args)

        client._resume_all = drop_then_resume
        client._ws.transport.abort()
        results = await asyncio.wait_for(asyncio.gather(*(s.step("go") for s in sessions)), 15)
        assert drops == 2 and [r.observation.text for r in results] == ["step 1: go"] * 5
        assert all(CountingEnv.executed[i] == 1 for i in range(5))


async def test_concurrent_steps_while_the_connection_drops_repeatedly_run_exactly_once(make_server):
    rng = random.Random(7)
    async with make_server() as server, GymClient(server.url, reconnect_attempts=50) as client:
        sessions = [await client.open("counting", seed=i) for i in range(16)]
        steps_per_session = 25
        # Drop k has happened before any session takes step 5k: drops interleave with the episodes
        # however fast the steps run.
        dropped = [asyncio.Event() for _ in range(steps_per_session // 5)]

        async def play(index: int, session: Any) -> list[str]:
            texts = []
            for n in range(1, steps_per_session + 1):
                if n % 5 == 0:
                    await dropped[n // 5 - 1].wait()
                action = f"sleep 0.0{rng.randint(0, 3)}" if n % 5 == 0 else f"a{n}"
                texts.append((await session.step(action)).observation.text)
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.random() / 100)
            return texts

        async def saboteur(stop: asyncio.Event) -> int:
            drops = 0
            while not stop.is_set():
                await asyncio.sleep(rng.uniform(0.02, 0.08))
                if client._ws is not None:
                    client._ws.transport.abort()
                    drops += 1
                    if drops <= len(dropped):
                        dropped[drops - 1].set()
            return drops

        stop = asyncio.Event()
        sabotage = asyncio.ensure_future(saboteur(stop))
        played = await asyncio.wait_for(asyncio.gather(*(play(i, s) for i, s in enumerate(sessions))), 60)
        stop.set()
        drops = await sabotage
        assert drops >= 5
        for texts in played:
            assert [t.split(":")[0] for t in texts] == [f"step {n}" for n in range(1, steps_per_session + 1)]
        assert CountingEnv.executed == {i: steps_per_session for i in range(16)}
        assert server.stats()["sessions"] == 16


# ----------------------------------------------------------------------------- hostile traffic

HOSTILE_LIMITS = Limits(
    max_frame_bytes=4096, max_action_bytes=1000, resume_grace_ms=100, idle_timeout_ms=60_000, max_inflight=64
)
# Placeholders the program names and the run resolves: the hostile peer's own sessions and
# tokens, and the well-behaved connection's session (which the hostile peer must not reach).
REFS = ["<own0>", "<own1>", "<good>", "<token0>", "<token1>"]

# Mostly valid values (so requests get past the decoder and meet the state machine), some
# hostile ones; few distinct ids, so that cancels find their targets and ids collide in flight.
def _mostly(valid: Any, hostile: Any) -> Any:
    return st.one_of(valid, valid, valid, hostile)


request_ids = _mostly(st.integers(0, 6), st.sampled_from([MAX_ID, MAX_ID + 1, 2**63, -1, 1.0, "7", True]))
seqs = _mostly(st.integers(0, 3), st.sampled_from([-1, 7, 2**53, 2**63 - 1, "1", 1.5]))
session_refs = _mostly(st.sampled_from(REFS[:2]), st.one_of(st.just("<good>"), st.text(max_size=8), st.just("s" * 200), st.just(3)))
actions = _mostly(st.text(max_size=16), st.sampled_from(["sleep 0.02", "sleep 0.05", "x" * 1001, 7]))
deadlines = _mostly(st.none(), st.sampled_from([1, 5, 30, 0, -1, 10**12]))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8), st.binary(max_size=8),
)
json_like = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


structured = st.one_of(
    st.builds(lambda i, s, q, a, d: _drop_none(type="step", id=i, session=s, seq=q, action=a, deadline_ms=d),
              request_ids, session_refs, seqs, actions, deadlines),
    st.builds(lambda i, s, q, t: _drop_none(type="reset", id=i, session=s, seq=q, task=t),
              request_ids, session_refs, seqs, st.one_of(st.none(), st.just({"seed": 3}), st.just({"split": "x", "index": 1}))),
    st.builds(lambda i, s: {"type": "close", "id": i, "session": s}, request_ids, session_refs),
    st.builds(lambda i, t: {"type": "cancel", "id": i, "target": t}, request_ids, request_ids),
    st.builds(lambda i, s, t: {"type": "resume", "id": i, "session": s, "resume_token": t},
              request_ids, session_refs, st.one_of(st.sampled_from(REFS[3:]), st.text(max_size=40))),
    st.builds(lambda i, e, o, m, r, d: _drop_none(type="open", id=i, env=e, options=o, max_turns=m, reset=r, deadline_ms=d),
              request_ids, st.sampled_from(["counting", "guess", "async-sleep", "nope", ""]),
              st.one_of(st.none(), st.dictionaries(st.sampled_from(["low", "high", "x"]), scalars, max_size=2)),
              st.one_of(st.none(), st.integers(-1, 3)), st.one_of(st.none(), st.booleans()), deadlines),
    st.builds(lambda i, steps, d: _drop_none(type="step_batch", id=i, steps=steps, deadline_ms=d), request_ids,
              st.lists(st.fixed_dictionaries({"session": session_refs, "seq": seqs, "action": actions}), max_size=4), deadlines),
    st.builds(lambda i, k: {"type": k, "id": i}, request_ids, st.sampled_from(["ping", "pong", "list_envs", "hello"])),
    st.builds(lambda i, e: {"type": "describe_env", "id": i, "env": e}, request_ids, st.sampled_from(["guess", "nope", 5])),
)
random_maps = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    st.one_of(st.sampled_from(sorted(MESSAGE_TYPES)), st.text(max_size=6), st.integers(0, 3), st.none()),
    st.dictionaries(st.sampled_from(["id", "session", "seq", "action", "env", "target", "steps", "task", "kind"]) | st.text(max_size=4), json_like, max_size=5),
)


def _pipeline(session: str, kinds: list[str], first_seq: int, first_id: int, cancel_every: int) -> tuple[str, list[Any]]:
    """Requests of one session sent back to back, some cancelled right behind them."""
    burst: list[Any] = []
    for k, kind in enumerate(kinds):
        burst.append({"type": kind, "id": first_id + k, "session": session, "seq": first_seq + k, "action": f"p{k}"})
        if cancel_every and k % cancel_every == 0:
            burst.append({"type": "cancel", "id": first_id + len(kinds) + k, "target": first_id + k})
    return ("many", burst)


pipelines = st.builds(
    _pipeline, st.sampled_from(REFS[:2]), st.lists(st.sampled_from(["step", "step", "reset"]), min_size=1, max_size=6),
    st.integers(0, 3), st.integers(0, 6), st.integers(0, 3),
)
frames = st.one_of(
    pipelines, structured, structured, random_maps,
    st.binary(max_size=48).map(lambda b: ("raw", b)),
    st.text(max_size=48).map(lambda t: ("raw", t)),
    st.integers(4097, 8000).map(lambda n: {"type": "ping", "id": 1, "pad": "p" * n}),  # FRAME_TOO_LARGE
)


def _resolve(value: Any, refs: dict[str, str]) -> Any:
    if isinstance(value, str):
        return refs.get(value, value)
    if isinstance(value, dict):
        return {key: _resolve(item, refs) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, refs) for item in value]
    return value


def _expected_answer(codec: Codec, wire: bytes | str) -> tuple[bool, int | None]:
    """Whether the server must answer this frame, and with which id (None: an id-less error)."""
    try:
        message = codec.decode(wire)
    except ProtocolError as exc:
        return True, exc.request_id
    if isinstance(message, Pong):
        return False, None
    return True, getattr(message, "id", None)


async def _hostile_example(encoding: str, program: list[Any]) -> None:
    server = await GymServer([CountingEnv, AsyncEchoEnv], port=0, limits=HOSTILE_LIMITS).start()
    stepping: asyncio.Future[list[str]] | None = None
    try:
        good_client = await GymClient(server.url, reconnect_attempts=0).connect()
        good_ws = good_client._ws
        good = await good_client.open("counting", seed=10**6, max_turns=10**6)
        hostile = await RawPeer.connect(server.url, encoding)
        own = [await hostile.open("counting", seed=i) for i in range(2)]
        hostile_conn = next(c for c in server.connections if c.transport.ws.remote_address[1] == hostile.ws.local_address[1])
        refs = {"<own0>": own[0]["session"], "<own1>": own[1]["session"], "<good>": good.id,
                "<token0>": own[0]["resume_token"], "<token1>": own[1]["resume_token"]}
        oracle = Codec(encoding, max_frame_bytes=HOSTILE_LIMITS.max_frame_bytes)

        stop = asyncio.Event()

        async def behave() -> list[str]:
            texts = []
            while not stop.is_set() or len(texts) < 3:
                texts.append((await good.step(f"go {len(texts) + 1}")).observation.text)
            return texts

        stepping = asyncio.ensure_future(behave())
        expected: Counter[int | None] = Counter()
        flat = [frame for entry in program for frame in (entry[1] if isinstance(entry, tuple) and entry[0] == "many" else [entry])]
        for item in flat:
            if isinstance(item, tuple):
                wire = item[1]
            else:
                obj = _resolve(item, refs)
                wire = (
                    msgpack.packb(obj, use_bin_type=True)
                    if encoding == "msgpack"
                    else json.dumps(obj, default=lambda raw: raw.decode("latin-1"))
                )
            must_answer, answer_id = _expected_answer(oracle, wire)
            if must_answer:
                expected[answer_id] += 1
            await hostile.ws.send(wire)
        answers: Counter[int | None] = Counter()
        with contextlib.suppress(asyncio.TimeoutError):
            while answers != expected:
                reply = await hostile.recv(timeout=3.0)
                answers[reply.get("id")] += 1
                if reply.get("type") == "error":
                    code = ErrorCode.from_code(reply["code"])
                    assert (code.name, code.retryable) == (reply["name"], reply["retryable"]), reply  # GW-ERROR-1
                    assert reply["name"] != "INTERNAL", reply  # no request of this program should hit a server bug
                    if code is ErrorCode.CAPACITY:
                        assert reply.get("retry_after_ms"), reply  # GW-ERROR-4
        assert answers == expected, f"answers by id {answers} != frames by id {expected}"
        stop.set()
        texts = await asyncio.wait_for(stepping, 10)
        # The well-behaved connection never noticed: same socket, every step exactly right.
        assert good_client._ws is good_ws and server.stats()["connections"] == 2
        assert texts == [f"step {n}: go {n}" for n in range(1, len(texts) + 1)]
        assert CountingEnv.executed[10**6] == len(texts)
        await hostile.close()
        await good_client.close()
        assert await wait_until(lambda: quiet(server), timeout=5.0), server.stats()
        assert await wait_until(lambda: not hostile_conn.inflight, timeout=5.0), hostile_conn.inflight
        assert server._reaper is not None and not server._reaper.done()
    finally:
        if stepping is not None and not stepping.done():
            stepping.cancel()
        await server.stop(drain_timeout=0)
        CountingEnv.executed.clear()


class AsyncEchoEnv(Environment):
    """Async, so hostile steps also run on the event loop itself."""

    name = "async-sleep"

    async def reset(self, task: Task) -> str:
        return "ready"

    async def step(self, action: str) -> StepOutcome:
        await asyncio.sleep(0.001)
        return StepOutcome(f"echo {action[:8]}")


@pytest.mark.parametrize("encoding", ENCODINGS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(program=st.lists(frames, min_size=5, max_size=30))
def test_hostile_traffic_is_answered_frame_by_frame_and_harms_no_one_else(encoding, program):
    asyncio.run(_hostile_example(encoding, program))


# ----------------------------------------------------------------------------- resource leaks


class TickEnv(Environment):
    """Microsecond steps on the event loop: the runtime's own overhead is all that is measured."""

    name = "tick"
    inline = True
    closed = 0

    def reset(self, task: Task) -> str:
        self.n = 0
        return "t"

    def step(self, action: str) -> StepOutcome:
        self.n += 1
        return StepOutcome(f"{self.n}", reward=1.0, terminated=action == "end")

    def close(self) -> None:
        TickEnv.closed += 1


def _traced_kib() -> float:
    """Memory allocated by gymwire's and websockets' code and still held. Other threads left running
    by earlier tests in this process (a browser driver, a JVM gateway) allocate too: not counted."""
    import websockets

    import gymwire.protocol
    import gymwire.sdk

    gc.collect()
    roots = [Path(module.__file__).parent for module in (gymwire.protocol, gymwire.sdk, websockets)]
    filters = [tracemalloc.Filter(True, f"{root}/*") for root in roots]
    return sum(stat.size for stat in tracemalloc.take_snapshot().filter_traces(filters).statistics("filename")) / 1024


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _alive(*classes: type) -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch's deprecated module attributes warns
        warnings.simplefilter("ignore", FutureWarning)
        return sum(isinstance(obj, classes) for obj in gc.get_objects())


async def test_thousands_of_sessions_leave_nothing_behind(make_server):
    from gymwire.protocol import SessionMachine
    from gymwire.sdk.client import ClientSession
    from gymwire.sdk.runners import InlineRunner
    from gymwire.sdk.serving.scheduling import Inflight
    from gymwire.sdk.serving.sessions import ServerSession

    TickEnv.closed = 0
    runtime_objects = (ServerSession, SessionMachine, InlineRunner, Inflight, ClientSession, TickEnv)

    async def churn(client: GymClient, sessions: int) -> None:
        async def one() -> None:
            session = await client.open("tick")
            assert (await session.step("go")).observation.text == "1"
            assert (await session.step("end")).terminated
            await session.close()

        for _ in range(sessions // 50):
            await asyncio.gather(*(one() for _ in range(50)))

    async with make_server(envs=[TickEnv]) as server, GymClient(server.url) as client:
        await churn(client, 500)  # warm caches, the thread pool and lazy imports first
        rss_before = _rss_kib()
        await churn(client, 2000)
        rss_after = _rss_kib()
        (conn,) = server.connections
        assert server.sessions == {} and conn.sessions == set() and conn.inflight == {}
        assert client.sessions == {} and client._pending == {}
        assert TickEnv.closed == 2500
        # Exact: not one session's server or client objects outlives it.
        assert _alive(*runtime_objects) == 0
        # (tracemalloc would make this loop ten times slower; the dropped-connection test uses it.)
        assert rss_after - rss_before < 4 * 1024, f"RSS grew {rss_after - rss_before} KiB over 2000 sessions"


async def test_connections_dropped_mid_step_leave_nothing_behind(make_server):
    limits = Limits(resume_grace_ms=50, idle_timeout_ms=60_000)

    async def drop_mid_step(server: GymServer, n: int) -> None:
        peer = await RawPeer.connect(server.url, ENCODINGS[n % 2])
        opened = await peer.open(seed=n)
        await peer.send({"type": "step", "id": 90, "session": opened["session"], "seq": 1, "action": "sleep 0.01"})
        await peer.send({"type": "step", "id": 91, "session": opened["session"], "seq": 2, "action": "queued"})
        peer.ws.transport.abort()

    async with make_server(limits=limits) as server:
        for n in range(20):  # warm up
            await drop_mid_step(server, n)
        assert await wait_until(lambda: quiet(server), timeout=10)
        tracemalloc.start()
        try:
            before = _traced_kib()
            for batch in range(10):
                await asyncio.gather(*(drop_mid_step(server, 100 + batch * 20 + n) for n in range(20)))
            assert await wait_until(lambda: quiet(server), timeout=10), server.stats()
            await asyncio.sleep(0.05)  # steps still sleeping in threads finish and are released
            after = _traced_kib()
        finally:
            tracemalloc.stop()
        assert CountingEnv.closed == CountingEnv.instances == 220
        assert after - before < 200, f"traced memory grew {after - before:.0f} KiB over 200 dropped connections"


async def test_process_isolation_leaves_no_child_processes(make_server):
    limits = Limits(resume_grace_ms=50)
    async with make_server(isolation="process", limits=limits) as server:
        async with GymClient(server.url) as client:
            warm = await client.open("faulty")  # starts the forkserver, which stays (one process)
            await warm.close()
            baseline = child_pids()
            # Zombies of other tests' processes (a browser that died with its server thread) are not ours.
            zombies_before = zombie_children()
            sessions = [await client.open("faulty") for _ in range(6)]
            pid_list = [(await s.step("who")).info["pid"] for s in sessions]
            pids = set(pid_list)
            assert len(pids) == 6 and pids <= child_pids()
            for session in sessions[:3]:
                await session.close()
            assert not child_pids() & set(pid_list[:3])  # close kills and reaps at once
            assert set(pid_list[3:]) <= child_pids()
            # A connection that dies with a step in flight: its sessions are reaped, children too.
            client._ws.transport.abort()
            client.reconnect_attempts = 0
        assert await wait_until(lambda: server.stats()["sessions"] == 0, timeout=5), server.stats()
        assert await wait_until(lambda: not (child_pids() & pids), timeout=5), child_pids() & pids
        # Sessions still open when the server stops, one of them hung in a step, and one still opening.
        async with GymClient(server.url) as client:
            left = [await client.open("faulty") for _ in range(2)]
            pids = {(await s.step("who")).info["pid"] for s in left}
            hung = asyncio.ensure_future(left[0].step("hang 30"))
            opening = asyncio.ensure_future(client.open("faulty"))
            await asyncio.sleep(0.05)
            await server.stop(drain_timeout=0)
            hung.cancel()
            opening.cancel()
    assert await wait_until(lambda: child_pids() <= baseline, timeout=10), child_pids() - baseline
    assert not (child_pids() & pids) and zombie_children() <= zombies_before
    assert not [child for child in multiprocessing.active_children() if child.pid in pids]


async def test_a_process_runner_closed_after_its_executor_shut_down_still_kills_its_child():
    # What a session destroyed during server.stop() meets: the executor is already shut down.
    from concurrent.futures import ThreadPoolExecutor

    from gymwire.sdk.runners import ProcessRunner
    from sdk_fault_envs import FaultyEnv

    zombies_before = zombie_children()
    executor = ThreadPoolExecutor(max_workers=2)
    runner = ProcessRunner(FaultyEnv, executor)
    assert (await runner.reset(Task())) == "ready"
    pid = runner.process.pid
    executor.shutdown(wait=True)
    with contextlib.suppress(RuntimeError):
        await runner.close()
    assert pid not in child_pids() and zombie_children() <= zombies_before


async def test_the_client_keeps_within_max_inflight(make_server):
    # GW-LIMIT-6: more concurrent steps than max_inflight wait in the client instead of being
    # refused with CAPACITY by the server.
    async with make_server(limits=Limits(max_inflight=4)) as server, GymClient(server.url) as client:
        sessions = [await client.open("counting", seed=200 + i) for i in range(12)]
        results = await asyncio.gather(*(s.step("sleep 0.02") for s in sessions))
        assert [r.observation.text for r in results] == ["step 1: sleep 0.02"] * 12


async def test_inflight_slots_wait_in_order_and_a_cancelled_waiter_loses_no_slot():
    from gymwire.sdk.client import InflightSlots

    slots = InflightSlots(2)
    assert slots.take_now() and slots.take_now() and not slots.take_now()
    order: list[str] = []

    async def wait(name: str) -> None:
        await slots.take()
        order.append(name)

    first, gone, third = (asyncio.ensure_future(wait(name)) for name in ("first", "gone", "third"))
    await asyncio.sleep(0)
    gone.cancel()  # gives up while waiting: its place goes, no slot with it
    slots.release()
    await asyncio.sleep(0)
    assert order == ["first"] and slots.free == 0
    slots.release()
    third.cancel()  # handed the slot, cancelled before it ran: the slot comes back
    await asyncio.gather(first, third, return_exceptions=True)
    assert gone.cancelled() and third.cancelled() and order == ["first"]
    assert slots.free == 1 and slots.take_now() and not slots.take_now()


async def test_a_timeout_at_the_per_connection_cap_does_not_break_the_session(make_server):
    # After TIMEOUT the client re-syncs with a resume on its own connection; at the cap that
    # resume was refused CAPACITY, as if it added a session.
    limits = Limits(max_sessions_per_connection=1)
    async with make_server(limits=limits) as server, GymClient(server.url) as client:
        session = await client.open("counting", seed=300)
        with pytest.raises(ProtocolError) as info:
            await session.step("sleep 0.2", deadline_ms=20)
        assert info.value.code is ErrorCode.TIMEOUT
        await asyncio.sleep(0.3)
        assert (await session.step("next")).observation.text == "step 2: next"


async def test_the_live_sessions_gauge_does_not_go_negative_on_failed_opens():
    from gymwire.sdk.metrics import ServerMetrics
    from sdk_fault_envs import BadTaskEnv

    server = GymServer([BadTaskEnv], port=0)
    server.metrics = ServerMetrics(enabled=True)  # counted, not served over HTTP
    async with server, GymClient(server.url) as client:
        for index in (7, 8, 9):
            with pytest.raises(ProtocolError):
                await client.open("strict", split="test", index=index)
        await client.open("strict", split="test", index=0)
        assert server.metrics.registry.get_sample_value("gymwire_sessions", {"env": "strict"}) == 1


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_request_larger_than_max_frame_bytes_fails_at_once(make_server, encoding):
    # The server answers an oversized frame FRAME_TOO_LARGE without an id (it cannot read one):
    # the client must refuse it itself, or the request waits forever.
    async with make_server(limits=Limits(max_frame_bytes=2000)) as server, GymClient(server.url, encoding=encoding) as client:
        session = await client.open("counting", seed=400)
        with pytest.raises(ProtocolError) as info:
            await asyncio.wait_for(session.step("\u00e9" * 1500), 5)  # 1500 characters, 3000 UTF-8 bytes
        assert info.value.code is ErrorCode.FRAME_TOO_LARGE
        assert (await session.step("fits")).observation.text == "step 1: fits"
