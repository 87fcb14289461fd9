"""The trainer's scoring stage: played episodes -> the `TrainBatch` the update works on.

    batch = score_episodes(episodes, Scorer(model, value_head, reference, algorithm, temperature, device), pad_id)

`TrainBatch` is the hand-off between the stages: the episodes as right-padded tensors, then per
position what the update compares the policy with (the rollout policy's log-probs and values,
the reference's log-probs, advantages and returns, the KL penalty when it is taken off the reward).
Position t of `labels` / `action_mask` is token t+1 of an episode: prompt and environment tokens
are simply action-mask-0 positions.

`Scorer.forward` is the one forward pass of the policy both stages use: the trunk on the rows cut
to their longest, the LM head only on hidden states at action positions (losses.lm_head_logprobs),
the value head (PPO's critic, `ValueHead`) on the same hidden states.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..episode import Episode
from ..models.precision import autocast_for
from .advantages import compute_advantages, masked_whiten, place_rewards
from .config import AlgorithmSection
from .losses import apply_kl_to_rewards, kl_penalty, lm_head_logprobs

__all__ = ["TrainBatch", "Scorer", "ValueHead", "score_episodes", "pack_micro_batches", "check_lm_head"]

SCORING_ROWS = 64  # rows per forward pass when scoring (no gradients kept)


class ValueHead(torch.nn.Module):
    """PPO's critic on the policy's trunk: one value per position from the last hidden state.
    It starts at zero, so the first advantages are the returns themselves."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)


