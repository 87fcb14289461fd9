"""`gymwire eval`: a model on a list of environments -> the paper's table (success per
environment, one row per model), with 95% intervals, every episode as JSONL, resumable.

Output folder (docs/eval.md has the schemas):
    run.json               the run's settings
    episodes/<env>.jsonl   one finished episode per line (episode.Episode schema), appended as it ends
    results.json           per environment: success, score, turns, generated tokens, errors, with intervals
    results.md             the same as Markdown tables
Re-running the same command skips episodes already recorded (errors are played again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..episode import ERROR, EnvTask, Episode, append_jsonl
from ..play import ChatActor, GenerationBatcher, PlaySettings, PromptConfig, TokenActor, play_task
from ..policy import PolicyBackend, Sampling
from .run import FORMAT, run_record, task_choice_text

__all__ = [
    "EnvTarget",
    "EvalSettings",
    "evaluate",
    "summarize",
    "load_results",
    "results_table",
    "wilson_interval",
    "mean_interval",
    "PAPER_RESULTS",
    "PAPER_TURNS",
]

Z95 = 1.959963984540054

# AgentGym-RL (arXiv:2509.08755), success % on their test sets (TextCraft 100, BabyAI 90,
# SciWorld 200, Deep Search 400, WebArena 50 tasks). Keys are gymwire environment names.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "ScalingInter-7B (Qwen2.5-7B + RL)": {"webarena": 26.00, "deepsearch": 38.25, "textcraft": 91.00, "babyai": 96.67, "sciworld": 57.00},
    "AgentGym-RL-7B": {"webarena": 22.00, "deepsearch": 34.00, "textcraft": 89.00, "babyai": 92.22, "sciworld": 50.50},
    "AgentGym-RL-3B": {"webarena": 18.00, "deepsearch": 25.75, "textcraft": 75.00, "babyai": 93.33, "sciworld": 22.50},
    "OpenAI o3": {"webarena": 34.00, "deepsearch": 49.50, "textcraft": 93.00, "babyai": 94.44, "sciworld": 41.50},
    "Gemini-2.5-Pro": {"webarena": 28.00, "deepsearch": 36.50, "textcraft": 94.00, "babyai": 87.77, "sciworld": 12.50},
    "GPT-4o": {"webarena": 16.00, "deepsearch": 26.75, "textcraft": 83.00, "babyai": 86.67, "sciworld": 21.00},
    "Qwen2.5-7B-Instruct": {"webarena": 9.76, "deepsearch": 18.75, "textcraft": 42.00, "babyai": 66.67, "sciworld": 1.50},
}
# The paper's turn limits: the last stage of its ScalingInter-RL schedules.
PAPER_TURNS = {"webarena": 15, "deepsearch": 10, "textcraft": 30, "babyai": 20, "sciworld": 30}
# Tokens a turn takes at most in a conversation (reply and observation), where it is more than
# 4096 tokens over the turn limit allow: SciWorld's observations (a room's contents) are long, and
# 4096 cut its episodes after 14-16 turns. The default episode budget fits the turn limit.
TOKENS_PER_TURN = {"sciworld": 300}
MIN_EPISODE_TOKENS = 4096


def default_episode_tokens(env: str, max_turns: int) -> int:
    return max(MIN_EPISODE_TOKENS, max_turns * TOKENS_PER_TURN.get(env, 0))


_COLUMN_NAMES = {"webarena": "WebArena", "deepsearch": "Deep Search", "textcraft": "TextCraft", "babyai": "BabyAI", "sciworld": "SciWorld"}


@dataclass(frozen=True)
class EnvTarget:
    """One environment to evaluate: `name` on the server at `server` ("builtin": the embedded one)."""

    name: str
    server: str = "builtin"
    options: dict[str, Any] = field(default_factory=dict)
    max_turns: int | None = None  # None: the environment's default
    prompt: PromptConfig = PromptConfig()
    tasks: int | range | None = None  # None: EvalSettings.tasks


@dataclass(frozen=True)
class EvalSettings:
    model: str  # label in tables
    output: Path
    split: str = "test"
    tasks: int | range | None = None  # None: the whole split; N: a seeded sample of N tasks; a range: those indices
    concurrency: int = 16
    sampling: Sampling = Sampling(temperature=0.0)
    turn_tokens: int = 128
    episode_tokens: int | None = None  # None: default_episode_tokens of each environment's turn limit
    seed: int = 0
    progress: bool = True
    token: str | None = None  # gym servers' bearer token
    step_timeout: float | None = 60.0  # seconds a server may take per open or step (None: no limit)
    run_info: dict[str, Any] = field(default_factory=dict)  # backend description, written to run.json


# ---------------------------------------------------------------------------------------- statistics


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (sound at 0 and n, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: Sequence[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean (seeded: the same numbers every time).
    Scores and turn counts are bounded and often skewed, where a t interval can leave the range."""
    if not values:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    return (means[int(0.025 * resamples)], means[min(resamples - 1, int(0.975 * resamples))])


