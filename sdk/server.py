"""The gymwire server runtime: serves Environment classes over protocol v1 on WebSockets.

One process hosts several environments and many connections; each connection multiplexes many
sessions and gets its replies in completion order. Steps of one session run one at a time in
arrival order (a per-session FIFO lock); different sessions run concurrently. Everything a client
can send is answered with a reply or a typed error; nothing it sends can stop the server or reach
a session it does not own.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import hmac
import inspect
import logging
import math
import secrets
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

import websockets
# Imported by name: `websockets.X` goes through the package's lazy __getattr__ (~7 us a call, per frame).
from websockets.exceptions import ConnectionClosed
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from gymwire.protocol import (
    CAPABILITIES,
    PROTOCOL_VERSION,
    SUBPROTOCOLS,
    Cancel,
    CancelAck,
    Close,
    Closed,
    Codec,
    DescribeEnv,
    EnvDescription,
    EnvInfo,
    EnvList,
    EpisodeMetrics,
    Error,
    ErrorCode,
    Hello,
    Limits,
    ListEnvs,
    Message,
    Notice,
    Open,
    Opened,
    PeerInfo,
    Ping,
    Pong,
    ProtocolError,
    Reset,
    ResetResult,
    Resume,
    Resumed,
    SessionMachine,
    Step,
    StepBatch,
    TaskRef,
    StepBatchResult,
    StepResult,
    Welcome,
    error_message,
    negotiate_version,
    select_subprotocol,
)
from gymwire.protocol.session import Decision

from .package_info import package_version
from .environment import Environment, StepResult as EnvStepResult, Task, TaskError, as_observation
from .metrics import ServerMetrics
from .runners import EnvCrashed, EnvRunner, InlineRunner, ProcessRunner, ThreadRunner, env_crashed

log = logging.getLogger("gymwire.server")

ISOLATIONS = ("thread", "process")
_SERVER_NAME = "gymwire"


def _now() -> float:
    return time.monotonic()


class Turns:
    """A session's line of requests: a FIFO lock whose place is taken synchronously, when a request
    arrives, so that requests run in arrival order whatever path they take to the environment (a
    batch entry starts one task hop later than a single step; asyncio.Lock queues at first await)."""

    def __init__(self) -> None:
        self._tail: asyncio.Future[None] | None = None

    def busy(self) -> bool:
        return self._tail is not None and not self._tail.done()

    def take(self) -> "Turn":
        turn = Turn(self._tail, asyncio.get_running_loop().create_future())
        self._tail = turn.finished
        return turn


@dataclass(eq=False)
class Turn:
    ahead: asyncio.Future[None] | None
    finished: asyncio.Future[None]

    async def __aenter__(self) -> None:
        if self.ahead is not None:
            await asyncio.shield(self.ahead)  # a cancelled waiter must not cancel the turn ahead of it

    async def __aexit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        """Pass the turn on, never before the requests ahead are done (also for unused turns)."""
        if self.finished.done():
            return
        if self.ahead is None or self.ahead.done():
            self.finished.set_result(None)
        else:
            self.ahead.add_done_callback(lambda _: self.release())


# Every request allocates tasks, futures and models that die young. With thousands in flight the
# default young-generation threshold (700) collects and promotes many times a second, and each full
# collection walks every live session: at 10,000 sessions that halved steps/s (BENCHMARKS.md).
SERVING_GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc_for_serving() -> None:
    """Freeze what is alive now (imports, the server itself: never garbage) out of the collector's
    way and collect young objects less often. Process-wide: for processes that only serve."""
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


@dataclass(eq=False)
class ServerSession:
    id: str
    env_name: str
    resume_token: str
    runner: EnvRunner
    machine: SessionMachine
    owner: "Connection | None"
    turns: Turns = field(default_factory=Turns)
    last_active: float = field(default_factory=_now)
    task: TaskRef = field(default_factory=TaskRef)
    options: dict[str, Any] = field(default_factory=dict)
    detached_at: float | None = None
    success: bool | None = None
    score: float | None = None
    # The environment itself when its sync step may run right on the event loop (inline envs).
    direct_env: Environment | None = None


@dataclass(eq=False)
class Inflight:
    """A request being served. Once its environment call has started it is no longer cancelled:
    it runs to the end and its answer is recorded, so a re-sent seq is answered from record."""

    task: asyncio.Task[Any]
    env_started: bool = False
    # Places in line taken on arrival: one for a reset or step, one per entry of a batch (None
    # where the session was not this connection's then).
    turns: list[Turn | None] = field(default_factory=list)

    def release_turns(self) -> None:
        for turn in self.turns:
            if turn is not None:
                turn.release()


class Connection:
    def __init__(self, server: "GymServer", ws: ServerConnection, codec: Codec) -> None:
        self.server = server
        self.ws = ws
        self.codec = codec
        self.welcomed = False
        self.wants_images = False
        self.sessions: set[str] = set()
        self.opening = 0  # opens in progress, counted against the per-connection cap
        self.inflight: dict[int, Inflight] = {}
        self.connected_at = self.last_heard = _now()
        self.closed = False
        self.ping_ids = iter(range(2**53 - 1, 0, -1))  # server pings count down: no clash with client ids
        self.peer = f"{ws.remote_address}" if ws.remote_address else "?"

    async def send(self, message: Message) -> None:
        if not self.wants_images:
            # Images go only to clients that asked for them in hello (they can be large).
            message = _without_images(message)
        try:
            frame = self.codec.encode(message)
        except Exception as exc:  # an environment put something unencodable in info/data
            log.warning("unencodable reply %s: %s", message.type, exc)
            unencodable = ProtocolError(
                ErrorCode.INTERNAL,
                f"the environment returned data that cannot be encoded: {exc}"[:500],
                request_id=getattr(message, "id", None),
                session=getattr(message, "session", None),
            )
            frame = self.codec.encode(error_message(unencodable))
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(frame)

    async def send_error(self, error: ProtocolError) -> None:
        self.server.metrics.error(error.code.name)
        await self.send(error_message(error))


def _brief(exc: BaseException) -> str:
    """An exception's text cut short: environments often quote the action (GW-ERROR-8)."""
    text = str(exc)
    return text if len(text) <= 500 else text[:500] + "..."


