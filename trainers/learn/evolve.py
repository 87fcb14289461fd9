"""AgentEvol (AgentGym, arXiv:2406.04151): explore with the current policy, keep what earned reward,
learn on it together with the base data, repeat.

One iteration, in ITERATION_DIR = OUTPUT/iter-N:
1. explore: the current model plays `samples` episodes on each of the iteration's train tasks at
   `temperature` (gymwire collect; ITERATION_DIR/explored.jsonl);
2. filter: `rewarded` keeps the episodes with reward (success, or total reward >= min_reward),
   one per distinct reply sequence of a task;
3. learn: SFT (sft.py) on the kept episodes of every iteration so far plus the base data
   (the expert's), from the base model (the paper's choice: no drift from iteration to iteration)
   or from the current one (`from_current`: cheaper on a CPU, fewer epochs needed);
4. the new checkpoint (ITERATION_DIR/model) is the next iteration's policy.

OUTPUT/evolve.jsonl gets one record per iteration: tasks explored, episodes, successes, kept, rows.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .trajectories import Trajectory, read_trajectories

__all__ = ["EvolveSettings", "rewarded", "round_data", "agent_evol"]


@dataclass
class EvolveSettings:
    env: str
    iterations: int = 2
    tasks_per_iteration: int = 100
    task_pool: Sequence[int] = field(default_factory=lambda: range(1000))  # train tasks to draw from
    samples: int = 2
    temperature: float = 1.0
    min_reward: float | None = None  # None: success counts
    from_current: bool = True
    max_turns: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    base_replay: int | None = None  # at most this many base episodes per iteration (a seeded sample); None: all
    seed: int = 0


def rewarded(explored: Sequence[Trajectory], min_reward: float | None = None) -> list[Trajectory]:
    """The episodes worth learning from: successful ones (or with total reward >= min_reward), not
    ended by an error, one per distinct reply sequence of a task."""
    kept: list[Trajectory] = []
    seen: set[tuple[Any, ...]] = set()
    for trajectory in explored:
        if trajectory.finish == "error":
            continue
        if not (trajectory.success if min_reward is None else trajectory.reward >= min_reward):
            continue
        key = (trajectory.env, trajectory.split, trajectory.index, tuple(turn.reply for turn in trajectory.turns))
        if key in seen:
            continue
        seen.add(key)
        kept.append(trajectory)
    return kept


def round_data(base: Sequence[Trajectory], kept_so_far: Sequence[Sequence[Trajectory]], replay: int | None,
               rng: random.Random) -> list[Trajectory]:
    """What one iteration learns on: every kept episode so far plus the base data (or a sample of it)."""
    chosen = list(base) if replay is None or replay >= len(base) else rng.sample(list(base), replay)
    return chosen + [t for kept in kept_so_far for t in kept]


def agent_evol(model: str, base: Sequence[Trajectory], output: str | Path, settings: EvolveSettings,
               explore: Callable[[str, list[int], Path], None], learn: Callable[[str, list[Trajectory], Path], str]) -> str:
    """Run the iterations; `explore(model, tasks, path)` writes the model's episodes on `tasks` to
    `path` (resuming what is there); `learn(start_model, trajectories, folder)` trains and returns
    the new checkpoint. Returns the last checkpoint. A finished iteration (its model saved) is not
    run again: rerunning the same command resumes."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    rng = random.Random(settings.seed)
    current = model
    kept_so_far: list[list[Trajectory]] = []
    for iteration in range(1, settings.iterations + 1):
        folder = output / f"iter-{iteration}"
        folder.mkdir(exist_ok=True)
        tasks = sorted(rng.sample(list(settings.task_pool), min(settings.tasks_per_iteration, len(settings.task_pool))))
        explored_path = folder / "explored.jsonl"
        if not (folder / "model" / "config.json").exists():
            explore(current, tasks, explored_path)
        explored = read_trajectories(explored_path) if explored_path.exists() else []
        kept = rewarded(explored, settings.min_reward)
        kept_so_far.append(kept)
        data = round_data(base, kept_so_far, settings.base_replay, rng)
        if not (folder / "model" / "config.json").exists():
            learn(current if settings.from_current else model, data, folder)
        current = str(folder / "model")
        record = {"iteration": iteration, "tasks": len(tasks), "episodes": len(explored),
                  "successes": sum(t.success for t in explored), "kept": len(kept),
                  "learned_episodes": len(data), "model": current}
        with (output / "evolve.jsonl").open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
    return current


def collect_explorer(settings: EvolveSettings, url: str, concurrency: int = 8, turn_tokens: int = 48,
                     threads: int | None = None, progress: bool = True) -> Callable[[str, list[int], Path], None]:
    """`explore` for agent_evol: the model plays through gymwire collect's ModelPlayer."""
    from .cli import make_player
    from .collect import CollectSettings, collect

    def explore(model: str, tasks: list[int], path: Path) -> None:
        player = make_player(model, None, settings.temperature, 1.0, turn_tokens, 4096, concurrency, threads=threads)
        collect_settings = CollectSettings(env=settings.env, indices=tasks, samples=settings.samples,
                                           options=settings.options, max_turns=settings.max_turns,
                                           concurrency=concurrency, progress=progress)
        asyncio.run(collect(url, player, collect_settings, path))

    return explore
