"""BabyAI benchmark: steps/s in-process vs through a gymwire server, and memory per session.

    python bench/env_babyai.py [--sessions 64] [--seconds 8] [--memory-sessions 500]
                               [--out bench/results/env_babyai.json]

Workload: the scripted expert's episodes on the 90 test tasks (every level), recorded once before
timing as lists of high-level actions, then replayed; the same task and actions give the same
episode, so only the environment and the transport are timed. An episode is a reset plus its
steps; steps/s counts steps over the whole time, resets included.

1. In-process: one BabyAIEnv, episodes back to back.
2. Through the server: `GymServer` (thread isolation) in a child process, one msgpack client,
   `--sessions` sessions each replaying episodes on its own; then the same sessions in lockstep,
   one step_batch frame per round. Ratio = server steps/s / in-process steps/s. CPU time per
   step (server process, client process) is reported too: on a shared, busy machine it is the
   steadier figure.
3. Memory per session: Python heap per reset environment (tracemalloc, in-process), and the
   server process's resident memory growth per open, stepped session.

Client and server share this machine's cores, so server figures include the client's cost.
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
from pathlib import Path

from gymwire.sdk.environment import Task
from gymwire.servers.babyai import BabyAIEnv
from gymwire.servers.babyai.expert import BabyAIExpert
from gymwire.servers.babyai.levels import SPLITS

SPLIT = "test"
MAX_TURNS = 1000


def record_episodes() -> list[list[str]]:
    """The expert's actions for every test task, played once in-process."""
    scripts = []
    for index in range(SPLITS[SPLIT]):
        env, expert, actions = BabyAIEnv(), BabyAIExpert(SPLIT, index), []
        env.reset(Task(split=SPLIT, index=index))
        while True:
            actions.append(expert.act())
            result = env.step(actions[-1])
            expert.observe(result.info)
            if result.terminated or result.truncated:
                break
        if not result.success:
            raise RuntimeError(f"the expert failed test task {index}; the workload would not be whole episodes")
        scripts.append(actions)
    return scripts


def bench_in_process(scripts: list[list[str]], seconds: float) -> dict:
    env = BabyAIEnv()
    steps = episodes = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for index, actions in enumerate(scripts):
            env.reset(Task(split=SPLIT, index=index))
            for action in actions:
                env.step(action)
            steps += len(actions)
            episodes += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "steps": steps, "episodes": episodes, "seconds": round(elapsed, 3), "steps_per_s": round(steps / elapsed),
        "cpu_us_per_step": round(cpu / steps * 1e6),
    }


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
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


def serve(port: int) -> None:
    from gymwire.sdk.server import GymServer

    BabyAIEnv().reset(Task(split=SPLIT, index=0))  # import minigrid before the first session, as a warm server would
    asyncio.run(GymServer([BabyAIEnv], port=port).serve_forever())


async def open_sessions(client, count: int) -> list:
    return await asyncio.gather(*(client.open("babyai", split=SPLIT, index=0, max_turns=MAX_TURNS) for _ in range(count)))


async def bench_server(url: str, scripts: list[list[str]], sessions: int, seconds: float) -> dict:
    from gymwire.sdk.client import GymClient

    counts = {"steps": 0, "episodes": 0}
    async with GymClient(url) as client:
        opened = await open_sessions(client, sessions)
        start = time.perf_counter()

        async def worker(first_task: int, session) -> None:
            task = first_task
            while time.perf_counter() - start < seconds:
                index = task % len(scripts)
                await session.reset(split=SPLIT, index=index)
                for action in scripts[index]:
                    await session.step(action)
                counts["steps"] += len(scripts[index])
                counts["episodes"] += 1
                task += sessions

        await asyncio.gather(*(worker(i, s) for i, s in enumerate(opened)))
        elapsed = time.perf_counter() - start
        await asyncio.gather(*(s.close() for s in opened))
    return {**counts, "sessions": sessions, "seconds": round(elapsed, 3), "steps_per_s": round(counts["steps"] / elapsed)}


