"""Advantage estimators for multi-turn agent RL on token batches.

Layout: B trajectories, each the *response* part of an episode (everything after the prompt:
the policy's action tokens interleaved with the environment's observation tokens), right-padded
to T tokens. `action_mask` (B, T) is 1 on tokens the policy generated (the trained ones) and 0 on
environment tokens and padding. Rewards are token rewards (B, T); `place_rewards` and
`terminal_token_rewards` build them from per-turn or per-trajectory rewards.

Time runs over action tokens only: environment tokens are skipped, so discounting counts
generated tokens and a reward reaches every earlier action token however many observation
tokens lie in between.

Estimators (`compute_advantages(estimator, ...)`):
    grpo                   (score - group mean) / (unbiased group std + eps), on every action token
    rloo                   score - mean score of the other members of the group
    reinforce_pp           discounted return-to-go, whitened over all action tokens of the batch
    reinforce_pp_baseline  group mean score subtracted from the terminal reward, then as above
    gae                    PPO's generalized advantage estimation; needs values
A trajectory's score is the sum of its token rewards.
"""

from __future__ import annotations

from typing import Hashable, Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "ESTIMATORS",
    "GROUP_ESTIMATORS",
    "AdvantageInputError",
    "place_rewards",
    "terminal_token_rewards",
    "last_action_index",
    "move_rewards_to_actions",
    "masked_whiten",
    "compute_advantages",
]

ESTIMATORS = ("grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "gae")
GROUP_ESTIMATORS = frozenset({"grpo", "rloo", "reinforce_pp_baseline"})

GroupIds = Union[Tensor, Sequence[Hashable]]


class AdvantageInputError(ValueError):
    """The rewards, masks, groups or settings given to an estimator cannot be used as they are."""


def _float_dtype(tensor: Tensor) -> torch.dtype:
    return tensor.dtype if tensor.is_floating_point() else torch.float32


def _check_2d(name: str, tensor: Tensor, shape: torch.Size | None = None) -> None:
    if not isinstance(tensor, Tensor) or tensor.dim() != 2:
        raise AdvantageInputError(f"{name} must be a (B, T) tensor, got {getattr(tensor, 'shape', type(tensor))}")
    if shape is not None and tensor.shape != shape:
        raise AdvantageInputError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(shape)} like token_rewards")


def place_rewards(
    turn_ends: Sequence[Sequence[int]],
    turn_rewards: Sequence[Sequence[float]],
    T: int,
    *,
    action_mask: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Token rewards (B, T) with each turn's reward on that turn's last action token.

    `turn_ends[b][k]` is the index, in response coordinates, of the last policy-generated token
    of turn k of trajectory b, and `turn_rewards[b][k]` its reward. Rewards on the same index add
    up. Pass `action_mask` to have every index checked to be an action token.
    """
    if len(turn_ends) != len(turn_rewards):
        raise AdvantageInputError(f"turn_ends has {len(turn_ends)} trajectories but turn_rewards has {len(turn_rewards)}")
    if action_mask is not None and tuple(action_mask.shape) != (len(turn_ends), T):
        raise AdvantageInputError(f"action_mask has shape {tuple(action_mask.shape)}, expected {(len(turn_ends), T)}")
    rewards = torch.zeros(len(turn_ends), T, dtype=dtype)
    for b, (ends, values) in enumerate(zip(turn_ends, turn_rewards)):
        if len(ends) != len(values):
            raise AdvantageInputError(
                f"trajectory {b} has {len(ends)} turn ends but {len(values)} turn rewards; give one reward per turn"
            )
        for k, (end, value) in enumerate(zip(ends, values)):
            if not 0 <= end < T:
                raise AdvantageInputError(f"trajectory {b} turn {k} ends at index {end}, outside the response [0, {T})")
            if action_mask is not None and not action_mask[b, end]:
                raise AdvantageInputError(
                    f"trajectory {b} turn {k} ends at index {end}, which is not an action token; "
                    "turn_ends must index the last generated token of each turn"
                )
            rewards[b, end] += value
    return rewards.to(action_mask.device) if action_mask is not None else rewards


def last_action_index(action_mask: Tensor) -> Tensor:
    """(B,) index of each row's last action token, -1 for a row without any."""
    mask = action_mask != 0
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, -1).max(dim=1).values


