"""A scripted ScienceWorld player: the simulator's own gold action sequences, played through a server.

`gold_actions(task)` asks a simulator of its own (not the session's) for ScienceWorld's gold path
of the task. `solve(client, split, index, pool)` plays it in a session and says how it ended.

    python -m gymwire.servers.sciworld.solver [--split test] [--indices 0-199] [--concurrency 4] [--json out.json]

serves `sciworld` on loopback, plays every chosen task and prints how many reach success, then
each failure with its reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass

from gymwire.sdk.client import GymClient

from . import tasks
from .jvm import JavaPool

__all__ = ["gold_actions", "solve", "Outcome", "main"]


@dataclass
class Outcome:
    split: str
    index: int
    task_id: str
    task: str
    variation: int
    gold_steps: int
    steps: int
    success: bool
    score: float
    reason: str  # why it failed, "" on success


async def gold_actions(pool: JavaPool, task: tasks.SciTask) -> list[str]:
    simulator = await pool.acquire()
    try:
        await simulator.load(task.name, task.variation, gold_path=True)
        return await simulator.gold_actions()
    finally:
        pool.release(simulator)


async def solve(client: GymClient, split: str, index: int, pool: JavaPool) -> Outcome:
    task = tasks.task_at(split, index)
    actions = await gold_actions(pool, task)
    outcome = Outcome(split, index, task.task_id, task.name, task.variation, len(actions), 0, False, 0.0, "")
    async with client.session("sciworld", split=split, index=index, max_turns=len(actions) + 1) as session:
        result = None
        for action in actions:
            result = await session.step(action)
            outcome.steps += 1
            if session.done:
                break
    metrics = result.metrics if result is not None else None
    outcome.success = bool(metrics and metrics.success)
    outcome.score = float(result.info.get("score", 0)) if result else 0.0  # the simulator's own, 0-100
    if not outcome.success:
        last = result.observation.text.strip().replace("\n", " ")[:160] if result else "(no steps)"
        if result is not None and result.info.get("score", 0) < 0:
            outcome.reason = f"task failed (score {result.info['score']}) at step {outcome.steps}/{len(actions)}: {last!r}"
        elif outcome.steps == len(actions):
            outcome.reason = f"gold path ended without completing the task (score {outcome.score:g}); last observation {last!r}"
        else:
            outcome.reason = f"episode ended at step {outcome.steps}/{len(actions)} (score {outcome.score:g}): {last!r}"
    return outcome


def _indices(text: str | None, size: int) -> list[int]:
    if not text:
        return list(range(size))
    chosen: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        chosen.extend(range(int(first), int(last or first) + 1))
    return chosen


async def _run(split: str, indices: list[int], concurrency: int) -> list[Outcome]:
    from gymwire.sdk.server import GymServer

    from .env import SciWorldEnv

    gold_pool = JavaPool(processes=1, sessions_per_process=concurrency, heap_mb=1024, call_timeout_s=300)
    outcomes: list[Outcome] = []
    gate = asyncio.Semaphore(concurrency)
    start = time.perf_counter()
    try:
        async with GymServer([SciWorldEnv], port=0) as server, GymClient(server.url) as client:

            async def one(index: int) -> None:
                async with gate:
                    outcome = await solve(client, split, index, gold_pool)
                outcomes.append(outcome)
                solved = sum(o.success for o in outcomes)
                print(
                    f"[{len(outcomes)}/{len(indices)}] {split} {index} {outcome.task_id} {outcome.task} v{outcome.variation}: "
                    f"{'success' if outcome.success else 'FAIL'} in {outcome.steps} steps ({solved} solved, "
                    f"{time.perf_counter() - start:.0f} s)",
                    flush=True,
                )

            await asyncio.gather(*(one(index) for index in indices))
    finally:
        gold_pool.shutdown()
    return sorted(outcomes, key=lambda o: o.index)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Play ScienceWorld's gold action sequences through a gymwire server.")
    parser.add_argument("--split", default="test", choices=sorted(tasks.split_sizes()))
    parser.add_argument("--indices", help="e.g. 0-9,15 (default: the whole split)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", metavar="PATH", help="write every outcome as JSON")
    args = parser.parse_args(argv)
    size = tasks.split_sizes()[args.split]
    try:
        indices = _indices(args.indices, size)
    except ValueError:
        parser.error(f"--indices: write indices and ranges like 0-9,15 (0..{size - 1})")
    if not all(0 <= i < size for i in indices):
        parser.error(f"--indices: split {args.split!r} has tasks 0..{size - 1}")
    outcomes = asyncio.run(_run(args.split, indices, args.concurrency))
    failures = [o for o in outcomes if not o.success]
    print(f"\n{len(outcomes) - len(failures)}/{len(outcomes)} {args.split} tasks reach success with the gold path")
    for o in failures:
        print(f"  {o.split} {o.index} ({o.task_id} {o.task}, variation {o.variation}): {o.reason}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump([asdict(o) for o in outcomes], out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