async def bench_server_batched(url: str, scripts: list[list[str]], sessions: int, seconds: float) -> dict:
    """The same episodes, every round stepping all sessions with one step_batch frame."""
    from gymwire.sdk.client import GymClient

    steps = episodes = next_task = 0
    async with GymClient(url) as client:
        opened = await open_sessions(client, sessions)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            tasks = [(next_task + i) % len(scripts) for i in range(sessions)]
            next_task += sessions
            await asyncio.gather(*(s.reset(split=SPLIT, index=t) for s, t in zip(opened, tasks)))
            for turn in range(max(len(scripts[t]) for t in tasks)):
                batch = [(s, scripts[t][turn]) for s, t in zip(opened, tasks) if turn < len(scripts[t])]
                await client.step_batch(batch)
                steps += len(batch)
            episodes += sessions
        elapsed = time.perf_counter() - start
        await asyncio.gather(*(s.close() for s in opened))
    return {"steps": steps, "episodes": episodes, "sessions": sessions, "seconds": round(elapsed, 3), "steps_per_s": round(steps / elapsed)}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status; this memory figure needs Linux")


def memory_in_process(count: int) -> dict:
    for index in range(40):  # import every level's code first, as a running server would have
        BabyAIEnv().reset(Task(split=SPLIT, index=index))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    envs = []
    for i in range(count):
        env = BabyAIEnv()
        env.reset(Task(split=SPLIT, index=i % SPLITS[SPLIT]))
        env.step("turn left")
        envs.append(env)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return {"sessions": count, "bytes_per_session": round(grown / count)}


async def memory_server(url: str, pid: int, count: int) -> dict:
    from gymwire.sdk.client import GymClient

    async with GymClient(url) as client:
        warm = await asyncio.gather(*(client.open("babyai", split=SPLIT, index=i) for i in range(40)))
        await asyncio.gather(*(s.close() for s in warm))
        await asyncio.sleep(0.5)
        before = rss_bytes(pid)
        opened = await asyncio.gather(*(client.open("babyai", split=SPLIT, index=i % SPLITS[SPLIT]) for i in range(count)))
        await asyncio.gather(*(s.step("turn left") for s in opened))
        after = rss_bytes(pid)
        await asyncio.gather(*(s.close() for s in opened))
    return {"sessions": count, "rss_bytes_per_session": round((after - before) / count)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--memory-sessions", type=int, default=500)
    parser.add_argument("--out", default="bench/results/env_babyai.json")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0

    scripts = record_episodes()
    results: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "workload": {
            "split": SPLIT,
            "tasks": len(scripts),
            "mean_steps_per_episode": round(sum(map(len, scripts)) / len(scripts), 2),
        },
    }
    in_process = bench_in_process(scripts, args.seconds)
    results["in_process"] = in_process
    print(
        f"in-process: {in_process['steps_per_s']:,} steps/s ({in_process['episodes']} episodes), "
        f"{in_process['cpu_us_per_step']:,} us CPU/step"
    )
    proc, url = start_server()
    try:
        cpu = cpu_seconds(proc.pid), time.process_time()
        served = with_cpu_cost(asyncio.run(bench_server(url, scripts, args.sessions, args.seconds)), proc.pid, *cpu)
        served["ratio_to_in_process"] = round(served["steps_per_s"] / in_process["steps_per_s"], 4)
        cpu = cpu_seconds(proc.pid), time.process_time()
        batched = with_cpu_cost(asyncio.run(bench_server_batched(url, scripts, args.sessions, args.seconds)), proc.pid, *cpu)
        batched["ratio_to_in_process"] = round(batched["steps_per_s"] / in_process["steps_per_s"], 4)
        served["step_batch"] = batched
        served["memory"] = asyncio.run(memory_server(url, proc.pid, args.memory_sessions))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    results["server_thread"] = served
    for label, figures in ((f"server (thread, {args.sessions} sessions)", served), ("  with step_batch", batched)):
        print(
            f"{label}: {figures['steps_per_s']:,} steps/s, ratio to in-process {figures['ratio_to_in_process']:.3f}; "
            f"CPU/step: server {figures['server_cpu_us_per_step']:,} us + client {figures['client_cpu_us_per_step']:,} us"
        )
    results["memory_in_process"] = memory_in_process(args.memory_sessions)
    print(f"memory in-process: {results['memory_in_process']['bytes_per_session']:,} B/session (Python heap)")
    server_memory = served["memory"]
    print(f"memory in server: {server_memory['rss_bytes_per_session']:,} B/session (RSS growth, {server_memory['sessions']} sessions)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
