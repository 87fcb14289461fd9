"""The floor: a raw TCP ping-pong between two processes, with no protocol at all.

Three floors are measured. `blocking`: plain blocking sockets on both sides, what the kernel's
loopback costs. `asyncio`: an asyncio echo server and client, the event loop machinery gymwire runs
on. `websockets`: a WebSocket echo server and client from the `websockets` library gymwire uses,
with the same settings, no protocol on top: what is left above it is gymwire's own (validation,
codec, dispatch, session bookkeeping). `picows`: the same over picows on uvloop, the fast transport.
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


async def serve_picows_echo(sock: socket.socket, stop: asyncio.Event) -> None:
    from picows import WSListener, WSMsgType, ws_create_server

    class Echo(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type is WSMsgType.BINARY:
                transport.send(WSMsgType.BINARY, frame.get_payload_as_bytes())
            elif frame.msg_type is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    server = await ws_create_server(lambda request: Echo(), sock=sock)
    async with server:
        await stop.wait()


async def picows_pingpong(port: int, count: int) -> list[float]:
    """Round trip times (seconds) of `count` sequential binary-frame echoes over picows."""
    from picows import WSListener, WSMsgType, ws_connect

    loop = asyncio.get_running_loop()

    class Client(WSListener):  # type: ignore[misc]
        waiter: asyncio.Future[None]

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type is WSMsgType.BINARY:
                frame.get_payload_as_bytes()  # what a client does with it: take it off the buffer
                self.waiter.set_result(None)

    transport, client = await ws_connect(Client, f"ws://127.0.0.1:{port}")
    latencies = []
    try:
        for _ in range(count):
            client.waiter = loop.create_future()
            started = time.perf_counter()
            transport.send(WSMsgType.BINARY, PAYLOAD)
            await client.waiter
            latencies.append(time.perf_counter() - started)
    finally:
        transport.disconnect()
    return latencies


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
