"""Servers under test, each in its own process, driven over a pipe.

A server child binds port 0, sends the port back, then answers `probe` (session and connection
counts, RSS, traced Python memory, CPU seconds used) until `stop`. Probes run on the server's own
event loop, between requests, so what they read is consistent.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import resource
import socket
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

# fork: children start in milliseconds and inherit the imports; the parent holds no threads or
# running event loop when it forks.
CTX = multiprocessing.get_context("fork")


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's open-file limit as far as allowed (the HTTP baseline needs one socket
    per concurrent session); return the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def run_loop(transport: str, main: Any) -> Any:
    """Run `main` as gymwire runs over `transport`: picows on uvloop (where installed), websockets on
    asyncio's own loop."""
    if transport == "picows":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status; the memory figures need Linux")


def _probe(extra: dict[str, Any]) -> dict[str, Any]:
    gc.collect()
    return {
        **extra,
        "rss_kib": rss_kib(),
        "traced_bytes": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None,
        "cpu_s": time.process_time(),
    }


def _listen() -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket names it, and without it every HTTP reply waits out a 40 ms delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    return sock


async def _control(conn: Any, probe: Callable[[], dict[str, Any]]) -> None:
    """Answer the parent's probes until it says stop."""
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command == "stop":
            return
        conn.send(probe())


def _gymwire_main(conn: Any, trace_memory: bool, gc_tuned: bool, limits: dict[str, int], transport: str) -> None:
    from gymwire.protocol import Limits
    from gymwire.sdk.server import GymServer, tune_gc_for_serving

    from .envs import AsyncNoopEnv, NoopEnv

    raise_fd_limit()
    if trace_memory:
        tracemalloc.start()

    async def main() -> None:
        server = GymServer([NoopEnv, AsyncNoopEnv], port=0, limits=Limits(**limits), transport=transport)
        await server.start()
        if gc_tuned:
            tune_gc_for_serving()  # what `serve_forever` (so `gymwire serve`) does after starting
        conn.send(server.port)
        await _control(conn, lambda: _probe(server.stats()))
        await server.stop(drain_timeout=0)

    run_loop(transport, main())


def _http_main(conn: Any) -> None:
    import uvicorn

    from .http_baseline import make_app

    raise_fd_limit()
    app = make_app()
    sock = _listen()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", backlog=4096)
    server = uvicorn.Server(config)

    async def main() -> None:
        serving = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        conn.send(sock.getsockname()[1])
        await _control(conn, lambda: _probe({"sessions": len(app.state.envs), "http": config.http}))
        server.should_exit = True
        await serving

    asyncio.run(main())


def _floor_main(conn: Any, kind: str) -> None:
    from .floor import blocking_echo, serve_echo, serve_picows_echo, serve_ws_echo

    sock = _listen()
    conn.send(sock.getsockname()[1])
    if kind == "blocking":
        blocking_echo(sock)  # returns when the client closes its connection
        conn.recv()
        return
    serve = {"websockets": serve_ws_echo, "picows": serve_picows_echo}.get(kind, serve_echo)

    async def main() -> None:
        stop = asyncio.Event()
        serving = asyncio.get_running_loop().create_task(serve(sock, stop))
        await _control(conn, lambda: _probe({}))
        stop.set()
        await serving

    run_loop(kind, main())


class ServerProcess:
    """A server child. `with ServerProcess.gymwire() as server: server.port, server.probe()`."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        self.conn, child = CTX.Pipe()
        self.process = CTX.Process(target=target, args=(child, *args), daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(30):
            self.process.kill()
            raise RuntimeError(f"benchmark server {target.__name__} did not start within 30 s")
        self.port: int = self.conn.recv()

    @classmethod
    def gymwire(cls, trace_memory: bool = False, gc_tuned: bool = False, transport: str = "websockets", **limits: int) -> ServerProcess:
        return cls(_gymwire_main, trace_memory, gc_tuned, limits, transport)

    @classmethod
    def http(cls) -> ServerProcess:
        return cls(_http_main)

    @classmethod
    def floor(cls, kind: str = "asyncio") -> ServerProcess:
        """An echo server: `asyncio`, `blocking`, `websockets` or `picows` (see floor.py)."""
        return cls(_floor_main, kind)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def probe(self) -> dict[str, Any]:
        self.conn.send("probe")
        return self.conn.recv()

    def stop(self) -> None:
        if self.process.is_alive():
            self.conn.send("stop")
            self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
