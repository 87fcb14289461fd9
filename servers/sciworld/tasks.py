"""ScienceWorld's tasks as gymwire splits, and how AgentGym's `data_idx` maps onto them.

AgentGym (agentenv-sciworld) indexes every (task, variation) pair of ScienceWorld in the
simulator's task order (`scienceworld.constants.ID2TASK`, tasks.json) and variation order, leaving
out tasks 5-1, 5-2, 9-1, 9-2, 9-3, 10-1 and 10-2: `data_idx` i is the i-th pair of that list
(4,639 pairs). gymwire keeps that list and its order, and splits it by ScienceWorld's own
train/dev/test variations (in ScienceWorld each task's variations are cut into three contiguous
ranges: train first, then dev, then test):

- `train`: every train variation of the 23 kept tasks (2,312 tasks);
- `dev`: every dev variation (1,156);
- `test`: 200 test variations, spread over the 23 tasks as evenly as their test ranges allow
  (9 or 10 per task; fewer where a task has fewer), evenly spaced within each task's range;
- `agentgym`: all 4,639 pairs, index = AgentGym's `data_idx` (it overlaps the three above:
  use it to reproduce AgentGym runs, not to train and test on).

Everything here is arithmetic on the table below, so the splits are the same on every machine and
in every process. tests/servers/test_sciworld_env.py checks the table against the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

__all__ = ["SciTask", "TASKS", "EXCLUDED_BY_AGENTGYM", "TEST_SIZE", "split_sizes", "task_at", "locate", "agentgym_pairs"]

TEST_SIZE = 200
EXCLUDED_BY_AGENTGYM = frozenset({"5-1", "5-2", "9-1", "9-2", "9-3", "10-1", "10-2"})

# (task id, simulator task name, train variations, dev variations, test variations), in the
# simulator's order. Read from scienceworld 1.2.3 (getTaskMaxVariations, getVariationsTrain/Dev/Test).
TASKS: tuple[tuple[str, str, int, int, int], ...] = (
    ("1-1", "boil", 14, 7, 9),
    ("1-2", "melt", 14, 7, 9),
    ("1-3", "freeze", 14, 7, 9),
    ("1-4", "change-the-state-of-matter-of", 14, 7, 9),
    ("2-1", "use-thermometer", 270, 135, 135),
    ("2-2", "measure-melting-point-known-substance", 218, 109, 109),
    ("2-3", "measure-melting-point-unknown-substance", 150, 75, 75),
    ("3-1", "power-component", 10, 5, 5),
    ("3-2", "power-component-renewable-vs-nonrenewable-energy", 10, 5, 5),
    ("3-3", "test-conductivity", 450, 225, 225),
    ("3-4", "test-conductivity-of-unknown-substances", 300, 150, 150),
    ("4-1", "find-living-thing", 150, 75, 75),
    ("4-2", "find-non-living-thing", 150, 75, 75),
    ("4-3", "find-plant", 150, 75, 75),
    ("4-4", "find-animal", 150, 75, 75),
    ("5-1", "grow-plant", 62, 31, 33),
    ("5-2", "grow-fruit", 62, 31, 33),
    ("6-1", "chemistry-mix", 16, 8, 8),
    ("6-2", "chemistry-mix-paint-secondary-color", 18, 9, 9),
    ("6-3", "chemistry-mix-paint-tertiary-color", 18, 9, 9),
    ("7-1", "lifespan-longest-lived", 62, 31, 32),
    ("7-2", "lifespan-shortest-lived", 62, 31, 32),
    ("7-3", "lifespan-longest-lived-then-shortest-lived", 62, 31, 32),
    ("8-1", "identify-life-stages-1", 6, 3, 5),
    ("8-2", "identify-life-stages-2", 4, 2, 4),
    ("9-1", "inclined-plane-determine-angle", 84, 42, 42),
    ("9-2", "inclined-plane-friction-named-surfaces", 692, 346, 348),
    ("9-3", "inclined-plane-friction-unnamed-surfaces", 80, 40, 42),
    ("10-1", "mendelian-genetics-known-plant", 60, 30, 30),
    ("10-2", "mendelian-genetics-unknown-plant", 240, 120, 120),
)


@dataclass(frozen=True, slots=True)
class SciTask:
    """One playable task: a ScienceWorld task and variation, and where it sits in AgentGym's list."""

    task_id: str
    name: str
    variation: int
    agentgym_index: int


@lru_cache(maxsize=1)
def agentgym_pairs() -> tuple[SciTask, ...]:
    """AgentGym's task list: index = its `data_idx`."""
    pairs: list[SciTask] = []
    for task_id, name, train, dev, test in TASKS:
        if task_id in EXCLUDED_BY_AGENTGYM:
            continue
        offset = len(pairs)
        pairs.extend(SciTask(task_id, name, variation, offset + variation) for variation in range(train + dev + test))
    return tuple(pairs)


def _test_quotas() -> dict[str, int]:
    """How many test tasks each kept task gives: equal shares, capped by its test range, the
    remainder going to tasks in simulator order."""
    capacity = {task_id: test for task_id, _, _, _, test in TASKS if task_id not in EXCLUDED_BY_AGENTGYM}
    quotas = dict.fromkeys(capacity, 0)
    left = TEST_SIZE
    while left:
        open_tasks = [task_id for task_id in capacity if quotas[task_id] < capacity[task_id]]
        share = max(1, left // len(open_tasks))
        for task_id in open_tasks:
            give = min(share, capacity[task_id] - quotas[task_id], left)
            quotas[task_id] += give
            left -= give
            if not left:
                break
    return quotas


@lru_cache(maxsize=1)
def _splits() -> dict[str, tuple[SciTask, ...]]:
    by_task: dict[str, list[SciTask]] = {}
    for pair in agentgym_pairs():
        by_task.setdefault(pair.task_id, []).append(pair)
    quotas = _test_quotas()
    train: list[SciTask] = []
    dev: list[SciTask] = []
    test: list[SciTask] = []
    for task_id, _, n_train, n_dev, n_test in TASKS:
        if task_id in EXCLUDED_BY_AGENTGYM:
            continue
        pairs = by_task[task_id]
        train.extend(pairs[:n_train])
        dev.extend(pairs[n_train : n_train + n_dev])
        test_range = pairs[n_train + n_dev :]
        quota = quotas[task_id]
        test.extend(test_range[k * n_test // quota] for k in range(quota))
    return {"train": tuple(train), "dev": tuple(dev), "test": tuple(test), "agentgym": agentgym_pairs()}


def split_sizes() -> dict[str, int]:
    return {split: len(tasks) for split, tasks in _splits().items()}


def task_at(split: str, index: int) -> SciTask:
    return _splits()[split][index]


@lru_cache(maxsize=1)
def _positions() -> dict[tuple[str, int], dict[str, int]]:
    positions: dict[tuple[str, int], dict[str, int]] = {}
    for split, tasks in _splits().items():
        for index, task in enumerate(tasks):
            positions.setdefault((task.task_id, task.variation), {})[split] = index
    return positions


def locate(task_id: str, variation: int) -> dict[str, int]:
    """Where a ScienceWorld (task id, variation) sits: split -> index (empty when AgentGym excludes it)."""
    return dict(_positions().get((task_id, variation), {}))
