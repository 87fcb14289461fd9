"""Runs every section of `gymwire bench` and gathers the figures into one JSON-ready dict."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import floor
from .load import LoadSpec, worker_main
from .procs import CTX, ServerProcess, raise_fd_limit, run_loop

SESSIONS_PER_CONNECTION = 1000  # below the server's default max_inflight (1024) per connection


@dataclass(frozen=True)
class Plan:
    """How much to measure. `quick` is for the smoke test: every section, tiny sizes."""

    roundtrips: int
    pipeline_seconds: float
    pipeline_windows: tuple[int, ...]
    levels: tuple[int, ...]
    batch_levels: tuple[int, ...]
    gc_levels: tuple[int, ...]
    http_levels: tuple[int, ...]
    paced_levels: tuple[int, ...]
    paced_rate: float  # steps/s offered by all sessions together in the paced runs
    warmup_s: float
    window_s: float
    workers: int
    memory_sessions: int
    memory_connections: int
    first_obs: int
    batch_size: int
    batch_rounds: int

    @classmethod
    def full(cls, paced_rate: float) -> Plan:
        return cls(
            roundtrips=5000, pipeline_seconds=2.0, pipeline_windows=(1, 16, 128, 1000),
            levels=(1, 100, 1000, 10_000), batch_levels=(100, 1000, 10_000), gc_levels=(1000, 10_000), http_levels=(1, 100, 1000, 10_000), paced_levels=(100, 1000, 10_000),
            paced_rate=paced_rate, warmup_s=2.0, window_s=6.0, workers=2,
            memory_sessions=5000, memory_connections=200, first_obs=300, batch_size=64, batch_rounds=200,
        )

    @classmethod
    def quick(cls, paced_rate: float) -> Plan:
        return cls(
            roundtrips=200, pipeline_seconds=0.3, pipeline_windows=(1, 16),
            levels=(1, 100), batch_levels=(100,), gc_levels=(100,), http_levels=(100,), paced_levels=(100,),
            paced_rate=paced_rate, warmup_s=0.1, window_s=0.4, workers=2,
            memory_sessions=300, memory_connections=20, first_obs=10, batch_size=16, batch_rounds=20,
        )


# ---------------------------------------------------------------------------- helpers


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_us(latencies: list[float]) -> dict[str, float]:
    """p50 / mean / p99 in microseconds of latencies given in seconds."""
    return {
        "p50_us": round(percentile(latencies, 50) * 1e6, 1),
        "mean_us": round(statistics.fmean(latencies) * 1e6, 1),
        "p99_us": round(percentile(latencies, 99) * 1e6, 1),
        "count": len(latencies),
    }


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    import websockets

    return {
        "gymwire_commit": _checkout_commit(),
        "nproc": int(nproc) if nproc.isdigit() else None,
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "websockets": websockets.__version__,
    }


_STARTED = time.monotonic()


def _checkout_commit() -> str | None:
    """The commit of the checkout these modules run from (editable installs), marked `+dirty` when
    the runtime's sources differ from it; None outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "sdk", "protocol"], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- 1. round trip


