"""The async gymwire client: one connection, many sessions, pipelined requests.

    async with GymClient("ws://127.0.0.1:8765") as client:
        async with client.session("guess", split="test", index=3) as env:
            result = await env.step("Action: 50")

A dropped connection costs the caller nothing: the client reconnects, resumes every session with
its token and re-sends what was unanswered with the same sequence numbers, which the server
executes once or answers from its record.

The client uses only what the server's welcome lists (GW-HANDSHAKE-5): without `batch`, step_batch
steps the sessions one by one; without `heartbeat`, it sends no pings; without `resume`, sessions
are lost with their connection; `deadline_ms` without `deadlines`, or a cancel without `cancel`,
raises MissingCapability before anything is sent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from typing import Any, Sequence

import websockets

from gymwire.protocol import (
    MIN_FRAME_BYTES,
    ClientConnection,
    Codec,
    DescribeEnv,
    Encoding,
    EnvInfo,
    Error,
    ErrorCode,
    Limits,
    ListEnvs,
    Liveness,
    Message,
    MissingCapability,
    Notice,
    Open,
    ProtocolError,
    Resume,
    StepResult,
    TaskRef,
    Welcome,
    subprotocol_for,
)
from gymwire.protocol.codec import DEFAULT_MAX_FRAME_BYTES

from .batching import step_batch
from .client_transport import CLIENT_TRANSPORTS, ClientTransport, connect_transport
from .session import ClientSession, closing_session

__all__ = ["ClientSession", "Disconnected", "GymClient", "MissingCapability", "ServerLost"]

log = logging.getLogger("gymwire.client")

# A request waiting for its answer: the request (re-sent after a reconnect) and where the answer goes.
Pending = tuple["Message | dict[str, Any]", "asyncio.Future[Message]"]


class Disconnected(ConnectionError):
    """The server could not be reached again within the reconnect budget, or the client is closed."""


class ServerLost(Disconnected):
    """The client gave up on its server (reconnect budget spent, or `give_up`): every session of
    the client is gone with it, and each of their requests, pending or new, fails with this."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(f"{why}: server {url} lost with its sessions; open them elsewhere")
        self.url = url


