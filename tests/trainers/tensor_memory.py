"""Measuring the update's memory on any device: shared by tests/trainers/test_update_memory.py and
bench/update_memory.py.

`TensorMemory` counts the bytes of every tensor storage an operator creates while it is active,
until that storage is freed, and keeps the peak: CPU torch has no `max_memory_allocated`, and the
process's resident size also moves with the allocator's caching. `synthetic_episodes` makes
batches of a chosen size and length without playing them.
"""

from __future__ import annotations

import random
import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from gymwire.trainers.episode import EnvTask, Episode, Turn


class TensorMemory(TorchDispatchMode):
    """`with TensorMemory() as memory: ...`; then `memory.peak`: the most bytes held at once by
    tensors created inside the block (parameters and tensors made before it are not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._counted: set[int] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._count(tensor.untyped_storage())
        return out

    def _count(self, storage: torch.UntypedStorage) -> None:
        key = storage._cdata  # one per storage however many views share it
        if key in self._counted:
            return
        self._counted.add(key)
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self._counted.discard(key)
        self.live -= size


def synthetic_episodes(count: int, length: int, vocabulary: int, turns: int = 4, seed: int = 0) -> list[Episode]:
    """`count` episodes of exactly `length` tokens: a prompt, then `turns` turns of an action (the
    loss-masked tokens) and an observation; random tokens, reward 1 on the last turn of every other
    episode. Groups of 4 episodes share a task (for GRPO)."""
    rng = random.Random(seed)
    prompt = length // 4
    span = (length - prompt) // turns
    action = max(1, span // 2)
    episodes = []
    for index in range(count):
        tokens = [rng.randrange(vocabulary) for _ in range(length)]
        loss_mask = [0] * length
        episode_turns = []
        for turn in range(turns):
            start = prompt + turn * span
            loss_mask[start : start + action] = [1] * action
            reward = float(turn == turns - 1 and index % 2 == 0)
            episode_turns.append(Turn(action="", observation="", reward=reward, start=start, end=start + action - 1))
        episodes.append(
            Episode(
                task=EnvTask("synthetic", "train", index // 4),
                group=index // 4,
                options={},
                max_turns=turns,
                prompt_length=prompt,
                tokens=tokens,
                loss_mask=loss_mask,
                logprobs=[0.0] * length,
                turns=episode_turns,
            )
        )
    return episodes