def _task_text(task: TaskRef) -> str:
    return " ".join(f"{key}={value}" for key, value in task.model_dump(exclude_none=True).items()) or "of the env's choice"


def _log_crash(session: "ServerSession", what: str, exc: BaseException, task: TaskRef | None = None) -> None:
    """The server's record of an ENV_CRASHED: the client gets one line, the operator the traceback."""
    log.error(
        "session %s of %s (task %s): %s failed; the session is crashed",
        session.id, session.env_name, _task_text(task or session.task), what, exc_info=exc,
    )


def _replay(machine: SessionMachine, kind: type[Message], request_id: int) -> Any:
    """The recorded answer to a re-sent seq, if it answers the same kind of request."""
    reply = machine.last_reply
    if not isinstance(reply, kind):
        # The seq went to a reset and this is a step (or the reverse): not a retry of it.
        raise ProtocolError(
            ErrorCode.BAD_SEQUENCE,
            f"seq {machine.last_seq} was answered with a {reply.type}, so this is no retry; send {machine.last_seq + 1}",
            session=machine.session,
        )
    return reply.model_copy(update={"id": request_id})


def _without_images(message: Any) -> Any:
    if isinstance(message, StepBatchResult):
        results = [_without_images(result) for result in message.results]
        return message.model_copy(update={"results": results}) if results != message.results else message
    observation = getattr(message, "observation", None)
    if observation is not None and observation.images:
        return message.model_copy(update={"observation": observation.model_copy(update={"images": None})})
    return message


# The smallest value of each limit with which a server is still usable: a frame must hold a hello,
# a server with no session, no request in flight or no time left is no server.
LIMIT_MINIMUMS = {
    "max_frame_bytes": 512,
    "max_sessions": 1,
    "max_sessions_per_connection": 1,
    "max_inflight": 1,
    "max_batch": 1,
    "max_action_bytes": 1,
    "heartbeat_interval_ms": 10,
    "idle_timeout_ms": 10,
    "resume_grace_ms": 0,  # 0: a dropped connection's sessions are not kept for a resume
}


def check_limits(limits: Limits) -> None:
    """Raise ValueError naming the first limit below its minimum (and its `gymwire serve` flag)."""
    for name, value in limits.model_dump().items():
        minimum = LIMIT_MINIMUMS[name]
        if value < minimum:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"limit {name} ({flag}) must be at least {minimum}, got {value}")


class ListenError(OSError):
    """The server cannot listen where it was asked to; the message names the option to change."""


def _listen_error(option: str, host: str, port: int, exc: OSError) -> ListenError:
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return ListenError(f"cannot listen on host {host!r}: {exc.strerror or exc}; check --host (an address of this machine)")
    if exc.errno == errno.EADDRINUSE:
        hint = f"port {port} is in use; choose another {option}"
    elif exc.errno == errno.EACCES:
        hint = f"no permission to listen on port {port}; choose another {option} (above 1023)"
    else:
        hint = f"check --host and {option}"
    return ListenError(f"cannot listen on {host}:{port} ({option}): {exc.strerror or exc}; {hint}")


