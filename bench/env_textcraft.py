"""TextCraft benchmark: steps/s in-process vs through a gymwire server, and memory per session.

    python bench/env_textcraft.py [--sessions 64] [--seconds 8] [--memory-sessions 1000]
                                  [--out bench/results/env_textcraft.json]

Workload: the scripted planner's episodes over the 100 test tasks, cycled (plans are computed
before timing, so only the environment and transport are measured). Each episode is a reset plus
the plan's steps; steps/s counts steps only, over the whole time including resets.

1. In-process: one TextCraftEnv, episodes back to back, no server.
2. Through the server: `gymwire`'s server in a child process (thread isolation, the default, and
   inline on the event loop), one msgpack client connection, `--sessions` sessions stepping
   concurrently, each stepping on its own; then the same sessions stepped in lockstep, one
   step_batch frame per round. Reports steps/s and the ratio to in-process.
3. Memory per session: Python heap per reset environment (tracemalloc, in-process) and the
   server process's resident memory growth per open session.

Client and server share this machine's cores, so the server figures include the client's cost.
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
from gymwire.servers.textcraft import TextCraftEnv
from gymwire.servers.textcraft.solver import plan

SPLIT = "test"


class InlineTextCraftEnv(TextCraftEnv):
    """TextCraft stepped on the server's event loop instead of a worker thread."""

    inline = True


def plans() -> list[list[str]]:
    book = TextCraftEnv.book()
    return [plan(book, goal) for goal in book.splits[SPLIT]]


def bench_in_process(all_plans: list[list[str]], seconds: float) -> dict:
    env = TextCraftEnv()
    steps = episodes = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for index, actions in enumerate(all_plans):
            env.reset(Task(split=SPLIT, index=index))
            for action in actions:
                env.step(action)
            steps += len(actions)
            episodes += 1
    elapsed = time.perf_counter() - start
    return {"steps": steps, "episodes": episodes, "seconds": round(elapsed, 3), "steps_per_s": round(steps / elapsed)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(inline: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)] + (["--inline"] if inline else []),
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


def serve(port: int, inline: bool) -> None:
    from gymwire.sdk.server import GymServer

    env = InlineTextCraftEnv if inline else TextCraftEnv
    env.book()  # load the recipes before the first session, as a warm server would have
    asyncio.run(GymServer({"textcraft": env}, port=port).serve_forever())


async def bench_server(url: str, all_plans: list[list[str]], sessions: int, seconds: float) -> dict:
    from gymwire.sdk.client import GymClient

    counts = {"steps": 0, "episodes": 0}
    async with GymClient(url) as client:
        opened = await asyncio.gather(*(client.open("textcraft", split=SPLIT, index=0, max_turns=100) for _ in range(sessions)))
        start = time.perf_counter()

        async def worker(worker_index: int, session) -> None:
            index = worker_index
            while time.perf_counter() - start < seconds:
                task = index % len(all_plans)
                await session.reset(split=SPLIT, index=task)
                for action in all_plans[task]:
                    await session.step(action)
                counts["steps"] += len(all_plans[task])
                counts["episodes"] += 1
                index += sessions

        await asyncio.gather(*(worker(i, s) for i, s in enumerate(opened)))
        elapsed = time.perf_counter() - start
        await asyncio.gather(*(s.close() for s in opened))
    return {**counts, "sessions": sessions, "seconds": round(elapsed, 3), "steps_per_s": round(counts["steps"] / elapsed)}


async def bench_server_batched(url: str, all_plans: list[list[str]], sessions: int, seconds: float) -> dict:
    """The same episodes, but every round steps all sessions in one step_batch frame."""
    from gymwire.sdk.client import GymClient

    steps = episodes = 0
    async with GymClient(url) as client:
        opened = await asyncio.gather(*(client.open("textcraft", split=SPLIT, index=0, max_turns=100) for _ in range(sessions)))
        start = time.perf_counter()
        next_task = 0
        while time.perf_counter() - start < seconds:
            tasks = [(next_task + i) % len(all_plans) for i in range(sessions)]
            next_task += sessions
            await asyncio.gather(*(s.reset(split=SPLIT, index=t) for s, t in zip(opened, tasks)))
            for turn in range(max(len(all_plans[t]) for t in tasks)):
                batch = [(s, all_plans[t][turn]) for s, t in zip(opened, tasks) if turn < len(all_plans[t])]
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
    TextCraftEnv.book()
    for index in range(100):  # warm the per-goal caches, as a running server would have them
        TextCraftEnv().reset(Task(split=SPLIT, index=index))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    envs = []
    for i in range(count):
        env = TextCraftEnv()
        env.reset(Task(split=SPLIT, index=i % 100))
        env.step("get 1 oak logs")
        envs.append(env)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return {"sessions": count, "bytes_per_session": round(grown / count)}


async def memory_server(url: str, pid: int, count: int) -> dict:
    from gymwire.sdk.client import GymClient

    async with GymClient(url) as client:
        warm = await asyncio.gather(*(client.open("textcraft", split=SPLIT, index=i) for i in range(100)))
        await asyncio.gather(*(s.close() for s in warm))
        await asyncio.sleep(0.5)
        before = rss_bytes(pid)
        opened = await asyncio.gather(*(client.open("textcraft", split=SPLIT, index=i % 100) for i in range(count)))
        await asyncio.gather(*(s.step("get 1 oak logs") for s in opened))
        after = rss_bytes(pid)
        await asyncio.gather(*(s.close() for s in opened))
    return {"sessions": count, "rss_bytes_per_session": round((after - before) / count)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--memory-sessions", type=int, default=1000)
    parser.add_argument("--out", default="bench/results/env_textcraft.json")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--inline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.inline)
        return 0

    all_plans = plans()
    results: dict = {
        # Load from other processes skews every figure here; it is recorded so runs can be compared.
        "machine": {
            "python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "workload": {"split": SPLIT, "tasks": len(all_plans), "mean_steps_per_episode": round(sum(map(len, all_plans)) / len(all_plans), 2)},
    }
    in_process = bench_in_process(all_plans, args.seconds)
    results["in_process"] = in_process
    print(f"in-process: {in_process['steps_per_s']:,} steps/s ({in_process['episodes']} episodes)")
    for isolation, inline in (("thread", False), ("inline", True)):
        proc, url = start_server(inline)
        try:
            served = asyncio.run(bench_server(url, all_plans, args.sessions, args.seconds))
            served["ratio_to_in_process"] = round(served["steps_per_s"] / in_process["steps_per_s"], 4)
            batched = asyncio.run(bench_server_batched(url, all_plans, args.sessions, args.seconds))
            batched["ratio_to_in_process"] = round(batched["steps_per_s"] / in_process["steps_per_s"], 4)
            served["step_batch"] = batched
            if isolation == "thread":
                served["memory"] = asyncio.run(memory_server(url, proc.pid, args.memory_sessions))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        results[f"server_{isolation}"] = served
        print(
            f"server ({isolation}, {args.sessions} sessions): {served['steps_per_s']:,} steps/s, "
            f"ratio to in-process {served['ratio_to_in_process']:.3f}; with step_batch: "
            f"{batched['steps_per_s']:,} steps/s, ratio {batched['ratio_to_in_process']:.3f}"
        )
    results["memory_in_process"] = memory_in_process(args.memory_sessions)
    print(f"memory in-process: {results['memory_in_process']['bytes_per_session']:,} B/session (Python heap)")
    server_memory = results["server_thread"]["memory"]
    print(f"memory in server: {server_memory['rss_bytes_per_session']:,} B/session (RSS growth, {server_memory['sessions']} sessions)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
