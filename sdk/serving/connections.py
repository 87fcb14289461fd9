"""The asyncio side of a client connection: it moves frames between the WebSocket and the
connection's rules (`gymwire.protocol.ServerConnection`), runs its heartbeat, and dispatches each
request the rules pass on, once, by its type."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Callable

# Imported by name: `websockets.X` goes through the package's lazy __getattr__ (~7 us a call, per frame).
from websockets.asyncio.server import ServerConnection as WebSocket
from websockets.exceptions import ConnectionClosed

from gymwire.protocol import (
    SUBPROTOCOLS,
    Codec,
    ErrorCode,
    Message,
    PeerInfo,
    ProtocolError,
    ServerConnection,
    ServerTimer,
)
from gymwire.protocol.connection import CLOSE_NO_HELLO

from ..package_info import package_version
from .sessions import now

if TYPE_CHECKING:
    from ..server import GymServer
    from .scheduling import Inflight

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
        self.members: set[WebSocket] = set()
        self.refused = 0

    def admit(self, ws: WebSocket) -> bool:
        if len(self.members) >= self.limit:
            return False
        self.members.add(ws)
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


class Connection:
    """One client connection: its WebSocket, its protocol rules, and the sessions it owns."""

    def __init__(self, ws: WebSocket, protocol: ServerConnection["Inflight"]) -> None:
        self.ws = ws
        self.protocol = protocol
        self.codec = protocol.codec
        self.sessions: set[str] = set()
        self.opening = 0  # opens in progress, counted against the per-connection cap
        self.closed = False
        self.peer = f"{ws.remote_address}" if ws.remote_address else "?"
        self.awaiting_welcome = True

    @property
    def inflight(self) -> dict[int, "Inflight"]:
        """The requests being served, by id."""
        return self.protocol.inflight

    async def send(self, message: Message) -> None:
        frame = self.protocol.encode(message)
        try:  # (a try costs less than contextlib.suppress: this is every answer's path)
            await self.ws.send(frame)
        except ConnectionClosed:
            pass

    async def send_error(self, error: ProtocolError) -> None:
        await self.send_frame(self.protocol.encode_error(error))

    async def send_frame(self, frame: bytes | str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(frame)

    async def flush(self) -> None:
        """Send what the rules answered, then close if they say so (a failed handshake)."""
        for frame in self.protocol.frames_to_send():
            await self.send_frame(frame)
        if self.protocol.close_with is not None:
            await self.ws.close(*self.protocol.close_with)


class ConnectionHandling:
    """GymServer's part that serves connections. `_serve_request_of` maps each request type the
    rules pass on to the call that serves it: it returns the answer when it has one at once, else
    None (the request then runs as a task that answers it; see GymServer)."""

    if TYPE_CHECKING:
        _serve_request_of: dict[type[Message], Callable[[Connection, Any], Message | None]]
        connection_rules: type[ServerConnection[Any]]

    async def _handle_connection(self: "GymServer", ws: WebSocket) -> None:
        protocol = self.connection_rules(
            Codec(SUBPROTOCOLS[ws.subprotocol], max_frame_bytes=self.limits.max_frame_bytes),
            now=now(),
            limits=self.limits,
            capabilities=self.capabilities,
            server=PeerInfo(name=self.name, version=package_version()),
            envs=self.env_infos,
            token=self.token,
            on_error=self.metrics.error,
        )
        conn = Connection(ws, protocol)
        self.connections.add(conn)
        self.metrics.connection(+1)
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(conn))
        log.info("connection from %s (%s)", conn.peer, ws.subprotocol)
        # Frames are read as bytes, text frames too: invalid UTF-8 is then the codec's BAD_FRAME on an
        # open connection (GW-FRAME-3), not websockets' 1007 close. On a msgpack connection a text
        # frame cannot decode as a msgpack map (no UTF-8 text starts with one), so it is BAD_FRAME too.
        try:
            while True:
                await self._on_frame(conn, await ws.recv(decode=False))
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            heartbeat.cancel()
            self.connections.discard(conn)
            self.metrics.connection(-1)
            for inflight in conn.inflight.values():
                if not inflight.env_started:
                    inflight.task.cancel()
            self.registry.detach_all(conn)
            log.info("connection from %s closed; %d session(s) detached", conn.peer, len(conn.sessions))

    async def _heartbeat(self, conn: Connection) -> None:
        protocol = conn.protocol
        while True:
            await asyncio.sleep(protocol.check_every)
            moment = now()
            timer = protocol.check_timers(moment)
            if timer is ServerTimer.NO_HELLO:
                log.info("connection from %s sent no hello within %.1fs: closing", conn.peer, 2 * protocol.check_every)
                await conn.ws.close(*CLOSE_NO_HELLO)
                return
            if timer is ServerTimer.HALF_OPEN:
                silent = protocol.heartbeat.silent_for(moment) if protocol.heartbeat else 0.0
                log.info("connection from %s silent for %.1fs: closing as half-open", conn.peer, silent)
                conn.ws.transport.abort()
                return
            if timer is ServerTimer.PING:
                try:
                    # A peer that stops reading (a partition) leaves our sends waiting for buffer room.
                    await asyncio.wait_for(conn.send_frame(protocol.ping()), 2 * protocol.check_every)
                except asyncio.TimeoutError:
                    log.info("connection from %s reads nothing: closing as half-open", conn.peer)
                    conn.ws.transport.abort()
                    return

    def _welcomed(self: "GymServer", conn: Connection) -> None:
        conn.awaiting_welcome = False
        if isinstance(conn.ws, GymWebSocket):
            conn.ws.welcomed(2 * self.limits.max_frame_bytes)

    async def _on_frame(self: "GymServer", conn: Connection, frame: bytes | str) -> None:
        message = conn.protocol.decode(frame, now())
        if message is None:
            await conn.flush()
            return
        try:
            await self._dispatch(conn, message)
        except ProtocolError as exc:
            if exc.request_id is None:
                exc.request_id = getattr(message, "id", None)
            await conn.send_error(exc)
        except Exception as exc:  # a bug of ours: answer it, keep serving
            log.exception("internal error on %s", message.type)
            await conn.send_error(
                ProtocolError(ErrorCode.INTERNAL, f"internal server error: {brief(exc)}", request_id=getattr(message, "id", None))
            )

    async def _dispatch(self: "GymServer", conn: Connection, message: Message) -> None:
        """The one dispatch: the rules answer what they can; each request they pass on goes to its server."""
        request = conn.protocol.receive(message)
        if conn.awaiting_welcome and conn.protocol.welcomed:
            self._welcomed(conn)  # before the welcome is sent: the client may answer it at once
        if request is None:
            await conn.flush()
            return
        if self.stopping:  # past the drain: answered at once, never left for a goodbye (GW-DRAIN-6)
            await conn.send_error(stopped_before_answering(request.id))  # type: ignore[attr-defined]
            return
        # The answer when the request was served at once (a step run in place, a cancel); None when
        # it runs as a task, which answers it.
        reply = self._serve_request_of[type(request)](conn, request)
        if reply is not None:
            await conn.send(reply)


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
