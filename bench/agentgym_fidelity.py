"""Play the same tasks and actions through AgentGym's own servers and through gymwire's `profile:
agentgym` (served by `gymwire agentgym-serve`), and count what matches.

    python bench/agentgym_fidelity.py --textcraft http://127.0.0.1:36001 --babyai http://127.0.0.1:36002 \\
        --sciworld http://127.0.0.1:36003 --textcraft-order /path/to/agentenv_textcraft/recipes --hash-seed 0

Give the URL of each AgentGym server to compare (unmodified, started as AgentGym's README says). The
gymwire side is served in this process, with `profile=agentgym`. Every request goes to both sides;
the answers must be equal as JSON values (the session `id` aside). After an episode ends one more
step is sent: AgentGym's TextCraft server plays it, so it must match; AgentGym's BabyAI and SciWorld
servers answer it with an error (which crashes their clients), so gymwire must answer it with an
observation and done.

TextCraft depends on the AgentGym installation: give `--textcraft-order` (its recipe directory, or a
file listing it) and `--hash-seed` (the PYTHONHASHSEED its server was started with). An AgentGym
server started without a fixed PYTHONHASHSEED cannot be matched (see docs/agentgym.md).

Actions: TextCraft plays a plan read from the crafting commands, with mistakes mixed in; BabyAI
picks among the listed actions and some invalid ones; SciWorld plays ScienceWorld's gold path (read
from gymwire's own simulator) with mistakes mixed in. `--record DIR` writes what AgentGym answered
(requests and answers, gzipped JSON) as the transcripts tests/agentgym/test_agentgym_fidelity.py
replays; `--replies` also checks, when AgentGym's `agentenv` client package is importable, that
gymwire reads raw model replies as AgentGym's clients do, and records that too.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import math
import os
import random
import re
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

AGENTGYM_COMMIT = "3ef9235"
AFTER_END_CHECK = "after the end"


def post(url: str, body: dict[str, Any] | None) -> Any:
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values, the session id aside."""
    if isinstance(a, dict) and isinstance(b, dict):
        a, b = ({k: v for k, v in x.items() if k != "id"} for x in (a, b))
    return a == b


def same_but_order(a: Any, b: Any) -> bool:
    """Equal but for the order of lines in the observation: ScienceWorld lists a room's objects in
    an order that follows the Java process's identity hash codes, which AgentGym's own server does
    not repeat from one run of the same requests to the next."""
    if not (isinstance(a, dict) and isinstance(b, dict)) or "observation" not in a or "observation" not in b:
        return False
    lines = (sorted(str(x["observation"]).split("\n")) for x in (a, b))
    rest = ({k: v for k, v in x.items() if k not in ("id", "observation")} for x in (a, b))
    return next(lines) == next(lines) and next(rest) == next(rest)


def indices(spec: str, test_indices: Callable[[], list[int]] | None = None) -> list[int]:
    """`0-99,120,7` -> indices (`0-543:8`: every 8th); `test` -> gymwire's test items of that environment."""
    if spec == "test":
        assert test_indices is not None
        return test_indices()
    out: list[int] = []
    for part in spec.split(","):
        part, _, every = part.partition(":")
        low, _, high = part.partition("-")
        out += list(range(int(low), int(high or low) + 1, int(every or 1)))
    return out


# -- action policies ------------------------------------------------------------------------------

_COMMAND = re.compile(r"^craft (\d+) (.+?) using (.+)$")


