"""The floor: a raw TCP ping-pong between two processes, with no protocol at all.

Three floors are measured. `blocking`: plain blocking sockets on both sides, what the kernel's
loopback costs. `asyncio`: an asyncio echo server and client, the event loop machinery gymwire runs
on. `websockets`: a WebSocket echo server and client from the `websockets` library gymwire uses,
with the same settings, no protocol on top: what is left above it is gymwire's own (validation,
codec, dispatch, session bookkeeping).
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

PAYLOAD = b"x" * 96  # about the size of a msgpack step frame


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def serve_echo(sock: socket.socket, stop: asyncio.Event) -> None:
    server = await asyncio.get_running_loop().create_server(_Echo, sock=sock)
    async with server:
        await stop.wait()


def blocking_echo(sock: socket.socket) -> None:
    """Serve one connection with blocking calls until the peer closes it."""
    conn, _ = sock.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


async def serve_ws_echo(sock: socket.socket, stop: asyncio.Event) -> None:
    import websockets

    async def echo(ws: Any) -> None:
        async for frame in ws:
            await ws.send(frame)

    async with websockets.serve(echo, sock=sock, compression=None, ping_interval=None):
        await stop.wait()


class _PingPong(asyncio.Protocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.received = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= len(PAYLOAD) and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def roundtrip(self) -> None:
        self.received = 0
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(PAYLOAD)
        await self.waiter


async def asyncio_pingpong(port: int, count: int) -> list[float]:
    """Round trip times (seconds) of `count` sequential ping-pongs with an asyncio client."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(_PingPong, "127.0.0.1", port)
    try:
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            await proto.roundtrip()
            latencies.append(time.perf_counter() - started)
        return latencies
    finally:
        transport.close()


def blocking_pingpong(port: int, count: int) -> list[float]:
    """Round trip times (seconds) of `count` sequential ping-pongs over blocking sockets."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(PAYLOAD)
            received = 0
            while received < len(PAYLOAD):
                received += len(sock.recv(65536))
            latencies.append(time.perf_counter() - started)
        return latencies


async def ws_pingpong(port: int, count: int) -> list[float]:
    """Round trip times (seconds) of `count` sequential binary-frame echoes over `websockets`."""
    import websockets

    async with websockets.connect(f"ws://127.0.0.1:{port}", compression=None, ping_interval=None) as ws:
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            await ws.send(PAYLOAD)
            await ws.recv()
            latencies.append(time.perf_counter() - started)
        return latencies
