"""The trainer's update stage: clipped policy-gradient steps on a scored TrainBatch.

    stats = update_policy(batch, scorer, optimizer, parameters)

`update_loss` is the maths, a pure function of tensors (like advantages.py and losses.py): one
micro-batch's share of its minibatch's loss and statistics. `update_policy` runs it: `epochs`
passes, each over `minibatches` optimizer steps in a random order drawn from torch's RNG, each
step's gradient accumulated over micro-batches so that it equals the whole minibatch's.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .config import AlgorithmSection
from .losses import aggregation_units, kl_loss, masked_mean, policy_loss, value_loss
from .scoring import Scorer, TrainBatch

__all__ = ["update_loss", "update_policy", "explained_variance"]


def update_loss(
    algorithm: AlgorithmSection,
    logprobs: Tensor,
    entropies: Tensor,
    mask: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    *,
    token_share: float,
    unit_share: float,
    ref_logprobs: Tensor | None = None,
    kl_in_reward: bool = False,
    values: Tensor | None = None,
    old_values: Tensor | None = None,
    returns: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """(loss, stats) of one micro-batch: the clipped policy loss, minus the entropy bonus, plus
    the KL to the reference (unless it is on the reward already) and PPO's value loss.

    `token_share` and `unit_share` are the micro-batch's share of its minibatch's action tokens
    and of its aggregation units (as loss_agg averages): a loss aggregated per loss_agg weighs
    unit_share, a token mean token_share, so the micro-batches' sum is the minibatch's."""
    policy, policy_stats = policy_loss(
        logprobs, old_logprobs, advantages, mask,
        clip_low=algorithm.clip_low, clip_high=algorithm.clip_high, agg=algorithm.loss_agg,
    )
    loss = unit_share * policy
    stats = {key: token_share * value for key, value in policy_stats.items()}  # token means
    stats["pg_loss"] = unit_share * policy.item()
    entropy = masked_mean(entropies, mask)
    if algorithm.entropy_coef:
        loss = loss - algorithm.entropy_coef * token_share * entropy
    stats["entropy"] = token_share * entropy.item()
    if ref_logprobs is None:
        stats["kl"] = stats["approx_kl"]
    elif not kl_in_reward:
        kl = kl_loss(logprobs, ref_logprobs, mask, kind=algorithm.kl_kind, agg=algorithm.loss_agg)
        loss = loss + algorithm.kl_coef * unit_share * kl
        stats["kl"] = unit_share * kl.item()
    if values is not None:
        assert old_values is not None and returns is not None
        critic_loss, critic_stats = value_loss(values, old_values, returns, mask, clip=algorithm.value_clip, agg=algorithm.loss_agg)
        loss = loss + algorithm.vf_coef * unit_share * critic_loss
        stats.update({key: token_share * value for key, value in critic_stats.items()}, value_loss=unit_share * critic_loss.item())
    return loss, stats


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over action tokens: 1 is a perfect critic, 0 a constant one."""
    variance = masked_mean((returns - masked_mean(returns, mask)).square(), mask)
    residual = returns - values
    unexplained = masked_mean((residual - masked_mean(residual, mask)).square(), mask)
    return (1 - unexplained / variance).item() if variance > 0 else 0.0


def _accumulate(batch: TrainBatch, scorer: Scorer, rows: Tensor, tokens: int, units: int) -> dict[str, float]:
    """Backward of one micro-batch's share of its minibatch's loss; its share of the stats."""
    algorithm = scorer.algorithm
    mask = batch.action_mask[rows]
    critic = batch.old_values is not None
    (logprobs, entropies), values = scorer.forward(scorer.model, batch, rows, values=critic)
    assert batch.old_logprobs is not None and batch.advantages is not None and batch.returns is not None
    loss, stats = update_loss(
        algorithm, logprobs, entropies, mask, batch.old_logprobs[rows], batch.advantages[rows],
        token_share=int(aggregation_units(mask, "token-mean")) / tokens,
        unit_share=int(aggregation_units(mask, algorithm.loss_agg)) / units,
        ref_logprobs=batch.ref_logprobs[rows] if batch.ref_logprobs is not None else None,
        kl_in_reward=batch.kl_in_reward,
        values=values,
        old_values=batch.old_values[rows] if critic else None,
        returns=batch.returns[rows] if critic else None,
    )
    loss.backward()
    stats["loss"] = loss.item()
    return stats


def update_policy(batch: TrainBatch, scorer: Scorer, optimizer: Any, parameters: Sequence[Tensor]) -> dict[str, float]:
    """The update's steps on `scorer.model` (and its value head); the mean statistics per step."""
    algorithm, device = scorer.algorithm, scorer.device
    totals: dict[str, float] = {}
    updates = 0
    scorer.model.train()
    for _ in range(algorithm.epochs):
        order = torch.randperm(len(batch.lengths))
        for rows in order.chunk(algorithm.minibatches):
            mask = batch.action_mask[rows.to(device)]
            tokens = max(1, int(aggregation_units(mask, "token-mean")))
            units = max(1, int(aggregation_units(mask, algorithm.loss_agg)))
            optimizer.zero_grad(set_to_none=True)
            stats: dict[str, float] = {}
            for micro_rows in scorer.micro_batches(rows, batch):
                for key, value in _accumulate(batch, scorer, micro_rows.to(device), tokens, units).items():
                    stats[key] = stats.get(key, 0.0) + value
            if algorithm.max_grad_norm:
                stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(parameters, algorithm.max_grad_norm))
            optimizer.step()
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + value
            updates += 1
    stats = {key: value / updates for key, value in totals.items()}
    assert batch.advantages is not None and batch.returns is not None
    stats["advantage_abs"] = masked_mean(batch.advantages.abs(), batch.action_mask).item()
    if batch.kl_tokens is not None:
        stats["kl"] = masked_mean(batch.kl_tokens, batch.action_mask).item()
    if batch.old_values is not None:
        stats["explained_variance"] = explained_variance(batch.old_values, batch.returns, batch.action_mask)
    return stats
