"""A client connection that owns its loop: it reads frames from its transport (or, from a
transport that pushes them, serves each in the transport's callback while the loop waits with
nothing queued), lets the connection's rules (`gymwire.protocol.ServerConnection`) answer what they
can, hands each request they pass on to the server's one dispatch, writes the answers, and runs its
heartbeat. The server only accepts connections and keeps the session registry (sdk/server.py).

A transport is what a connection needs of its socket (`Transport`): a WebSocket in a server
(`WebSocketTransport`), a pair of in-memory queues in tests (`memory_transports`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable, Coroutine, Protocol

# Imported by name: `websockets.X` goes through the package's lazy __getattr__ (~7 us a call, per frame).
from websockets.asyncio.server import ServerConnection as WebSocket
from websockets.exceptions import ConnectionClosed

from gymwire.protocol import ErrorCode, Message, ProtocolError, ServerConnection, ServerTimer
from gymwire.protocol.steps import StepFields
from gymwire.protocol.connection import CLOSE_NO_HELLO

from .sessions import now

if TYPE_CHECKING:
    from .scheduling import Inflight

__all__ = [
    "Connection", "Dispatch", "GymWebSocket", "MemoryTransport", "Transport", "TransportClosed", "Unwelcomed",
    "WebSocketTransport", "brief", "memory_transports", "stopped_before_answering",
]

log = logging.getLogger("gymwire.server")

# Until its hello is welcomed a connection has shown no token: what it may cost the server is small
# and bounded (GW-HANDSHAKE-10). A hello is a few hundred bytes; before the welcome a frame may have
# 64 KiB and the WebSocket buffers 4 of them (afterwards: twice max_frame_bytes, 16 frames). Without
# this, 80 connections that sent 8 MB frames and no hello held 1.08 GB of the server's memory, and
# 450 that never finished their upgrade took every file descriptor of a server allowed 400: a
# session's next Python run failed with EMFILE (ENV_CRASHED).
PRE_WELCOME_MAX_FRAME_BYTES = 64 * 1024
PRE_WELCOME_QUEUED_FRAMES = 4
QUEUED_FRAMES = 16  # frames the WebSocket buffers before it stops reading (websockets' default)
DEFAULT_MAX_AWAITING_WELCOME = 512


class Unwelcomed:
    """The connections that have shown no token yet, from their TCP accept to their welcome."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.members: set[Any] = set()  # a connection of either transport
        self.refused = 0

    def admit(self, member: Any) -> bool:
        if len(self.members) >= self.limit:
            return False
        self.members.add(member)
        return True


