"""Token-level losses for policy-gradient training of LLM agents.

All tensors are (B, T) over the response tokens unless said otherwise; `mask` is the action mask
(1 on tokens the policy generated). Masked positions never contribute to a loss or its gradient,
even when they hold inf or NaN (padding log-probabilities): inputs are replaced by zeros there
with `torch.where` before any non-linear step, since multiplying by the mask, or masking only
the result, lets 0 * inf = NaN into the gradient.

Aggregation modes (`agg`):
    token-mean            every action token of the batch weighs the same
    seq-mean-token-mean   mean over each sequence's action tokens, then over sequences
    seq-mean-token-sum    sum over each sequence's action tokens, then mean over sequences
Sequences without any action token are left out of the sequence means.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "AGGREGATIONS",
    "KL_KINDS",
    "LossConfigError",
    "masked_mean",
    "aggregate",
    "policy_loss",
    "kl_penalty",
    "apply_kl_to_rewards",
    "kl_loss",
    "value_loss",
    "entropy_from_logits",
    "token_logprobs",
]

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
KL_KINDS = ("k1", "k2", "k3", "low_var_kl")

# exp() of a log-ratio beyond this overflows float32 gradients; a ratio of e^20 is already
# far outside any clip range, so clamping changes no clipped loss.
_MAX_LOG_RATIO = 20.0
# low_var_kl bounds each token's estimate, as in verl, so one outlier cannot dominate the loss.
_LOW_VAR_KL_BOUND = 10.0


class LossConfigError(ValueError):
    """A loss was asked for with an unknown mode or kind, or with unusable settings."""


def _masked(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    keep = mask != 0
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)), keep


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over positions where mask is set (along `dim`, or all); 0 where none is."""
    values, keep = _masked(x, mask)
    if dim is None:
        return values.sum() / keep.sum().clamp(min=1)
    return values.sum(dim) / keep.sum(dim).clamp(min=1)


def aggregate(loss_tokens: Tensor, mask: Tensor, mode: str = "token-mean") -> Tensor:
    """Reduce per-token losses (B, T) to a scalar; see the module docstring for the modes."""
    if mode == "token-mean":
        return masked_mean(loss_tokens, mask)
    if mode not in AGGREGATIONS:
        raise LossConfigError(f"unknown aggregation {mode!r}; choose one of {', '.join(AGGREGATIONS)}")
    values, keep = _masked(loss_tokens, mask)
    per_sequence = values.sum(1)
    if mode == "seq-mean-token-mean":
        per_sequence = per_sequence / keep.sum(1).clamp(min=1)
    return masked_mean(per_sequence, keep.any(1))


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: str = "token-mean",
) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped surrogate, with separate lower and upper clip bounds (clip-higher, DAPO).

    The ratio is clipped to [1 - clip_low, 1 + clip_high]. Stats: `clipfrac` (share of action
    tokens where the clipped term is the active one), `approx_kl` (k3 estimate of
    KL(old || new), never negative) and `ratio_mean`.
    """
    if clip_low < 0 or clip_high < 0 or clip_low >= 1:
        raise LossConfigError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")
    log_ratio, keep = _masked((logprobs - old_logprobs).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO), mask)
    advantages, _ = _masked(advantages, keep)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = aggregate(torch.maximum(unclipped, clipped), keep, agg)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).to(ratio.dtype), keep).item(),
            "approx_kl": masked_mean(ratio - 1 - log_ratio, keep).item(),
            "ratio_mean": masked_mean(ratio, keep).item(),
        }
    return loss, stats


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k1", mask: Tensor | None = None) -> Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy.

    k1: log p - log q (unbiased, can be negative); k2: (log p - log q)^2 / 2;
    k3: q/p - 1 - log(q/p) (unbiased, never negative); low_var_kl: k3 bounded to [0, 10].
    With `mask`, positions outside it are 0 and pass no gradient.
    """
    log_ratio = logprobs - ref_logprobs
    if mask is not None:
        log_ratio, _ = _masked(log_ratio, mask)
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.square()
    if kind in ("k3", "low_var_kl"):
        reverse = (-log_ratio).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        k3 = torch.exp(reverse) - 1 - reverse
        return k3.clamp(max=_LOW_VAR_KL_BOUND) if kind == "low_var_kl" else k3
    raise LossConfigError(f"unknown KL kind {kind!r}; choose one of {', '.join(KL_KINDS)}")


def apply_kl_to_rewards(token_rewards: Tensor, kl: Tensor, mask: Tensor, beta: float) -> Tensor:
    """Token rewards minus beta * KL on action tokens (KL as reward shaping, no gradient)."""
    penalty, _ = _masked(kl.detach().to(token_rewards.dtype), mask)
    return token_rewards - beta * penalty


def kl_loss(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    kind: str = "low_var_kl",
    agg: str = "token-mean",
) -> Tensor:
    """KL to the reference policy as a loss term (add beta * this to the policy loss)."""
    return aggregate(kl_penalty(logprobs, ref_logprobs.detach(), kind, mask), mask, agg)


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip: float | None = 0.2,
    agg: str = "token-mean",
) -> tuple[Tensor, dict[str, float]]:
    """Clipped value loss: 0.5 * max((v - R)^2, (v_clipped - R)^2), v_clipped kept within
    `clip` of the old value; `clip=None` gives the plain squared error. Stat: `vf_clipfrac`."""
    values, keep = _masked(values, mask)
    old_values, _ = _masked(old_values, keep)
    returns, _ = _masked(returns, keep)
    error = (values - returns).square()
    if clip is None:
        losses, clipped_share = error, torch.zeros((), dtype=values.dtype)
    else:
        if clip < 0:
            raise LossConfigError(f"value clip must be >= 0 or None, got {clip}")
        bounded = old_values + (values - old_values).clamp(-clip, clip)
        clipped_error = (bounded - returns).square()
        losses = torch.maximum(error, clipped_error)
        clipped_share = masked_mean((clipped_error > error).to(values.dtype).detach(), keep)
    return 0.5 * aggregate(losses, keep, agg), {"vf_clipfrac": clipped_share.item()}


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy (B, T) of the softmax over the last axis of logits (B, T, V).

    Computed one sequence at a time in float32 so the temporaries stay at one row's size."""
    rows = []
    for row in logits:
        row = row.float()
        probabilities = torch.softmax(row, dim=-1)
        rows.append(torch.logsumexp(row, dim=-1) - (probabilities * row).sum(-1))
    return torch.stack(rows)


def token_logprobs(logits: Tensor, labels: Tensor) -> Tensor:
    """log softmax(logits)[label] per position: (B, T, V), (B, T) -> (B, T) in float32 or wider.

    Never materialises the full log-softmax: the picked logit minus the logsumexp, one sequence
    at a time. Negative labels (e.g. -100 padding) give 0."""
    valid = labels >= 0
    safe_labels = torch.where(valid, labels, 0)
    rows = []
    for row, row_labels in zip(logits, safe_labels):
        # Half-precision logits are upcast per row: logsumexp in bf16 loses most of its digits.
        row = row if row.dtype in (torch.float32, torch.float64) else row.float()
        picked = row.gather(-1, row_labels.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(row, dim=-1))
    out = torch.stack(rows)
    return torch.where(valid, out, torch.zeros((), dtype=out.dtype, device=out.device))
