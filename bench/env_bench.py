"""Shared scaffolding for the environment benchmarks (bench/env_babyai.py, bench/env_textcraft.py).

Not a script: each benchmark imports it (`python bench/env_X.py` puts bench/ on sys.path) and
supplies only what is environment-specific: the environment class, the split, the scripted
episodes (lists of actions per task) and the server's warm-up.

Every episode is a reset plus its scripted steps; steps/s counts steps over the whole time,
resets included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gymwire.sdk.environment import Task

Scripts = Sequence[Sequence[str]]


# -- arguments, machine, results -----------------------------------------------------------------


def make_parser(doc: str, memory_sessions: int, out: str) -> argparse.ArgumentParser:
    """The common flags; `--serve PORT` (hidden) runs the server side in a child process."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--memory-sessions", type=int, default=memory_sessions)
    parser.add_argument("--out", default=out)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser


def machine(load_average: bool = False) -> dict:
    info: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    if load_average:
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def workload(split: str, scripts: Scripts) -> dict:
    return {"split": split, "tasks": len(scripts), "mean_steps_per_episode": round(sum(map(len, scripts)) / len(scripts), 2)}


def finish(results: dict, server_memory: dict, out: str | Path) -> None:
    """Print the memory figures and write the results as JSON."""
    print(f"memory in-process: {results['memory_in_process']['bytes_per_session']:,} B/session (Python heap)")
    print(f"memory in server: {server_memory['rss_bytes_per_session']:,} B/session (RSS growth, {server_memory['sessions']} sessions)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


# -- process measurements (Linux /proc) ----------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_cpu_cost(result: dict, pid: int, server_cpu: float, client_cpu: float) -> dict:
    """Add CPU per step, server and client: unlike steps/s, it does not depend on what else runs."""
    server = cpu_seconds(pid) - server_cpu
    client = time.process_time() - client_cpu
    return {
        **result,
        "server_cpu_us_per_step": round(server / result["steps"] * 1e6),
        "client_cpu_us_per_step": round(client / result["steps"] * 1e6),
    }


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status; this memory figure needs Linux")


# -- server process ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(script: str, extra_args: Sequence[str] = ()) -> tuple[subprocess.Popen, str]:
    """Run `script --serve PORT [extra_args]` in a child process; wait until it listens."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, script, "--serve", str(port), *extra_args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"ws://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start listening within 60 s")


def serve(envs: Any, port: int) -> None:
    """The child process's side: a GymServer for `envs` until terminated."""
    from gymwire.sdk.server import GymServer

    asyncio.run(GymServer(envs, port=port).serve_forever())


# -- throughput ----------------------------------------------------------------------------------


def bench_in_process(env_cls: Callable[[], Any], split: str, scripts: Scripts, seconds: float, cpu_cost: bool = False) -> dict:
    """One environment, the scripted episodes back to back, no server."""
    env = env_cls()
    steps = episodes = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for index, actions in enumerate(scripts):
            env.reset(Task(split=split, index=index))
            for action in actions:
                env.step(action)
            steps += len(actions)
            episodes += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    result = {"steps": steps, "episodes": episodes, "seconds": round(elapsed, 3), "steps_per_s": round(steps / elapsed)}
    if cpu_cost:
        result["cpu_us_per_step"] = round(cpu / steps * 1e6)
    return result


async def open_sessions(client, env: str, split: str, count: int, max_turns: int) -> list:
    return await asyncio.gather(*(client.open(env, split=split, index=0, max_turns=max_turns) for _ in range(count)))


async def bench_server(url: str, env: str, split: str, scripts: Scripts, sessions: int, seconds: float, max_turns: int) -> dict:
    """`sessions` sessions on one connection, each replaying episodes on its own."""
    from gymwire.sdk.client import GymClient

    counts = {"steps": 0, "episodes": 0}
    async with GymClient(url) as client:
        opened = await open_sessions(client, env, split, sessions, max_turns)
        start = time.perf_counter()

        async def worker(first_task: int, session) -> None:
            task = first_task
            while time.perf_counter() - start < seconds:
                index = task % len(scripts)
                await session.reset(split=split, index=index)
                for action in scripts[index]:
                    await session.step(action)
                counts["steps"] += len(scripts[index])
                counts["episodes"] += 1
                task += sessions

        await asyncio.gather(*(worker(i, s) for i, s in enumerate(opened)))
        elapsed = time.perf_counter() - start
        await asyncio.gather(*(s.close() for s in opened))
    return {**counts, "sessions": sessions, "seconds": round(elapsed, 3), "steps_per_s": round(counts["steps"] / elapsed)}


async def bench_server_batched(
    url: str, env: str, split: str, scripts: Scripts, sessions: int, seconds: float, max_turns: int
) -> dict:
    """The same episodes, every round stepping all sessions with one step_batch frame."""
    from gymwire.sdk.client import GymClient

    steps = episodes = next_task = 0
    async with GymClient(url) as client:
        opened = await open_sessions(client, env, split, sessions, max_turns)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            tasks = [(next_task + i) % len(scripts) for i in range(sessions)]
            next_task += sessions
            await asyncio.gather(*(s.reset(split=split, index=t) for s, t in zip(opened, tasks)))
            for turn in range(max(len(scripts[t]) for t in tasks)):
                batch = [(s, scripts[t][turn]) for s, t in zip(opened, tasks) if turn < len(scripts[t])]
                await client.step_batch(batch)
                steps += len(batch)
            episodes += sessions
        elapsed = time.perf_counter() - start
        await asyncio.gather(*(s.close() for s in opened))
    return {"steps": steps, "episodes": episodes, "sessions": sessions, "seconds": round(elapsed, 3), "steps_per_s": round(steps / elapsed)}


def bench_served(
    url: str, pid: int, env: str, split: str, scripts: Scripts, sessions: int, seconds: float, max_turns: int,
    in_process: dict, cpu_cost: bool = False,
) -> dict:
    """Both server benchmarks against a running server, with their ratio to in-process steps/s;
    the step_batch figures go under the key "step_batch". With cpu_cost, CPU per step (server
    process and this one) is added."""
    figures = []
    for bench in (bench_server, bench_server_batched):
        cpu = (cpu_seconds(pid), time.process_time()) if cpu_cost else None
        result = asyncio.run(bench(url, env, split, scripts, sessions, seconds, max_turns))
        if cpu is not None:
            result = with_cpu_cost(result, pid, *cpu)
        result["ratio_to_in_process"] = round(result["steps_per_s"] / in_process["steps_per_s"], 4)
        figures.append(result)
    served, batched = figures
    served["step_batch"] = batched
    return served


# -- memory per session --------------------------------------------------------------------------


def memory_in_process(env_cls: Callable[[], Any], split: str, tasks: int, count: int, action: str) -> dict:
    """Python heap growth per reset-and-stepped environment (warm the caches first)."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    envs = []
    for i in range(count):
        env = env_cls()
        env.reset(Task(split=split, index=i % tasks))
        env.step(action)
        envs.append(env)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return {"sessions": count, "bytes_per_session": round(grown / count)}


async def memory_server(url: str, pid: int, env: str, split: str, tasks: int, warm: int, count: int, action: str) -> dict:
    """The server's RSS growth per open, stepped session, after `warm` sessions opened and closed."""
    from gymwire.sdk.client import GymClient

    async with GymClient(url) as client:
        warmed = await asyncio.gather(*(client.open(env, split=split, index=i) for i in range(warm)))
        await asyncio.gather(*(s.close() for s in warmed))
        await asyncio.sleep(0.5)
        before = rss_bytes(pid)
        opened = await asyncio.gather(*(client.open(env, split=split, index=i % tasks) for i in range(count)))
        await asyncio.gather(*(s.step(action) for s in opened))
        after = rss_bytes(pid)
        await asyncio.gather(*(s.close() for s in opened))
    return {"sessions": count, "rss_bytes_per_session": round((after - before) / count)}
