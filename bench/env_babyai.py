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

import asyncio
import sys

import env_bench
from gymwire.sdk.environment import Task
from gymwire.servers.babyai import BabyAIEnv
from gymwire.servers.babyai.expert import BabyAIExpert
from gymwire.servers.babyai.levels import SPLITS

ENV = "babyai"
SPLIT = "test"
MAX_TURNS = 1000
PROBE_ACTION = "turn left"  # the one step each session takes in the memory figures
WARM_TASKS = 40  # resets that import every level's code, as a running server would have


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


def serve(port: int) -> None:
    BabyAIEnv().reset(Task(split=SPLIT, index=0))  # import minigrid before the first session, as a warm server would
    env_bench.serve([BabyAIEnv], port)


def memory_in_process(count: int) -> dict:
    for index in range(WARM_TASKS):  # import every level's code first, as a running server would have
        BabyAIEnv().reset(Task(split=SPLIT, index=index))
    return env_bench.memory_in_process(BabyAIEnv, SPLIT, SPLITS[SPLIT], count, PROBE_ACTION)


def main() -> int:
    args = env_bench.make_parser(__doc__, memory_sessions=500, out="bench/results/env_babyai.json").parse_args()
    if args.serve:
        serve(args.serve)
        return 0

    scripts = record_episodes()
    results: dict = {"machine": env_bench.machine(), "workload": env_bench.workload(SPLIT, scripts)}
    in_process = env_bench.bench_in_process(BabyAIEnv, SPLIT, scripts, args.seconds, cpu_cost=True)
    results["in_process"] = in_process
    print(
        f"in-process: {in_process['steps_per_s']:,} steps/s ({in_process['episodes']} episodes), "
        f"{in_process['cpu_us_per_step']:,} us CPU/step"
    )
    proc, url = env_bench.start_server(__file__)
    try:
        served = env_bench.bench_served(
            url, proc.pid, ENV, SPLIT, scripts, args.sessions, args.seconds, MAX_TURNS, in_process, cpu_cost=True
        )
        batched = served["step_batch"]
        served["memory"] = asyncio.run(
            env_bench.memory_server(url, proc.pid, ENV, SPLIT, SPLITS[SPLIT], WARM_TASKS, args.memory_sessions, PROBE_ACTION)
        )
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
    env_bench.finish(results, served["memory"], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
