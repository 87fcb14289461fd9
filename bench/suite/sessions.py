"""Sessions at one-second steps, as OpenEnv measures them: how many concurrent sessions a server
holds while at least 95% of steps (the environment awaits sleep(1)) are answered within 2 s.

Two shapes: many sessions per connection (a trainer's pool), and one connection per session
(OpenEnv's). The server may use every core: `server_workers` processes listen on one port with
SO_REUSEPORT and the kernel spreads the connections. The load comes from `load_workers` processes
on the same machine, so the figures are for server and load together on its cores.

Each level starts a fresh server, opens every session, lets every session step in a closed loop
(the next step as soon as the last is answered), and counts, over a window after a warm-up, the
steps answered within 2 s among all steps that started early enough to be judged.

`transport` is the server's and the load's: "websockets" on asyncio's own loop, or "picows" on
uvloop (gymwire[fast]). The load is gymwire's own GymClient over that transport, one step in flight
per session and no timer per step (a step that is never answered is counted late at the end).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from dataclasses import dataclass
from typing import Any

from .procs import CTX, raise_fd_limit, rss_kib, run_loop

STEP_S = 1.0
ANSWERED_WITHIN_S = 2.0
ENOUGH = 0.95
CONNECT_CONCURRENCY = 64  # connections being opened at once, per load worker


@dataclass(frozen=True)
class SessionsPlan:
    multiplexed_levels: tuple[int, ...]
    per_connection_levels: tuple[int, ...]
    sessions_per_connection: int = 500
    server_workers: int = 2
    load_workers: int = 2
    warmup_s: float = 3.0
    window_s: float = 8.0
    transport: str = "websockets"

    @classmethod
    def full(cls) -> "SessionsPlan":
        return cls(
            # From low: on a shared machine the first level may already be too many.
            multiplexed_levels=(1_000, 2_000, 4_000, 6_000, 8_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000),
            per_connection_levels=(500, 1_000, 2_000, 3_000, 4_000, 6_000, 8_000, 10_000, 12_000, 16_000, 20_000),
        )

    @classmethod
    def quick(cls) -> "SessionsPlan":
        return cls(multiplexed_levels=(200,), per_connection_levels=(100,), sessions_per_connection=50, warmup_s=1.5, window_s=3.0)


# ---------------------------------------------------------------------------- server workers


def _server_main(conn: Any, port: int, transport: str) -> None:
    from gymwire.protocol import Limits
    from gymwire.sdk.server import GymServer, tune_gc_for_serving

    from .envs import SleepEnv

    raise_fd_limit()
    limits = Limits(max_sessions=200_000, max_sessions_per_connection=200_000, max_inflight=100_000)

    async def main() -> None:
        server = GymServer([SleepEnv], port=port, limits=limits, reuse_port=True, transport=transport)
        await server.start()
        tune_gc_for_serving()
        gc_time = _gc_timer()
        conn.send(server.port)
        loop = asyncio.get_running_loop()
        while (command := await loop.run_in_executor(None, conn.recv)) != "stop":
            conn.send({"rss_kib": rss_kib(), "sessions": len(server.sessions), "cpu_s": time.process_time(), "gc_s": gc_time(), **command})
        await server.stop(drain_timeout=0)

    run_loop(transport, main())


class ServerWorkers:
    """`count` server processes sharing one port (the first picks it, the others join it)."""

    def __init__(self, count: int, transport: str) -> None:
        self.workers: list[tuple[Any, Any]] = []
        port = 0
        for _ in range(count):
            parent, child = CTX.Pipe()
            process = CTX.Process(target=_server_main, args=(child, port, transport), daemon=True)
            process.start()
            child.close()  # a worker that dies then ends the wait below at once
            if not parent.poll(60):
                process.kill()
                raise RuntimeError("a sessions-benchmark server did not start within 60 s")
            port = parent.recv()
            self.workers.append((process, parent))
        self.port = port

    def probe(self) -> list[dict[str, Any]]:
        for _, conn in self.workers:
            conn.send({})
        return [conn.recv() for _, conn in self.workers]

    def __enter__(self) -> "ServerWorkers":
        return self

    def __exit__(self, *exc: object) -> None:
        for process, conn in self.workers:
            if process.is_alive():
                conn.send("stop")
        for process, _ in self.workers:
            process.join(30)
            if process.is_alive():
                process.kill()


# ---------------------------------------------------------------------------- load workers


def _gc_timer() -> Any:
    """Start timing the garbage collector's passes; the returned function gives the seconds so far."""
    spent = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            spent[1] = time.perf_counter()
        else:
            spent[0] += time.perf_counter() - spent[1]

    gc.callbacks.append(on_gc)
    return lambda: round(spent[0], 3)


