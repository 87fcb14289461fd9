"""AgentGym's own evaluation loop, with its unmodified clients, against `gymwire agentgym-serve`.

    /path/to/venv-with-agentenv/bin/python bench/agentgym_client_eval.py --gymwire /path/to/gymwire \\
        --env textcraft --tasks 0-99 [--option profile=agentgym]

Run it with a Python that has AgentGym's `agentenv` package (its clients and its `Evaluator`); the
gymwire side is the `gymwire` command given, started here as a user would start it. The agent is
scripted (an `APIAgent` whose replies come from a simple policy, ReAct format), so the run tests the
protocol, not a model: every episode must run through AgentGym's loop (`BaseTask.generate_experience`:
resets, observes, steps until done or `--max-rounds`) without an error, then one more step is sent after the end, as
a batched trainer does, and must be answered with an observation.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agentgym_fidelity import BabyAIPolicy, TextCraftPolicy, indices  # noqa: E402

SCIWORLD_ACTIONS = ["look around", "open door to hallway", "go to hallway", "inventory", "focus on air", "wait1",
                    "pick up thermometer", "look at table", "open door to kitchen", "go to kitchen", "task"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gymwire", required=True, help="the gymwire command to start agentgym-serve with")
    parser.add_argument("--env", required=True, choices=["textcraft", "babyai", "sciworld"])
    parser.add_argument("--tasks", default="0-19")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--max-rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from agentenv.controller import APIAgent
    from agentenv.envs import BabyAITask, SciworldTask, TextCraftTask

    port = free_port()
    command = [args.gymwire, "agentgym-serve", args.env, "--port", str(port), "--log-level", "warning"]
    for option in args.option:
        command += ["--option", option]
    server = subprocess.Popen(command)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        rng = random.Random(args.seed)

        class ScriptedAgent(APIAgent):  # AgentGym's loop asks it for the next reply
            def __init__(self) -> None:
                self.policy = None

            def generate(self, conversation):  # noqa: ANN001 - AgentGym's signature
                observation = conversation[-1]["content"]
                if len(conversation) == 3:  # a new episode: conversation start, then the first observation
                    self.policy = {"textcraft": lambda: TextCraftPolicy(observation, rng),
                                   "babyai": lambda: BabyAIPolicy(observation, rng), "sciworld": lambda: None}[args.env]()
                action = self.policy.next(observation) if self.policy else rng.choice(SCIWORLD_ACTIONS)
                return f"Thought:\nI will try this.\n\nAction:\n{action}", None

        task_cls = {"textcraft": TextCraftTask, "babyai": BabyAITask, "sciworld": SciworldTask}[args.env]
        tasks = indices(args.tasks)
        task = task_cls({"env_server_base": base, "data_len": len(tasks), "timeout": 300})
        started = time.monotonic()
        # AgentGym's episode loop (`Evaluator.eval` runs it too, but its success line fails on more than
        # one episode: `(rewards == 1 or rewards == 100)` on a numpy array).
        experiences = task.generate_experience(ScriptedAgent(), tasks, max_rounds=args.max_rounds)
        client = task.clients[0]
        ended = after_end = 0
        for index, experience in zip(tasks, experiences):  # replay; one more step after the end
            client.reset(index)
            replies = [m["content"] for m in experience.conversation[3:] if m["role"] == "assistant"]
            if not any(client.step(reply).done for reply in replies):
                continue
            ended += 1
            after_end += isinstance(client.step("Thought:\nagain\n\nAction:\ninventory").state, str)
        client.close()
        rewards = [exp.reward for exp in experiences]
        print(json.dumps({
            "env": args.env, "options": args.option, "episodes": len(experiences),
            "mean_reward": round(sum(rewards) / len(rewards), 4), "success": sum(r in (1, 100) for r in rewards) / len(rewards),
            "steps_after_end_answered": f"{after_end}/{ended}", "seconds": round(time.monotonic() - started, 1),
        }))
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