async def _gymwire_sequential(url: str, encoding: str, env: str, count: int, transport: str = "websockets") -> list[float]:
    from gymwire.sdk.client import GymClient

    async with GymClient(url, encoding=encoding, reconnect_attempts=0, transport=transport) as client:
        session = await client.open(env)
        for _ in range(count // 10):  # warm up
            await session.step("noop")
        latencies = []
        for _ in range(count):
            started = time.perf_counter()
            await session.step("noop")
            latencies.append(time.perf_counter() - started)
        return latencies


def fast_transport_installed() -> bool:
    """Whether gymwire[fast] (picows, uvloop) is here: the round trips then measure it too."""
    import importlib.util

    return all(importlib.util.find_spec(module) is not None for module in ("picows", "uvloop"))


def _unplaced(server: ServerProcess) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


_PINGPONGS = {"asyncio": floor.asyncio_pingpong, "websockets": floor.ws_pingpong, "picows": floor.picows_pingpong}


def _echo_series(kind: str, count: int, placed: Callable[[ServerProcess], Any] = _unplaced) -> dict[str, Any]:
    """Round trips of an echo server of `kind` (floor.py), after a tenth as many to warm up; client
    and server on that kind's loop (uvloop for picows)."""
    pingpong = _PINGPONGS[kind]
    with ServerProcess.floor(kind) as server, placed(server):
        run_loop(kind, pingpong(server.port, count // 10))
        return summary_us(run_loop(kind, pingpong(server.port, count)))


def _gymwire_series(
    transport: str, series: tuple[tuple[str, str, str], ...], count: int, placed: Callable[[ServerProcess], Any] = _unplaced
) -> dict[str, Any]:
    """Round trips of each (label, encoding, env) on one server of `transport`, client and server on
    that transport's loop. The first connection to a fresh server pays one-off costs (lazy imports,
    first collections), so a throwaway one goes first."""
    out: dict[str, Any] = {}
    with ServerProcess.gymwire(transport=transport) as server, placed(server):
        run_loop(transport, _gymwire_sequential(server.url, series[0][1], series[0][2], count // 5, transport))
        for label, encoding, env in series:
            out[label] = summary_us(run_loop(transport, _gymwire_sequential(server.url, encoding, env, count, transport)))
    return out


_PICOWS_SERIES = (("gymwire_picows_msgpack", "msgpack", "noop"), ("gymwire_picows_json", "json", "noop"))


def roundtrip(plan: Plan) -> dict[str, Any]:
    n = plan.roundtrips
    fast = fast_transport_installed()
    out: dict[str, Any] = {}
    out["tcp_floor_asyncio"] = _echo_series("asyncio", n)
    with ServerProcess.floor("blocking") as server:
        out["tcp_floor_blocking"] = summary_us(floor.blocking_pingpong(server.port, n))
    out["websockets_echo"] = _echo_series("websockets", n)
    if fast:
        out["picows_echo"] = _echo_series("picows", n)
    out.update(_gymwire_series("websockets", (
        ("gymwire_msgpack", "msgpack", "noop"),
        ("gymwire_json", "json", "noop"),
        ("gymwire_msgpack_async_env", "msgpack", "noop_async"),
    ), n))  # fmt: skip
    if fast:
        out.update(_gymwire_series("picows", _PICOWS_SERIES, n))
    from .http_baseline import sequential_steps

    with ServerProcess.http() as server:
        asyncio.run(sequential_steps(server.port, n // 10))
        out["http_fastapi"] = summary_us(asyncio.run(sequential_steps(server.port, n)))
    floor_p50 = out["tcp_floor_asyncio"]["p50_us"]
    ratios = {
        "gymwire_msgpack_vs_tcp_floor_asyncio": round(out["gymwire_msgpack"]["p50_us"] / floor_p50, 2),
        "gymwire_msgpack_vs_tcp_floor_blocking": round(
            out["gymwire_msgpack"]["p50_us"] / out["tcp_floor_blocking"]["p50_us"], 2
        ),
        "gymwire_json_vs_tcp_floor_asyncio": round(out["gymwire_json"]["p50_us"] / floor_p50, 2),
        "gymwire_msgpack_vs_websockets_echo": round(
            out["gymwire_msgpack"]["p50_us"] / out["websockets_echo"]["p50_us"], 2
        ),
        "gymwire_msgpack_vs_json": round(out["gymwire_msgpack"]["p50_us"] / out["gymwire_json"]["p50_us"], 2),
        "http_vs_gymwire_msgpack": round(out["http_fastapi"]["p50_us"] / out["gymwire_msgpack"]["p50_us"], 2),
    }
    if fast:
        ratios.update({
            "gymwire_picows_msgpack_vs_tcp_floor_asyncio": round(out["gymwire_picows_msgpack"]["p50_us"] / floor_p50, 2),
            "gymwire_picows_json_vs_tcp_floor_asyncio": round(out["gymwire_picows_json"]["p50_us"] / floor_p50, 2),
            "gymwire_picows_msgpack_vs_picows_echo": round(
                out["gymwire_picows_msgpack"]["p50_us"] / out["picows_echo"]["p50_us"], 2
            ),
            "gymwire_picows_msgpack_vs_json": round(
                out["gymwire_picows_msgpack"]["p50_us"] / out["gymwire_picows_json"]["p50_us"], 2
            ),
            "http_vs_gymwire_picows_msgpack": round(out["http_fastapi"]["p50_us"] / out["gymwire_picows_msgpack"]["p50_us"], 2),
        })  # fmt: skip
    out["ratios_p50"] = ratios
    out["placed"] = placed_roundtrips(plan)
    return out


@contextlib.contextmanager
def _pinned(server: ServerProcess, server_core: int, client_core: int) -> Iterator[None]:
    """The server's loop on one core and this process's (the client's) on another or the same one."""
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(server.process.pid, {server_core})
    os.sched_setaffinity(0, {client_core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)


def placed_roundtrips(plan: Plan) -> dict[str, Any]:
    """The fast transport's round trip beside its floors with both processes pinned: on one core
    (no wake-up crosses cores: the round trip is the CPU of both ends) and on two (each end wakes
    on its own core, as an idle machine places them). Unpinned, the scheduler moves between these
    two and the floor with it (on this kind of machine a wake-up across cores costs tens of µs);
    pinned, each figure repeats. Empty without the fast transport or a second core."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) < 2 or not fast_transport_installed():
        return {}
    n = plan.roundtrips
    out: dict[str, Any] = {}
    for placement, (server_core, client_core) in (("one_core", (cores[0], cores[0])), ("two_cores", (cores[0], cores[1]))):
        placed = functools.partial(_pinned, server_core=server_core, client_core=client_core)
        row: dict[str, Any] = {
            "tcp_floor_asyncio": _echo_series("asyncio", n, placed),
            "picows_echo": _echo_series("picows", n, placed),
            **_gymwire_series("picows", _PICOWS_SERIES, n, placed),
        }
        floor_p50 = row["tcp_floor_asyncio"]["p50_us"]
        row["ratios_p50"] = {
            "gymwire_picows_msgpack_vs_tcp_floor_asyncio": round(row["gymwire_picows_msgpack"]["p50_us"] / floor_p50, 2),
            "gymwire_picows_json_vs_tcp_floor_asyncio": round(row["gymwire_picows_json"]["p50_us"] / floor_p50, 2),
            "gymwire_picows_msgpack_vs_json": round(row["gymwire_picows_msgpack"]["p50_us"] / row["gymwire_picows_json"]["p50_us"], 2),
        }
        out[placement] = row
    return out


def best_roundtrip_ratio(roundtrip: dict[str, Any]) -> tuple[str, float]:
    """The round trip the issue's target is about: the fast transport's when measured, else the default's."""
    ratios = roundtrip["ratios_p50"]
    for key in ("gymwire_picows_msgpack_vs_tcp_floor_asyncio", "gymwire_msgpack_vs_tcp_floor_asyncio"):
        if key in ratios:
            return key, ratios[key]
    raise KeyError("no gymwire round trip measured")


# ---------------------------------------------------------------------------- 2a. pipelining


async def _pipelined(url: str, window: int, seconds: float) -> dict[str, Any]:
    from gymwire.sdk.client import GymClient

    async with GymClient(url, reconnect_attempts=0) as client:
        sessions = await asyncio.gather(*(client.open("noop") for _ in range(window)))
        done = 0
        end = time.monotonic() + seconds

        async def run(session: Any) -> None:
            nonlocal done
            while time.monotonic() < end:
                await session.step("noop")
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(run(s) for s in sessions))
        elapsed = time.monotonic() - started
        for session in sessions:
            await session.close()
    return {"in_flight": window, "steps_per_s": round(done / elapsed)}


def pipelined(plan: Plan) -> list[dict[str, Any]]:
    with ServerProcess.gymwire() as server:
        return [asyncio.run(_pipelined(server.url, w, plan.pipeline_seconds)) for w in plan.pipeline_windows]


# ---------------------------------------------------------------------------- 2b. concurrency


def _run_load(plan: Plan, server: ServerProcess, kind: str, sessions: int, think_s: float) -> dict[str, Any]:
    workers = min(plan.workers, sessions)
    shares = [sessions // workers + (1 if i < sessions % workers else 0) for i in range(workers)]
    pipes, procs = [], []
    for share in shares:
        spec = LoadSpec(
            kind=kind,
            port=server.port,
            sessions=share,
            connections=max(1, math.ceil(share / SESSIONS_PER_CONNECTION)),
            think_s=think_s,
        )
        parent, child = CTX.Pipe()
        proc = CTX.Process(target=worker_main, args=(child, spec), daemon=True)
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)
    try:
        opened_at = time.monotonic()
        readies = [p.recv() for p in pipes]
        failures = [r["failure"] for r in readies if "failure" in r]
        if failures:
            raise RuntimeError(f"{kind} load at {sessions} sessions failed while opening: {failures[0]}")
        open_s = time.monotonic() - opened_at
        start = time.monotonic() + 0.2
        before = server.probe()
        for pipe in pipes:
            pipe.send((start, plan.warmup_s, plan.window_s))
        results = [p.recv() for p in pipes]
        after = server.probe()
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    failures = [r["failure"] for r in results if "failure" in r]
    if failures:
        raise RuntimeError(f"{kind} load at {sessions} sessions failed: {failures[0]}")
    latencies = [x for r in results for x in r["latencies"]]
    completed = sum(r["completed"] for r in results)
    opened = sum(r["ready"] for r in readies)
    row: dict[str, Any] = {
        "sessions": sessions,
        "sessions_opened": opened,
        "client_processes": workers,
        "think_ms": round(think_s * 1000),
        "open_s": round(open_s, 2),
        "steps_per_s": round(completed / plan.window_s),
        "errors": sum(r["errors"] for r in results) + sum(r.get("open_failures", 0) for r in results),
        "first_error": next((r["first_error"] for r in results if r["first_error"]), None),
        # The server's own CPU per step over the whole run (window and warm-up): what it costs to
        # serve a step, independent of the clients sharing the cores.
        "server_cpu_us_per_step": None,
        "server_rss_kib": after["rss_kib"],
    }
    if latencies:
        row.update({k: v for k, v in summary_us(latencies).items() if k != "count"})
        row["p50_ms"], row["p99_ms"] = round(row["p50_us"] / 1000, 2), round(row["p99_us"] / 1000, 2)
    if completed:
        busy = after["cpu_s"] - before["cpu_s"]
        row["server_cpu_us_per_step"] = round(busy / (completed * (1 + plan.warmup_s / plan.window_s)) * 1e6, 1)
        row["server_cpu_share"] = round(busy / (plan.warmup_s + plan.window_s + 0.2), 2)
        clients = sum(r["cpu_s"] for r in results)
        row["client_cpu_us_per_step"] = round(clients / (completed * (1 + plan.warmup_s / plan.window_s)) * 1e6, 1)
    return row


def concurrency(plan: Plan, kind: str, levels: tuple[int, ...], rate: float | None = None) -> list[dict[str, Any]]:
    """Closed loop, or paced: each session pauses `sessions / rate` seconds on average between steps,
    so every level offers the same `rate` steps/s and only the number of sessions changes."""
    rows = []
    for sessions in levels:
        think_s = sessions / rate if rate else 0.0
        if kind == "http":
            server = ServerProcess.http()
        else:
            server = ServerProcess.gymwire(gc_tuned=kind == "gymwire_gc_tuned")
        with server:
            row = _run_load(plan, server, "gymwire" if kind == "gymwire_gc_tuned" else kind, sessions, think_s)
        log(f"  {kind:8} sessions={sessions:>6} think={row['think_ms']}ms: {row['steps_per_s']:>7} steps/s, "
            f"p50 {row.get('p50_ms')} ms, p99 {row.get('p99_ms')} ms, errors {row['errors']}")
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- 3. memory


async def _memory(server: ServerProcess, sessions: int, connections: int) -> dict[str, Any]:
    from gymwire.sdk.client import GymClient

    base = server.probe()
    async with GymClient(server.url, reconnect_attempts=0) as client:
        with_client = server.probe()
        gate = asyncio.Semaphore(200)

        async def open_one() -> Any:
            async with gate:
                return await client.open("noop")

        opened = await asyncio.gather(*(open_one() for _ in range(sessions)))
        idle = server.probe()
        for batch_start in range(0, sessions, 500):
            await asyncio.gather(*(s.step("noop") for s in opened[batch_start:batch_start + 500]))
        stepped = server.probe()
        extra = [GymClient(server.url, reconnect_attempts=0) for _ in range(connections)]
        for other in extra:
            await other.connect()
        connected = server.probe()
        for other in extra:
            await other.close()
        client.sessions.clear()  # the server is discarded next: skip closing sessions one by one
    assert idle["sessions"] == sessions, idle

    def per(after: dict[str, Any], before: dict[str, Any], count: int) -> dict[str, float]:
        return {
            "traced_bytes": round((after["traced_bytes"] - before["traced_bytes"]) / count),
            "rss_bytes": round((after["rss_kib"] - before["rss_kib"]) * 1024 / count),
        }

    return {
        "sessions": sessions,
        "connections": connections,
        "per_idle_session": per(idle, with_client, sessions),
        "per_session_after_one_step": per(stepped, with_client, sessions),
        "per_connection": per(connected, stepped, connections),
        "server_rss_kib": {"start": base["rss_kib"], "with_sessions": stepped["rss_kib"]},
        "env_state_bytes": _noop_env_bytes(),
    }


def _noop_env_bytes() -> int:
    """What the no-op environment itself holds per session: the instance and its attribute dict."""
    from .envs import NoopEnv

    env = NoopEnv()
    return sys.getsizeof(env) + sys.getsizeof(env.__dict__)


def memory(plan: Plan) -> dict[str, Any]:
    with ServerProcess.gymwire(trace_memory=True) as server:
        return asyncio.run(_memory(server, plan.memory_sessions, plan.memory_connections))


# ---------------------------------------------------------------------------- 4. first observation


async def _first_obs_gymwire(url: str, count: int, transport: str = "websockets") -> list[float]:
    from gymwire.sdk.client import GymClient

    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        client = GymClient(url, reconnect_attempts=0, transport=transport)
        await client.connect()
        session = await client.open("noop")
        assert session.observation is not None
        latencies.append(time.perf_counter() - started)
        await client.close()
    return latencies


async def _first_obs_http(port: int, count: int) -> list[float]:
    from .http_baseline import HttpEnvClient, new_http_session

    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        async with new_http_session(1) as http:
            env = HttpEnvClient(http, f"http://127.0.0.1:{port}")
            assert await env.open()
            latencies.append(time.perf_counter() - started)
            await env.close()
    return latencies


def first_observation(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    transports = ("websockets", "picows") if fast_transport_installed() else ("websockets",)
    for transport in transports:
        label = "gymwire_msgpack" if transport == "websockets" else f"gymwire_{transport}_msgpack"
        with ServerProcess.gymwire(transport=transport) as server:
            run_loop(transport, _first_obs_gymwire(server.url, max(1, plan.first_obs // 10), transport))  # warm up
            out[label] = summary_us(run_loop(transport, _first_obs_gymwire(server.url, plan.first_obs, transport)))
    with ServerProcess.http() as server:
        asyncio.run(_first_obs_http(server.port, max(1, plan.first_obs // 10)))
        out["http_fastapi"] = summary_us(asyncio.run(_first_obs_http(server.port, plan.first_obs)))
    return out


# ---------------------------------------------------------------------------- 5. batching


async def _batch(url: str, size: int, rounds: int) -> dict[str, Any]:
    from gymwire.sdk.client import GymClient

    async with GymClient(url, reconnect_attempts=0) as client:
        sessions = await asyncio.gather(*(client.open("noop") for _ in range(size)))

        async def timed(one_round: Callable[[], Any]) -> float:
            await one_round()  # warm up
            started = time.perf_counter()
            for _ in range(rounds):
                await one_round()
            return round(size * rounds / (time.perf_counter() - started))

        async def batched() -> None:
            results = await client.step_batch([(s, "noop") for s in sessions])
            assert not any(isinstance(r, Exception) for r in results), results

        async def concurrent_singles() -> None:
            await asyncio.gather(*(s.step("noop") for s in sessions))

        async def sequential_singles() -> None:
            for s in sessions:
                await s.step("noop")

        out = {
            "batch_size": size,
            "step_batch_steps_per_s": await timed(batched),
            "concurrent_single_steps_per_s": await timed(concurrent_singles),
            "sequential_single_steps_per_s": await timed(sequential_singles),
        }
        client.sessions.clear()
    out["batch_vs_concurrent_singles"] = round(out["step_batch_steps_per_s"] / out["concurrent_single_steps_per_s"], 2)
    out["batch_vs_sequential_singles"] = round(out["step_batch_steps_per_s"] / out["sequential_single_steps_per_s"], 2)
    return out


def batching(plan: Plan) -> dict[str, Any]:
    with ServerProcess.gymwire() as server:
        return asyncio.run(_batch(server.url, plan.batch_size, plan.batch_rounds))


# ---------------------------------------------------------------------------- all


def _row(rows: list[dict[str, Any]], sessions: int) -> dict[str, Any] | None:
    return next((r for r in rows if r["sessions"] == sessions), None)


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, each with the measured value and whether it is met."""
    out: dict[str, Any] = {}
    which, rt = best_roundtrip_ratio(results["roundtrip"])
    out["roundtrip_vs_tcp_floor"] = {"target": "<= 1.5", "value": rt, "met": rt <= 1.5, "series": which}
    first = results["first_observation"]
    fastest = min(row["p50_us"] for label, row in first.items() if label.startswith("gymwire"))
    out["first_observation_vs_http"] = {
        "target": "<= 1", "value": round(fastest / first["http_fastapi"]["p50_us"], 2),
        "met": fastest <= first["http_fastapi"]["p50_us"],
    }
    http = _row(results["concurrency"]["http"], 1000)
    for key in ("gymwire", "gymwire_batch", "gymwire_gc_tuned"):
        gw = _row(results["concurrency"][key], 1000)
        if gw and http and http["steps_per_s"]:
            ratio = round(gw["steps_per_s"] / http["steps_per_s"], 2)
            out[f"{key}_steps_per_s_vs_http_at_1000"] = {"target": ">= 10", "value": ratio, "met": ratio >= 10}
    for key, label in (
        ("gymwire", "closed_loop"), ("gymwire_batch", "batched"), ("gymwire_gc_tuned", "gc_tuned"), ("gymwire_paced", "paced")
    ):
        row = _row(results["concurrency"][key], 10_000)
        if row and "p99_ms" in row:
            ok = row["p99_ms"] < 50 and row["errors"] == 0 and row["sessions_opened"] == 10_000
            out[f"p99_ms_at_10000_{label}"] = {"target": "< 50", "value": row["p99_ms"], "met": ok}
    idle = results["memory"]["per_idle_session"]["traced_bytes"]
    out["idle_session_bytes"] = {"target": "<= 10240", "value": idle, "met": idle <= 10240}
    return out


SECTIONS = ("roundtrip", "pipelined", "concurrency", "memory", "first_observation", "batching")


def run(plan: Plan) -> dict[str, Any]:
    raise_fd_limit()
    results: dict[str, Any] = {"machine": machine(), "plan": plan.__dict__.copy()}
    # Other work on the machine shares the cores: the load average says how much there was.
    results["machine"]["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    results["machine"]["niceness"] = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        with open("/proc/self/autogroup") as autogroup:
            results["machine"]["autogroup"] = autogroup.read().strip()
    except OSError:
        pass
    started = time.monotonic()
    log("1. sequential step round trip")
    results["roundtrip"] = roundtrip(plan)
    log("2a. pipelined throughput over one connection")
    results["pipelined"] = pipelined(plan)
    log("2b. concurrent sessions (closed loop; batched; server GC tuned; paced; HTTP)")
    results["concurrency"] = {
        "gymwire": concurrency(plan, "gymwire", plan.levels),
        "gymwire_batch": concurrency(plan, "gymwire_batch", plan.batch_levels),
        "gymwire_gc_tuned": concurrency(plan, "gymwire_gc_tuned", plan.gc_levels),
        "gymwire_paced": concurrency(plan, "gymwire", plan.paced_levels, plan.paced_rate),
        "http": concurrency(plan, "http", plan.http_levels),
    }
    log("3. server memory")
    results["memory"] = memory(plan)
    log("4. connect to first observation")
    results["first_observation"] = first_observation(plan)
    log("5. batched vs single steps")
    results["batching"] = batching(plan)
    results["targets"] = targets(results)
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    return results


def run_sessions_bench(plan: Plan, sessions_plan: Any) -> dict[str, Any]:
    """`gymwire bench --sessions`: the sessions sweep, then the round trips side by side."""
    from .sessions import run_sessions

    raise_fd_limit()
    results: dict[str, Any] = {"machine": machine(), "plan": plan.__dict__.copy(), "sessions_plan": sessions_plan.__dict__.copy()}
    results["machine"]["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    started = time.monotonic()
    results["sessions"] = run_sessions(sessions_plan, log)
    log("sequential step round trip, side by side")
    results["roundtrip"] = roundtrip(plan)
    log("connect to first observation")
    results["first_observation"] = first_observation(plan)
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    return results
