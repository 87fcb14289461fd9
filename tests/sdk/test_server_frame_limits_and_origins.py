"""Holes of issue #25 on the gym server, shut: an answer the client cannot take fails its call
(typed, not a hang) on both ends; browser-origin handshakes are refused unless allowed; a hello
with a token that is not text closes the connection at once. Real servers on loopback."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from gymwire.protocol import Codec, ErrorCode, Limits, ProtocolError, ServerConnection
from gymwire.sdk.client import GymClient
from gymwire.sdk.environment import Environment, StepOutcome, Task
from gymwire.sdk.server import GymServer

BIG = 5 * 1024 * 1024  # the review's 5 MB observation
WAIT = 60  # a hang would outlast this; an answer takes well under a second even on a loaded machine


class LoudEnv(Environment):
    """`loud N` answers N characters; option `first: N` makes the first observation that long."""

    name = "loud"
    splits = {"test": 1}

    def reset(self, task: Task) -> str:
        return "x" * int(task.options.get("first", 5))

    def step(self, action: str) -> StepOutcome:
        size = int(action.split()[1]) if action.startswith("loud ") else 2
        return StepOutcome("y" * size)


class DeafToLimitsRules(ServerConnection):
    """A server that ignores the client's hello.max_frame_bytes (as one of another implementation might)."""

    def _hello(self, hello):  # type: ignore[no-untyped-def]
        super()._hello(hello)
        self.peer_max_frame_bytes = 1 << 30


class DeafServer(GymServer):
    connection_rules = DeafToLimitsRules


async def _usable_after(env) -> None:  # type: ignore[no-untyped-def]
    result = await asyncio.wait_for(env.step("loud 10"), WAIT)
    assert result.observation.text == "y" * 10
    assert env.turns == 2 and env.seq == 2, "the oversized step counted as a turn; the client learned it by resume"


@pytest.mark.parametrize("server_class", [GymServer, DeafServer], ids=["server-knows-the-limit", "client-enforces-it"])
async def test_a_5mb_observation_fails_the_waiting_step_with_a_typed_error(server_class):
    async with server_class([LoudEnv], port=0, limits=Limits(max_frame_bytes=16 << 20)) as server:
        async with GymClient(server.url) as client:  # takes the default 4 MiB
            async with client.session("loud", split="test", index=0) as env:
                started = time.monotonic()
                with pytest.raises(ProtocolError) as caught:
                    await asyncio.wait_for(env.step(f"loud {BIG}"), WAIT)
                assert caught.value.code is ErrorCode.ANSWER_TOO_LARGE
                assert time.monotonic() - started < WAIT
                await _usable_after(env)


async def test_a_batch_loses_only_the_oversized_result():
    async with GymServer([LoudEnv], port=0) as server:
        async with GymClient(server.url, max_frame_bytes=64 * 1024) as client:
            a = await client.open("loud", split="test", index=0)
            b = await client.open("loud", split="test", index=0)
            first, second = await asyncio.wait_for(client.step_batch([(a, "loud 100000"), (b, "loud 100")]), WAIT)
            assert isinstance(first, ProtocolError) and first.code is ErrorCode.ANSWER_TOO_LARGE and first.session == a.id
            assert second.observation.text == "y" * 100
            await _usable_after(a)


async def test_an_oversized_first_observation_fails_the_open_and_leaves_no_session():
    async with GymServer([LoudEnv], port=0) as server:
        async with GymClient(server.url, max_frame_bytes=4096) as client:
            with pytest.raises(ProtocolError) as caught:
                await asyncio.wait_for(client.open("loud", split="test", index=0, options={"first": 10_000}), WAIT)
            assert caught.value.code is ErrorCode.ANSWER_TOO_LARGE and caught.value.session is None
            assert server.stats()["sessions"] == 0
            fine = await client.open("loud", split="test", index=0, options={"first": 100})
            assert fine.observation.text == "x" * 100


# ----------------------------------------------------------------------------- origins


async def _upgrade(url: str, origin: str | None) -> int:
    try:
        ws = await websockets.connect(url, subprotocols=["gymwire.v1+msgpack"], origin=origin, open_timeout=10)  # type: ignore[arg-type,list-item]
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


async def test_browser_origins_are_refused_unless_allowed():
    async with GymServer([LoudEnv], port=0, allowed_origins=["https://lab.example"]) as server:
        assert await _upgrade(server.url, None) == 101  # trainers send no Origin
        assert await _upgrade(server.url, "https://lab.example") == 101
        for page in ("http://127.0.0.1:9000", "https://lab.example:444", "null"):
            assert await _upgrade(server.url, page) == 403, page
        assert server.stats()["connections"] == 0
    async with GymServer([LoudEnv], port=0) as server:
        assert await _upgrade(server.url, "http://localhost:8080") == 403  # by default no origin is allowed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_serve_allow_origin_flag():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gymwire.sdk.cli", "serve", "guess", "--port", str(port),
         "--allow-origin", "https://lab.example", "--allow-origin", "http://localhost:3000"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"ws://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                status = await _upgrade(url, "http://localhost:3000")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "gymwire serve did not start"
                await asyncio.sleep(0.1)
        assert status == 101
        assert await _upgrade(url, "https://lab.example") == 101
        assert await _upgrade(url, "https://evil.example") == 403
    finally:
        proc.terminate()
        proc.wait(timeout=15)


# ----------------------------------------------------------------------------- invalid hello


async def test_a_token_that_is_not_text_closes_the_connection_at_once():
    # A long heartbeat: a connection left open would stay so for a minute.
    async with GymServer([LoudEnv], port=0, token="secret", limits=Limits(heartbeat_interval_ms=60_000)) as server:
        codec = Codec("msgpack")
        async with websockets.connect(server.url, subprotocols=["gymwire.v1+msgpack"]) as ws:  # type: ignore[list-item]
            await ws.send(codec.encode_object({"type": "hello", "id": 1, "version": "1.0", "token": 12345}))
            answer = codec.decode(await asyncio.wait_for(ws.recv(), WAIT))
            assert (answer.name, answer.id) == ("BAD_FRAME", 1)
            await asyncio.wait_for(ws.wait_closed(), 10)
            assert ws.close_code == 1002
