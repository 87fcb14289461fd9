"""The trainer's rollout stage: which tasks a step plays, how, and what its episodes show.

    tasks, groups = draw_tasks(rng, env, split, split_size, tasks_per_step, group_size)
    episodes = rollouts.collect(policy, chat, tasks, play_settings(config, env, max_turns, sampling), groups)
    episode_stats(episodes) -> {"success", "reward", "turns", "generated_tokens", "errors"}

Playing is trainers/play.py's (`RolloutClient.collect`: the batch in lockstep, so a seeded run
repeats).
"""

from __future__ import annotations

import random
from typing import Sequence

from ..episode import EnvTask, Episode
from ..play import PlaySettings, PromptConfig
from ..policy import Sampling
from .config import TrainConfig

__all__ = ["draw_tasks", "play_settings", "episode_stats"]


def draw_tasks(
    rng: random.Random, env: str, split: str, split_size: int, tasks_per_step: int, group_size: int
) -> tuple[list[EnvTask], list[int]]:
    """`tasks_per_step` tasks drawn from `rng`, each `group_size` times in a row; the i-th episode's group."""
    tasks: list[EnvTask] = []
    groups: list[int] = []
    for group in range(tasks_per_step):
        tasks += [EnvTask(env, split, rng.randrange(split_size))] * group_size
        groups += [group] * group_size
    return tasks, groups


def play_settings(config: TrainConfig, max_turns: int, sampling: Sampling) -> PlaySettings:
    """How the run's episodes are played at `max_turns` turns with `sampling`."""
    return PlaySettings(
        options=config.env.options,
        max_turns=max_turns,
        turn_tokens=config.rollout.turn_tokens,
        episode_tokens=config.rollout.episode_tokens,
        sampling=sampling,
        step_timeout=config.env.step_timeout,
        prompt=PromptConfig(system=config.env.system, instructions=config.env.instructions),
    )


def episode_stats(episodes: Sequence[Episode]) -> dict[str, float]:
    count = len(episodes)
    return {
        "success": sum(e.success for e in episodes) / count,
        "reward": sum(e.reward for e in episodes) / count,
        "turns": sum(len(e.turns) for e in episodes) / count,
        "generated_tokens": sum(e.generated_tokens for e in episodes) / count,
        "errors": sum(e.error is not None for e in episodes) / count,
    }
