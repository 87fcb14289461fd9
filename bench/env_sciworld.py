"""ScienceWorld benchmark: start-up and memory per session, reset time, steps/s in-process vs through
a gymwire server, and memory over 1,000 resets.

    python bench/env_sciworld.py [--sessions 16,64] [--seconds 20] [--resets 1000]
                                 [--out bench/results/env_sciworld.json]

1. Start-up: a JVM of its own per session (AgentGym's design: launch + first load + look) against a
   simulator in an already running JVM of the pool (acquire + load + look); memory: the RSS of one
   JVM holding one loaded task, against the heap each extra simulator adds to a pooled JVM
   (16 and 64 loaded, live heap after a full GC, and RSS growth).
2. Reset time: load + `look around` of the test tasks on a warm JVM.
3. Steps/s: ScienceWorld's gold action sequences of every 5th test task (computed before timing),
   episodes back to back, N sessions at once, (a) in-process: SciWorldEnv driven directly by
   asyncio, (b) through a gymwire server in a child process, one client connection. Same pool
   settings in both (the default: one JVM per CPU, sessions spread over them).
4. Memory over resets: one simulator reset `--resets` times; the JVM's live heap and RSS every 100.

Client, server and JVMs share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import env_bench
from gymwire.sdk.environment import Task
from gymwire.servers.sciworld import SciWorldEnv, tasks
from gymwire.servers.sciworld.env import DEFAULT_JVM_HEAP_MB, DEFAULT_JVMS, DEFAULT_SESSIONS_PER_JVM
from gymwire.servers.sciworld.jvm import JavaPool, JavaProcess
from gymwire.servers.sciworld.solver import gold_actions

ENV = "sciworld"
SPLIT = "test"
TASKS = 200
SCRIPT_TASKS = range(0, TASKS, 5)  # every 5th test task (all 23 task kinds): their gold paths are the workload
MAX_TURNS = 1000


async def startup_and_memory() -> dict:
    # AgentGym's design: one JVM per session.
    own_times, own_rss = [], []
    for index in range(3):
        task = tasks.task_at(SPLIT, index * 50)
        start = time.perf_counter()
        pool = JavaPool(processes=1, sessions_per_process=1, heap_mb=DEFAULT_JVM_HEAP_MB, call_timeout_s=300)
        simulator = await pool.acquire()
        await simulator.load(task.name, task.variation)
        own_times.append(time.perf_counter() - start)
        own_rss.append(env_bench.rss_bytes(simulator.process.pid))
        pool.shutdown()
    # The pool's design: many simulators in one running JVM.
    pool = JavaPool(processes=1, sessions_per_process=100, heap_mb=DEFAULT_JVM_HEAP_MB, call_timeout_s=300)
    warm = await pool.acquire()
    await warm.load(tasks.task_at(SPLIT, 0).name, tasks.task_at(SPLIT, 0).variation)
    process: JavaProcess = warm.process
    base_heap, base_rss = await process.heap_used_bytes(), env_bench.rss_bytes(process.pid)
    shared_times, figures, held = [], {}, []
    for count in (16, 64):
        while len(held) < count:
            task = tasks.task_at(SPLIT, (len(held) * 7) % TASKS)
            start = time.perf_counter()
            simulator = await pool.acquire()
            await simulator.load(task.name, task.variation)
            shared_times.append(time.perf_counter() - start)
            held.append(simulator)
        heap, rss = await process.heap_used_bytes(), env_bench.rss_bytes(process.pid)
        figures[str(count)] = {
            "heap_bytes_per_session": round((heap - base_heap) / count),
            "rss_bytes_per_session": round((rss - base_rss) / count),
        }
    pool.shutdown()
    return {
        "own_jvm_per_session": {"startup_s_mean": round(statistics.mean(own_times), 3), "rss_bytes_mean": round(statistics.mean(own_rss))},
        "pooled_jvm": {
            "startup_s_mean": round(statistics.mean(shared_times), 3),
            "startup_s_median": round(statistics.median(shared_times), 3),
            "jvm_base_rss_bytes": base_rss,
            "per_session": figures,
        },
    }


async def reset_times(count: int) -> dict:
    env = SciWorldEnv(jvms=1)
    await env.reset(Task(split=SPLIT, index=0))
    times = []
    for i in range(count):
        start = time.perf_counter()
        await env.reset(Task(split=SPLIT, index=(i * 13) % TASKS))
        times.append(time.perf_counter() - start)
    await env.close()
    env.pool.shutdown()
    times.sort()
    return {"resets": count, "mean_s": round(statistics.mean(times), 4), "p50_s": round(times[len(times) // 2], 4), "p90_s": round(times[int(len(times) * 0.9)], 4)}


async def scripts() -> list[list[str]]:
    pool = JavaPool(processes=1, sessions_per_process=4, heap_mb=1024, call_timeout_s=300)
    gate = asyncio.Semaphore(4)

    async def one(index: int) -> list[str]:
        async with gate:
            return await gold_actions(pool, tasks.task_at(SPLIT, index))

    try:
        gold = await asyncio.gather(*(one(i) for i in SCRIPT_TASKS))
        return [gold[SCRIPT_TASKS.index(i)] if i in SCRIPT_TASKS else [] for i in range(TASKS)]
    finally:
        pool.shutdown()


async def play_for(seconds: float, players: list, all_scripts: list[list[str]]) -> dict:
    """Each player (reset(index), step(action) -> episode over) replays gold episodes until time is up."""
    counts = {"steps": 0, "episodes": 0}
    start = time.perf_counter()

    async def worker(first: int, player) -> None:
        task = first
        while time.perf_counter() - start < seconds:
            index = SCRIPT_TASKS[task % len(SCRIPT_TASKS)]
            await player.reset(index)
            for action in all_scripts[index]:
                counts["steps"] += 1
                if await player.step(action):
                    break  # a gold path can complete the task before its last action
            counts["episodes"] += 1
            task += len(players)

    await asyncio.gather(*(worker(i, p) for i, p in enumerate(players)))
    elapsed = time.perf_counter() - start
    return {**counts, "sessions": len(players), "seconds": round(elapsed, 3), "steps_per_s": round(counts["steps"] / elapsed, 1)}


class InProcessPlayer:
    def __init__(self, env: SciWorldEnv) -> None:
        self.env = env

    async def reset(self, index: int) -> None:
        await self.env.reset(Task(split=SPLIT, index=index))

    async def step(self, action: str) -> bool:
        return (await self.env.step(action)).terminated


class ServedPlayer:
    def __init__(self, session) -> None:
        self.session = session

    async def reset(self, index: int) -> None:
        await self.session.reset(split=SPLIT, index=index)

    async def step(self, action: str) -> bool:
        result = await self.session.step(action)
        return result.terminated or result.truncated


async def bench_in_process(all_scripts: list[list[str]], sessions: int, seconds: float) -> dict:
    envs = [SciWorldEnv() for _ in range(sessions)]
    await asyncio.gather(*(env.reset(Task(split=SPLIT, index=0)) for env in envs))  # JVMs up, as a server's would be
    result = await play_for(seconds, [InProcessPlayer(env) for env in envs], all_scripts)
    await asyncio.gather(*(env.close() for env in envs))
    envs[0].pool.shutdown()
    return result


async def bench_server(url: str, all_scripts: list[list[str]], sessions: int, seconds: float) -> dict:
    from gymwire.sdk.client import GymClient

    async with GymClient(url) as client:
        opened = await asyncio.gather(*(client.open(ENV, split=SPLIT, index=0, max_turns=MAX_TURNS) for _ in range(sessions)))
        result = await play_for(seconds, [ServedPlayer(s) for s in opened], all_scripts)
        await asyncio.gather(*(s.close() for s in opened))
    return result


async def memory_over_resets(resets: int) -> list[dict]:
    env = SciWorldEnv(jvms=1)
    await env.reset(Task(split="train", index=0))
    process = env._simulator.process
    samples = []
    for i in range(1, resets + 1):
        await env.reset(Task(split="train", index=(i * 31) % SciWorldEnv.splits["train"]))
        await env.step("look around")
        if i % 100 == 0:
            samples.append({"resets": i, "heap_bytes": await process.heap_used_bytes(), "rss_bytes": env_bench.rss_bytes(process.pid)})
            print(f"  {i} resets: live heap {samples[-1]['heap_bytes'] / 2**20:.0f} MiB, RSS {samples[-1]['rss_bytes'] / 2**20:.0f} MiB", flush=True)
    await env.close()
    env.pool.shutdown()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", default="16,64")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--resets", type=int, default=1000)
    parser.add_argument("--out", default="bench/results/env_sciworld.json")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        env_bench.serve({ENV: SciWorldEnv}, args.serve)
        return 0
    results: dict = {"machine": env_bench.machine(load_average=True), "pool": {"jvms": DEFAULT_JVMS, "sessions_per_jvm": DEFAULT_SESSIONS_PER_JVM}}

    print("start-up and memory per session ...", flush=True)
    results["startup_and_memory"] = asyncio.run(startup_and_memory())
    print(f"  {results['startup_and_memory']}", flush=True)
    print("reset time ...", flush=True)
    results["reset"] = asyncio.run(reset_times(50))
    print(f"  {results['reset']}", flush=True)

    print("gold action sequences of the test tasks ...", flush=True)
    all_scripts = asyncio.run(scripts())
    results["workload"] = env_bench.workload(SPLIT, [all_scripts[i] for i in SCRIPT_TASKS])
    for sessions in (int(s) for s in args.sessions.split(",")):
        in_process = asyncio.run(bench_in_process(all_scripts, sessions, args.seconds))
        proc, url = env_bench.start_server(__file__)
        try:
            served = asyncio.run(bench_server(url, all_scripts, sessions, args.seconds))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        served["ratio_to_in_process"] = round(served["steps_per_s"] / in_process["steps_per_s"], 3)
        results[f"sessions_{sessions}"] = {"in_process": in_process, "server": served}
        print(f"{sessions} sessions: in-process {in_process['steps_per_s']} steps/s, through the server {served['steps_per_s']} steps/s "
              f"(ratio {served['ratio_to_in_process']})", flush=True)

    if args.resets:
        print(f"memory over {args.resets} resets ...", flush=True)
        results["memory_over_resets"] = asyncio.run(memory_over_resets(args.resets))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
