"""Web environment benchmark: steps/s with many sessions on one Chromium, memory per session, and
the scripted solvers' results per MiniWoB++ task type.

    python bench/env_web.py [--sessions 16] [--seconds 30] [--memory-sessions 16]
                            [--seeds 10] [--out bench/results/env_web.json]

1. Solvers (`--seeds` train seeds of every solved task type, through the server, 4 at a time):
   success rate and mean MiniWoB reward per task type.
2. Throughput: `GymServer` with `miniwob` in a child process (all sessions on one Chromium, the
   default 16 per browser); `--sessions` sessions, each resetting itself for solver episodes back
   to back over the solved types for `--seconds`. Steps/s counts steps (not resets); episodes/s and step
   latency percentiles are reported too.
3. Memory per session: proportional set size (PSS, so pages Chromium's processes share count
   once) of the server and all its Chromium processes, with `--memory-sessions` open, reset
   sessions minus the same with one session open, per added session.

Client, server and Chromium share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import env_bench
from gymwire.protocol import ProtocolError
from gymwire.sdk.client import GymClient
from gymwire.servers.web import MiniWoBEnv
from gymwire.servers.web.miniwob import index_of
from gymwire.servers.web.solvers import SOLVED_TYPES, MiniWoBSolver, SolverStuck

MAX_TURNS = 20  # click-checkboxes-large needs up to 13


def descendants(pid: int) -> list[int]:
    """pid and every process below it (Chromium runs in its own session but is still a child)."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(stat.parent.name))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def cpu_seconds_tree(pid: int) -> float:
    """CPU time of pid and its live descendants, with what they reaped (a closed tab's renderer
    counts in Chromium's children time once Chromium reaps it)."""
    total = 0
    for member in descendants(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def pss_bytes(pid: int) -> int:
    total = 0
    for member in descendants(pid):
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass  # a process that ended meanwhile
    return total


async def play(client: GymClient, task_type: str, round_: int, session=None) -> dict:
    """One solver episode on a new session, or on `session` after a reset (which recycles its context)."""
    index = index_of(task_type, round_)
    if session is None:
        async with client.session("miniwob", split="train", index=index, max_turns=MAX_TURNS) as session:
            return await _episode(session, task_type, session.observation.text)
    return await _episode(session, task_type, (await session.reset(split="train", index=index)).text)


async def _episode(session, task_type: str, text: str) -> dict:
    solver = MiniWoBSolver(task_type)
    latencies = []
    result = None
    while not session.done:
        started = time.perf_counter()
        result = await session.step(solver.act(text))
        latencies.append(time.perf_counter() - started)
        text = result.observation.text
    return {"type": task_type, "success": bool(result.metrics.success), "reward": result.reward, "latencies": latencies}


async def solver_results(url: str, seeds: int) -> dict:
    async with GymClient(url) as client:
        limit = asyncio.Semaphore(4)
        done = 0

        async def one(task_type: str, round_: int) -> dict:
            nonlocal done
            async with limit:
                try:
                    episode = await play(client, task_type, round_)
                except (SolverStuck, ProtocolError) as exc:  # counted as a failure, with why
                    episode = {"type": task_type, "success": False, "reward": 0.0, "error": repr(exc)[:200]}
            done += 1
            if done % 20 == 0:
                print(f"  solvers: {done}/{seeds * len(SOLVED_TYPES)} episodes", flush=True)
            return episode

        episodes = await asyncio.gather(*(one(t, r) for t in SOLVED_TYPES for r in range(seeds)))
    per_type = {}
    for task_type in SOLVED_TYPES:
        mine = [e for e in episodes if e["type"] == task_type]
        per_type[task_type] = {
            "episodes": len(mine),
            "success_rate": round(sum(e["success"] for e in mine) / len(mine), 3),
            "mean_reward": round(statistics.mean(e["reward"] for e in mine), 3),
            "errors": [e["error"] for e in mine if "error" in e][:3],
        }
    return per_type


async def throughput(url: str, pid: int, sessions: int, seconds: float) -> dict:
    cpu_before = cpu_seconds_tree(pid)
    async with GymClient(url) as client:
        work = itertools.cycle([(t, r) for r in range(1000) for t in SOLVED_TYPES])
        deadline = time.perf_counter() + seconds
        steps, episodes, failures, latencies = 0, 0, [], []

        async def worker() -> None:
            nonlocal steps, episodes
            # One session per worker, reset for every episode, as a trainer's rollout workers do.
            session = await client.open("miniwob", split="train", index=0, max_turns=MAX_TURNS)
            while time.perf_counter() < deadline:
                try:
                    episode = await play(client, *next(work), session=session)
                except ProtocolError as exc:  # e.g. a page load past its time limit on a saturated machine
                    failures.append(str(exc)[:200])
                    await session.close()
                    session = await client.open("miniwob", split="train", index=0, max_turns=MAX_TURNS)
                    continue
                steps += len(episode["latencies"])
                episodes += 1
                latencies.extend(episode["latencies"])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(sessions)))
        elapsed = time.perf_counter() - started
    server_cpu = cpu_seconds_tree(pid) - cpu_before
    latencies.sort()
    return {
        "sessions": sessions,
        "seconds": round(elapsed, 1),
        "steps": steps,
        "episodes": episodes,
        "steps_per_s": round(steps / elapsed, 2),
        "episodes_per_s": round(episodes / elapsed, 2),
        "step_latency_ms_p50": round(1000 * latencies[len(latencies) // 2], 1),
        "step_latency_ms_p95": round(1000 * latencies[int(len(latencies) * 0.95)], 1),
        # Server + Chromium CPU per step, resets included: unlike steps/s, it does not depend on
        # what else runs on the machine.
        "server_and_chromium_cpu_ms_per_step": round(1000 * server_cpu / max(1, steps), 1),
        "failed_episodes": len(failures),
        "failures": failures[:5],
    }


async def memory(url: str, pid: int, count: int) -> dict:
    async with GymClient(url) as client:
        first = await client.open("miniwob", split="train", index=index_of("click-checkboxes", 0))
        await asyncio.sleep(1)
        base = pss_bytes(pid)
        rest = [await client.open("miniwob", split="train", index=index_of("click-checkboxes", i + 1)) for i in range(count - 1)]
        await asyncio.sleep(1)
        loaded = pss_bytes(pid)
        for session in [first, *rest]:
            await session.close()
    return {
        "sessions": count,
        "pss_bytes_one_session": base,
        "pss_bytes_all_sessions": loaded,
        "pss_bytes_per_added_session": (loaded - base) // max(1, count - 1),
        "chromium_processes": len(descendants(pid)) - 1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--memory-sessions", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--parts", default="solvers,memory,throughput", help="comma-separated parts to run")
    parser.add_argument("--out", default="bench/results/env_web.json")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        env_bench.serve([MiniWoBEnv], args.serve)
        return 0

    results: dict = {"machine": env_bench.machine(load_average=True), "solved_types": list(SOLVED_TYPES)}
    proc, url = env_bench.start_server(__file__)
    try:
        parts = set(args.parts.split(","))
        if "solvers" in parts:
            print(f"solvers: {args.seeds} train seeds x {len(SOLVED_TYPES)} task types", flush=True)
            results["solvers"] = asyncio.run(solver_results(url, args.seeds))
            for task_type, row in results["solvers"].items():
                print(f"  {task_type:28s} success {row['success_rate']:.2f}  mean reward {row['mean_reward']:.2f}")
        if "memory" in parts:
            print(f"memory: {args.memory_sessions} sessions", flush=True)
            results["memory"] = asyncio.run(memory(url, proc.pid, args.memory_sessions))
            print(f"  {results['memory']['pss_bytes_per_added_session'] / 2**20:.1f} MiB PSS per added session "
                  f"({results['memory']['pss_bytes_all_sessions'] / 2**20:.0f} MiB with {args.memory_sessions})")
        if "throughput" in parts:
            print(f"throughput: {args.sessions} sessions for {args.seconds:g} s", flush=True)
            results["throughput"] = asyncio.run(throughput(url, proc.pid, args.sessions, args.seconds))
            print("  " + json.dumps(results["throughput"]))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