class TextCraftPolicy:
    """A plan from the crafting commands shown (get the base items, craft upwards), with mistakes."""

    MISTAKES = ["inventory", "look", "", "get 1 stick", "Get 2 Oak Logs", "craft 8 stick using 4 oak planks",
                "get 0 oak logs", "inventory please", "craft 1 stick using 1 oak planks, 1 oak planks",
                "craft 4 planks using 1 oak logs", "get 1 planks", "craft stick using 2 oak planks", "get x y"]

    def __init__(self, first_observation: str, rng: random.Random) -> None:
        self.rng = rng
        commands: dict[str, tuple[int, list[tuple[int, str]]]] = {}
        for line in first_observation.split("\n"):
            match = _COMMAND.match(line)
            if match:
                parts = [p.strip().split(" ", 1) for p in match.group(3).split(",")]
                commands.setdefault(match.group(2), (int(match.group(1)), [(int(n), name) for n, name in parts]))
        goal = first_observation.rsplit("Goal: craft ", 1)[-1].rstrip(".")
        self.plan: list[str] = []
        self._need(goal, 1, commands, 0)
        self.plan.append(f"craft 1 {goal} using 1 nothing")

    def _need(self, item: str, count: int, commands: dict, depth: int) -> str:
        name = item
        if item not in commands:  # a kind such as "planks": use an item of that kind that has a command
            name = next((c for c in commands if c.endswith(" " + item)), item)
        if name not in commands or depth > 6:
            self.plan.append(f"get {count} {name}")
            return name
        made, inputs = commands[name]
        times = math.ceil(count / made)
        used = [(n, self._need(ingredient, n * times, commands, depth + 1)) for n, ingredient in inputs]
        for _ in range(times):
            self.plan.append(f"craft {made} {name} using " + ", ".join(f"{n} {ingredient}" for n, ingredient in used))
        return name

    def next(self, observation: str) -> str:
        if self.rng.random() < 0.2 or not self.plan:
            return self.rng.choice(self.MISTAKES)
        return self.plan.pop(0)


_AVAILABLE = re.compile(r"Available actions: \[(.*)\]")


class BabyAIPolicy:
    MISTAKES = ["check available actions", "", "pick up red ball 1", "Go To Grey Wall 1", "go to red ball 9", "toggle",
                "drop", "move forward", "TURN LEFT", "go through red closed door 1", "toggle and go through blue locked door 1",
                "pickup grey key 2", "go to goal", "fly"]

    def __init__(self, first_observation: str, rng: random.Random) -> None:
        self.rng = rng

    def next(self, observation: str) -> str:
        found = _AVAILABLE.findall(observation)
        listed = json.loads("[" + found[-1] + "]") if found else []
        if not listed or self.rng.random() < 0.2:
            return self.rng.choice(self.MISTAKES)
        purposeful = [a for a in listed if a.startswith(("go to", "pickup", "toggle", "go through", "drop"))]
        return self.rng.choice(purposeful if purposeful and self.rng.random() < 0.6 else listed)


class SciWorldPolicy:
    MISTAKES = ["look around", "inventory", "fly to the moon", "", "open door", "wait1", "task", "look at", "focus on air",
                "pick up"]

    def __init__(self, gold: list[str], rng: random.Random) -> None:
        self.rng = rng
        self.plan = list(gold)

    def next(self, observation: str) -> str:
        if not self.plan or self.rng.random() < 0.15:
            return self.rng.choice(self.MISTAKES)
        return self.plan.pop(0)


def sciworld_gold(index: int) -> list[str]:
    """ScienceWorld's gold actions for AgentGym's task `index`, from gymwire's own simulator."""
    from gymwire.servers.sciworld import tasks
    from gymwire.servers.sciworld.env import java_pool
    from gymwire.servers.sciworld.solver import gold_actions

    return asyncio.run(gold_actions(java_pool(1, 4, 1024, 120.0), tasks.task_at("agentgym", index)))


# -- playing both sides ----------------------------------------------------------------------------


class Tally:
    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}
        self.examples: list[str] = []
        self.order_only = 0  # differences only in the order of listed objects

    def compare(self, kind: str, a: Any, b: Any, detail: str) -> bool:
        ok = same(a, b)
        self.add(kind, ok, detail)
        if not ok and same_but_order(a, b):
            self.order_only += 1
        return ok

    def add(self, kind: str, ok: bool, detail: str = "") -> None:
        entry = self.counts.setdefault(kind, [0, 0])
        entry[0] += ok
        entry[1] += 1
        if not ok and len(self.examples) < 8:
            self.examples.append(f"{kind}: {detail}")


