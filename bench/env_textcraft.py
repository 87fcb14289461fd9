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
import sys

import env_bench
from gymwire.sdk.environment import Task
from gymwire.servers.textcraft import TextCraftEnv
from gymwire.servers.textcraft.recipes import load_book
from gymwire.servers.textcraft.solver import plan

ENV = "textcraft"
SPLIT = "test"
MAX_TURNS = 100
TASKS = 100  # test tasks
PROBE_ACTION = "get 1 oak logs"  # the one step each session takes in the memory figures


class InlineTextCraftEnv(TextCraftEnv):
    """TextCraft stepped on the server's event loop instead of a worker thread."""

    inline = True


def plans() -> list[list[str]]:
    book = load_book()
    return [plan(book, goal) for goal in book.splits[SPLIT]]


def serve(port: int, inline: bool) -> None:
    env = InlineTextCraftEnv if inline else TextCraftEnv
    load_book()  # load the recipes before the first session, as a warm server would have
    env_bench.serve({ENV: env}, port)


def memory_in_process(count: int) -> dict:
    load_book()
    for index in range(TASKS):  # warm the per-goal caches, as a running server would have them
        TextCraftEnv().reset(Task(split=SPLIT, index=index))
    return env_bench.memory_in_process(TextCraftEnv, SPLIT, TASKS, count, PROBE_ACTION)


def main() -> int:
    parser = env_bench.make_parser(__doc__, memory_sessions=1000, out="bench/results/env_textcraft.json")
    parser.add_argument("--inline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.inline)
        return 0

    all_plans = plans()
    results: dict = {
        # Load from other processes skews every figure here; it is recorded so runs can be compared.
        "machine": env_bench.machine(load_average=True),
        "workload": env_bench.workload(SPLIT, all_plans),
    }
    in_process = env_bench.bench_in_process(TextCraftEnv, SPLIT, all_plans, args.seconds)
    results["in_process"] = in_process
    print(f"in-process: {in_process['steps_per_s']:,} steps/s ({in_process['episodes']} episodes)")
    for isolation, inline in (("thread", False), ("inline", True)):
        proc, url = env_bench.start_server(__file__, ["--inline"] if inline else [])
        try:
            served = env_bench.bench_served(url, proc.pid, ENV, SPLIT, all_plans, args.sessions, args.seconds, MAX_TURNS, in_process)
            batched = served["step_batch"]
            if isolation == "thread":
                served["memory"] = asyncio.run(
                    env_bench.memory_server(url, proc.pid, ENV, SPLIT, TASKS, TASKS, args.memory_sessions, PROBE_ACTION)
                )
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
    env_bench.finish(results, results["server_thread"]["memory"], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