@dataclass
class TrainBatch:
    """Episodes as tensors (`from_episodes`), then their scores (`score_episodes`), each (B, width - 1)."""

    input_ids: torch.Tensor
    attention: torch.Tensor
    labels: torch.Tensor
    action_mask: torch.Tensor
    lengths: list[int]
    group_ids: list[Any]
    old_logprobs: torch.Tensor | None = None
    old_values: torch.Tensor | None = None  # PPO (estimator gae) only
    ref_logprobs: torch.Tensor | None = None  # with a KL reference only
    kl_tokens: torch.Tensor | None = None  # the per-token KL taken off the reward (kl_in: reward)
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    @property
    def width(self) -> int:
        return self.input_ids.shape[1]

    @property
    def kl_in_reward(self) -> bool:
        return self.kl_tokens is not None

    @classmethod
    def from_episodes(cls, episodes: Sequence[Episode], pad_id: int, device: torch.device) -> "TrainBatch":
        width = max(len(e.tokens) for e in episodes)
        ids = torch.full((len(episodes), width), pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        loss_mask = torch.zeros_like(ids)
        for row, e in enumerate(episodes):
            ids[row, : len(e.tokens)] = torch.tensor(e.tokens)
            attention[row, : len(e.tokens)] = 1
            loss_mask[row, : len(e.tokens)] = torch.tensor(e.loss_mask)
        return cls(
            input_ids=ids.to(device),
            attention=attention.to(device),
            labels=torch.where(attention[:, 1:] == 1, ids[:, 1:], -100).to(device),
            action_mask=loss_mask[:, 1:].to(device),
            lengths=[len(e.tokens) for e in episodes],
            group_ids=[e.group for e in episodes],
        )


def pack_micro_batches(rows: list[int], lengths: list[int], max_tokens: int | None, max_rows: int | None) -> list[list[int]]:
    """`rows` in groups of at most `max_rows` rows and `max_tokens` padded tokens (rows x the
    longest row's length), longest rows first so that rows of like length share a group. A row
    longer than `max_tokens` makes a group of its own. No limits: one group, in the given order."""
    if max_tokens is None and max_rows is None:
        return [list(rows)]
    groups: list[list[int]] = []
    group: list[int] = []
    for row in sorted(rows, key=lambda r: -lengths[r]):  # stable: equal lengths keep their order
        full = max_rows is not None and len(group) == max_rows
        if group and (full or (max_tokens is not None and (len(group) + 1) * lengths[group[0]] > max_tokens)):
            groups.append(group)
            group = []
        group.append(row)
    groups.append(group)
    return groups


class Scorer:
    """The policy's forward pass over a TrainBatch, in the micro-batches the algorithm allows.
    `temperature`: log-probs are of the distribution the episodes were sampled from."""

    def __init__(self, model: Any, value_head: ValueHead | None, reference: Any, algorithm: AlgorithmSection,
                 temperature: float, device: torch.device):
        self.model = model
        self.value_head = value_head
        self.reference = reference
        self.algorithm = algorithm
        self.temperature = temperature
        self.device = device

    def micro_batches(self, rows: torch.Tensor, batch: TrainBatch, max_rows: int | None = None) -> list[torch.Tensor]:
        """`rows` (on the CPU) in micro-batches as algorithm.micro_batch_tokens/_rows allow (and at
        most `max_rows` rows)."""
        algorithm = self.algorithm
        limits = [n for n in (algorithm.micro_batch_rows, max_rows) if n is not None]
        groups = pack_micro_batches(
            rows.tolist(), batch.lengths, max_tokens=algorithm.micro_batch_tokens, max_rows=min(limits) if limits else None
        )
        return [torch.tensor(group) for group in groups]

    def forward(
        self, model: Any, batch: TrainBatch, rows: torch.Tensor, values: bool = False
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """((log-probs, entropies), values) predicting positions 1.. of `rows`, each
        (len(rows), batch.width - 1): log-probs of the labels and the entropies of the policy at
        action positions (0 elsewhere), and the value head's values everywhere (None unless `values`)."""
        width = max(batch.lengths[row] for row in rows.tolist())
        ids, attention = batch.input_ids[rows, :width], batch.attention[rows, :width]
        where = batch.action_mask[rows, : width - 1] != 0
        with autocast_for(self.device):
            hidden = model.base_model(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state[:, :-1]
            logprobs, entropies = lm_head_logprobs(
                hidden[where], batch.labels[rows, : width - 1][where], model.get_output_embeddings(), self.temperature
            )
        padding = (0, batch.width - width)  # back to the batch's width
        scores = tuple(
            torch.nn.functional.pad(torch.zeros(where.shape, dtype=x.dtype, device=x.device).masked_scatter(where, x), padding)
            for x in (logprobs, entropies)
        )
        assert not values or self.value_head is not None
        return scores, torch.nn.functional.pad(self.value_head(hidden), padding) if values else None

    @torch.no_grad()
    def score(self, model: Any, batch: TrainBatch, values: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probs of the batch's tokens under `model`, and its values when `values`."""
        model.eval()
        shape = (len(batch.input_ids), batch.width - 1)
        logprobs = all_values = None
        for rows in self.micro_batches(torch.arange(shape[0]), batch, max_rows=SCORING_ROWS):
            rows = rows.to(self.device)
            (row_logprobs, _), row_values = self.forward(model, batch, rows, values)
            if logprobs is None:
                logprobs = row_logprobs.new_zeros(shape)
                all_values = row_values.new_zeros(shape) if values else None
            logprobs[rows] = row_logprobs
            if all_values is not None:
                all_values[rows] = row_values
        assert logprobs is not None
        return logprobs, all_values


def score_episodes(episodes: Sequence[Episode], scorer: Scorer, pad_id: int) -> TrainBatch:
    """The episodes as a TrainBatch with every score the update needs."""
    algorithm = scorer.algorithm
    batch = TrainBatch.from_episodes(episodes, pad_id, scorer.device)
    batch.old_logprobs, batch.old_values = scorer.score(scorer.model, batch, values=scorer.value_head is not None)
    if scorer.reference is not None:
        batch.ref_logprobs = scorer.score(scorer.reference, batch)[0]
    action_mask = batch.action_mask.cpu()
    token_rewards = place_rewards(
        [[turn.end - 1 for turn in e.turns] for e in episodes],
        [[turn.reward for turn in e.turns] for e in episodes],
        batch.width - 1,
        action_mask=action_mask,
    )
    if batch.ref_logprobs is not None and algorithm.kl_in == "reward":
        # The rollout policy's KL to the reference, per action token, taken off the reward.
        batch.kl_tokens = kl_penalty(batch.old_logprobs, batch.ref_logprobs, algorithm.kl_kind, batch.action_mask)
        token_rewards = apply_kl_to_rewards(token_rewards, batch.kl_tokens.cpu(), action_mask, algorithm.kl_coef)
    advantages, returns = compute_advantages(
        algorithm.estimator,
        token_rewards,
        action_mask,
        group_ids=batch.group_ids,
        values=batch.old_values.cpu() if batch.old_values is not None else None,
        gamma=algorithm.gamma,
        lam=algorithm.lam,
    )
    if batch.old_values is not None:
        advantages = masked_whiten(advantages, action_mask)  # PPO's per-batch normalisation
    batch.advantages, batch.returns = advantages.to(scorer.device), returns.to(scorer.device)
    return batch


class LMHeadError(ValueError):
    """The model's logits are not its LM head's output: the update could not train it."""


def check_lm_head(model: Any) -> None:
    """The update applies the LM head itself, to the trunk's final hidden states at action
    positions only. A model whose forward changes its logits after the head (soft-capping,
    scaling) would be trained on other log-probs than it samples from: refuse it."""
    if model.get_output_embeddings() is None:
        raise LMHeadError(f"{type(model).__name__} has no LM head (get_output_embeddings); the trainer needs a causal LM")
    probe = torch.arange(4, device=model.device).unsqueeze(0)
    with torch.no_grad():
        inputs = {"input_ids": probe, "attention_mask": torch.ones_like(probe), "use_cache": False}
        logits = model(**inputs).logits
        ours = model.get_output_embeddings()(model.base_model(**inputs).last_hidden_state)
    if not torch.allclose(logits, ours, rtol=1e-4, atol=1e-4):
        raise LMHeadError(
            f"{type(model).__name__} changes its logits after the LM head (e.g. soft-capping or scaling); "
            "the trainer computes log-probs from the LM head's output and cannot train it"
        )