def _rate(count: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(count, n)
    return {"mean": count / n if n else 0.0, "low": low, "high": high, "method": "wilson"}


def _mean(values: Sequence[float]) -> dict[str, Any]:
    low, high = mean_interval(values)
    return {"mean": sum(values) / len(values) if values else 0.0, "low": low, "high": high, "method": "bootstrap"}


def summarize(episodes: Sequence[Episode], tasks: int) -> dict[str, Any]:
    """One environment's figures over its episodes (one per task)."""
    n = len(episodes)
    kinds: dict[str, int] = {}
    finishes: dict[str, int] = {}
    for e in episodes:
        finishes[e.finish] = finishes.get(e.finish, 0) + 1
        if e.finish == ERROR:
            kinds[e.error_kind or "unknown"] = kinds.get(e.error_kind or "unknown", 0) + 1
    return {
        "episodes": n,
        "tasks": tasks,
        "success": _rate(sum(e.success for e in episodes), n),
        "score": _mean([float(e.score) for e in episodes]),
        "turns": _mean([float(len(e.turns)) for e in episodes]),
        "generated_tokens": _mean([float(e.generated_tokens) for e in episodes]),
        "errors": _rate(sum(e.finish == ERROR for e in episodes), n),
        "error_kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
        "finish": finishes,
    }


# ---------------------------------------------------------------------------------------- files


def _episodes_path(output: Path, env: str) -> Path:
    return output / "episodes" / f"{env}.jsonl"


def _recorded(path: Path) -> dict[EnvTask, Episode]:
    """Episodes in a JSONL file by task; a later line for the same task wins (a replayed error).
    A last line cut short by an interruption is ignored."""
    found: dict[EnvTask, Episode] = {}
    if not path.exists():
        return found
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            episode = Episode.from_json(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        found[episode.task] = episode
    return found


def _task_indices(size: int, tasks: int | range | None, seed: int) -> list[int]:
    """The whole split, the indices of a range, or a seeded sample of `tasks` of it in index order
    (the first N would be biased where a split is sorted, e.g. TextCraft's by crafting depth)."""
    if isinstance(tasks, range):
        if tasks.stop > size:
            raise ValueError(f"tasks {task_choice_text(tasks)} go past the split, which has {size} (0-{size - 1})")
        return list(tasks)
    if tasks is None or tasks >= size:
        return list(range(size))
    return sorted(random.Random(seed).sample(range(size), tasks))


# ---------------------------------------------------------------------------------------- the run


async def evaluate(
    policy: PolicyBackend,
    targets: Sequence[EnvTarget],
    settings: EvalSettings,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """Play every target's tasks, append each episode to its JSONL as it ends, and write
    results.json / results.md (also when interrupted: then with what was played). Token
    backends need the model's `tokenizer`."""
    from gymwire.sdk.client import GymClient

    output = settings.output
    output.mkdir(parents=True, exist_ok=True)
    run = run_record(settings)
    timings: dict[str, dict[str, float]] = {}
    selections: dict[str, list[int]] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients: dict[str, GymClient] = {}
            for target in targets:
                url = target.server
                if url not in clients:
                    clients[url] = await stack.enter_async_context(GymClient(url, token=settings.token))
                timings[target.name], selections[target.name] = await _evaluate_env(
                    clients[url], policy, target, settings, tokenizer, run
                )
    finally:
        results = _write_results(settings, targets, run, selections, timings)
    return results


async def _evaluate_env(
    client: Any, policy: PolicyBackend, target: EnvTarget, settings: EvalSettings, tokenizer: Any, run: dict[str, Any]
) -> tuple[dict[str, float], list[int]]:
    info = await client.describe(target.name)
    if settings.split not in info.splits:
        raise ValueError(f"{target.name} has no split {settings.split!r}; it has {sorted(info.splits)}")
    count = target.tasks if target.tasks is not None else settings.tasks
    indices = _task_indices(info.splits[settings.split], count, settings.seed)
    max_turns = target.max_turns or info.default_max_turns
    episode_tokens = settings.episode_tokens or default_episode_tokens(target.name, max_turns)
    run["envs"][target.name] = {
        "server": target.server,
        "max_turns": max_turns,
        "episode_tokens": episode_tokens,
        "options": target.options,
        "tasks": len(indices),
        "split_size": info.splits[settings.split],
        **asdict(target.prompt),
    }
    (settings.output / "run.json").write_text(json.dumps(run, indent=2, default=str) + "\n")
    path = _episodes_path(settings.output, target.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    recorded = _recorded(path)
    finished = {task for task, e in recorded.items() if e.finish != ERROR}
    tasks = [EnvTask(target.name, settings.split, i) for i in indices]
    todo = [task for task in tasks if task not in finished]
    done_before = [recorded[task] for task in tasks if task in finished]

    play_settings = PlaySettings(
        options=dict(target.options),
        max_turns=max_turns,
        turn_tokens=settings.turn_tokens,
        episode_tokens=episode_tokens,
        sampling=settings.sampling,
        step_timeout=settings.step_timeout,
        prompt=target.prompt,
    )
    if policy.prompts == "tokens":
        from ..chat import ChatFormat

        chat = ChatFormat(tokenizer, system=target.prompt.system)
        actor: Any = TokenActor(GenerationBatcher(policy, chat.stop_ids, settings.sampling).generate, chat, policy.forget)
    else:
        actor = ChatActor(policy)
    progress = _Progress(target.name, len(indices), done_before, settings.progress)
    slots = asyncio.Semaphore(settings.concurrency)
    started = time.perf_counter()

    async def play(task: EnvTask) -> None:
        async with slots:
            episode = await play_task(client, task, actor, play_settings, info.instructions)
        append_jsonl(episode, path)  # the moment it ends: an interruption loses only episodes still being played
        progress.add(episode)

    try:
        running = [asyncio.create_task(play(task)) for task in todo]
        try:
            await asyncio.gather(*running)
        finally:
            for job in running:
                job.cancel()
            await asyncio.gather(*running, return_exceptions=True)
    finally:
        progress.close()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "played": len(todo), "episodes_per_s": len(todo) / seconds if seconds > 0 else 0.0}, indices


class _Progress:
    """A progress bar per environment with live success and errors (or one line at the end)."""

    def __init__(self, env: str, total: int, done: list[Episode], enabled: bool):
        self.env = env
        self.total = total
        self.successes = sum(e.success for e in done)
        self.errors = 0
        self.count = len(done)
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=self.count, desc=env, unit="ep", dynamic_ncols=True)
            self._postfix()

    def _postfix(self) -> None:
        if self.bar is not None:
            rate = self.successes / self.count if self.count else 0.0
            self.bar.set_postfix_str(f"success {self.successes}/{self.count} ({100 * rate:.1f}%), errors {self.errors}")

    def add(self, episode: Episode) -> None:
        self.count += 1
        self.successes += episode.success
        self.errors += episode.finish == ERROR
        if self.bar is not None:
            self._postfix()
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            # stderr, like the bars: stdout carries only the tables
            print(f"{self.env}: {self.count}/{self.total} episodes, success {self.successes}, errors {self.errors}", file=sys.stderr, flush=True)


def _write_results(
    settings: EvalSettings,
    targets: Sequence[EnvTarget],
    run: dict[str, Any],
    selections: dict[str, list[int]],
    timings: dict[str, dict[str, float]],
) -> dict[str, Any]:
    envs: dict[str, Any] = {}
    for target in targets:
        indices = selections.get(target.name)
        if indices is None:
            continue  # never started
        recorded = _recorded(_episodes_path(settings.output, target.name))
        tasks = [EnvTask(target.name, settings.split, i) for i in indices]
        episodes = [recorded[task] for task in tasks if task in recorded]
        envs[target.name] = {**summarize(episodes, len(indices)), **timings.get(target.name, {})}
    results = {"format": FORMAT, "model": settings.model, "backend": run.get("backend"), "split": settings.split, "envs": envs}
    (settings.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (settings.output / "results.md").write_text(results_table([results]) + "\n\n" + detail_table(results) + "\n")
    return results


# ---------------------------------------------------------------------------------------- tables


def load_results(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"no results.json in {folder}: is it a `gymwire eval` output folder?")
    return json.loads(path.read_text())


def _percent(stat: dict[str, Any]) -> str:
    return f"{100 * stat['mean']:.1f} [{100 * stat['low']:.1f}, {100 * stat['high']:.1f}]"


def results_table(runs: Sequence[dict[str, Any]], paper: bool = False) -> str:
    """The paper's shape: environments as columns, one row per model (runs in order, then the
    paper's rows for the same environments). Cells: success % [95% Wilson interval]."""
    columns: list[str] = []
    for run in runs:
        columns += [env for env in run["envs"] if env not in columns]
    header = ["model"] + [_COLUMN_NAMES.get(env, env) for env in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        cells = [_percent(run["envs"][env]["success"]) if env in run["envs"] else "–" for env in columns]
        lines.append(f"| {run['model']} | " + " | ".join(cells) + " |")
    if paper:
        for model, row in PAPER_RESULTS.items():
            if any(env in row for env in columns):
                cells = [f"{row[env]:.2f}" if env in row else "–" for env in columns]
                # Their test sets, not gymwire's: the table says so on every such row.
                lines.append(f"| {model} (paper; its test sets, not these) | " + " | ".join(cells) + " |")
    sizes = ", ".join(
        f"{env} {run['envs'][env]['episodes']}/{run['envs'][env]['tasks']}" for run in runs[:1] for env in run["envs"]
    )
    note = f"\nSuccess % on the {runs[0]['split']} split, 95% Wilson interval in brackets (episodes played/tasks: {sizes})."
    if paper:
        note += " Paper rows: AgentGym-RL (arXiv:2509.08755), their test sets, no intervals given."
    return "\n".join(lines) + "\n" + note


def detail_table(results: dict[str, Any]) -> str:
    """Per environment: every figure with its interval, throughput and failures by kind."""
    lines = [
        f"{results['model']} ({results.get('backend') or '?'}), {results['split']} split; 95% intervals: Wilson for rates, bootstrap for means.",
        "",
        "| env | episodes | success % | score | turns | generated tokens | errors % | failures by kind | episodes/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def mean(stat: dict[str, Any], digits: int) -> str:
        return f"{stat['mean']:.{digits}f} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]"

    for env, s in results["envs"].items():
        kinds = ", ".join(f"{kind} {count}" for kind, count in s["error_kinds"].items()) or "none"
        speed = f"{s['episodes_per_s']:.3f}" if s.get("played") else "–"
        lines.append(
            f"| {env} | {s['episodes']}/{s['tasks']} | {_percent(s['success'])} | {mean(s['score'], 3)} | "
            f"{mean(s['turns'], 1)} | {mean(s['generated_tokens'], 0)} | {_percent(s['errors'])} | {kinds} | {speed} |"
        )
    return "\n".join(lines)


def failure_summary(results: dict[str, Any]) -> Iterable[str]:
    for env, s in results["envs"].items():
        for kind, count in s["error_kinds"].items():
            yield f"{env}: {count} episode(s) failed with {kind}"