def terminal_token_rewards(rewards: Tensor | Sequence[float], action_mask: Tensor) -> Tensor:
    """Token rewards (B, T) with each trajectory's reward on its last action token.

    Not on the last token: that is usually an environment token, masked out of the loss. A row
    with no action token at all keeps its reward on its final position, so it still counts in
    its group's statistics though none of its tokens is trained.
    """
    _check_2d("action_mask", action_mask)
    rewards = torch.as_tensor(rewards, device=action_mask.device)
    if rewards.shape != (action_mask.shape[0],):
        raise AdvantageInputError(f"rewards has shape {tuple(rewards.shape)}, expected ({action_mask.shape[0]},)")
    last = last_action_index(action_mask)
    last = torch.where(last >= 0, last, action_mask.shape[1] - 1)
    token_rewards = torch.zeros(action_mask.shape, dtype=_float_dtype(rewards), device=action_mask.device)
    token_rewards.scatter_(1, last.unsqueeze(1), rewards.to(token_rewards.dtype).unsqueeze(1))
    return token_rewards


def move_rewards_to_actions(token_rewards: Tensor, action_mask: Tensor) -> Tensor:
    """Move every reward sitting on a masked position onto the nearest preceding action token.

    Estimators see rewards through the action timeline only; a reward left on an environment
    token (typically the terminal reward on the last observation token) would otherwise be
    multiplied by the mask and never reach the loss. A reward before a row's first action
    token moves forward onto it; rows with no action token are returned unchanged.
    """
    mask = action_mask != 0
    T = mask.shape[1]
    positions = torch.arange(T, device=mask.device).expand_as(mask)
    preceding = torch.cummax(torch.where(mask, positions, -1), dim=1).values
    first = torch.where(mask, positions, T).min(dim=1, keepdim=True).values
    target = torch.where(preceding >= 0, preceding, first)
    has_action = mask.any(dim=1, keepdim=True)
    target = torch.where(has_action, target, positions)
    return torch.zeros_like(token_rewards).scatter_add_(1, target, token_rewards)