def play(env: str, agentgym: str, gymwire: str, tasks: list[int], steps: int, seed: int,
         policy: Callable[[int, str, random.Random], Any], tally: Tally, calls: list) -> None:
    create_body = {"commands": None, "goal": None} if env == "textcraft" else None
    a, g = post(f"{agentgym}/create", create_body), post(f"{gymwire}/create", create_body)
    calls.append(["create", create_body, a])
    if env == "textcraft" and a["id"] == g["id"]:  # /create plays task `id`: comparable on fresh servers
        tally.add("first observations", same(a, g), f"create: {str(a)[:80]} vs {str(g)[:80]}")
    ids = (a["id"], g["id"])
    rng = random.Random(seed)

    def both(path: str, body: dict[str, Any]) -> tuple[Any, Any]:
        answers = (post(f"{agentgym}/{path}", {**body, "id": ids[0]}), post(f"{gymwire}/{path}", {**body, "id": ids[1]}))
        calls.append([path, body, answers[0]])
        return answers

    try:
        for index in tasks:
            a, g = both("reset", {"data_idx": index})
            tally.compare("first observations", a, g, f"task {index}: {str(a)[:200]!r} vs {str(g)[:200]!r}")
            if "error" in a:
                continue
            chooser = policy(index, a.get("observation", ""), rng)
            identical = same(a, g)
            for _ in range(steps):
                action = chooser.next(a["observation"])
                a, g = both("step", {"action": action})
                identical &= tally.compare("steps", a, g, f"task {index} {action!r}: {str(a)[:200]!r} vs {str(g)[:200]!r}")
                if a.get("done"):
                    a, g = both("step", {"action": chooser.next(a["observation"])})
                    if "error" in a:  # AgentGym refuses steps after the end; gymwire must answer them
                        ok = isinstance(g, dict) and "observation" in g and g.get("done") is True
                    else:
                        ok = same(a, g)
                    tally.add(AFTER_END_CHECK, ok, f"task {index}: {a!r} vs {g!r}")
                    break
            tally.add("episodes identical", identical)
    finally:
        both("close", {})


def facade(env: str, options: dict[str, Any], textcraft_order: str | None = None) -> Any:
    from gymwire.sdk.env_spec import EnvSpec
    from gymwire.sdk.registry import resolve_env
    from gymwire.servers.agentgym.serve import AgentGymFacade

    spec = resolve_env(env)
    if env == "textcraft" and textcraft_order:
        spec = EnvSpec.of(spec.env_class, agentgym_order=textcraft_order, name=spec.name or None)
    return AgentGymFacade([(spec, None)], options=options, idle_timeout_s=3600)


def test_items(env: str) -> list[int]:
    if env == "sciworld":
        from gymwire.servers.sciworld import tasks

        return [tasks.task_at("test", i).agentgym_index for i in range(tasks.split_sizes()["test"])]
    return list(range({"textcraft": 544, "babyai": 400}[env]))


# -- raw replies -----------------------------------------------------------------------------------

REPLIES = [
    "Thought: I need logs.\n\nAction: get 1 oak logs", "Thought:\nx\n\nAction:\nget 2 oak logs\n", "get 1 oak logs",
    "Action: craft 4 oak planks using 1 oak logs\nAction: inventory", "Action: Get 2 Oak-Logs!!", "Action:   inventory  ",
    "Thought: hmm\nAction: look", "Action: craft 1 stick using 2 planks.", "Action:", "", "Action: go to red ball 1</s>",
    "Thought: a\nAction: turn left\n\nThe action: done", "action: turn right", "Action: pick up (red) ball #1",
    "Thought: Action: go to grey key 1", "Action:\n\nmove forward", "Thought: go\nAction: open door to kitchen</s>",
    "Action: search[red shoes]", "I will search[red shoes]", "Thought: x\nAction: focus on water\n", "Action: 1",
    "Action: toggle and go through grey locked door 1\n", "Thought: ü\nAction: get 1 stické", "Action:\tget 1\tstick",
]


