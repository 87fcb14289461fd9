"""Concurrent load from client processes: many sessions, each stepping as fast as answers come
(closed loop) or after a think time (paced), measured over one shared time window.

A worker opens its sessions, reports ready, and waits for the window, given in
`time.monotonic()` seconds (one clock for all processes on Linux). It records the latency of
every step that starts inside the window and counts the steps that finish inside it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .procs import raise_fd_limit

OPEN_CONCURRENCY = 200  # opens in flight per worker: keeps every connection under max_inflight


@dataclass
class LoadSpec:
    # "gymwire" (each session steps on its own), "gymwire_batch" (each connection steps all its
    # sessions in one step_batch frame per turn, as a trainer stepping a rollout batch does) or "http".
    kind: str
    port: int
    sessions: int
    connections: int = 1  # gymwire connections of this worker (HTTP opens one per request in flight)
    encoding: str = "msgpack"
    env: str = "noop"
    think_s: float = 0.0  # mean pause between a session's steps; 0 is a closed loop


async def _drive(
    spec: LoadSpec,
    conn: Any,
    sessions: list[Any],
    step: Callable[[Any], Awaitable[Any]],  # returns how many steps it made when more than one
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    conn.send({"ready": len(sessions)})
    start, warmup, duration = await loop.run_in_executor(None, conn.recv)
    cpu_before = time.process_time()
    window_start, window_end = start + warmup, start + warmup + duration
    latencies: list[float] = []
    completed = errors = 0
    first_error: str | None = None
    rng = random.Random(1)

    async def run(session: Any) -> None:
        nonlocal completed, errors, first_error
        # Spread the first steps over one think time: paced sessions then offer their full rate from
        # the start, and closed-loop ones do not march in lockstep.
        await asyncio.sleep(max(0.0, start - time.monotonic()) + rng.random() * (spec.think_s or 0.01))
        while True:
            began = time.monotonic()
            if began >= window_end:
                return
            try:
                steps = await step(session)
            except Exception as exc:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
                return
            # A batch answers several steps at once: each of them took the batch's round trip.
            steps = steps if isinstance(steps, int) else 1
            ended = time.monotonic()
            if began >= window_start:
                latencies.extend([ended - began] * steps)
            if window_start <= ended < window_end:
                completed += steps
            if spec.think_s:
                await asyncio.sleep(rng.uniform(0, 2 * spec.think_s))

    await asyncio.gather(*(run(s) for s in sessions))
    cpu_s = time.process_time() - cpu_before
    return {"latencies": latencies, "completed": completed, "errors": errors, "cpu_s": cpu_s, "first_error": first_error}


async def _gymwire_load(spec: LoadSpec, conn: Any) -> dict[str, Any]:
    from gymwire.sdk.client import GymClient

    url = f"ws://127.0.0.1:{spec.port}"
    clients = [GymClient(url, encoding=spec.encoding, reconnect_attempts=0) for _ in range(spec.connections)]
    for client in clients:
        await client.connect()
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def open_one(index: int) -> Any:
        async with gate:
            return await clients[index % len(clients)].open(spec.env)

    sessions = await asyncio.gather(*(open_one(i) for i in range(spec.sessions)))
    if spec.kind == "gymwire_batch":
        # One "session" of the driver is a whole connection's batch; every step in it is counted.
        batches = [(client, [s for s in sessions if s.client is client]) for client in clients]
        result = await _drive(spec, conn, batches, _step_batch)
    else:
        result = await _drive(spec, conn, sessions, lambda session: session.step("noop"))
    for client in clients:
        client.sessions.clear()  # the server is discarded after this run: no need to close each session
        await client.close()
    return result


async def _step_batch(batch: tuple[Any, list[Any]]) -> int:
    client, sessions = batch
    results = await client.step_batch([(session, "noop") for session in sessions])
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise failed[0]
    return len(results)


async def _http_load(spec: LoadSpec, conn: Any) -> dict[str, Any]:
    from .http_baseline import HttpEnvClient, new_http_session

    base = f"http://127.0.0.1:{spec.port}"
    async with new_http_session(spec.sessions) as http:
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)
        opened: list[Any] = []
        failed = 0
        open_error: str | None = None

        async def open_one() -> None:
            nonlocal failed, open_error
            env = HttpEnvClient(http, base)
            async with gate:
                try:
                    await env.open()
                    opened.append(env)
                except Exception as exc:
                    failed += 1
                    open_error = open_error or f"{type(exc).__name__}: {exc}"

        await asyncio.gather(*(open_one() for _ in range(spec.sessions)))
        result = await _drive(spec, conn, opened, lambda env: env.step("noop"))
        result["open_failures"] = failed
        result["first_error"] = result["first_error"] or open_error
        return result


def worker_main(conn: Any, spec: LoadSpec) -> None:
    raise_fd_limit()
    load = _http_load if spec.kind == "http" else _gymwire_load
    try:
        result = asyncio.run(load(spec, conn))
    except Exception as exc:  # reported to the parent, which fails the run with it
        result = {"failure": f"{type(exc).__name__}: {exc}"}
    conn.send(result)