async def _load(conn: Any, port: int, sessions: int, per_connection: int, transport: str) -> dict[str, Any]:
    from gymwire.sdk.client import GymClient
    from gymwire.sdk.serving.gc_tuning import tune_gc_for_serving

    url = f"ws://127.0.0.1:{port}"
    connections = max(1, -(-sessions // per_connection))
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def connect() -> Any:
        async with gate:
            return await GymClient(url, reconnect_attempts=0, open_timeout=60, transport=transport).connect()

    clients = await asyncio.gather(*(connect() for _ in range(connections)))
    opening = asyncio.Semaphore(400)

    async def open_one(index: int) -> Any:
        async with opening:
            return await clients[index % connections].open("sleep1")

    opened = await asyncio.gather(*(open_one(i) for i in range(sessions)))
    # The load holds every session's objects for the whole run: keep the collector off them, as a
    # server does (gymwire.sdk.serving.gc_tuning).
    tune_gc_for_serving()
    gc_time = _gc_timer()
    conn.send({"ready": len(opened)})
    window_start, window_end = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    judged_until = window_end - ANSWERED_WITHIN_S  # a step started later cannot be judged in time
    on_time = late = errors = 0
    latencies: list[float] = []
    first_error: str | None = None

    async def run(session: Any, offset: float) -> None:
        nonlocal on_time, late, errors, first_error
        await asyncio.sleep(offset)  # spread the sessions' phases over one step
        while (began := time.monotonic()) < judged_until:
            try:
                await session.step("wait")
            except Exception as exc:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
                if began >= window_start:
                    late += 1
                return
            took = time.monotonic() - began
            if began >= window_start:
                latencies.append(took)
                if took <= ANSWERED_WITHIN_S:
                    on_time += 1
                else:
                    late += 1

    # No timer per step (wait_for costs a task each): steps still unanswered well after the window
    # are counted late once, here.
    runners = [asyncio.ensure_future(run(s, (i % 1000) / 1000 * STEP_S)) for i, s in enumerate(opened)]
    _, stuck = await asyncio.wait(runners, timeout=max(0.0, window_end - time.monotonic()) + 5)
    for runner in stuck:
        runner.cancel()
    late += len(stuck)
    for client in clients:
        client.sessions.clear()  # the server is discarded after this level
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
    return {"on_time": on_time, "late": late, "errors": errors, "latencies": latencies, "first_error": first_error, "gc_s": gc_time()}


def _load_main(conn: Any, port: int, sessions: int, per_connection: int, transport: str) -> None:
    raise_fd_limit()
    try:
        result = run_loop(transport, _load(conn, port, sessions, per_connection, transport))
    except Exception as exc:
        result = {"failure": f"{type(exc).__name__}: {exc}"}
    conn.send(result)


def _level(plan: SessionsPlan, sessions: int, per_connection: int, log: Any) -> dict[str, Any]:
    from .run import percentile

    with ServerWorkers(plan.server_workers, plan.transport) as server:
        idle = server.probe()
        loads = []
        share = [sessions // plan.load_workers + (i < sessions % plan.load_workers) for i in range(plan.load_workers)]
        for count in share:
            parent, child = CTX.Pipe()
            process = CTX.Process(target=_load_main, args=(child, server.port, count, per_connection, plan.transport), daemon=True)
            process.start()
            child.close()
            loads.append((process, parent))
        opened_at = time.monotonic()
        for process, conn in loads:
            if not conn.poll(600):
                raise RuntimeError("a load worker could not open its sessions within 600 s")
            message = conn.recv()
            if "failure" in message:
                raise RuntimeError(f"load worker failed: {message['failure']}")
        open_s = time.monotonic() - opened_at
        start = time.monotonic() + STEP_S + plan.warmup_s
        for _, conn in loads:
            conn.send((start, start + plan.window_s))
        time.sleep(STEP_S + plan.warmup_s + plan.window_s / 2)
        busy = server.probe()
        results = [conn.recv() for _, conn in loads]
        for process, _ in loads:
            process.join(30)
    failures = [r["failure"] for r in results if "failure" in r]
    if failures:
        raise RuntimeError(f"load worker failed: {failures[0]}")
    on_time = sum(r["on_time"] for r in results)
    judged = on_time + sum(r["late"] for r in results)
    latencies = [x for r in results for x in r["latencies"]]
    rss_added_kib = sum(b["rss_kib"] for b in busy) - sum(i["rss_kib"] for i in idle)
    row = {
        "sessions": sessions,
        "connections": sum(max(1, -(-count // per_connection)) for count in share),
        "answered_within_2s": round(on_time / judged, 4) if judged else 0.0,
        "steps_judged": judged,
        "steps_per_s": round(judged / (plan.window_s - ANSWERED_WITHIN_S), 1),
        "p50_s": round(percentile(latencies, 50), 3) if latencies else None,
        "p99_s": round(percentile(latencies, 99), 3) if latencies else None,
        "errors": sum(r["errors"] for r in results),
        "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
        "server_sessions": sum(b["sessions"] for b in busy),
        "server_rss_mib": round(sum(b["rss_kib"] for b in busy) / 1024, 1),
        "server_kib_per_session": round(rss_added_kib / sessions, 1),
        "open_s": round(open_s, 1),
        # Seconds the garbage collector took in the server processes (from their start to mid-window)
        # and in the load (from its sessions' open to its end).
        "gc_s": {"server": round(sum(b["gc_s"] for b in busy), 3), "load": round(sum(r.get("gc_s", 0) for r in results), 3)},
    }
    log(
        f"  {sessions:>6} sessions on {row['connections']:>5} connections: {row['answered_within_2s']:.1%} within 2 s "
        f"(p50 {row['p50_s']} s, p99 {row['p99_s']} s), {row['server_kib_per_session']} KiB/session, errors {row['errors']}"
    )
    return row


def sweep(plan: SessionsPlan, shape: str, log: Any) -> dict[str, Any]:
    """Levels in order until one falls below 95% (and one more, to show the fall)."""
    levels = plan.multiplexed_levels if shape == "multiplexed" else plan.per_connection_levels
    per_connection = plan.sessions_per_connection if shape == "multiplexed" else 1
    log(f"sessions at 1 s steps, {shape} ({plan.server_workers} server workers, {plan.load_workers} load workers, {plan.transport})")
    rows: list[dict[str, Any]] = []
    for sessions in levels:
        try:
            rows.append(_level(plan, sessions, per_connection, log))
        except RuntimeError as exc:
            log(f"  {sessions} sessions: {exc}")
            rows.append({"sessions": sessions, "answered_within_2s": 0.0, "failure": str(exc)})
        if rows[-1]["answered_within_2s"] < ENOUGH:
            break
    held = [r["sessions"] for r in rows if r["answered_within_2s"] >= ENOUGH]
    return {"shape": shape, "rows": rows, "max_sessions": max(held) if held else 0}


def run_sessions(plan: SessionsPlan, log: Any) -> dict[str, Any]:
    return {
        "transport": plan.transport,
        "server_workers": plan.server_workers,
        "load_workers": plan.load_workers,
        "load_average_before": os.getloadavg(),
        "multiplexed": sweep(plan, "multiplexed", log),
        "per_connection": sweep(plan, "per_connection", log),
        "load_average_after": os.getloadavg(),
    }