def check_replies(tally: Tally, record: dict[str, Any]) -> None:
    """AgentGym's clients (imported from the `agentenv` package) against gymwire's readers."""
    try:
        from agentenv.envs import BabyAIEnvClient, SciworldEnvClient, TextCraftEnvClient
    except ImportError as exc:
        print(f"replies: skipped (AgentGym's agentenv package is not importable: {exc})", file=sys.stderr)
        return
    from gymwire.servers.agentgym.api import ONE_ACTION_ONLY, line_action, react_action

    sent: list[str] = []

    class Capture:  # stands in for the HTTP layer: what the client would post to /step
        def __init__(self, client: Any) -> None:
            client._post = self.post
            client.info = {"observation": "shown before"}

        def post(self, path: str, data: dict[str, Any]) -> dict[str, Any]:
            sent.append(data.get("action"))
            return {"observation": "ok", "reward": 0, "done": False, "score": 0}

    for name, cls, reader in [("textcraft", TextCraftEnvClient, line_action), ("babyai", BabyAIEnvClient, line_action),
                              ("sciworld", SciworldEnvClient, react_action)]:
        client = cls.__new__(cls)  # no /create: only its reading of replies is exercised
        client.action_format = __import__("agentenv.controller.types", fromlist=["ActionFormat"]).ActionFormat("react")
        Capture(client)
        outcomes = []
        for reply in REPLIES:
            sent.clear()
            state = client.step(reply).state
            theirs = sent[0] if sent else None
            ours = reader(reply)
            refused = ours is None and state == ONE_ACTION_ONLY
            tally.add(f"{name} replies read alike", theirs == ours or (theirs is None and refused), f"{reply!r}: {theirs!r} vs {ours!r}")
            outcomes.append([reply, theirs])
        record[name] = outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for env in ("textcraft", "babyai", "sciworld"):
        parser.add_argument(f"--{env}", metavar="URL", help=f"AgentGym's {env} server")
    parser.add_argument("--textcraft-tasks", default="0-543")
    parser.add_argument("--babyai-tasks", default="0-399")
    parser.add_argument("--sciworld-tasks", default="test", help="indices, or `test`: the AgentGym indices of gymwire's 200 test tasks")
    parser.add_argument("--steps", type=int, default=12, help="steps per episode (plus one after the end)")
    parser.add_argument("--textcraft-order", help="AgentGym's recipe directory (or a file listing it in its order)")
    parser.add_argument("--hash-seed", type=int, default=0, help="the PYTHONHASHSEED AgentGym's TextCraft server runs with")
    parser.add_argument("--seed", type=int, default=0, help="seed of the action choices")
    parser.add_argument("--record", type=Path, help="write AgentGym's answers here as transcripts for the tests")
    parser.add_argument("--replies", action="store_true", help="also compare the reading of raw replies (needs agentenv)")
    args = parser.parse_args(argv)

    policies: dict[str, Callable[[int, str, random.Random], Any]] = {
        "textcraft": lambda index, first, rng: TextCraftPolicy(first, rng),
        "babyai": lambda index, first, rng: BabyAIPolicy(first, rng),
        "sciworld": lambda index, first, rng: SciWorldPolicy(sciworld_gold(index), rng),
    }
    rows = []
    for env in ("textcraft", "babyai", "sciworld"):
        url = getattr(args, env)
        if not url:
            continue
        options: dict[str, Any] = {"profile": "agentgym"}
        if env == "textcraft":
            options["hash_seed"] = args.hash_seed
        tasks = indices(getattr(args, f"{env}_tasks"), lambda: test_items(env))
        tally, calls = Tally(), []
        started = time.monotonic()
        with facade(env, options, args.textcraft_order).run_in_thread() as gymwire_url:
            play(env, url.rstrip("/"), gymwire_url, tasks, args.steps, args.seed, policies[env], tally, calls)
        rows.append((env, tally, time.monotonic() - started))
        if args.record:
            args.record.mkdir(parents=True, exist_ok=True)
            transcript = {
                "agentgym_commit": AGENTGYM_COMMIT, "env": env, "options": options, "calls": calls,
                "textcraft_order": _order_listing(args.textcraft_order) if env == "textcraft" else None,
            }
            with gzip.open(args.record / f"{env}.json.gz", "wt", encoding="utf-8") as handle:
                json.dump(transcript, handle, separators=(",", ":"))
    replies = Tally()
    if args.replies:
        record: dict[str, Any] = {}
        check_replies(replies, record)
        if args.record and record:
            with gzip.open(args.record / "replies.json.gz", "wt", encoding="utf-8") as handle:
                json.dump({"agentgym_commit": AGENTGYM_COMMIT, "replies": record}, handle, separators=(",", ":"))
        rows.append(("replies", replies, 0.0))
    print(f"AgentGym {AGENTGYM_COMMIT} vs gymwire profile agentgym")
    print(f"{'env':<10} {'check':<26} {'match':>14}")
    for env, tally, seconds in rows:
        for kind, (ok, total) in tally.counts.items():
            print(f"{env:<10} {kind:<26} {ok:>6}/{total:<6} {'' if ok == total else '<-- differs'}")
        if tally.order_only:
            print(f"{env:<10} {'differing only in the order of listed objects':<26} {tally.order_only:>6}")
        for example in tally.examples:
            print(f"    {example}")
    return 0 if all(ok == total for _, tally, _ in rows for ok, total in tally.counts.values()) else 1


def _order_listing(source: str | None) -> list[str] | None:
    if source is None:
        return None
    if os.path.isdir(source):
        return os.listdir(source)
    return [line.strip() for line in Path(source).read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    sys.exit(main())
