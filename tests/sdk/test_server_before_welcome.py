"""What a connection that has shown no token may cost the server (GW-HANDSHAKE-10), found by the
red-team review: 80 connections that sent 8 MB frames and no hello held 1.08 GB of the server's
memory, and 450 connections that never finished their upgrade took every file descriptor of a
server allowed 400 (a session's next Python run: ENV_CRASHED, EMFILE). Now, until the welcome, a
frame over 64 KiB closes the connection (1009), and past `max_awaiting_welcome` connections that
have not been welcomed (counted from the TCP accept) a new one is closed at once. Real servers on
loopback."""

from __future__ import annotations

import asyncio

import msgpack
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from gymwire.sdk.client import GymClient
from gymwire.sdk.serving.connections import PRE_WELCOME_MAX_FRAME_BYTES
from gymwire.sdk.server import GymServer
from gymwire.servers.guess.env import GuessEnv

WAIT = 30  # every answer here takes well under a second, even on a loaded machine
SUBPROTOCOL = "gymwire.v1+msgpack"


def _frame(size: int) -> bytes:
    """A msgpack `ping` padded to `size` bytes: a request, not a hello."""
    head = msgpack.packb({"type": "ping", "id": 1, "pad": ""})
    return msgpack.packb({"type": "ping", "id": 1, "pad": "p" * (size - len(head) - 4)})


def _hello(token: str | None = None) -> bytes:
    return msgpack.packb({"type": "hello", "id": 0, "version": "1.0", "capabilities": [], **({"token": token} if token else {})})


async def test_a_large_frame_before_the_welcome_closes_the_connection():
    async with GymServer([GuessEnv], port=0, token="t0ken") as server:
        async with websockets.connect(server.url, subprotocols=[SUBPROTOCOL], max_size=None) as ws:
            await ws.send(_frame(PRE_WELCOME_MAX_FRAME_BYTES - 100))  # small: answered, connection open
            answer = msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))
            assert answer["name"] == "HANDSHAKE_REQUIRED"
            await ws.send(_frame(PRE_WELCOME_MAX_FRAME_BYTES + 1000))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), WAIT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        # Once welcomed, the server's own limits hold: a 1 MB frame is an ordinary request.
        async with websockets.connect(server.url, subprotocols=[SUBPROTOCOL], max_size=None) as ws:
            await ws.send(_hello("t0ken"))
            assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "welcome"
            await ws.send(_frame(1 << 20))
            assert msgpack.unpackb(await asyncio.wait_for(ws.recv(), WAIT))["type"] == "pong"


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), WAIT) == b""
    except ConnectionResetError:
        return True


async def test_connections_waiting_for_their_welcome_are_capped_from_their_tcp_accept():
    """Three connections that never finish their upgrade (slowloris) and one that upgraded but sent
    no hello fill a cap of four: the next TCP connection is closed at once. When one of them is
    welcomed, or goes, a trainer gets in and plays."""
    async with GymServer([GuessEnv], port=0, token="t0ken", max_awaiting_welcome=4) as server:
        host, port = "127.0.0.1", server.port
        slow = [await asyncio.open_connection(host, port) for _ in range(3)]
        for _, writer in slow:
            writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the headers never end
        upgraded = await websockets.connect(server.url, subprotocols=[SUBPROTOCOL])
        try:
            reader, writer = await asyncio.open_connection(host, port)
            assert await _closed_by_server(reader), "a fifth connection was kept"
            writer.close()
            with pytest.raises(Exception):
                await GymClient(server.url, token="t0ken", open_timeout=WAIT).connect()
            await upgraded.send(_hello("t0ken"))
            assert msgpack.unpackb(await asyncio.wait_for(upgraded.recv(), WAIT))["type"] == "welcome"
            async with GymClient(server.url, token="t0ken", open_timeout=WAIT) as client:
                async with client.session("guess", seed=3) as session:
                    assert (await asyncio.wait_for(session.step("50"), WAIT)).observation.text
            # A slow one goes: its place is free (the welcomed trainer has left too).
            slow.pop()[1].close()
            for _ in range(100):
                if len(server.unwelcomed.members) < 4:
                    break
                await asyncio.sleep(0.05)
            async with GymClient(server.url, token="t0ken", open_timeout=WAIT) as client:
                assert await client.list_envs()
        finally:
            await upgraded.close()
            for _, writer in slow:
                writer.close()


SERVER_WITH_FEW_FILES = r"""
import asyncio, sys
from gymwire.sdk.environment import Environment, StepOutcome, Task
from gymwire.sdk.server import GymServer

class FileEnv(Environment):
    '''Opens a file each step, as environments do (data, a sandbox's pipes, a browser's sockets).'''
    name = "files"
    def reset(self, task: Task) -> str:
        return "ready"
    def step(self, action: str) -> StepOutcome:
        with open("/dev/null") as f:
            return StepOutcome(f"opened {f.fileno() > 0}")

async def main():
    server = await GymServer([FileEnv], port=0).start()
    print(server.port, server.unwelcomed.limit, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_flood_of_slow_connections_leaves_the_files_sessions_need(tmp_path):
    """A server allowed 120 open files: 200 connections that never finish their upgrade. Before the
    cap they took every descriptor and a connected session's next step failed (EMFILE, ENV_CRASHED);
    now at most a quarter of the limit waits for a welcome and the session plays on."""
    import subprocess
    import sys

    script = tmp_path / "server.py"
    script.write_text(SERVER_WITH_FEW_FILES)
    server = subprocess.Popen(["prlimit", "--nofile=120", sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    slow: list[asyncio.StreamWriter] = []
    try:
        port, cap = map(int, server.stdout.readline().split())  # type: ignore[union-attr]
        assert cap == 30
        async with GymClient(f"ws://127.0.0.1:{port}", open_timeout=WAIT) as client:
            session = await client.open("files")
            for _ in range(200):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"GET / HTTP/1.1\r\n")
                slow.append(writer)
            await asyncio.sleep(0.5)  # the server accepts (and closes) what is past the cap
            for _ in range(3):
                result = await asyncio.wait_for(session.step("go"), WAIT)
                assert result.observation.text == "opened True"
    finally:
        for writer in slow:
            writer.close()
        server.kill()
        server.wait()
