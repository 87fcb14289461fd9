"""The fast transport: WebSocket over picows (WebSocket framing in Cython), for both ends.

The frames are the same as over the default transport (`websockets`), so either end may use either:
a picows client talks to any gymwire server, a picows server answers any WebSocket client. This
module only moves frames. Every rule of the protocol stays where it is for both transports: the
connection rules (gymwire.protocol), the server's one connection loop and dispatch
(sdk/serving/connections.py, sdk/server.py) and GymClient. Run it on uvloop where that is installed
(`gymwire serve --transport picows` does).

    pip install 'gymwire[fast]'
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any, Awaitable, Callable

from .environment import require_modules

require_modules(["picows"], "fast", "the picows transport")

from picows import (  # noqa: E402  (after the check: a missing extra is reported with its pip line)
    WSCloseCode,
    WSError,
    WSHandshakeError,
    WSListener,
    WSMsgType,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_connect,
    ws_create_server,
)

from gymwire.protocol import ErrorCode, ProtocolError  # noqa: E402

from .client_transport import upgrade_refused  # noqa: E402
from .serving.connections import (  # noqa: E402
    PRE_WELCOME_MAX_FRAME_BYTES,
    PRE_WELCOME_QUEUED_FRAMES,
    QUEUED_FRAMES,
    TransportClosed,
    Unwelcomed,
)

__all__ = ["PicowsClientTransport", "PicowsServerTransport", "connect", "listen"]

log = logging.getLogger("gymwire.picows")

_BINARY, _TEXT, _CONTINUATION, _CLOSE = WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CONTINUATION, WSMsgType.CLOSE
CLOSE_TIMEOUT_S = 2.0  # how long a closing handshake may take before the connection is dropped (as websockets')
# A client takes answers of any size off the wire, as the websockets client (max_size=None) does: one
# larger than its max_frame_bytes is then ANSWER_TOO_LARGE from its codec, a typed error (GW-LIMIT-8).
CLIENT_MAX_FRAME = 2**31 - 1
# picows starts each connection's read buffer at this size and doubles it as frames need.
READ_BUFFER_BYTES = 4096
# picows would use aiofastnet's connection setup when that is installed; the event loop's own is
# faster here (a connect and upgrade 0.49 ms against 0.70 ms on uvloop) and round trips are the same.
USE_AIOFASTNET = False


class _PicowsEnd(WSListener):
    """What both ends do with picows' frames: put fragmented messages back together within
    `max_message` bytes, refuse reserved bits (no extension is negotiated), answer a close, and
    hand every message to `deliver`. Pings are answered by picows itself."""

    max_message: int

    def __init__(self) -> None:
        super().__init__()
        self.ws: Any = None
        self.closed = False
        self._parts: list[bytes] | None = None
        self._parts_size = 0
        self._writable: asyncio.Future[None] | None = None  # set while the socket's buffer is full

    def deliver(self, message: bytes) -> None:
        raise NotImplementedError

    def on_ws_connected(self, ws: Any) -> None:
        self.ws = ws

    def on_ws_frame(self, ws: Any, frame: Any) -> None:
        kind = frame.msg_type
        if kind is _BINARY or kind is _TEXT or kind is _CONTINUATION:
            if frame.rsv1 or frame.rsv2 or frame.rsv3:
                self._fail(WSCloseCode.PROTOCOL_ERROR, "reserved bits set: no extension was negotiated")
                return
            if (kind is _CONTINUATION) is (self._parts is None):
                self._fail(WSCloseCode.PROTOCOL_ERROR, "continuation frame out of place")
                return
            size = self._parts_size + frame.payload_size
            if size > self.max_message:
                self._fail(WSCloseCode.MESSAGE_TOO_BIG, f"message over {self.max_message} bytes")
                return
            if frame.fin and self._parts is None:  # the common case: a whole message in one frame
                self.deliver(frame.get_payload_as_bytes())
                return
            parts = self._parts if self._parts is not None else []
            parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                self._parts, self._parts_size = None, 0
                self.deliver(b"".join(parts))
            else:
                self._parts, self._parts_size = parts, size
        elif kind is _CLOSE:
            ws.send_close(frame.get_close_code(), frame.get_close_message())
            ws.disconnect()

    def _fail(self, code: WSCloseCode, reason: str) -> None:
        log.info("closing a connection: %s", reason)
        self.ws.send_close(code, reason.encode())
        self.ws.disconnect()

    def on_ws_disconnected(self, ws: Any) -> None:
        self.closed = True
        self._wake_writers()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake_writers()

    def _wake_writers(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    async def send(self, frame: bytes | str) -> None:
        """Send a frame; after the buffer's high-water mark, wait until it drains. Nothing once closed."""
        while self._writable is not None and not self.closed:
            await asyncio.shield(self._writable)
        if not self.closed:
            self.ws.send(_BINARY if type(frame) is bytes else _TEXT, frame)

    def send_now(self, frame: bytes | str) -> bool:
        """`send` as a plain call while the buffer has room (True); False, with nothing sent, while it is full."""
        if self.closed:
            return True
        if self._writable is not None:
            return False
        self.ws.send(_BINARY if type(frame) is bytes else _TEXT, frame)
        return True

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with a closing handshake; drop the connection if the peer does not answer in time."""
        if self.ws is None or self.closed:
            return
        self.ws.send_close(WSCloseCode(code), reason.encode())
        try:
            await asyncio.wait_for(self.ws.wait_disconnected(), CLOSE_TIMEOUT_S)
        except Exception:  # a timeout, or the error picows recorded when it dropped the connection
            self.ws.disconnect(graceful=False)

    def abort(self) -> None:
        if self.ws is not None:
            self.ws.disconnect(graceful=False)

    @property
    def transport(self) -> asyncio.Transport:
        """The TCP transport under the WebSocket."""
        return self.ws.underlying_transport  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- server


class PicowsServerTransport(_PicowsEnd):
    """One server connection over picows, as a `Transport`: picows pushes its frames; while the
    connection's loop waits in `recv` with nothing queued, each is served right in picows' callback
    (`serve_in_place`), else queued for the loop to read with `recv`. Until the hello is welcomed,
    frames are small and few (as GymWebSocket keeps them); past QUEUED_FRAMES unread frames it stops
    reading from the socket."""

    def __init__(self, unwelcomed: Unwelcomed, on_connected: Callable[["PicowsServerTransport"], None]) -> None:
        super().__init__()
        self.unwelcomed = unwelcomed
        self.on_connected = on_connected
        self.peer = "?"
        self.max_message = PRE_WELCOME_MAX_FRAME_BYTES
        self._queue_high = PRE_WELCOME_QUEUED_FRAMES
        self._frames: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        # Set by the connection: serves a frame from picows' callback while the loop waits in recv.
        self.serve_in_place: Callable[[bytes], bool] | None = None

    def on_ws_connected(self, ws: Any) -> None:
        super().on_ws_connected(ws)
        peer = ws.underlying_transport.get_extra_info("peername")
        self.peer = f"{peer}" if peer else "?"
        self.on_connected(self)

    def deliver(self, message: bytes) -> None:
        if self._waiter is not None and self.serve_in_place is not None and self.serve_in_place(message):
            return
        self._frames.append(message)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if len(self._frames) >= self._queue_high and not self._reading_paused:
            self._reading_paused = True
            self.ws.underlying_transport.pause_reading()

    async def recv(self) -> bytes:
        frames = self._frames
        while not frames:
            if self.closed:
                raise TransportClosed
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            await waiter
        if self._reading_paused and len(frames) <= self._queue_high // 4 and not self.closed:
            self._reading_paused = False
            self.ws.underlying_transport.resume_reading()
        return frames.popleft()

    def welcomed(self, max_frame_bytes: int) -> None:
        self.unwelcomed.members.discard(self)
        self.max_message = max_frame_bytes
        self._queue_high = QUEUED_FRAMES

    def on_ws_disconnected(self, ws: Any) -> None:
        super().on_ws_disconnected(ws)
        self.unwelcomed.members.discard(self)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


# What the server decides of an opening handshake: from its Origin header values and the offered
# subprotocols, the subprotocol to speak, or the HTTP refusal (status, body).
Upgrade = Callable[[list[str], list[str]], "tuple[str, None] | tuple[None, tuple[int, str]]"]


def _offered(request: WSUpgradeRequest) -> list[str]:
    return [p.strip() for value in request.headers.getall("Sec-WebSocket-Protocol", ()) for p in value.split(",")]


async def listen(
    host: str,
    port: int,
    *,
    upgrade: Upgrade,
    serve: Callable[[PicowsServerTransport, str], Awaitable[None]],
    unwelcomed: Unwelcomed,
    max_frame_bytes: int,
    reuse_port: bool,
    open_timeout: float = 10.0,
) -> asyncio.Server:
    """Listen for WebSocket connections; each upgraded one is served by `serve(transport, subprotocol)`."""
    serving: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    def refuse(status: int, body: str) -> WSUpgradeResponseWithListener:
        response = WSUpgradeResponse.create_error_response(status, body.encode(), [("Content-Type", "text/plain")])
        return WSUpgradeResponseWithListener(response, None)

    def on_upgrade(request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
        subprotocol, refusal = upgrade(request.headers.getall("Origin", []), _offered(request))
        if refusal is not None:
            return refuse(*refusal)
        assert subprotocol is not None

        def start_serving(transport: PicowsServerTransport) -> None:
            task = loop.create_task(serve(transport, subprotocol))
            serving.add(task)
            task.add_done_callback(serving.discard)

        transport = PicowsServerTransport(unwelcomed, start_serving)
        # Past the cap, refused here (picows reads the request first; one that never comes is
        # dropped after open_timeout).
        if not unwelcomed.admit(transport):
            unwelcomed.refused += 1
            return refuse(503, "CAPACITY: too many connections waiting for their welcome; retry later\n")
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_101_response([("Sec-WebSocket-Protocol", subprotocol)]), transport
        )

    return await ws_create_server(
        on_upgrade,
        host,
        port,
        websocket_handshake_timeout=open_timeout,
        max_frame_size=max_frame_bytes,
        read_buffer_init_size=READ_BUFFER_BYTES,
        use_aiofastnet=USE_AIOFASTNET,
        reuse_port=reuse_port or None,
        backlog=4096,
    )


# ----------------------------------------------------------------------------- client


class PicowsClientTransport(_PicowsEnd):
    """A client's connection over picows: each message goes to `on_frame(self, message)` as it
    arrives (no reader task), and `on_closed(self)` is called once when the connection ends."""

    max_message = CLIENT_MAX_FRAME

    def __init__(self, on_frame: Callable[[Any, bytes], None], on_closed: Callable[[Any], None]) -> None:
        super().__init__()
        self.on_frame = on_frame
        self.on_closed = on_closed
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def deliver(self, message: bytes) -> None:
        self.on_frame(self, message)

    def on_ws_disconnected(self, ws: Any) -> None:
        super().on_ws_disconnected(ws)
        if not self.lost.done():
            self.lost.set_result(None)
            self.on_closed(self)


async def connect(
    url: str,
    subprotocol: str,
    *,
    open_timeout: float,
    on_frame: Callable[[Any, bytes], None],
    on_closed: Callable[[Any], None],
) -> PicowsClientTransport:
    """Open a WebSocket to a gymwire server over picows. A refused or non-gymwire upgrade is a
    ProtocolError (UNSUPPORTED_VERSION) that says why; a failure to connect is an OSError."""
    end = PicowsClientTransport(on_frame, on_closed)
    try:
        await asyncio.wait_for(
            ws_connect(
                lambda: end,
                url,
                extra_headers=[("Sec-WebSocket-Protocol", subprotocol)],
                websocket_handshake_timeout=open_timeout,
                max_frame_size=CLIENT_MAX_FRAME,
                read_buffer_init_size=READ_BUFFER_BYTES,
                use_aiofastnet=USE_AIOFASTNET,
            ),
            open_timeout,
        )
    except WSHandshakeError as exc:
        response = exc.response
        if response is None:
            raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, f"{url} is not a gymwire server ({exc})") from None
        body = (exc.raw_body or b"").decode(errors="replace").strip()
        raise upgrade_refused(url, int(response.status), body) from None
    except WSError as exc:
        raise ConnectionError(f"WebSocket to {url} failed: {exc}") from None
    chosen = end.ws.response.headers.get("Sec-WebSocket-Protocol")
    if chosen != subprotocol:
        end.abort()
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION, f"{url} is not a gymwire server: it did not accept subprotocol {subprotocol!r}"
        )
    return end
