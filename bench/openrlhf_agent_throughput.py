"""How many episodes per second the OpenRLHF agent executor sustains when generation is free.

The engine answers at once (tests/openrlhf/openrlhf_fakes.py), so the figures are the adapter's
own cost: session open/close, steps over the wire, chat rendering and tokenization, on one event
loop as in a vLLM actor. The server runs as `gymwire serve guess` in its own process.

    python bench/openrlhf_agent_throughput.py [--samples 256 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "openrlhf"))

from openrlhf_fakes import GUESS_CORPUS, FakeEngine, FakeSamplingParams  # noqa: E402

from gymwire.trainers.episode import EnvTask  # noqa: E402
from gymwire.trainers.models.tiny import build_tokenizer  # noqa: E402
from gymwire.trainers.openrlhf.agent import AgentSettings, GymwireAgentExecutor  # noqa: E402
from gymwire.trainers.openrlhf.pool import close_pools  # noqa: E402
from gymwire.trainers.openrlhf.steps import MemoryStepBoard  # noqa: E402
from gymwire.trainers.train.horizon import FixedHorizon  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def one_round(url: str, tokenizer, samples: int) -> tuple[float, int, int]:
    executor = GymwireAgentExecutor(AgentSettings(urls=(url,), horizon=FixedHorizon(7), step_board=MemoryStepBoard(1)))
    engine = FakeEngine(tokenizer)
    started = time.perf_counter()
    results = await asyncio.gather(*(
        executor.execute("p", EnvTask("guess", "train", i).to_json(), FakeSamplingParams(), 4096, tokenizer, engine)
        for i in range(samples)
    ))
    wall = time.perf_counter() - started
    await close_pools()
    if not all(r["reward"] == 1.0 for r in results):
        raise SystemExit("an episode failed: the figures would not mean anything")
    return wall, samples, len(engine.calls)


async def measure(url: str, args: argparse.Namespace) -> None:
    tokenizer = build_tokenizer(GUESS_CORPUS, numbers=101)
    await one_round(url, tokenizer, 32)  # warm-up: imports, first connection
    print(f"{'samples':>8} {'episodes/s':>11} {'steps/s':>9} {'ms/episode':>11}  (median of {args.rounds} rounds)")
    for samples in args.samples:
        rounds = [await one_round(url, tokenizer, samples) for _ in range(args.rounds)]
        wall = statistics.median(r[0] for r in rounds)
        steps = rounds[0][2]
        print(f"{samples:>8} {samples / wall:>11.0f} {steps / wall:>9.0f} {1000 * wall / samples:>11.2f}")


def main(args: argparse.Namespace) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gymwire.sdk.cli", "serve", "guess", "--port", str(port),
                               "--log-level", "warning"])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        asyncio.run(measure(f"ws://127.0.0.1:{port}", args))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--rounds", type=int, default=3)
    main(parser.parse_args())
