"""Make OpenRLHF's PPO trainer publish the training step, exactly and across resumes.

`PPOTrainer.fit` (openrlhf 0.11.2, synchronous mode) runs:

    states = self.init_checkpoint_states()           # global_step from the checkpoint, or 0
    global_step = states["global_step"] if it is > 0 else fit's argument
    loop: samples = generate_samples()               # all rollouts of step global_step + 1
          status, global_step = self.train_step(samples, global_step)   # returns global_step + 1
          (evaluation, checkpoint)

So the step being collected is known at two points only: after `init_checkpoint_states` (start
or resume) and after each `train_step`. The mixin publishes `global_step + 1` at both, before the
next `generate_samples` can start; dynamic filtering's extra prompts and evaluation runs all happen
between two publications and so all see the right step. Nothing counts agent calls.

Evaluation after update k runs with the limit of step k + 1 (the next rollouts' limit).
The asynchronous trainer (`--train.async_enable`) generates ahead of training and is not supported.
"""

from __future__ import annotations

from typing import Any

from .steps import StepBoard

__all__ = ["StepPublishingMixin", "unwrap_actor_class"]


class StepPublishingMixin:
    """Put first in the bases of a PPOTrainer subclass. `step_board()` says where to publish;
    the default reads `GYMWIRE_STEP_SOURCE` (the launcher sets it on every Ray worker)."""

    _gymwire_fit_start = 0

    def step_board(self) -> StepBoard:
        board = getattr(self, "_gymwire_board", None)
        if board is None:
            import os

            from .steps import step_board_from_spec

            board = step_board_from_spec(os.environ.get("GYMWIRE_STEP_SOURCE", "ray:gymwire-step"))
            self._gymwire_board = board
        return board

    def fit(self, global_step: int = 0, *args: Any, **kwargs: Any) -> Any:
        self._gymwire_fit_start = global_step
        return super().fit(global_step, *args, **kwargs)  # type: ignore[misc]

    def init_checkpoint_states(self) -> dict[str, Any]:
        states = super().init_checkpoint_states()  # type: ignore[misc]
        # The trainer's own rule: a checkpoint's step wins when it is > 0.
        done = states["global_step"] if states["global_step"] > 0 else self._gymwire_fit_start
        self.step_board().publish(done + 1)
        return states

    def train_step(self, rollout_samples: Any, global_step: int) -> tuple[Any, int]:
        status, global_step = super().train_step(rollout_samples, global_step)  # type: ignore[misc]
        self.step_board().publish(global_step + 1)
        return status, global_step


def unwrap_actor_class(cls: Any) -> type:
    """The plain class behind a `@ray.remote` class (Ray keeps it as
    `__ray_metadata__.modified_class.__ray_actor_class__`); a plain class is returned as is."""
    metadata = getattr(cls, "__ray_metadata__", None)
    if metadata is None:
        if isinstance(cls, type):
            return cls
        raise TypeError(f"{cls!r} is neither a class nor a Ray actor class")
    try:
        return metadata.modified_class.__ray_actor_class__
    except AttributeError:
        raise TypeError(
            f"cannot find the class behind Ray actor class {cls!r}: this Ray version stores it elsewhere; "
            "gymwire was tested with ray 2.55 (openrlhf 0.11.2's pin)"
        ) from None