class InflightSlots:
    """At most `size` requests in flight; the others wait for a slot in arrival order. (What
    asyncio.Semaphore does, but a free slot is taken with a comparison: its acquire and release
    cost a generator and four Python calls a request.)"""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def take_now(self) -> bool:
        """Take a free slot if one is there and nobody waits for it."""
        if self.free > 0 and not self._waiting:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a slot: `release` hands its own to the first waiter."""
        if self.take_now():
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # handed a slot just as the caller gave up: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(granted)
            raise

    def release(self) -> None:
        while self._waiting:
            granted = self._waiting.popleft()
            if not granted.done():
                granted.set_result(None)
                return
        self.free += 1


class GymClient:
    """An async client of one gymwire server.

    `reconnect_attempts`: how many times to reconnect (exponential backoff with jitter) before
    pending requests fail with Disconnected. `request_timeout`: a local cap in seconds on every
    request (None: rely on server deadlines). `max_frame_bytes`: the largest answer it takes.
    `transport`: "websockets" (the default) or "picows" (gymwire[fast]: the same frames, less CPU a
    frame, best on uvloop); either talks to a server of either transport.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        encoding: Encoding | str = Encoding.MSGPACK,
        name: str = "gymwire-client",
        reconnect_attempts: int = 8,
        request_timeout: float | None = None,
        open_timeout: float = 10.0,
        capabilities: Sequence[str] = (),
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        transport: str = "websockets",
    ) -> None:
        if transport not in CLIENT_TRANSPORTS:
            raise ValueError(f"transport must be one of {CLIENT_TRANSPORTS}, got {transport!r}")
        if transport == "picows":
            from .environment import require_modules

            require_modules(["picows"], "fast", "GymClient(transport='picows')")
        if max_frame_bytes < MIN_FRAME_BYTES:
            raise ValueError(f"max_frame_bytes must be at least {MIN_FRAME_BYTES}, got {max_frame_bytes}")
        self.url = url
        self.transport = transport
        self.encoding = Encoding(encoding)
        # The largest answer this client takes, told to the server in hello: a larger one fails its
        # call with ANSWER_TOO_LARGE instead of arriving (GW-LIMIT-7, GW-LIMIT-8).
        self.codec = Codec(self.encoding, max_frame_bytes=max_frame_bytes)
        # The connection's rules (handshake, capabilities, pending ids, heartbeat), sans-I/O; this
        # class moves its frames. Extra `capabilities` (e.g. "images") are asked for in hello.
        self.protocol: ClientConnection[Pending] = ClientConnection(
            self.codec, name=name, url=url, capabilities=capabilities, token=token
        )
        self.capabilities = self.protocol.capabilities
        self.token = token
        self.name = name
        self.reconnect_attempts = reconnect_attempts
        self.request_timeout = request_timeout
        self.open_timeout = open_timeout
        self.sessions: dict[str, ClientSession] = {}
        self._ws: ClientTransport | None = None  # the connection requests go out on
        self._awaiting_welcome: asyncio.Future[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False
        self.lost: ServerLost | None = None  # set when the client gives up on its server
        self._slots: InflightSlots | None = None  # max_inflight of the welcome (GW-LIMIT-6)
        # The loop the client connected on, kept: on Python 3.11 asyncio.get_running_loop() makes a
        # getpid system call, a sizeable part of a request's time.
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ connection

    @property
    def welcome(self) -> Welcome | None:
        return self.protocol.welcome

    @property
    def limits(self) -> Limits:
        return self.protocol.limits

    @property
    def draining(self) -> bool:
        """Whether the server sent a drain notice (it is shutting down; open sessions elsewhere)."""
        return self.protocol.draining

    @property
    def _pending(self) -> dict[int, Pending]:
        return self.protocol.pending

    @property
    def connected(self) -> bool:
        """Whether requests go out now (not while reconnecting, closed, or given up)."""
        return self._connected.is_set()

    @property
    def usable(self) -> bool:
        """Whether the client can still serve requests: not closed and not given up on its server."""
        return not self._closed and self.lost is None

    def supports(self, capability: str) -> bool:
        """Whether the server's welcome lists `capability`: the client uses no other (GW-HANDSHAKE-5)."""
        return self.protocol.supports(capability)

    def require(self, capability: str, instead: str | None = None) -> None:
        """MissingCapability, before anything is sent, unless the server's welcome lists `capability`."""
        self.protocol.require(capability, instead)

    async def connect(self) -> "GymClient":
        self._loop = asyncio.get_running_loop()
        await self._connect_once()
        self._slots = InflightSlots(self.limits.max_inflight)
        self._connected.set()
        return self

    async def __aenter__(self) -> "GymClient":
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _connect_once(self) -> ClientTransport:
        ws = await connect_transport(
            self.transport,
            self.url,
            subprotocol_for(self.encoding),
            open_timeout=self.open_timeout,
            on_frame=self._on_frame,
            on_closed=self._on_closed,
        )
        self._awaiting_welcome = welcomed = asyncio.get_running_loop().create_future()
        await ws.send(self.protocol.hello())
        try:
            await asyncio.wait_for(asyncio.wait({welcomed, ws.lost}, return_when=asyncio.FIRST_COMPLETED), self.open_timeout)
            if not welcomed.done():
                raise ConnectionError(f"{self.url} closed the connection before its welcome")
            welcomed.result()  # the server's refusal raises its ProtocolError
        except BaseException:
            self._awaiting_welcome = None
            if ws.lost.done():
                ws.abort()
            else:
                await ws.close()
            raise
        self._ws = ws
        heartbeat = self.protocol.heartbeat
        self._heartbeat = (
            asyncio.get_running_loop().create_task(self._heartbeat_forever(ws, heartbeat.check_every)) if heartbeat else None
        )
        return ws

    async def close(self) -> None:
        """Close the connection. Sessions still open are closed on the server first."""
        if self._closed:
            return
        if self._ws is not None and self._connected.is_set():
            for session in list(self.sessions.values()):
                with contextlib.suppress(ProtocolError, ConnectionError, asyncio.TimeoutError):
                    await asyncio.wait_for(session.close(), 5)
        self._closed = True
        for task in (self._heartbeat, self._reconnecting):
            if task is not None:
                task.cancel()
        if self._ws is not None:
            await self._ws.close()
        self._fail_pending(Disconnected("client closed"))

    def _fail_pending(self, exc: BaseException) -> None:
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    def _on_frame(self, ws: ClientTransport, frame: bytes | str) -> None:
        """Every frame the server sends, as it arrives (the transport calls this)."""
        protocol = self.protocol
        waiter = self._awaiting_welcome
        if waiter is not None:  # the answer to hello
            self._awaiting_welcome = None
            try:
                protocol.welcomed(frame, time.monotonic())
            except ProtocolError as exc:
                waiter.set_exception(exc)
            else:
                waiter.set_result(None)
            return
        answered = protocol.receive_frame(frame, time.monotonic())
        if answered is not None:
            (_, future), answer = answered
            if not future.done():
                if isinstance(answer, ProtocolError):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
            return
        replies = protocol.frames_to_send()  # pongs, at once (GW-HEARTBEAT-4)
        if replies:
            asyncio.get_running_loop().create_task(self._send_all(ws, replies))
        if protocol.said_goodbye:
            for (_, future), error in protocol.unanswered_at_goodbye():
                if not future.done():
                    future.set_exception(error)
        self._log_unmatched()

    @staticmethod
    async def _send_all(ws: ClientTransport, frames: list[bytes | str]) -> None:
        for frame in frames:
            await ws.send(frame)

    def _on_closed(self, ws: ClientTransport) -> None:
        if ws is self._ws:
            self._on_disconnect()

    def _log_unmatched(self) -> None:
        for message in self.protocol.unmatched:
            if isinstance(message, Notice):
                log.info("server notice %s: %s", message.kind, message.message)
            elif isinstance(message, Error):
                log.warning("server error: %s %s", message.name, message.message)
        self.protocol.unmatched.clear()

    async def _heartbeat_forever(self, ws: ClientTransport, check_every: float) -> None:
        while True:
            await asyncio.sleep(check_every)
            liveness = self.protocol.check_timers(time.monotonic())
            if liveness is Liveness.HALF_OPEN:
                log.warning("server silent for %.1fs: treating the connection as dead", 6 * check_every)
                ws.abort()
                return
            if liveness is Liveness.PING:
                await ws.send(self.protocol.ping())

    def _on_disconnect(self) -> None:
        self._connected.clear()
        self._ws = None
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._closed or self.lost is not None:
            return
        if self.reconnect_attempts <= 0:
            self._give_up("connection lost")
            return
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.05
        for attempt in range(1, self.reconnect_attempts + 1):
            try:
                ws = await self._connect_once()
                log.info("reconnected to %s; resuming %d session(s)", self.url, len(self.sessions))
                await self._resume_all(ws)
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError, ProtocolError) as exc:
                # A drop during the resumes counts as a failed attempt too.
                log.info("reconnect %d/%d to %s failed: %s", attempt, self.reconnect_attempts, self.url, exc)
                await asyncio.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 5.0)
                continue
            return
        self._give_up(f"could not reconnect after {self.reconnect_attempts} attempts")

    def give_up(self, why: str) -> None:
        """Give up on the server now (e.g. its replica is known dead): stop reconnecting, fail every
        pending and later request of its sessions with ServerLost, drop the connection."""
        if self._closed or self.lost is not None:
            return
        if self._reconnecting is not None and self._reconnecting is not asyncio.current_task():
            self._reconnecting.cancel()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        ws, self._ws = self._ws, None  # its end then starts no reconnect
        if ws is not None:
            ws.abort()
        self._give_up(why)

    def _give_up(self, why: str) -> None:
        self.lost = ServerLost(self.url, why)
        self._connected.clear()
        self._fail_pending(self.lost)

    async def _resume_all(self, ws: ClientTransport) -> None:
        """Resume every session on the new connection, re-send what is unanswered, and only then
        let new requests through: sent earlier, they would reach sessions not resumed yet."""
        lost: set[str] = set()
        why = "session lost while disconnected"
        if not self.supports("resume"):
            why += ": the server does not support resume; open a new session"
            lost.update(self.sessions)
            self.sessions.clear()
        for session in list(self.sessions.values()):
            try:
                await self._roundtrip(ws, Resume(id=self.next_id(), session=session.id, resume_token=session.resume_token))
            except ProtocolError as exc:
                log.warning("session %s could not be resumed: %s", session.id, exc)
                lost.add(session.id)
                self.sessions.pop(session.id, None)
        sent: set[int] = set()
        while unsent := [(rid, entry) for rid, entry in self._pending.items() if rid not in sent]:
            # Requests made while these sends wait are picked up by the next round.
            for request_id, (message, future) in unsent:
                sent.add(request_id)
                try:
                    session_id = message["session"] if type(message) is dict else getattr(message, "session", None)
                    if session_id in lost:
                        raise ProtocolError(ErrorCode.UNKNOWN_SESSION, why, session=session_id)
                    self.protocol.check_capabilities(message)  # the server now answering may offer less
                except (ProtocolError, MissingCapability) as exc:
                    self._pending.pop(request_id, None)
                    if not future.done():
                        future.set_exception(exc)
                    continue
                await ws.send(self.codec.encode(message))
        if ws is not self._ws:
            raise ConnectionError("the connection closed while its sessions were being resumed")
        self._connected.set()

    async def _roundtrip(self, ws: ClientTransport, message: Message) -> Message:
        """Send on `ws` and wait for the answer; no re-send on reconnect, ConnectionError on a drop."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        request_id = message.id  # type: ignore[attr-defined]
        self._pending[request_id] = (message, future)
        try:
            await ws.send(self.codec.encode(message))
            await asyncio.wait({future, ws.lost}, timeout=self.open_timeout, return_when=asyncio.FIRST_COMPLETED)
            if not future.done():
                raise ConnectionError(f"no answer to {message.type} before the connection closed or open_timeout passed")
            return future.result()  # an error answer raises its ProtocolError
        finally:
            self._pending.pop(request_id, None)

    # ------------------------------------------------------------------ requests

    def next_id(self) -> int:
        return self.protocol.next_id()

    async def request(self, message: Message | dict[str, Any], timeout: float | None = None) -> Message:
        """Send a request (a model, or a step as its wire map: gymwire.protocol.steps.step_map) and
        wait for its answer; an error answer raises ProtocolError.

        While disconnected the request waits for the reconnect and is then sent. Beyond the
        server's max_inflight, requests wait here for one in flight to be answered."""
        slots = self._slots
        if slots is not None and not slots.take_now():
            await slots.take()
        try:
            if self.lost is not None:
                raise self.lost
            if self._closed:
                raise Disconnected("client is closed")
            if not self._connected.is_set() and (self._reconnecting is None or self._reconnecting.done()):
                raise Disconnected(f"not connected to {self.url} and not reconnecting; make a new client")
            request_id = message["id"] if type(message) is dict else message.id  # type: ignore[attr-defined]
            frame = self.protocol.request_frame(message)
            future: asyncio.Future[Message] = (self._loop or asyncio.get_running_loop()).create_future()
            pending = self.protocol.pending
            pending[request_id] = (message, future)
            try:
                ws = self._ws
                if ws is not None and self._connected.is_set() and not ws.send_now(frame):
                    await ws.send(frame)  # on a closed connection, nothing: the reconnect re-sends it
                timeout = timeout if timeout is not None else self.request_timeout
                return await (asyncio.wait_for(future, timeout) if timeout else future)  # an error answer raises
            finally:
                pending.pop(request_id, None)
        finally:
            if slots is not None:
                slots.release()

    async def list_envs(self) -> list[EnvInfo]:
        return (await self.request(ListEnvs(id=self.next_id()))).envs  # type: ignore[attr-defined]

    async def describe(self, env: str) -> EnvInfo:
        return (await self.request(DescribeEnv(id=self.next_id(), env=env))).env  # type: ignore[attr-defined]

    async def open(
        self,
        env: str,
        *,
        split: str | None = None,
        index: int | None = None,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
        max_turns: int | None = None,
        reset: bool = True,
        deadline_ms: int | None = None,
    ) -> "ClientSession":
        message = Open(
            id=self.next_id(),
            env=env,
            task=TaskRef(split=split, index=index, seed=seed),
            options=options or {},
            max_turns=max_turns,
            reset=reset,
            deadline_ms=deadline_ms,
        )
        opened = await self.request(message)
        session = ClientSession(self, opened)  # type: ignore[arg-type]
        self.sessions[session.id] = session
        return session

    def session(self, env: str, **kwargs: Any) -> contextlib.AbstractAsyncContextManager["ClientSession"]:
        """`async with client.session(env, ...) as s:` opens a session and closes it at the end."""
        return closing_session(self.open(env, **kwargs))

    async def step_batch(
        self, steps: Sequence[tuple["ClientSession", str]], deadline_ms: int | None = None
    ) -> list[StepResult | ProtocolError]:
        """Step many sessions of this client in one frame (see gymwire.sdk.batching.step_batch)."""
        return await step_batch(self, steps, deadline_ms)
