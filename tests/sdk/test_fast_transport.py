"""The fast transport (picows, gymwire[fast]) on real servers over loopback: a picows client talks to a
websockets server and the reverse, with the same frames, handshake refusals, limits and reconnects as
the default transport. (Its conformance run is in tests/conformance/test_conformance_fast_transport.py.)"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import weakref

import msgpack
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gymwire.protocol import ErrorCode, Limits, ProtocolError
from gymwire.sdk import Environment, StepOutcome
from gymwire.sdk.client import GymClient
from gymwire.sdk.server import GymServer
from gymwire.sdk.serving.connections import Connection
from gymwire.servers.guess import GuessEnv

TRANSPORTS = ["websockets", "picows"]
WAIT = 30  # an answer takes milliseconds; a hang would outlast this


async def _play_to_the_end(client: GymClient) -> None:
    async with client.session("guess", split="test", index=0, options={"low": 1, "high": 3}) as session:
        for guess in "123":
            result = await asyncio.wait_for(session.step(guess), WAIT)
            if result.terminated:
                break
        assert result.terminated and result.metrics is not None and result.metrics.success


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
@pytest.mark.parametrize("client_transport", TRANSPORTS)
@pytest.mark.parametrize("server_transport", TRANSPORTS)
async def test_every_pair_of_transports_plays_episodes(server_transport, client_transport, encoding):
    async with GymServer([GuessEnv], port=0, transport=server_transport) as server:
        async with GymClient(server.url, transport=client_transport, encoding=encoding) as client:
            assert [info.name for info in await client.list_envs()] == ["guess"]
            await _play_to_the_end(client)
            # Many sessions in flight on one connection, answered in any order, each to its own call.
            sessions = await asyncio.gather(*(client.open("guess", seed=seed) for seed in range(40)))
            results = await asyncio.wait_for(asyncio.gather(*(s.step("1") for s in sessions)), WAIT)
            assert [r.session for r in results] == [s.id for s in sessions]
            batch = await asyncio.wait_for(client.step_batch([(s, "2") for s in sessions if not s.done]), WAIT)
            assert all(not isinstance(r, Exception) for r in batch)
            assert server.stats()["sessions"] == 40  # the first one closed with its `async with`
        await asyncio.sleep(0)
        for _ in range(100):  # the client closed its sessions and then its connection
            if server.stats() == {"sessions": 0, "connections": 0, "inflight": 0}:
                break
            await asyncio.sleep(0.05)
        assert server.stats() == {"sessions": 0, "connections": 0, "inflight": 0}


@pytest.mark.parametrize("client_transport", TRANSPORTS)
async def test_a_dropped_picows_connection_is_reconnected_and_its_session_resumed(client_transport):
    async with GymServer([GuessEnv], port=0, transport="picows") as server:
        async with GymClient(server.url, transport=client_transport) as client:
            session = await client.open("guess", split="test", index=0, options={"low": 1, "high": 9})
            assert not (await session.step("1")).terminated
            client._ws.transport.abort()  # the link dies under the client
            result = await asyncio.wait_for(session.step("2"), WAIT)
            assert result.seq == 2 and session.turns == 2
            assert server.stats()["connections"] == 1


async def test_a_picows_server_refuses_handshakes_as_the_default_one_does():
    async with GymServer([GuessEnv], port=0, transport="picows") as server:
        with pytest.raises(InvalidStatus) as no_gymwire:
            await websockets.connect(server.url, subprotocols=["chat"])
        assert no_gymwire.value.response.status_code == 400
        assert b"UNSUPPORTED_VERSION" in no_gymwire.value.response.body
        with pytest.raises(InvalidStatus) as browser:
            await websockets.connect(server.url, subprotocols=["gymwire.v1+msgpack"], origin="https://evil.example")
        assert browser.value.response.status_code == 403
        assert b"FORBIDDEN_ORIGIN" in browser.value.response.body


async def test_a_picows_client_says_what_is_wrong_with_a_server():
    async def echo(ws):  # type: ignore[no-untyped-def]
        async for frame in ws:
            await ws.send(frame)

    async with websockets.serve(echo, "127.0.0.1", 0) as plain:
        port = next(iter(plain.sockets)).getsockname()[1]
        with pytest.raises(ProtocolError) as not_gymwire:
            await GymClient(f"ws://127.0.0.1:{port}", transport="picows", reconnect_attempts=0).connect()
        assert not_gymwire.value.code is ErrorCode.UNSUPPORTED_VERSION and "not a gymwire server" in not_gymwire.value.message
    async with GymServer([GuessEnv], port=0, token="secret") as server:  # a websockets server
        with pytest.raises(ProtocolError) as refused:
            await GymClient(server.url, transport="picows", token="wrong", reconnect_attempts=0).connect()
        assert refused.value.code is ErrorCode.UNAUTHORIZED


async def test_picows_frames_obey_the_servers_limits_before_and_after_the_welcome():
    limits = Limits(max_frame_bytes=200_000)
    async with GymServer([GuessEnv], port=0, transport="picows", limits=limits) as server:
        # Before its hello is welcomed a connection may send only small frames (GW-HANDSHAKE-10).
        silent = await websockets.connect(server.url, subprotocols=["gymwire.v1+msgpack"], max_size=None)
        await silent.send(b"\x00" * 100_000)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(silent.recv(), WAIT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        # Welcomed: a frame over max_frame_bytes (but within twice it) is a typed error, and the
        # connection lives on; the hello itself arrives in fragments.
        ws = await websockets.connect(server.url, subprotocols=["gymwire.v1+msgpack"], max_size=None)
        hello = msgpack.packb({"type": "hello", "id": 1, "version": "1.0"})
        await ws.send([hello[:5], hello[5:]])
        assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "welcome"
        await ws.send(msgpack.packb({"type": "ping", "id": 2, "pad": "x" * 300_000}))
        too_large = msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))
        assert too_large["type"] == "error" and too_large["name"] == "FRAME_TOO_LARGE"
        await ws.send(msgpack.packb({"type": "ping", "id": 3}))
        assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT)) == {"type": "pong", "id": 3}
        await ws.close()
        await silent.close()


class LoudEnv(Environment):
    """Answers every step with a megabyte of text, on the event loop: its steps run in place."""

    name = "loud"
    inline = True

    def reset(self, task):  # noqa: ANN001
        return "quiet"

    def step(self, action: str) -> StepOutcome:
        return StepOutcome(action * (1 << 20))


async def test_picows_answers_in_order_while_its_send_buffer_is_full(monkeypatch):
    """A picows server answers a step run in place from picows' callback; when the socket's buffer
    is full the answer waits, and the frames behind it wait for it: every answer arrives, in order."""
    waited = []
    finish = Connection._finish

    async def counting_finish(self, rest):  # noqa: ANN001
        waited.append(1)
        await finish(self, rest)

    monkeypatch.setattr(Connection, "_finish", counting_finish)
    async with GymServer([LoudEnv], port=0, transport="picows") as server:
        ws = await websockets.connect(server.url, subprotocols=["gymwire.v1+msgpack"], max_size=None)
        await ws.send(msgpack.packb({"type": "hello", "id": 1, "version": "1.0", "max_frame_bytes": 4 << 20}))
        assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "welcome"
        sessions = []
        for request_id in range(2, 10):
            await ws.send(msgpack.packb({"type": "open", "id": request_id, "env": "loud"}))
            sessions.append(msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))["session"])
        ws.transport.pause_reading()  # the server's answers pile up in its buffer
        steps = [msgpack.packb({"type": "step", "id": 100 + i, "session": s, "seq": 1, "action": "ab"[i % 2]}) for i, s in enumerate(sessions)]
        for frame in steps:
            await ws.send(frame)
        await ws.send(msgpack.packb({"type": "ping", "id": 99}))
        await asyncio.sleep(0.5)
        ws.transport.resume_reading()
        answers = [msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT)) for _ in range(len(steps) + 1)]
        assert [a["id"] for a in answers] == [100 + i for i in range(len(steps))] + [99]
        assert all(a["observation"]["text"] == "ab"[i % 2] * (1 << 20) for i, a in enumerate(answers[:-1]))
        assert waited, "no answer had to wait for room in the buffer: the test did not fill it"
        await ws.close()


async def test_a_closed_picows_connection_is_freed_without_waiting_for_the_cycle_collector():
    # A server's collector runs rarely (gymwire serve tunes it): a connection that outlives its
    # socket through a reference cycle holds its buffers long after.
    async with GymServer([GuessEnv], port=0, transport="picows") as server:
        gc.disable()
        try:
            async with GymClient(server.url, transport="picows") as client:
                await client.list_envs()
                (connection,) = server.connections
                freed = weakref.ref(connection)
                del connection
            for _ in range(100):
                if server.stats()["connections"] == 0 and freed() is None:
                    break
                await asyncio.sleep(0.02)
            assert freed() is None
        finally:
            gc.enable()


async def test_a_half_open_picows_peer_is_closed_and_its_session_waits_for_a_resume():
    limits = Limits(heartbeat_interval_ms=100, resume_grace_ms=60_000)
    async with GymServer([GuessEnv], port=0, transport="picows", limits=limits) as server:
        ws = await websockets.connect(server.url, subprotocols=["gymwire.v1+msgpack"])
        await ws.send(msgpack.packb({"type": "hello", "id": 1, "version": "1.0"}))
        await ws.send(msgpack.packb({"type": "open", "id": 2, "env": "guess", "task": {"seed": 1}}))
        assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "welcome"
        assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "opened"
        ws.transport.pause_reading()  # neither reads nor answers the server's pings from now on
        for _ in range(100):
            if server.stats()["connections"] == 0:
                break
            await asyncio.sleep(0.05)
        assert server.stats() == {"sessions": 1, "connections": 0, "inflight": 0}
        (session,) = server.sessions.values()
        assert session.owner is None  # detached: a resume with its token may take it back
        ws.transport.abort()


def test_gymwire_serve_runs_the_picows_transport_on_its_own_loop(tmp_path):
    # The CLI path: `gymwire serve --transport picows` (on uvloop), reached by a websockets client.
    port_file = tmp_path / "banner"
    server = subprocess.Popen(
        [sys.executable, "-m", "gymwire.sdk.cli", "serve", "guess", "--port", "0", "--transport", "picows"],
        stderr=port_file.open("w"),
    )
    try:
        for _ in range(300):
            text = port_file.read_text()
            if "serving guess on ws://" in text:
                break
            assert server.poll() is None, text
            subprocess.run(["sleep", "0.1"], check=True)
        url = text.split("serving guess on ")[1].split()[0]

        async def play() -> None:
            async with GymClient(url) as client:
                await _play_to_the_end(client)

        asyncio.run(play())
    finally:
        server.terminate()
        assert server.wait(30) == 0