class GymServer:
    """Serve environments over gymwire protocol v1.

    `envs`: Environment subclasses, or a mapping name -> class. `limits` are enforced and announced
    in the welcome. `isolation`: "thread" (sync envs in a thread pool) or "process" (one child
    process per session). Use `async with GymServer(...)`, `serve_forever()` or `run_in_thread()`.
    """

    def __init__(
        self,
        envs: Iterable[type[Environment]] | Mapping[str, type[Environment]],
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str | None = None,
        limits: Limits | None = None,
        isolation: str = "thread",
        max_workers: int | None = None,
        metrics_port: int | None = None,
        name: str = _SERVER_NAME,
    ) -> None:
        classes = list(envs.values() if isinstance(envs, Mapping) else envs)
        for cls in classes:
            cls.check_class()
        items = envs.items() if isinstance(envs, Mapping) else ((cls.info().name, cls) for cls in classes)
        self.envs: dict[str, type[Environment]] = dict(items)
        if not self.envs:
            raise ValueError("a server needs at least one environment")
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        check_limits(limits or Limits())
        self.env_infos: dict[str, EnvInfo] = {}
        for env_name, cls in self.envs.items():
            info = cls.info()
            self.env_infos[env_name] = info if info.name == env_name else info.model_copy(update={"name": env_name})
        self.host, self.port = host, port
        self.token = token
        self.limits = limits or Limits()
        self.isolation = isolation
        self.executor = ThreadPoolExecutor(max_workers=max_workers or 32, thread_name_prefix="gymwire-env")
        self.metrics = ServerMetrics(enabled=metrics_port is not None)
        self.metrics_port = metrics_port
        self.name = name
        self.sessions: dict[str, ServerSession] = {}
        self.opening = 0  # opens in progress, counted against max_sessions
        self.connections: set[Connection] = set()
        self.draining = False
        self._ws_server: Any = None
        self._metrics_http: Any = None
        self._reaper: asyncio.Task[None] | None = None
        capabilities = set(CAPABILITIES) - {"auth"}
        if token:
            capabilities.add("auth")
        self.capabilities = sorted(capabilities)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str | None:
        if self._metrics_http is None:
            return None
        return f"http://{self.host}:{self._metrics_http.server_port}/metrics"

    async def start(self) -> "GymServer":
        """Listen; raises ListenError (an OSError) naming --port, --metrics-port or --host."""
        try:
            self._ws_server = await websockets.serve(
                self._handle_connection,
                self.host,
                self.port,
                subprotocols=list(SUBPROTOCOLS),
                select_subprotocol=self._select_subprotocol,
                process_request=self._process_request,
                # Frames up to twice the limit still get a typed FRAME_TOO_LARGE; larger ones close (1009).
                max_size=2 * self.limits.max_frame_bytes,
                ping_interval=None,  # the protocol's own heartbeat works where proxies eat WebSocket pings
                compression=None,
                close_timeout=2,
            )
        except OSError as exc:
            raise _listen_error("--port", self.host, self.port, exc) from exc
        sock = next(iter(self._ws_server.sockets))
        self.port = sock.getsockname()[1]
        if self.metrics_port is not None:
            try:
                self._metrics_http = self.metrics.serve(self.metrics_port, self.host)
            except OSError as exc:
                self._ws_server.close()
                await self._ws_server.wait_closed()
                raise _listen_error("--metrics-port", self.host, self.metrics_port, exc) from exc
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())
        log.info("serving %s on %s (isolation=%s)", sorted(self.envs), self.url, self.isolation)
        return self

    async def __aenter__(self) -> "GymServer":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop(drain_timeout=0)

    async def drain(self, timeout: float = 30.0) -> None:
        """Refuse new sessions, tell clients to move, let in-flight requests finish."""
        self.draining = True
        notice = Notice(kind="drain", message="server is shutting down; move to another server", retry_after_ms=1000)
        await asyncio.gather(*(c.send(notice) for c in list(self.connections)))
        deadline = _now() + timeout
        while _now() < deadline and any(c.inflight for c in self.connections):
            await asyncio.sleep(0.02)

    async def stop(self, drain_timeout: float = 30.0) -> None:
        if drain_timeout > 0:
            await self.drain(drain_timeout)
        self.draining = True
        if self._reaper:
            self._reaper.cancel()
        if self._ws_server is not None:
            # Stop listening first: a client reconnecting meanwhile is refused at once, not accepted
            # by a server that closes before answering its handshake (it would wait open_timeout).
            self._ws_server.server.close()

        async def goodbye(conn: Connection) -> None:
            try:
                await asyncio.wait_for(conn.send(Notice(kind="goodbye", message="server stopped")), 2)
            except asyncio.TimeoutError:  # the peer reads nothing: do not wait for it
                conn.ws.transport.abort()
                return
            await conn.ws.close(1001, "server shutting down")

        await asyncio.gather(*(goodbye(conn) for conn in list(self.connections)))
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        for session in list(self.sessions.values()):
            await self._destroy_session(session, "server stopped")
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        self.executor.shutdown(wait=False, cancel_futures=True)
        log.info("server stopped")

    async def serve_forever(self, on_listening: Callable[["GymServer"], None] | None = None) -> None:
        """Run until SIGTERM/SIGINT, then drain and stop. The process is the server's: its garbage
        collector is tuned for serving (see `tune_gc_for_serving`). `on_listening` is called once
        the server listens (its `url` then has the real port)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # before listening: a signal right after is a drain too
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await self.start()
        if on_listening is not None:
            on_listening(self)
        tune_gc_for_serving()
        await stop.wait()
        log.info("signal received: draining")
        await self.stop()

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[str]:
        """Serve from a background thread with its own event loop; yields the URL."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="gymwire-server", daemon=True)
        thread.start()
        started.wait()
        if failure:
            raise failure[0]
        try:
            yield self.url
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(drain_timeout=0), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    # ------------------------------------------------------------------ handshake

    def _select_subprotocol(self, ws: ServerConnection, offered: list[str]) -> str | None:
        try:
            return select_subprotocol(offered)
        except ProtocolError:
            return None

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        offered = [
            p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")
        ]
        try:
            select_subprotocol(offered)
        except ProtocolError as exc:
            body = f"{exc.code.name}: {exc.message}\n".encode()
            return Response(400, "Bad Request", Headers([("Content-Type", "text/plain")]), body)
        return None

    async def _handle_connection(self, ws: ServerConnection) -> None:
        codec = Codec(SUBPROTOCOLS[ws.subprotocol], max_frame_bytes=self.limits.max_frame_bytes)
        conn = Connection(self, ws, codec)
        self.connections.add(conn)
        self.metrics.connection(+1)
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(conn))
        log.info("connection from %s (%s)", conn.peer, ws.subprotocol)
        # Frames are read as bytes, text frames too: invalid UTF-8 is then the codec's BAD_FRAME on an
        # open connection (GW-FRAME-3), not websockets' 1007 close. On a msgpack connection a text
        # frame cannot decode as a msgpack map (no UTF-8 text starts with one), so it is BAD_FRAME too.
        try:
            while True:
                frame = await ws.recv(decode=False)
                conn.last_heard = _now()
                await self._on_frame(conn, frame)
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
            for session_id in conn.sessions:
                session = self.sessions.get(session_id)
                if session is not None and session.owner is conn:
                    session.owner = None
                    session.detached_at = _now()
            log.info("connection from %s closed; %d session(s) detached", conn.peer, len(conn.sessions))

    async def _heartbeat(self, conn: Connection) -> None:
        interval = self.limits.heartbeat_interval_ms / 1000
        while True:
            await asyncio.sleep(interval / 2)
            silent = _now() - conn.last_heard
            if not conn.welcomed and _now() - conn.connected_at > interval:
                log.info("connection from %s sent no hello within %.1fs: closing", conn.peer, interval)
                await conn.ws.close(1002, "no hello")
                return
            if silent > 3 * interval:
                log.info("connection from %s silent for %.1fs: closing as half-open", conn.peer, silent)
                conn.ws.transport.abort()
                return
            if silent > interval:
                try:
                    # A peer that stops reading (a partition) leaves our sends waiting for buffer room.
                    await asyncio.wait_for(conn.send(Ping(id=next(conn.ping_ids))), interval)
                except asyncio.TimeoutError:
                    log.info("connection from %s reads nothing: closing as half-open", conn.peer)
                    conn.ws.transport.abort()
                    return

    # ------------------------------------------------------------------ dispatch

    async def _on_frame(self, conn: Connection, frame: bytes | str) -> None:
        try:
            message = conn.codec.decode(frame)
        except ProtocolError as exc:
            await conn.send_error(exc)
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
                ProtocolError(ErrorCode.INTERNAL, f"internal server error: {_brief(exc)}", request_id=getattr(message, "id", None))
            )

    async def _dispatch(self, conn: Connection, message: Message) -> None:
        if isinstance(message, Hello):
            await self._hello(conn, message)
            return
        if not conn.welcomed:
            if isinstance(message, Pong):
                return
            raise ProtocolError(ErrorCode.HANDSHAKE_REQUIRED, "send hello first and wait for welcome")
        if isinstance(message, Pong):
            return
        self._refuse_inflight_id(conn, message)
        if isinstance(message, Step):
            reply = self._step_now(conn, message)
            if reply is not None:
                await conn.send(reply)
            else:
                self._spawn(conn, message)
        elif isinstance(message, Ping):
            await conn.send(Pong(id=message.id))
        elif isinstance(message, ListEnvs):
            await conn.send(EnvList(id=message.id, envs=list(self.env_infos.values())))
        elif isinstance(message, DescribeEnv):
            await conn.send(EnvDescription(id=message.id, env=self._env_info(message.env)))
        elif isinstance(message, Cancel):
            await self._cancel(conn, message)
        elif isinstance(message, (Open, Reset, Step, StepBatch, Close, Resume)):
            self._spawn(conn, message)
        else:
            raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE, f"{message.type!r} is not a client request")

    async def _hello(self, conn: Connection, hello: Hello) -> None:
        if conn.welcomed:
            raise ProtocolError(ErrorCode.INVALID_STATE, "hello was already answered on this connection")
        try:
            version = negotiate_version(hello.version, PROTOCOL_VERSION)
        except ProtocolError as exc:
            exc.request_id = hello.id
            await conn.send_error(exc)
            await conn.ws.close(1002, "unsupported protocol version")
            return
        if self.token is not None and not hmac.compare_digest(
            (hello.token or "").encode(), self.token.encode()
        ):
            await conn.send_error(
                ProtocolError(
                    ErrorCode.UNAUTHORIZED,
                    "missing or wrong token; pass the server's token in hello.token",
                    request_id=hello.id,
                )
            )
            await conn.ws.close(1008, "unauthorized")
            return
        conn.welcomed = True
        conn.wants_images = "images" in hello.capabilities
        await conn.send(
            Welcome(
                id=hello.id,
                version=version,
                server=PeerInfo(name=self.name, version=package_version()),
                capabilities=self.capabilities,
                limits=self.limits,
                envs=sorted(self.envs),
            )
        )

    def _env_info(self, name: str) -> EnvInfo:
        info = self.env_infos.get(name)
        if info is None:
            raise ProtocolError(ErrorCode.UNKNOWN_ENV, f"no environment {name!r}; this server has {sorted(self.envs)}")
        return info

    def _refuse_inflight_id(self, conn: Connection, message: Any) -> None:
        """One id, one answer (GW-REQUEST-5): any request reusing the id of one in flight is refused."""
        if message.id in conn.inflight:
            raise ProtocolError(ErrorCode.INVALID_STATE, f"request id {message.id} is already in flight; use a fresh id")

    def _spawn(self, conn: Connection, message: Any) -> None:
        if len(conn.inflight) >= self.limits.max_inflight:
            raise ProtocolError(
                ErrorCode.CAPACITY,
                f"{len(conn.inflight)} requests in flight on this connection (max_inflight={self.limits.max_inflight})",
                retry_after_ms=50,
            )
        task = asyncio.get_running_loop().create_task(self._serve_request(conn, message))
        inflight = conn.inflight[message.id] = Inflight(task)
        task.add_done_callback(lambda _: self._answer_if_cancelled_unstarted(conn, message, inflight))
        if isinstance(message, (Step, Reset)):
            inflight.turns = [self._take_turn(conn, message.session)]
        elif isinstance(message, StepBatch):
            inflight.turns = [self._take_turn(conn, item.session) for item in message.steps]

    def _take_turn(self, conn: Connection, session_id: str) -> Turn | None:
        session = self.sessions.get(session_id)
        return session.turns.take() if session is not None and session.owner is conn else None

    def _answer_if_cancelled_unstarted(self, conn: Connection, message: Any, inflight: Inflight) -> None:
        # A task cancelled before its first step (a cancel in the same read as its request, or the
        # connection closing) never enters _serve_request, whose handlers answer and unregister.
        if not inflight.task.cancelled() or conn.inflight.get(message.id) is not inflight:
            return
        inflight.release_turns()
        del conn.inflight[message.id]
        cancelled = ProtocolError(
            ErrorCode.CANCELLED, "cancelled by the client", request_id=message.id, session=getattr(message, "session", None)
        )
        asyncio.get_running_loop().create_task(conn.send_error(cancelled))

    async def _serve_request(self, conn: Connection, message: Any) -> None:
        inflight = conn.inflight[message.id]
        deadline = getattr(message, "deadline_ms", None)
        work = asyncio.ensure_future(self._execute(conn, message, inflight))
        work.add_done_callback(lambda _: inflight.release_turns())  # turns it never reached
        try:
            if deadline is None:
                reply = await asyncio.shield(work)
            else:
                try:
                    reply = await asyncio.wait_for(asyncio.shield(work), deadline / 1000)
                except asyncio.TimeoutError:
                    self._abandon(work, inflight)
                    reply = error_message(
                        ProtocolError(
                            ErrorCode.TIMEOUT,
                            f"no answer within deadline_ms={deadline}; re-send the same seq to get its result",
                            request_id=message.id,
                            session=getattr(message, "session", None),
                        )
                    )
        except asyncio.CancelledError:
            self._abandon(work, inflight)
            reply = error_message(
                ProtocolError(
                    ErrorCode.CANCELLED,
                    "cancelled by the client",
                    request_id=message.id,
                    session=getattr(message, "session", None),
                )
            )
        except ProtocolError as exc:
            exc.request_id = message.id
            reply = error_message(exc)
        except Exception as exc:
            log.exception("internal error serving %s", message.type)
            reply = error_message(ProtocolError(ErrorCode.INTERNAL, f"internal server error: {_brief(exc)}", request_id=message.id))
        finally:
            conn.inflight.pop(message.id, None)
        if isinstance(reply, Error):
            self.metrics.error(reply.name)
        await conn.send(reply)

    def _abandon(self, work: asyncio.Future[Any], inflight: Inflight) -> None:
        """The client gets TIMEOUT or CANCELLED now. Work that has not touched the environment is
        cancelled; work that has runs on and records its result (a re-sent seq gets it), except an
        open: nobody will learn that session's id, so it is closed as soon as it exists."""
        if not inflight.env_started:
            work.cancel()
            return

        def close_orphan(done: asyncio.Future[Any]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            reply = done.result()
            if isinstance(reply, Opened) and reply.session in self.sessions:
                asyncio.get_running_loop().create_task(
                    self._destroy_session(self.sessions[reply.session], "its open was answered TIMEOUT/CANCELLED")
                )

        work.add_done_callback(close_orphan)

    async def _cancel(self, conn: Connection, message: Cancel) -> None:
        inflight = conn.inflight.get(message.target)
        if inflight is not None:
            inflight.task.cancel()
        await conn.send(CancelAck(id=message.id, target=message.target, found=inflight is not None))

    async def _execute(self, conn: Connection, message: Any, inflight: Inflight) -> Message:
        if isinstance(message, Step):
            return await self._step(conn, message, inflight)
        if isinstance(message, StepBatch):
            return await self._step_batch(conn, message, inflight)
        if isinstance(message, Open):
            return await self._open(conn, message, inflight)
        if isinstance(message, Reset):
            return await self._reset(conn, message, inflight)
        if isinstance(message, Close):
            return await self._close(conn, message)
        return await self._resume(conn, message)

    # ------------------------------------------------------------------ sessions

    def _owned(self, conn: Connection, session_id: str) -> ServerSession:
        session = self.sessions.get(session_id)
        if session is None or session.owner is not conn:
            # Another connection's session is reported exactly like a missing one: ids leak nothing.
            raise ProtocolError(
                ErrorCode.UNKNOWN_SESSION,
                f"no session {session_id!r} on this connection; open one, or resume it with its token",
                session=session_id,
            )
        session.last_active = _now()
        return session

    def _make_runner(self, cls: type[Environment]) -> EnvRunner:
        if self.isolation == "process":
            return ProcessRunner(cls, self.executor)
        if cls.is_async() or cls.inline:
            return InlineRunner(cls())
        return ThreadRunner(cls(), self.executor)

    async def _open(self, conn: Connection, message: Open, inflight: Inflight) -> Opened:
        cls = self.envs.get(message.env)
        if cls is None:
            raise ProtocolError(ErrorCode.UNKNOWN_ENV, f"no environment {message.env!r}; this server has {sorted(self.envs)}")
        if self.draining:
            raise ProtocolError(ErrorCode.DRAINING, "server is draining; open the session elsewhere", retry_after_ms=1000)
        if len(self.sessions) + self.opening >= self.limits.max_sessions:
            raise ProtocolError(
                ErrorCode.CAPACITY,
                f"server holds max_sessions={self.limits.max_sessions}; retry later or use another server",
                retry_after_ms=1000,
            )
        if len(conn.sessions) + conn.opening >= self.limits.max_sessions_per_connection:
            raise ProtocolError(
                ErrorCode.CAPACITY,
                f"connection holds max_sessions_per_connection={self.limits.max_sessions_per_connection}; "
                "close some or open another connection",
                retry_after_ms=1000,
            )
        info = self.env_infos[message.env]
        max_turns = message.max_turns or info.default_max_turns
        session_id = secrets.token_urlsafe(12)
        # Count the open before any await so concurrent opens cannot overshoot the caps.
        self.opening += 1
        conn.opening += 1
        inflight.env_started = True
        try:
            runner = await asyncio.get_running_loop().run_in_executor(self.executor, self._make_runner, cls)
        except Exception as exc:
            log.error("environment %s failed to start (task %s)", message.env, _task_text(message.task), exc_info=exc)
            raise ProtocolError(ErrorCode.ENV_CRASHED, f"environment {message.env!r} failed to start: {_brief(exc)}") from exc
        finally:
            self.opening -= 1
            conn.opening -= 1
        session = ServerSession(
            id=session_id,
            env_name=message.env,
            resume_token=secrets.token_urlsafe(24),
            runner=runner,
            direct_env=runner.env if type(runner) is InlineRunner and not inspect.iscoroutinefunction(cls.step) else None,
            machine=SessionMachine(session_id, max_turns),
            owner=conn,
            task=message.task,
            options=message.options,
        )
        self.sessions[session_id] = session
        self.metrics.session_opened(message.env)  # counted now: _destroy_session counts it out on any failure
        conn.sessions.add(session_id)
        observation = None
        if message.reset:
            try:
                observation = as_observation(await runner.reset(Task.from_ref(message.task, message.options)))
            except BaseException as exc:
                await self._destroy_session(session, "reset failed on open")
                if isinstance(exc, TaskError):
                    raise ProtocolError(ErrorCode.INVALID_TASK, _brief(exc)) from None
                if isinstance(exc, (EnvCrashed, TypeError)):
                    _log_crash(session, "reset", exc)
                    raise ProtocolError(ErrorCode.ENV_CRASHED, f"reset failed: {_brief(exc)}") from None
                raise
        if conn.closed:
            # The connection died during the open: nobody will ever learn this session's id or token.
            await self._destroy_session(session, "its connection closed during the open")
            raise ProtocolError(ErrorCode.CANCELLED, "the connection closed before the session was opened")
        session.machine.opened(did_reset=message.reset)
        log.debug("session %s opened on %s", session_id, message.env)
        return Opened(
            id=message.id,
            session=session_id,
            resume_token=session.resume_token,
            env=message.env,
            max_turns=max_turns,
            observation=observation,
        )

    async def _reset(self, conn: Connection, message: Reset, inflight: Inflight) -> ResetResult:
        session = self._owned(conn, message.session)
        async with inflight.turns[0] or session.turns.take():
            if session.machine.check_reset(message.seq) is Decision.REPLAY:
                return _replay(session.machine, ResetResult, message.id)
            task = session.task if message.task is None else message.task
            inflight.env_started = True
            try:
                observation = as_observation(await session.runner.reset(Task.from_ref(task, session.options)))
            except TaskError as exc:
                raise ProtocolError(ErrorCode.INVALID_TASK, _brief(exc), session=session.id) from None
            except (EnvCrashed, TypeError) as exc:
                session.machine.crashed()
                _log_crash(session, "reset", exc, task)
                raise ProtocolError(ErrorCode.ENV_CRASHED, f"reset failed: {_brief(exc)}", session=session.id) from None
            reply = ResetResult(id=message.id, session=session.id, seq=message.seq, observation=observation)
            session.task = task  # only now: a refused task leaves the session as it was (GW-SESSION-2)
            session.success = session.score = None
            session.machine.reset_done(message.seq, reply)
            return reply

    async def _step(self, conn: Connection, message: Step, inflight: Inflight) -> StepResult:
        session = self._owned(conn, message.session)
        return await self._step_session(session, message.id, message.seq, message.action, inflight, inflight.turns[0])

    def _step_now(self, conn: Connection, message: Step) -> StepResult | None:
        """The hot path: a step of an inline sync environment whose session has nothing queued
        runs right here, with no task, since nothing can interleave with it. None: take the
        ordinary path (deadline, queued requests, thread or process runner)."""
        session = self.sessions.get(message.session)
        if (
            session is None
            or session.direct_env is None
            or session.owner is not conn
            or message.deadline_ms is not None
            or session.turns.busy()
        ):
            return None
        session.last_active = started = _now()
        self._check_action(session, message.action)
        machine = session.machine
        if machine.check_step(message.seq) is Decision.REPLAY:
            return _replay(machine, StepResult, message.id)
        try:
            result = session.direct_env.step(message.action)
        except Exception as exc:
            result = env_crashed(exc)
        return self._finish_step(session, message.id, message.seq, result, started)

    def _check_action(self, session: ServerSession, action: str) -> None:
        if len(action.encode("utf-8", "surrogatepass")) > self.limits.max_action_bytes:
            raise ProtocolError(
                ErrorCode.INVALID_ACTION,
                f"action longer than max_action_bytes={self.limits.max_action_bytes}; shorten it",
                session=session.id,
            )

    async def _step_session(
        self, session: ServerSession, request_id: int, seq: int, action: str, inflight: Inflight, turn: Turn | None
    ) -> StepResult:
        self._check_action(session, action)
        started = _now()
        async with turn or session.turns.take():
            if session.machine.check_step(seq) is Decision.REPLAY:
                return _replay(session.machine, StepResult, request_id)
            inflight.env_started = True
            try:
                result: Any = await session.runner.step(action)
            except EnvCrashed as exc:
                result = exc
            return self._finish_step(session, request_id, seq, result, started)

    def _finish_step(self, session: ServerSession, request_id: int, seq: int, result: Any, started: float) -> StepResult:
        """Turn what the environment returned (or the EnvCrashed it caused) into the recorded reply."""
        machine = session.machine
        try:
            if isinstance(result, EnvCrashed):
                raise result
            if not isinstance(result, EnvStepResult):
                raise EnvCrashed(f"step must return gymwire.sdk.StepResult, got {type(result).__name__}")
            observation = as_observation(result.observation)
            reward = float(result.reward)
            if not math.isfinite(reward) or (result.score is not None and not math.isfinite(float(result.score))):
                # JSON cannot carry them (GW-FRAME-9) and no trainer can use them.
                raise EnvCrashed(f"step returned reward={reward}, score={result.score}; both must be finite numbers")
        except (EnvCrashed, TypeError, ValueError) as exc:
            machine.crashed()
            _log_crash(session, "step", exc)
            raise ProtocolError(ErrorCode.ENV_CRASHED, f"step failed: {_brief(exc)}", session=session.id) from None
        terminated = bool(result.terminated)
        truncated = machine.step_done(reward, terminated, bool(result.truncated))
        if result.success is not None:
            session.success = result.success
        if result.score is not None:
            session.score = result.score
        metrics = None
        if terminated or truncated:
            metrics = EpisodeMetrics(
                success=session.success if session.success is not None else reward > 0 and terminated,
                score=float(session.score if session.score is not None else machine.total_reward),
                turns=machine.turns,
                total_reward=machine.total_reward,
            )
        reply = StepResult(
            id=request_id,
            session=session.id,
            seq=seq,
            observation=observation,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            info=result.info,
            metrics=metrics,
        )
        machine.record(seq, reply)
        self.metrics.step(session.env_name, _now() - started)
        return reply

    async def _step_batch(self, conn: Connection, message: StepBatch, inflight: Inflight) -> StepBatchResult:
        if len(message.steps) > self.limits.max_batch:
            raise ProtocolError(
                ErrorCode.INVALID_ACTION,
                f"batch of {len(message.steps)} steps exceeds max_batch={self.limits.max_batch}; split it",
            )

        async def one(item: Any, turn: Turn | None) -> StepResult | Error:
            try:
                session = self._owned(conn, item.session)
                return await self._step_session(session, message.id, item.seq, item.action, inflight, turn)
            except ProtocolError as exc:
                exc.request_id = message.id
                exc.session = exc.session or item.session
                return error_message(exc)

        results = await asyncio.gather(*(one(item, turn) for item, turn in zip(message.steps, inflight.turns)))
        return StepBatchResult(id=message.id, results=list(results))

    async def _close(self, conn: Connection, message: Close) -> Closed:
        session = self._owned(conn, message.session)
        session.machine.check_close()
        await self._destroy_session(session, "closed by client")
        return Closed(id=message.id, session=session.id)

    async def _resume(self, conn: Connection, message: Resume) -> Resumed:
        session = self.sessions.get(message.session)
        if session is None or not hmac.compare_digest(session.resume_token.encode(), message.resume_token.encode()):
            raise ProtocolError(
                ErrorCode.UNKNOWN_SESSION,
                f"no session {message.session!r} with that resume token (it may have been reaped); open a new one",
                session=message.session,
            )
        if session.owner is not conn and len(conn.sessions) >= self.limits.max_sessions_per_connection:
            raise ProtocolError(ErrorCode.CAPACITY, "connection holds max_sessions_per_connection", retry_after_ms=1000)
        previous = session.owner
        if previous is not None and previous is not conn:
            previous.sessions.discard(session.id)  # the old connection is half-open; the token wins
        session.owner = conn
        session.detached_at = None
        session.last_active = _now()
        conn.sessions.add(session.id)
        machine = session.machine
        return Resumed(
            id=message.id,
            session=session.id,
            state=machine.state.value,
            last_seq=machine.last_seq,
            turns=machine.turns,
            max_turns=machine.max_turns,
        )

    async def _destroy_session(self, session: ServerSession, why: str) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        if session.owner is not None:
            session.owner.sessions.discard(session.id)
        session.machine.closed()
        self.metrics.session_closed(session.env_name)
        log.debug("session %s closed: %s", session.id, why)
        runner = session.runner
        if isinstance(runner, ProcessRunner) and session.turns.busy():
            runner.kill()  # a stuck child must not hold the session's resources
            return

        async def close_after_current_step() -> None:
            async with session.turns.take():
                try:
                    await runner.close()
                except Exception as exc:
                    log.warning("environment close of session %s raised: %s", session.id, exc)

        if session.turns.busy():
            asyncio.get_running_loop().create_task(close_after_current_step())
        else:
            await close_after_current_step()

    async def _reap_forever(self) -> None:
        limits = self.limits
        period = max(0.05, min(limits.idle_timeout_ms, limits.resume_grace_ms) / 4000)
        while True:
            await asyncio.sleep(period)
            now = _now()
            for session in list(self.sessions.values()):
                if session.turns.busy():
                    continue
                if session.owner is None and session.detached_at is not None:
                    if now - session.detached_at > limits.resume_grace_ms / 1000:
                        await self._destroy_session(session, "not resumed within resume_grace_ms")
                elif now - session.last_active > limits.idle_timeout_ms / 1000:
                    await self._destroy_session(session, "idle past idle_timeout_ms")

    # ------------------------------------------------------------------ introspection (tests, metrics)

    def stats(self) -> dict[str, int]:
        return {
            "sessions": len(self.sessions),
            "connections": len(self.connections),
            "inflight": sum(len(c.inflight) for c in self.connections),
        }