class GymWebSocket(WebSocket):
    """websockets' server connection, counted in `Unwelcomed` until its hello is welcomed. Past the
    cap a new TCP connection is closed at once, before its upgrade is read: a flood of silent or slow
    connections holds neither the server's memory nor the file descriptors its environments need."""

    def __init__(self, *args: Any, unwelcomed: Unwelcomed, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unwelcomed = unwelcomed

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if not self.unwelcomed.admit(self):
            self.unwelcomed.refused += 1
            if self.unwelcomed.refused % 1000 == 1:  # a flood is logged, not each of its connections
                log.warning(
                    "closing new connections at once: %d wait for their welcome (%d closed so far)",
                    self.unwelcomed.limit, self.unwelcomed.refused,
                )
            transport.abort()
            return
        self.protocol.max_message_size = PRE_WELCOME_MAX_FRAME_BYTES
        self.recv_messages.high, self.recv_messages.low = PRE_WELCOME_QUEUED_FRAMES, 1

    def welcomed(self, max_message_size: int) -> None:
        """Frames up to the server's limits from now on."""
        self.unwelcomed.members.discard(self)
        self.protocol.max_message_size = max_message_size
        self.recv_messages.high, self.recv_messages.low = QUEUED_FRAMES, QUEUED_FRAMES // 4

    def connection_lost(self, exc: Exception | None) -> None:
        self.unwelcomed.members.discard(self)
        super().connection_lost(exc)



class TransportClosed(ConnectionError):
    """The peer is gone: nothing more can be read."""


class Transport(Protocol):
    """What a connection needs of its socket. Frames are bytes, or str for a text frame."""

    peer: str

    async def recv(self) -> bytes | str:
        """The next frame; TransportClosed once the peer has gone."""
        ...

    async def send(self, frame: bytes | str) -> None:
        """Send a frame; nothing when the peer has gone (the read loop learns it)."""
        ...

    def send_now(self, frame: bytes | str) -> bool:
        """`send` without a coroutine where it need not wait (True); False, with nothing sent: call `send`."""
        ...

    async def close(self, code: int, reason: str) -> None: ...

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake (a peer that reads nothing)."""
        ...

    def welcomed(self, max_frame_bytes: int) -> None:
        """The peer's hello was welcomed: frames up to `max_frame_bytes` from now on."""
        ...


class WebSocketTransport:
    """A websockets server connection as a Transport."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.peer = f"{ws.remote_address}" if ws.remote_address else "?"

    async def recv(self) -> bytes | str:
        # Read as bytes, text frames too: invalid UTF-8 is then the codec's BAD_FRAME on an open
        # connection (GW-FRAME-3), not websockets' 1007 close. On a msgpack connection a text frame
        # cannot decode as a msgpack map (no UTF-8 text starts with one), so it is BAD_FRAME too.
        try:
            return await self.ws.recv(decode=False)
        except ConnectionClosed:
            raise TransportClosed from None

    async def send(self, frame: bytes | str) -> None:
        try:  # (a try costs less than contextlib.suppress: this is every answer's path)
            await self.ws.send(frame)
        except ConnectionClosed:
            pass

    def send_now(self, frame: bytes | str) -> bool:
        return False  # websockets' send is a coroutine

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)

    def abort(self) -> None:
        self.ws.transport.abort()

    def welcomed(self, max_frame_bytes: int) -> None:
        if isinstance(self.ws, GymWebSocket):
            self.ws.welcomed(max_frame_bytes)


_CLOSED = object()  # the end of an in-memory stream


class MemoryTransport:
    """One end of an in-memory connection (`memory_transports`): frames as they were sent."""

    def __init__(self, inbox: "asyncio.Queue[object]", outbox: "asyncio.Queue[object]", peer: str) -> None:
        self.inbox, self.outbox, self.peer = inbox, outbox, peer
        self.closed_with: tuple[int, str] | None = None  # the code and reason this end closed with
        self.closed = False

    async def recv(self) -> bytes | str:
        frame = await self.inbox.get()
        if frame is _CLOSED:
            self.inbox.put_nowait(_CLOSED)  # every later read ends too
            raise TransportClosed
        return frame  # type: ignore[return-value]

    async def send(self, frame: bytes | str) -> None:
        self.send_now(frame)

    def send_now(self, frame: bytes | str) -> bool:
        if not self.closed:
            self.outbox.put_nowait(frame)
        return True

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)
        self.abort()

    def welcomed(self, max_frame_bytes: int) -> None:
        pass  # queues hold whatever is sent

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(_CLOSED)
            self.inbox.put_nowait(_CLOSED)


def memory_transports() -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected ends (a server's, a client's): what one sends, the other receives."""
    to_server: asyncio.Queue[object] = asyncio.Queue()
    to_client: asyncio.Queue[object] = asyncio.Queue()
    return MemoryTransport(to_server, to_client, "memory-client"), MemoryTransport(to_client, to_server, "memory-server")


# The server's one dispatch of a request the rules passed on (a message, or a step as its plain
# fields): the answer when it has one at once (a step run in place, as its wire map; a cancel), None
# when the request runs as a task that answers it; a ProtocolError is sent as the request's error.
Dispatch = Callable[["Connection", "Message | StepFields"], "Message | dict[str, Any] | None"]


class Connection:
    """One client connection: its transport, its protocol rules, and the sessions it owns."""

    def __init__(self, transport: Transport, protocol: ServerConnection["Inflight"], dispatch: Dispatch) -> None:
        self.transport = transport
        self.protocol = protocol
        self.dispatch = dispatch
        self.codec = protocol.codec
        self.sessions: set[str] = set()
        self.opening = 0  # opens in progress, counted against the per-connection cap
        self.closed = False
        self.peer = transport.peer
        self.awaiting_welcome = True
        # The loop it is served on, kept: on Python 3.11 asyncio.get_running_loop() makes a getpid
        # system call, and requests start their tasks with it.
        self.loop = asyncio.get_running_loop()
        # A frame served from the transport's callback whose answer had to wait (a full socket
        # buffer): it finishes in this task, and the next frame waits for it.
        self.unfinished: asyncio.Task[None] | None = None

    @property
    def inflight(self) -> dict[int, "Inflight"]:
        """The requests being served, by id."""
        return self.protocol.inflight

    # ------------------------------------------------------------------ writing

    async def send(self, message: Message) -> None:
        frame = self.protocol.encode(message)
        if not self.transport.send_now(frame):
            await self.transport.send(frame)

    async def send_error(self, error: ProtocolError) -> None:
        await self.transport.send(self.protocol.encode_error(error))

    async def send_frame(self, frame: bytes | str) -> None:
        await self.transport.send(frame)

    def _send_now(self, frames: list[bytes | str]) -> Coroutine[Any, Any, None] | None:
        """Send `frames` as plain calls while the transport can, then close if the rules say so (a
        failed handshake); what must wait (a full buffer, the close) comes back as a coroutine."""
        transport = self.transport
        for sent, frame in enumerate(frames):
            if not transport.send_now(frame):
                return self._send_then_close(frames[sent:])
        return self._send_then_close([]) if self.protocol.close_with is not None else None

    async def _send_then_close(self, frames: list[bytes | str]) -> None:
        for frame in frames:
            await self.transport.send(frame)
        if self.protocol.close_with is not None:
            await self.transport.close(*self.protocol.close_with)

    # ------------------------------------------------------------------ the loop

    async def serve(self) -> None:
        """Read and answer frames until the peer goes; then stop what has not reached an environment."""
        heartbeat = self.loop.create_task(self._heartbeat())
        pushes_frames = hasattr(self.transport, "serve_in_place")
        if pushes_frames:
            self.transport.serve_in_place = self._serve_in_place
        try:
            while True:
                frame = await self.transport.recv()
                if self.unfinished is not None:
                    await self.unfinished
                rest = self._on_frame(frame)
                if rest is not None:
                    await rest
        except TransportClosed:
            pass
        finally:
            self.closed = True
            if pushes_frames:
                self.transport.serve_in_place = None  # else transport and connection hold each other
            heartbeat.cancel()
            for inflight in self.inflight.values():
                inflight.stop_unstarted()

    def _serve_in_place(self, frame: bytes) -> bool:
        """Serve a frame from the transport's callback while this loop waits for one with nothing
        queued: a step run in place is answered before the callback returns, with no wake-up of
        this loop between (an event-loop iteration less a round trip). False, with nothing done,
        while an earlier frame's answer still waits to be sent: the frame then goes through `recv`."""
        if self.unfinished is not None:
            return False
        try:
            rest = self._on_frame(frame)
        except Exception:
            log.exception("connection from %s: serving a frame failed; closing it", self.peer)
            self.transport.abort()
            return True
        if rest is not None:
            self.unfinished = self.loop.create_task(self._finish(rest))
        return True

    async def _finish(self, rest: Coroutine[Any, Any, None]) -> None:
        try:
            await rest
        finally:
            self.unfinished = None

    async def _heartbeat(self) -> None:
        protocol = self.protocol
        while True:
            await asyncio.sleep(protocol.check_every)
            moment = now()
            timer = protocol.check_timers(moment)
            if timer is ServerTimer.NO_HELLO:
                log.info("connection from %s sent no hello within %.1fs: closing", self.peer, 2 * protocol.check_every)
                await self.transport.close(*CLOSE_NO_HELLO)
                return
            if timer is ServerTimer.HALF_OPEN:
                silent = protocol.heartbeat.silent_for(moment) if protocol.heartbeat else 0.0
                log.info("connection from %s silent for %.1fs: closing as half-open", self.peer, silent)
                self.transport.abort()
                return
            if timer is ServerTimer.PING:
                try:
                    # A peer that stops reading (a partition) leaves our sends waiting for buffer room.
                    await asyncio.wait_for(self.transport.send(protocol.ping()), 2 * protocol.check_every)
                except asyncio.TimeoutError:
                    log.info("connection from %s reads nothing: closing as half-open", self.peer)
                    self.transport.abort()
                    return

    def _on_frame(self, frame: bytes | str) -> Coroutine[Any, Any, None] | None:
        """Serve one frame as plain calls: the rules answer what they can, the dispatch the rest (a
        step run in place answers at once; other requests start their task). What must wait to be
        sent comes back as a coroutine for the caller to await, else None."""
        protocol = self.protocol
        request: Message | StepFields | None = None
        try:
            request = protocol.read(frame, now())  # the rules answer what they can
            if self.awaiting_welcome and protocol.welcomed:
                # Before the welcome is sent: the client may answer it at once.
                self.awaiting_welcome = False
                self.transport.welcomed(2 * protocol.limits.max_frame_bytes)
            if request is None:
                return self._send_now(protocol.frames_to_send())
            reply = self.dispatch(self, request)
            if reply is None:
                return None
            answer = protocol.encode(reply)
            # (The rules close a connection only at its handshake, which the dispatch never sees.)
            return None if self.transport.send_now(answer) else self._send_then_close([answer])
        except ProtocolError as exc:
            if exc.request_id is None:
                exc.request_id = request_id_of(request)
            return self._send_now([protocol.encode_error(exc)])
        except Exception as exc:  # a bug of ours: answer it, keep serving
            log.exception("internal error on %s", "step" if type(request) is tuple else getattr(request, "type", "a frame"))
            error = ProtocolError(ErrorCode.INTERNAL, f"internal server error: {brief(exc)}", request_id=request_id_of(request))
            return self._send_now([protocol.encode_error(error)])


def request_id_of(request: "Message | StepFields | None") -> int | None:
    """The id of a request the rules passed on: a message, or a plain step's fields (id first)."""
    return request[0] if type(request) is tuple else getattr(request, "id", None)


def brief(exc: BaseException) -> str:
    """An exception's text cut short: environments often quote the action (GW-ERROR-8)."""
    text = str(exc)
    return text if len(text) <= 500 else text[:500] + "..."


def stopped_before_answering(request_id: int) -> ProtocolError:
    """The answer to a request the server will not finish because it stops (GW-DRAIN-6)."""
    return ProtocolError(
        ErrorCode.DRAINING,
        "the server is stopping and will not finish this request; its sessions close: open new ones on another server",
        request_id=request_id,
        retry_after_ms=1000,
    )