def masked_whiten(values: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """(values - mean) / (std + eps) over the positions where mask is set; zero elsewhere.

    Uses the unbiased std; with fewer than two positions it only centres."""
    mask = mask != 0
    count = mask.sum()
    if count == 0:
        return torch.zeros_like(values)
    mean = torch.where(mask, values, 0.0).sum() / count
    centred = torch.where(mask, values - mean, 0.0)
    std = (centred.square().sum() / (count - 1).clamp(min=1)).sqrt()
    return centred / (std + eps)


def _returns_to_go(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Discounted sum of future rewards over the action timeline (rewards already on actions)."""
    if gamma == 1.0:
        return rewards.flip(1).cumsum(1).flip(1) * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = torch.where(mask[:, t], rewards[:, t] + gamma * running, running)
        returns[:, t] = running
    return returns * mask


def _gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])  # past the last action token the value is 0
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        active = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = torch.where(active, delta + gamma * lam * running, running)
        next_value = torch.where(active, values[:, t], next_value)
        advantages[:, t] = running
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def _group_index(group_ids: GroupIds | None, batch: int, estimator: str, device: torch.device) -> tuple[Tensor, Tensor]:
    """(inverse (B,), counts (G,)): each row's group number and the size of every group."""
    if group_ids is None:
        raise AdvantageInputError(
            f"estimator {estimator!r} compares samples of the same prompt: pass group_ids, "
            "one id per trajectory, equal for trajectories sampled from the same task"
        )
    if isinstance(group_ids, Tensor):
        if group_ids.shape != (batch,):
            raise AdvantageInputError(f"group_ids has shape {tuple(group_ids.shape)}, expected ({batch},)")
        _, inverse = torch.unique(group_ids, return_inverse=True)
        inverse = inverse.to(device)
    else:
        if len(group_ids) != batch:
            raise AdvantageInputError(f"group_ids has {len(group_ids)} entries, expected one per trajectory ({batch})")
        numbering: dict[Hashable, int] = {}
        inverse = torch.tensor([numbering.setdefault(g, len(numbering)) for g in group_ids], device=device)
    return inverse, torch.bincount(inverse)


def _group_sums(scores: Tensor, inverse: Tensor, groups: int) -> Tensor:
    return torch.zeros(groups, dtype=scores.dtype, device=scores.device).index_add_(0, inverse, scores)


@torch.no_grad()
def compute_advantages(
    estimator: str,
    token_rewards: Tensor,
    action_mask: Tensor,
    *,
    group_ids: GroupIds | None = None,
    values: Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
    norm_eps: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """(advantages, returns), both (B, T) and zero wherever action_mask is 0.

    `returns` are the critic's targets for "gae" (advantages + values) and the discounted
    return-to-go of the rewards for every other estimator. Group estimators need `group_ids`
    (a (B,) tensor or a list of hashable ids). A group of one gets advantage 0 from "grpo" and
    "reinforce_pp_baseline" (nothing to compare with); "rloo" refuses it.
    """
    if estimator not in ESTIMATORS:
        raise AdvantageInputError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    _check_2d("token_rewards", token_rewards)
    _check_2d("action_mask", action_mask, token_rewards.shape)
    if not 0.0 < gamma <= 1.0 or not 0.0 <= lam <= 1.0:
        raise AdvantageInputError(f"need 0 < gamma <= 1 and 0 <= lam <= 1, got gamma={gamma}, lam={lam}")

    mask = action_mask != 0
    rewards = move_rewards_to_actions(token_rewards.to(_float_dtype(token_rewards)), mask)
    weights = mask.to(rewards.dtype)
    returns = _returns_to_go(rewards, mask, gamma)

    if estimator == "gae":
        if values is None:
            raise AdvantageInputError("estimator 'gae' needs values (B, T) from the critic; pass values=...")
        _check_2d("values", values, token_rewards.shape)
        return _gae(rewards, values.detach().to(rewards.dtype), mask, gamma, lam)

    if estimator == "reinforce_pp":
        return masked_whiten(returns, mask, norm_eps), returns

    inverse, counts = _group_index(group_ids, rewards.shape[0], estimator, rewards.device)
    scores = rewards.sum(dim=1)
    sums = _group_sums(scores, inverse, len(counts))
    means = sums / counts

    if estimator == "grpo":
        squared = _group_sums((scores - means[inverse]).square(), inverse, len(counts))
        stds = (squared / (counts - 1).clamp(min=1)).sqrt()  # a group of one has std 0 and advantage 0
        per_trajectory = (scores - means[inverse]) / (stds[inverse] + norm_eps)
        return per_trajectory.unsqueeze(1) * weights, returns

    if estimator == "rloo":
        lonely = torch.unique(inverse[counts[inverse] < 2])
        if len(lonely):
            rows = [int(torch.nonzero(inverse == g)[0]) for g in lonely]
            raise AdvantageInputError(
                f"rloo needs at least 2 samples per group; trajectories {rows} are alone in their group. "
                "Sample n >= 2 responses per prompt, or use 'grpo' / 'reinforce_pp'"
            )
        baselines = (sums[inverse] - scores) / (counts[inverse] - 1)
        return (scores - baselines).unsqueeze(1) * weights, returns

    # reinforce_pp_baseline: the baseline enters as a negative reward on the last action token,
    # so with gamma < 1 it is discounted exactly like the terminal reward it offsets.
    last = last_action_index(mask)
    rows = torch.nonzero(last >= 0).squeeze(1)
    baselined = rewards.clone()
    baselined[rows, last[rows]] -= means[inverse[rows]]
    return masked_whiten(_returns_to_go(baselined, mask, gamma), mask, norm_eps), returns
