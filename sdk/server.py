"""The gymwire server runtime: serves Environment classes over protocol v1 on WebSockets.

One process hosts several environments and many connections; each connection multiplexes many
sessions and gets its replies in completion order. Steps of one session run one at a time in
arrival order (a per-session FIFO line); different sessions run concurrently. Everything a client
can send is answered with a reply or a typed error; nothing it sends can stop the server or reach
a session it does not own.

The rules of a connection are `gymwire.protocol.ServerConnection`'s; this module puts together the
parts of `gymwire.sdk.serving` (connections, scheduling, session requests, the session registry)
and runs the server's life: start, drain, stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Mapping

import websockets
from websockets.asyncio.server import ServerConnection as WebSocket
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from gymwire.protocol import (
    SUBPROTOCOLS,
    Cancel,
    Close,
    Codec,
    EnvInfo,
    Limits,
    Message,
    Notice,
    Open,
    PeerInfo,
    ProtocolError,
    Reset,
    Resume,
    ServerConnection,
    Step,
    StepBatch,
    origin_refusal,
    select_subprotocol,
    server_capabilities,
)
from gymwire.protocol.steps import StepFields

from .env_spec import EnvSpec
from .environment import Environment, require_modules
from .metrics import ServerMetrics
from .package_info import package_version
from .serving.connections import (
    DEFAULT_MAX_AWAITING_WELCOME,
    QUEUED_FRAMES,
    Connection,
    GymWebSocket,
    Transport,
    Unwelcomed,
    WebSocketTransport,
    request_id_of,
    stopped_before_answering,
)
from .serving.gc_tuning import SERVING_GC_THRESHOLDS, tune_gc_for_serving
from .serving.scheduling import Scheduling
from .serving.session_requests import SessionRequests
from .serving.sessions import ServerSession, SessionRegistry, now
from .serving.startup import ListenError, check_limits, listen_error, raise_open_file_limit, unwelcomed_cap

__all__ = ["GymServer", "ListenError", "ISOLATIONS", "TRANSPORTS", "SERVING_GC_THRESHOLDS", "tune_gc_for_serving"]

log = logging.getLogger("gymwire.server")

ISOLATIONS = ("thread", "process")
# The WebSocket implementations a server listens with: the default, and the fast one (gymwire[fast]).
TRANSPORTS = ("websockets", "picows")
_SERVER_NAME = "gymwire"
PRIVATE_IDLE_TIMEOUT_MS = 7 * 24 * 3600 * 1000


class GymServer(Scheduling, SessionRequests):
    """Serve environments over gymwire protocol v1.

    `envs`: EnvSpecs (configured environments) or Environment subclasses (their defaults), or a
    mapping served name -> spec or class. `limits` are enforced and announced
    in the welcome. `isolation`: "thread" (sync envs in a thread pool) or "process" (one child
    process per session). `allowed_origins`: the browser origins (e.g. "https://lab.example:8443",
    or "*" for any) whose pages may open sessions; handshakes from any other origin are refused.
    `max_awaiting_welcome`: connections that may wait for their welcome at once, from their TCP
    accept (they have shown no token yet); a new connection past it is closed at once.
    `transport`: "websockets" (the default) or "picows" (gymwire[fast]: the same frames, less CPU a
    frame; clients of either transport connect to either). Use `async with GymServer(...)`, `serve_forever()` or `run_in_thread()`.
    """

    # The rules each connection follows, and the connection that runs them over its transport (a
    # subclass may bend either, as the conformance tests' broken servers do).
    connection_rules: type[ServerConnection[Any]] = ServerConnection
    connection_class: type[Connection] = Connection

    def __init__(
        self,
        envs: Iterable[EnvSpec | type[Environment]] | Mapping[str, EnvSpec | type[Environment]],
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        token: str | None = None,
        limits: Limits | None = None,
        isolation: str = "thread",
        max_workers: int | None = None,
        metrics_port: int | None = None,
        name: str = _SERVER_NAME,
        allowed_origins: Iterable[str] = (),
        max_awaiting_welcome: int = DEFAULT_MAX_AWAITING_WELCOME,
        reuse_port: bool = False,
        transport: str = "websockets",
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
        if transport == "picows":
            require_modules(["picows"], "fast", "the picows transport")
        if isinstance(envs, Mapping):
            specs = [EnvSpec.coerce(env).renamed(env_name) for env_name, env in envs.items()]
        else:
            specs = [EnvSpec.coerce(env) for env in envs]
        for spec in specs:
            spec.check()
        self.envs: dict[str, EnvSpec] = {}
        for spec in specs:
            if spec.name in self.envs:
                raise ValueError(f"two environments are served as {spec.name!r}; give one of them another name")
            self.envs[spec.name] = spec
        if not self.envs:
            raise ValueError("a server needs at least one environment")
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        check_limits(limits or Limits())
        self.env_infos: dict[str, EnvInfo] = {name: spec.info() for name, spec in self.envs.items()}
        self.host, self.port = host, port
        self.token = token
        self.allowed_origins = frozenset(allowed_origins)
        self.limits = limits or Limits()
        self.isolation = isolation
        self.executor = ThreadPoolExecutor(max_workers=max_workers or 32, thread_name_prefix="gymwire-env")
        self.registry = SessionRegistry(self.limits, ServerMetrics(enabled=metrics_port is not None))
        self.metrics_port = metrics_port
        self.name = name
        # SO_REUSEPORT: several server processes listen on one port and the kernel spreads the
        # connections over them (a server that uses every core).
        self.reuse_port = reuse_port
        self.transport = transport
        self.connections: set[Connection] = set()
        self.max_awaiting_welcome = max_awaiting_welcome
        self.unwelcomed = Unwelcomed(max_awaiting_welcome)
        self.draining = False
        self.stopping = False  # the goodbye is decided: every request is answered DRAINING at once
        self._ws_server: Any = None  # websockets' server
        self._listener: asyncio.Server | None = None  # what accepts connections (either transport's)
        self._metrics_http: Any = None
        self._reaper: asyncio.Task[None] | None = None
        # Steps whose client was answered TIMEOUT/CANCELLED but which run on in the environment;
        # stop() ends them so that no step outlives the server's event loop.
        self._abandoned: set[asyncio.Future[Any]] = set()
        self.capabilities = server_capabilities(auth=token is not None)
        # The one dispatch by message type, of each request the connection rules pass on: a step
        # may run in place (_serve_step) and a cancel is answered at once (both return the answer);
        # the others run as tasks (_spawn) with the coroutine that serves them. A step the rules
        # read as plain data comes as its fields, a tuple (gymwire.protocol.steps).
        self._serve_request_of: dict[type, Callable[[Connection, Any], Any]] = {
            tuple: self._serve_step,
            Step: self._serve_step,
            Cancel: self._cancel,
            Open: functools.partial(self._spawn, execute=self._open),
            Reset: functools.partial(self._spawn, execute=self._reset),
            StepBatch: functools.partial(self._spawn, execute=self._step_batch),
            Close: functools.partial(self._spawn, execute=self._close),
            Resume: functools.partial(self._spawn, execute=self._resume),
        }

    @property
    def sessions(self) -> dict[str, ServerSession]:
        return self.registry.sessions

    # ------------------------------------------------------------------ connections

    async def _handle_connection(self, ws: WebSocket) -> None:
        await self.serve_connection(WebSocketTransport(ws), ws.subprotocol or "")

    async def serve_connection(self, transport: Transport, subprotocol: str) -> None:
        """Serve one client connection (any Transport, e.g. an in-memory one in tests) until it
        ends; its sessions then wait for a resume."""
        rules = self.connection_rules(
            Codec(SUBPROTOCOLS[subprotocol], max_frame_bytes=self.limits.max_frame_bytes),
            now=now(),
            limits=self.limits,
            capabilities=self.capabilities,
            server=PeerInfo(name=self.name, version=package_version()),
            envs=self.env_infos,
            token=self.token,
            on_error=self.metrics.error,
        )
        conn = self.connection_class(transport, rules, self._dispatch)
        self.connections.add(conn)
        self.metrics.connection(+1)
        log.info("connection from %s (%s)", conn.peer, subprotocol)
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)
            self.metrics.connection(-1)
            self.registry.detach_all(conn)
            log.info("connection from %s closed; %d session(s) detached", conn.peer, len(conn.sessions))

    def _dispatch(self, conn: Connection, request: Message | StepFields) -> Message | dict[str, Any] | None:
        """The one dispatch of a request the rules passed on, by its type."""
        if self.stopping:  # past the drain: answered at once, never left for a goodbye (GW-DRAIN-6)
            raise stopped_before_answering(request_id_of(request))  # type: ignore[arg-type]
        return self._serve_request_of[type(request)](conn, request)

    @property
    def metrics(self) -> ServerMetrics:
        return self.registry.metrics

    @metrics.setter
    def metrics(self, metrics: ServerMetrics) -> None:
        self.registry.metrics = metrics

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
        self.unwelcomed.limit = unwelcomed_cap(self.max_awaiting_welcome)
        try:
            if self.transport == "picows":
                from .picows_transport import listen

                self._listener = await listen(
                    self.host,
                    self.port,
                    upgrade=self._upgrade,
                    serve=self.serve_connection,
                    unwelcomed=self.unwelcomed,
                    max_frame_bytes=2 * self.limits.max_frame_bytes,
                    reuse_port=self.reuse_port,
                )
            else:
                self._ws_server = await websockets.serve(
                    self._handle_connection,
                    self.host,
                    self.port,
                    subprotocols=list(SUBPROTOCOLS),
                    select_subprotocol=self._select_subprotocol,
                    process_request=self._process_request,
                    # Frames up to twice the limit still get a typed FRAME_TOO_LARGE; larger ones close (1009).
                    # (Before the welcome, far less: see GymWebSocket.)
                    max_size=2 * self.limits.max_frame_bytes,
                    max_queue=QUEUED_FRAMES,
                    create_connection=functools.partial(GymWebSocket, unwelcomed=self.unwelcomed),  # type: ignore[arg-type]
                    ping_interval=None,  # the protocol's own heartbeat works where proxies eat WebSocket pings
                    compression=None,
                    close_timeout=2,
                    reuse_port=self.reuse_port or None,
                    backlog=4096,  # a trainer opens thousands of connections at once
                )
                self._listener = self._ws_server.server
        except OSError as exc:
            raise listen_error("--port", self.host, self.port, exc) from exc
        assert self._listener is not None
        sock = next(iter(self._listener.sockets))
        self.port = sock.getsockname()[1]
        if self.metrics_port is not None:
            try:
                self._metrics_http = self.metrics.serve(self.metrics_port, self.host)
            except OSError as exc:
                await self._close_listener()
                raise listen_error("--metrics-port", self.host, self.metrics_port, exc) from exc
        self._reaper = asyncio.get_running_loop().create_task(self.registry.reap_forever())
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
        deadline = now() + timeout
        while now() < deadline and any(c.inflight for c in self.connections):
            await asyncio.sleep(0.02)

    async def stop(self, drain_timeout: float = 30.0) -> None:
        if drain_timeout > 0:
            await self.drain(drain_timeout)
        self.draining = self.stopping = True
        if self._reaper:
            self._reaper.cancel()
        if self._listener is not None:
            # Stop listening first: a client reconnecting meanwhile is refused at once, not accepted
            # by a server that closes before answering its handshake (it would wait open_timeout).
            self._listener.close()

        async def goodbye(conn: Connection) -> None:
            # Requests still running past the drain are answered now: nothing comes after goodbye.
            for request_id, inflight in list(conn.inflight.items()):
                if conn.protocol.untrack(request_id, inflight):
                    await conn.send_error(stopped_before_answering(request_id))
            try:
                await asyncio.wait_for(conn.send(Notice(kind="goodbye", message="server stopped")), 2)
            except asyncio.TimeoutError:  # the peer reads nothing: do not wait for it
                conn.transport.abort()
                return
            await conn.transport.close(1001, "server shutting down")

        await asyncio.gather(*(goodbye(conn) for conn in list(self.connections)))
        await self._close_listener()
        for work in self._abandoned:
            work.cancel()
        await asyncio.gather(*self._abandoned, return_exceptions=True)
        for session in list(self.sessions.values()):
            await self.registry.destroy(session, "server stopped")
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        self.executor.shutdown(wait=False, cancel_futures=True)
        log.info("server stopped")

    async def _close_listener(self) -> None:
        if self._ws_server is not None:
            self._ws_server.close()  # also closes connections still open
            await self._ws_server.wait_closed()
        elif self._listener is not None:
            self._listener.close()
            for conn in list(self.connections):
                conn.transport.abort()

    def run(self, on_listening: Callable[["GymServer"], None] | None = None) -> None:
        """`serve_forever` on an event loop of its own: uvloop's for the picows transport, where
        installed (gymwire[fast] installs it), else asyncio's."""
        if self.transport == "picows":
            try:
                import uvloop
            except ImportError:
                pass
            else:
                uvloop.run(self.serve_forever(on_listening))
                return
        asyncio.run(self.serve_forever(on_listening))

    async def serve_forever(self, on_listening: Callable[["GymServer"], None] | None = None) -> None:
        """Run until SIGTERM/SIGINT, then drain and stop. The process is the server's: its garbage
        collector is tuned for serving (see `tune_gc_for_serving`) and its open-file limit raised to
        the hard limit. `on_listening` is called once
        the server listens (its `url` then has the real port)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # before listening: a signal right after is a drain too
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        raise_open_file_limit()
        await self.start()
        if on_listening is not None:
            on_listening(self)
        tune_gc_for_serving()
        await stop.wait()
        log.info("signal received: draining")
        await self.stop()

    @classmethod
    def private(cls, envs: Iterable[EnvSpec | type[Environment]]) -> "GymServer":
        """A server on a free loopback port for this process's own client (eval, collect, training).
        Its sessions are never reaped for idleness: they wait as long as the model takes to answer
        (a batch's turn on a loaded CPU took over the default 10 minutes, and its sessions were lost)."""
        return cls(envs, port=0, limits=Limits(idle_timeout_ms=PRIVATE_IDLE_TIMEOUT_MS))

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

    # ------------------------------------------------------------------ WebSocket handshake

    def _select_subprotocol(self, ws: WebSocket, offered: list[str]) -> str | None:
        try:
            return select_subprotocol(offered)
        except ProtocolError:
            return None

    def _upgrade(self, origins: list[str], offered: list[str]) -> tuple[str, None] | tuple[None, tuple[int, str]]:
        """The one decision on an opening handshake, for either transport: the subprotocol to speak,
        or the HTTP refusal (status, body) of a browser origin not allowed or no gymwire subprotocol."""
        refusal = origin_refusal(origins, self.allowed_origins)
        if refusal is not None:
            log.warning("refused a WebSocket handshake: %s", refusal)
            return None, (403, f"{refusal}\n")
        try:
            return select_subprotocol(offered), None
        except ProtocolError as exc:
            return None, (400, f"{exc.code.name}: {exc.message}\n")

    def _process_request(self, ws: WebSocket, request: Request) -> Response | None:
        offered = [
            p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")
        ]
        _, refusal = self._upgrade(request.headers.get_all("Origin"), offered)
        if refusal is None:
            return None
        status, body = refusal
        reason = "Forbidden" if status == 403 else "Bad Request"
        return Response(status, reason, Headers([("Content-Type", "text/plain")]), body.encode())

    # ------------------------------------------------------------------ introspection (tests, metrics)

    def stats(self) -> dict[str, int]:
        return {
            "sessions": len(self.sessions),
            "connections": len(self.connections),
            "inflight": sum(len(c.inflight) for c in self.connections),
        }

