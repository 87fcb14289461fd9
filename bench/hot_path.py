"""CPU per step of gymwire's own code, without a network: the server's connection loop fed step
frames (answers discarded), and the client's step path answered from a stub transport.

    python bench/hot_path.py            # best of three runs, msgpack and JSON (BENCHMARKS.md, #30)

Server: frames go straight to one `Connection._on_frame` (the hot path of both transports), for a
sync inline environment (the step runs in place) and for an async one (one task per step, 1,000
sessions in flight). Client: `ClientSession.step` on a `GymClient` whose transport answers each
request from a pre-encoded step result; the cost of making that answer is measured apart and taken
off. Process CPU time, GC tuned as a server's, on uvloop when installed.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from gymwire.bench.envs import AsyncNoopEnv, NoopEnv
from gymwire.protocol import (
    ClientConnection,
    Codec,
    Limits,
    Observation,
    Open,
    Opened,
    PeerInfo,
    ServerConnection,
    Step,
    StepResult,
    Welcome,
)
from gymwire.sdk.client import GymClient, InflightSlots
from gymwire.sdk.server import GymServer, tune_gc_for_serving
from gymwire.sdk.serving.connections import Connection
from gymwire.sdk.session import ClientSession

SESSION = "abcdefghijklmnop"


class _Discard:
    """A server transport that keeps nothing but a count of what was sent."""

    peer = "hot-path"

    def __init__(self) -> None:
        self.sent = 0
        self.last: Any = None

    async def send(self, frame: bytes | str) -> None:
        self.send_now(frame)

    def send_now(self, frame: bytes | str) -> bool:
        self.sent += 1
        self.last = frame
        return True

    def welcomed(self, max_frame_bytes: int) -> None:
        pass


async def _serve(conn: Connection, frame: bytes | str) -> None:
    rest = conn._on_frame(frame)
    if rest is not None:
        await rest


async def server_us_per_step(env: type, encoding: str, sessions: int, rounds: int) -> float:
    limits = Limits(max_sessions=100_000, max_sessions_per_connection=100_000, max_inflight=100_000)
    server = GymServer([env], port=0, limits=limits)
    codec = Codec(encoding)
    rules = ServerConnection(
        codec, now=0.0, limits=limits, capabilities=server.capabilities, server=PeerInfo(name="hot"), envs=server.env_infos
    )
    sink = _Discard()
    conn = Connection(sink, rules, server._dispatch)
    await _serve(conn, ClientConnection(Codec(encoding), name="hot", url="hot://").hello())
    for i in range(sessions):
        await _serve(conn, codec.encode(Open(id=100 + i, env=env.name)))
    while sink.sent < sessions + 1:
        await asyncio.sleep(0.001)
    ids = list(server.sessions)
    frames = [
        [codec.encode(Step(id=1_000_000 + r * sessions + i, session=s, seq=r + 1, action="x")) for i, s in enumerate(ids)]
        for r in range(rounds)
    ]
    started, before = time.process_time(), sink.sent
    for r, round_frames in enumerate(frames):
        for frame in round_frames:
            await _serve(conn, frame)
        while sink.sent < before + (r + 1) * sessions:
            await asyncio.sleep(0)
    took = time.process_time() - started
    await server.stop(drain_timeout=0)
    return took / (sessions * rounds) * 1e6


async def client_us_per_step(encoding: str, steps: int) -> float:
    codec = Codec(encoding)
    client = GymClient("ws://hot-path", encoding=encoding)
    loop = asyncio.get_running_loop()

    def answer(request: Step) -> bytes | str:
        return codec.encode(StepResult(id=request.id, session=request.session, seq=request.seq, observation=Observation(text="ok")))

    class Answering:
        lost = loop.create_future()

        async def send(self, frame: bytes | str) -> None:
            self.send_now(frame)

        def send_now(self, frame: bytes | str) -> bool:
            loop.call_soon(client._on_frame, self, answer(codec.decode(frame)))  # type: ignore[arg-type]
            return True

    capabilities = ["batch", "resume", "cancel", "deadlines"]
    welcome = Welcome(id=1, version="1.0", server=PeerInfo(name="hot"), capabilities=capabilities, limits=Limits())
    client.protocol.welcomed(codec.encode(welcome), 0.0)
    client._ws = Answering()  # type: ignore[assignment]
    client._connected.set()
    client._slots = InflightSlots(1024)
    client._loop = loop
    session = ClientSession(client, Opened(id=2, session=SESSION, resume_token="t", env="noop", max_turns=10**9))
    # What the stub's answers cost, taken off below.
    request = codec.encode(Step(id=1, session=SESSION, seq=1, action="x"))
    started = time.process_time()
    for _ in range(steps):
        answer(codec.decode(request))  # type: ignore[arg-type]
    stub = time.process_time() - started
    started = time.process_time()
    for _ in range(steps):
        await session.step("x")
    return (time.process_time() - started - stub) / steps * 1e6


async def main(repeat: int) -> None:
    for encoding in ("msgpack", "json"):
        inline = min([await server_us_per_step(NoopEnv, encoding, 1, 20_000) for _ in range(repeat)])
        tasks = min([await server_us_per_step(AsyncNoopEnv, encoding, 1000, 10) for _ in range(repeat)])
        client = min([await client_us_per_step(encoding, 20_000) for _ in range(repeat)])
        print(f"{encoding:8} server, step in place {inline:5.1f} us; server, a task a step {tasks:5.1f} us; client {client:5.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure; the best is printed (default 3)")
    args = parser.parse_args()
    tune_gc_for_serving()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.repeat))
    else:
        uvloop.run(main(args.repeat))
