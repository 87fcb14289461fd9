"""OpenRLHF's PPO trainer with the step publication of publishing.py. Imports openrlhf's trainer
(ray, deepspeed, vLLM): only the training entry point (train.py) and Ray workers import this."""

from __future__ import annotations

from openrlhf.trainer import ppo_trainer

from .publishing import StepPublishingMixin, unwrap_actor_class

__all__ = ["StepPublishingPPOTrainer", "install"]

_PLAIN_TRAINER = unwrap_actor_class(ppo_trainer.PPOTrainer)


class StepPublishingPPOTrainer(StepPublishingMixin, _PLAIN_TRAINER):  # type: ignore[misc, valid-type]
    """Module level, so Ray workers unpickle it by reference and get the same class."""


def install() -> None:
    """Make `openrlhf.cli.train_ppo_ray` build this trainer: its `train()` imports
    `PPOTrainer` from openrlhf.trainer.ppo_trainer when it runs, after this replacement."""
    import ray

    ppo_trainer.PPOTrainer = ray.remote(StepPublishingPPOTrainer)
