"""What a GymClient needs of its WebSocket, over either transport: frames pushed to a callback as
they arrive, `send`, `close`, `abort`, and `lost` (a future done once the connection has ended).

`websockets` is the default; "picows" (gymwire[fast], sdk/picows_transport.py) moves the same
frames with less CPU. Either talks to a server of either transport.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Protocol

import websockets
# Imported by name: `websockets.X` goes through the package's lazy __getattr__ (~7 us a call, per frame).
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gymwire.protocol import ErrorCode, ProtocolError

__all__ = ["CLIENT_TRANSPORTS", "ClientTransport", "WebSocketsClientTransport", "connect_transport"]

CLIENT_TRANSPORTS = ("websockets", "picows")

OnFrame = Callable[[Any, "bytes | str"], None]
OnClosed = Callable[[Any], None]


class ClientTransport(Protocol):
    lost: asyncio.Future[None]  # done once the connection has ended

    async def send(self, frame: bytes | str) -> None:
        """Send a frame; nothing once the connection is closed (a reconnect re-sends what is unanswered)."""
        ...

    def send_now(self, frame: bytes | str) -> bool:
        """`send` without a coroutine where it need not wait (True); False, with nothing sent: call `send`."""
        ...

    async def close(self) -> None: ...

    def abort(self) -> None:
        """Drop the connection at once (a dead peer, or a client giving its server up)."""
        ...

    @property
    def transport(self) -> asyncio.Transport:
        """The TCP transport under the WebSocket."""
        ...


class WebSocketsClientTransport:
    """A `websockets` client connection; a reader task pushes its frames."""

    def __init__(self, ws: ClientConnection, on_frame: OnFrame, on_closed: OnClosed) -> None:
        self.ws = ws
        self.on_frame = on_frame
        self.on_closed = on_closed
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.get_running_loop().create_task(self._read_forever())

    async def _read_forever(self) -> None:
        try:
            async for frame in self.ws:
                self.on_frame(self, frame)
        except ConnectionClosed:
            pass
        finally:
            self.lost.set_result(None)
            self.on_closed(self)

    async def send(self, frame: bytes | str) -> None:
        try:
            await self.ws.send(frame)
        except ConnectionClosed:
            pass

    def send_now(self, frame: bytes | str) -> bool:
        return False  # websockets' send is a coroutine

    async def close(self) -> None:
        await self.ws.close()

    def abort(self) -> None:
        self.ws.transport.abort()

    @property
    def transport(self) -> asyncio.Transport:
        return self.ws.transport  # type: ignore[no-any-return]


def upgrade_refused(url: str, status: int, body: str) -> ProtocolError:
    """The error for an HTTP answer to the WebSocket upgrade, on either transport."""
    if "gymwire" not in body.lower():  # a gymwire server's refusal names what it speaks
        return ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"{url} is not a gymwire server: it answered the WebSocket upgrade with HTTP {status} {body[:80]!r}",
        )
    return ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"server refused the upgrade: {body}")


async def _connect_websockets(url: str, subprotocol: str, open_timeout: float, on_frame: OnFrame, on_closed: OnClosed) -> WebSocketsClientTransport:
    try:
        ws = await websockets.connect(
            url,
            subprotocols=[subprotocol],  # type: ignore[list-item]
            max_size=None,  # an answer over the client's max_frame_bytes is its codec's typed error
            ping_interval=None,
            compression=None,
            open_timeout=open_timeout,
            close_timeout=2,
        )
    except websockets.InvalidStatus as exc:
        body = exc.response.body.decode(errors="replace").strip() if exc.response.body else ""
        raise upgrade_refused(url, exc.response.status_code, body) from None
    except websockets.InvalidHandshake as exc:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"{url} is not a gymwire server ({exc})") from None
    return WebSocketsClientTransport(ws, on_frame, on_closed)


async def connect_transport(
    kind: str, url: str, subprotocol: str, *, open_timeout: float, on_frame: OnFrame, on_closed: OnClosed
) -> ClientTransport:
    """A WebSocket to `url` speaking `subprotocol` over transport `kind`. A refused upgrade, or a
    peer that is no gymwire server, is a ProtocolError (UNSUPPORTED_VERSION)."""
    if kind == "picows":
        from .picows_transport import connect

        return await connect(url, subprotocol, open_timeout=open_timeout, on_frame=on_frame, on_closed=on_closed)
    return await _connect_websockets(url, subprotocol, open_timeout, on_frame, on_closed)
