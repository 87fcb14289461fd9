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

from typing import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

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
    "lm_head_logprobs",
    "aggregation_units",
]

AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
KL_KINDS = ("k1", "k2", "k3", "low_var_kl")

# exp() of a log-ratio beyond this overflows float32 gradients; a ratio of e^20 is already
# far outside any clip range, so clamping changes no clipped loss.
_MAX_LOG_RATIO = 20.0
# Logits one chunk of lm_head_logprobs holds (chunk positions x vocabulary): 64 MiB in float32.
HEAD_CHUNK_ELEMENTS = 2**24
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


def aggregation_units(mask: Tensor, mode: str = "token-mean") -> Tensor:
    """What `aggregate` averages over: the action tokens for token-mean, the sequences holding an
    action token for the sequence means. A part of a batch (a micro-batch) whose loss is weighted
    by its units / the batch's units adds up with the other parts to the batch's loss."""
    if mode not in AGGREGATIONS:
        raise LossConfigError(f"unknown aggregation {mode!r}; choose one of {', '.join(AGGREGATIONS)}")
    keep = mask != 0
    return keep.sum() if mode == "token-mean" else keep.any(1).sum()


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
    """Entropy (...) of the softmax over the last axis of logits (..., V), in float32 or wider."""
    logits = _upcast(logits)
    probabilities = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probabilities * logits).sum(-1)


def token_logprobs(logits: Tensor, labels: Tensor) -> Tensor:
    """log softmax(logits)[label] per position: (..., V), (...) -> (...) in float32 or wider.

    The picked logit minus the logsumexp: the full log-softmax is never materialised. Negative
    labels (e.g. -100 padding) give 0."""
    valid = labels >= 0
    logits = _upcast(logits)
    picked = logits.gather(-1, torch.where(valid, labels, 0).unsqueeze(-1)).squeeze(-1)
    out = picked - torch.logsumexp(logits, dim=-1)
    return torch.where(valid, out, torch.zeros((), dtype=out.dtype, device=out.device))


def lm_head_logprobs(
    hidden: Tensor,
    labels: Tensor,
    head: Callable[[Tensor], Tensor],
    temperature: float = 1.0,
    chunk_elements: int = HEAD_CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """Log-probs of `labels` (N,) and entropies (N,), both float32 or wider, under
    softmax(head(hidden) / temperature) for final hidden states (N, H).

    The LM head runs on chunks of positions of at most `chunk_elements` logits each. With autograd
    on, each chunk is recomputed in the backward pass (activation checkpointing), so what is kept
    for backward is the hidden states, never the (N, V) logits or their softmax."""
    with torch.no_grad():
        vocabulary = head(hidden[:1]).shape[-1]
    size = max(1, chunk_elements // vocabulary)

    def scores(hidden_chunk: Tensor, label_chunk: Tensor) -> tuple[Tensor, Tensor]:
        logits = _upcast(head(hidden_chunk)) / temperature
        return token_logprobs(logits, label_chunk), entropy_from_logits(logits)

    logprobs, entropies = [], []
    for hidden_chunk, label_chunk in zip(hidden.split(size), labels.split(size)):
        if torch.is_grad_enabled() and hidden_chunk.requires_grad:
            chunk_logprobs, chunk_entropy = checkpoint(scores, hidden_chunk, label_chunk, use_reentrant=False)
        else:
            chunk_logprobs, chunk_entropy = scores(hidden_chunk, label_chunk)
        logprobs.append(chunk_logprobs)
        entropies.append(chunk_entropy)
    return torch.cat(logprobs), torch.cat(entropies)


def _upcast(logits: Tensor) -> Tensor:
    # Half-precision logits are upcast: logsumexp in bf16 loses most of its digits.
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
