"""What each AgentGym bridge costs per step, measured side by side in one run on loopback.

    python bench/agentgym_bridges.py [--steps 2000] [--sessions 32] [--json out.json]

Four ways to step the same environment (guess; a step is a comparison, so the figures are the
transport's), one session stepping in a loop, then `--sessions` stepping concurrently:

1. in-process: `env.step` called directly (the floor);
2. facade: an HTTP client posting AgentGym's /step to `gymwire agentgym-serve` (what AgentGym's
   clients see);
3. gymwire: the gymwire client stepping a gymwire server (the direct path);
4. bridge: the gymwire client stepping a gymwire server whose environment is the AgentGym bridge,
   which posts /step to the facade of 2 (an AgentGym server as gymwire serves it).

Latency overheads: facade = 2 - 1; bridge = 4 - 3 - (2 - 1), what the bridge adds beyond the HTTP
hop it makes. On a loaded machine latencies mostly measure waiting for a core, so the script also
reads each server process's CPU time (/proc) over the timed steps: the facade's CPU per step is its
whole cost, and the bridge's is its server's CPU per step minus the direct gymwire server's. Each server is its own process started with the command line
(`gymwire agentgym-serve`, `gymwire serve`), as it would be deployed; the client is this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import contextlib
import socket
import statistics
import subprocess
import sys
import time
from typing import Awaitable, Callable, Iterator

import aiohttp

from gymwire.sdk.client import GymClient
from gymwire.sdk.environment import Task
from gymwire.servers.guess import GuessEnv

ACTION = "Action: 0"  # never right (the number is 1..100): an episode that never ends
MAX_TURNS = 1_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def command(*args: str) -> Iterator[tuple[int, int]]:
    """Run `gymwire ARGS --port P` in a child process until its port answers; yields (P, pid)."""
    port = free_port()
    child = subprocess.Popen([sys.executable, "-m", "gymwire.sdk.cli", *args, "--port", str(port), "--log-level", "warning"])
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gymwire {' '.join(args)} did not start")
            time.sleep(0.1)
        yield port, child.pid
    finally:
        child.terminate()
        child.wait(timeout=30)


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "median_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(ordered[int(len(ordered) * 0.99) - 1] * 1e6, 1),
        "steps_per_s": round(len(ordered) / sum(ordered), 1),
    }


async def interleaved(paths: dict[str, tuple[Callable[[], Awaitable[object]], dict[str, int]]], steps: int, rounds: int) -> dict[str, dict]:
    """Latency figures of `steps` steps per path, and the CPU per step of the server processes each
    path names. The paths take turns, `steps / rounds` steps at a time, so a change in the
    machine's load during the run touches all of them alike."""
    for step, _ in paths.values():  # warm-up
        for _ in range(min(100, steps)):
            await step()
    latencies: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, dict[str, float]] = {name: dict.fromkeys(servers, 0.0) for name, (_, servers) in paths.items()}
    per_round = max(1, steps // rounds)
    for _ in range(rounds):
        for name, (step, servers) in paths.items():
            before = {server: cpu_seconds(pid) for server, pid in servers.items()}
            for _ in range(per_round):
                start = time.perf_counter()
                await step()
                latencies[name].append(time.perf_counter() - start)
            for server, pid in servers.items():
                cpu[name][server] += cpu_seconds(pid) - before[server]
    figures = {}
    for name in paths:
        count = len(latencies[name])
        figures[name] = {
            **summary(latencies[name]),
            "server_cpu_us_per_step": {server: round(total / count * 1e6, 1) for server, total in cpu[name].items()},
        }
    return figures


async def concurrent_rate(make_step: Callable[[], Awaitable[Callable[[], Awaitable[object]]]], sessions: int, steps: int) -> float:
    """Steps per second with `sessions` sessions stepping at once, `steps` steps in all."""
    stepper = [await make_step() for _ in range(sessions)]
    per_session = max(1, steps // sessions)

    async def run(step: Callable[[], Awaitable[object]]) -> None:
        for _ in range(per_session):
            await step()

    start = time.perf_counter()
    await asyncio.gather(*(run(step) for step in stepper))
    return round(per_session * sessions / (time.perf_counter() - start), 1)


async def measure(steps: int, sessions: int, rounds: int) -> dict[str, object]:
    with command("agentgym-serve", "guess", "--split", "test") as (facade_port, facade_pid), command("serve", "guess") as (
        direct_port,
        direct_pid,
    ):
        facade_url, direct_url = f"http://127.0.0.1:{facade_port}", f"ws://127.0.0.1:{direct_port}"
        with command("serve", f"agentgym:textcraft={facade_url},name=bridged,tasks=100") as (bridged_port, bridged_pid):
            bridged_url = f"ws://127.0.0.1:{bridged_port}"
            env = GuessEnv()
            env.reset(Task(split="test", index=3))

            async def in_process() -> object:
                return env.step(ACTION)

            async with aiohttp.ClientSession() as http, GymClient(direct_url) as direct, GymClient(bridged_url) as bridged:

                async def facade_session() -> Callable[[], Awaitable[object]]:
                    async with http.post(f"{facade_url}/create", json={}) as created:
                        session_id = (await created.json())["id"]
                    async with http.post(f"{facade_url}/reset", json={"id": session_id, "data_idx": 3}) as reset:
                        await reset.read()

                    async def step() -> object:
                        async with http.post(f"{facade_url}/step", json={"id": session_id, "action": ACTION}) as answer:
                            return await answer.json()

                    return step

                def gymwire_session(client: GymClient, name: str, split: str) -> Callable[[], Awaitable[Callable[[], Awaitable[object]]]]:
                    async def make() -> Callable[[], Awaitable[object]]:
                        session = await client.open(name, split=split, index=3, max_turns=MAX_TURNS)
                        return lambda: session.step(ACTION)

                    return make

                makers = {
                    "facade": facade_session,
                    "gymwire": gymwire_session(direct, "guess", "test"),
                    "bridge": gymwire_session(bridged, "bridged", "all"),
                }
                servers = {"facade": {"facade": facade_pid}, "gymwire": {"gymwire": direct_pid}, "bridge": {"bridge": bridged_pid, "facade": facade_pid}}
                paths = {"in_process": (in_process, {})} | {name: (await make(), servers[name]) for name, make in makers.items()}
                print(f"one session per path: {steps} steps each, in {rounds} turns", flush=True)
                results: dict[str, object] = await interleaved(paths, steps, rounds)
                for name, make in makers.items():
                    print(f"{name}: {sessions} concurrent sessions", flush=True)
                    results[name]["concurrent_steps_per_s"] = await concurrent_rate(make, sessions, steps)  # type: ignore[index]
    median = {key: value["median_us"] for key, value in results.items()}  # type: ignore[index]
    cpu = {key: value["server_cpu_us_per_step"] for key, value in results.items()}  # type: ignore[index]
    results["cpu_overhead_per_step_us"] = {
        "facade": cpu["facade"]["facade"],
        "bridge": round(cpu["bridge"]["bridge"] - cpu["gymwire"]["gymwire"], 1),
    }
    results["latency_overhead_per_step_us"] = {
        "facade": round(median["facade"] - median["in_process"], 1),
        "bridge_beyond_its_http_hop": round(median["bridge"] - median["gymwire"] - (median["facade"] - median["in_process"]), 1),
        "bridge_total_vs_gymwire": round(median["bridge"] - median["gymwire"], 1),
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="timed steps per path (default 2000)")
    parser.add_argument("--sessions", type=int, default=32, help="concurrent sessions for the throughput figure")
    parser.add_argument("--rounds", type=int, default=20, help="turns the paths take (default 20)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    results = asyncio.run(measure(args.steps, args.sessions, args.rounds))
    results["machine"] = {"cores": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()}
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
