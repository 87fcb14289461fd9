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

Facade overhead per step = 2 - 1. Bridge overhead per step = 4 - 3 - (2 - 1): what the bridge adds
beyond the HTTP hop it makes. Every server runs in this process, each on its own thread and event
loop, so client and servers share the GIL and the machine's cores: the figures are upper bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from typing import Awaitable, Callable

import aiohttp

from gymwire.protocol import Limits
from gymwire.sdk.agentgym_http import AgentGymFacade
from gymwire.sdk.client import GymClient
from gymwire.sdk.environment import Task
from gymwire.sdk.server import GymServer
from gymwire.servers.agentgym import bridge_class
from gymwire.servers.guess import GuessEnv

ACTION = "Action: 0"  # never right (the number is 1..100): an episode that never ends
MAX_TURNS = 1_000_000


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "median_us": round(statistics.median(ordered) * 1e6, 1),
        "p99_us": round(ordered[int(len(ordered) * 0.99) - 1] * 1e6, 1),
        "steps_per_s": round(len(ordered) / sum(ordered), 1),
    }


async def timed_steps(step: Callable[[], Awaitable[object]], steps: int) -> list[float]:
    for _ in range(min(100, steps)):  # warm-up
        await step()
    latencies = []
    for _ in range(steps):
        start = time.perf_counter()
        await step()
        latencies.append(time.perf_counter() - start)
    return latencies


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


async def measure(steps: int, sessions: int) -> dict[str, object]:
    results: dict[str, object] = {}
    limits = Limits(max_sessions=4 * sessions + 8)
    facade = AgentGymFacade([(GuessEnv, "textcraft")], split="test")
    direct = GymServer([GuessEnv], port=0, limits=limits)
    with facade.run_in_thread() as facade_url, direct.run_in_thread() as direct_url:
        bridged = GymServer([bridge_class(f"textcraft={facade_url},name=bridged,tasks=100")], port=0, limits=limits)
        with bridged.run_in_thread() as bridged_url:
            env = GuessEnv()
            env.reset(Task(split="test", index=3))

            async def in_process() -> object:
                return env.step(ACTION)

            print(f"1/4 in-process: {steps} steps", flush=True)
            results["in_process"] = summary(await timed_steps(in_process, steps))

            async with aiohttp.ClientSession() as http:

                async def facade_session() -> Callable[[], Awaitable[object]]:
                    async with http.post(f"{facade_url}/create", json={}) as created:
                        session_id = (await created.json())["id"]
                    async with http.post(f"{facade_url}/reset", json={"id": session_id, "data_idx": 3}) as reset:
                        await reset.read()

                    async def step() -> object:
                        async with http.post(f"{facade_url}/step", json={"id": session_id, "action": ACTION}) as answer:
                            return await answer.json()

                    return step

                print(f"2/4 facade: {steps} steps, then {sessions} sessions", flush=True)
                results["facade"] = summary(await timed_steps(await facade_session(), steps))
                results["facade"]["concurrent_steps_per_s"] = await concurrent_rate(facade_session, sessions, steps)

            for number, (key, url, env_name, split) in enumerate(
                [("gymwire", direct_url, "guess", "test"), ("bridge", bridged_url, "bridged", "all")], start=3
            ):
                async with GymClient(url) as client:

                    async def gymwire_session() -> Callable[[], Awaitable[object]]:
                        session = await client.open(env_name, split=split, index=3, max_turns=MAX_TURNS)
                        return lambda: session.step(ACTION)

                    print(f"{number}/4 {key}: {steps} steps, then {sessions} sessions", flush=True)
                    results[key] = summary(await timed_steps(await gymwire_session(), steps))
                    results[key]["concurrent_steps_per_s"] = await concurrent_rate(gymwire_session, sessions, steps)
    median = {key: value["median_us"] for key, value in results.items()}  # type: ignore[index]
    results["overhead_per_step_us"] = {
        "facade": round(median["facade"] - median["in_process"], 1),
        "bridge_beyond_its_http_hop": round(median["bridge"] - median["gymwire"] - (median["facade"] - median["in_process"]), 1),
        "bridge_total_vs_gymwire": round(median["bridge"] - median["gymwire"], 1),
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="timed steps per path (default 2000)")
    parser.add_argument("--sessions", type=int, default=32, help="concurrent sessions for the throughput figure")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    results = asyncio.run(measure(args.steps, args.sessions))
    results["machine"] = {"cores": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()}
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
