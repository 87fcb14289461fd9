"""The trainer's stages alone: rollout (which tasks), scoring (episodes as a TrainBatch), the
update's maths (a pure function of tensors) and bookkeeping (checkpoints, metrics, cadence)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from gymwire.trainers.train.bookkeeping import (
    STATE_FILE,
    MetricsLog,
    checkpoints,
    due,
    latest_checkpoint,
    save_checkpoint,
    summary_line,
)
from gymwire.trainers.train.config import AlgorithmSection
from gymwire.trainers.episode import EnvTask, Episode, Turn
from gymwire.trainers.train.losses import kl_loss, value_loss
from gymwire.trainers.train.rollout import draw_tasks, episode_stats
from gymwire.trainers.train.scoring import TrainBatch
from gymwire.trainers.train.update import explained_variance, update_loss


def test_draw_tasks_gives_each_task_a_group_of_episodes_and_repeats_with_the_seed():
    tasks, groups = draw_tasks(random.Random(5), "guess", "train", 1000, tasks_per_step=3, group_size=4)
    again, _ = draw_tasks(random.Random(5), "guess", "train", 1000, tasks_per_step=3, group_size=4)
    assert tasks == again and groups == [0] * 4 + [1] * 4 + [2] * 4
    assert all(t.env == "guess" and t.split == "train" for t in tasks)
    assert [len({tasks[i].index for i in range(g * 4, g * 4 + 4)}) for g in range(3)] == [1, 1, 1]
    rng = random.Random(5)
    assert [tasks[g * 4].index for g in range(3)] == [rng.randrange(1000) for _ in range(3)]


def episode(tokens: list[int], mask: list[int], rewards: list[float], group: int, error: str | None = None) -> Episode:
    ends = [t for t, m in enumerate(mask) if m and (t + 1 == len(mask) or not mask[t + 1])]
    turns = [Turn("a", "o", reward, end, end) for reward, end in zip(rewards, ends)]
    return Episode(EnvTask("e", "train", 0), group=group, tokens=tokens, loss_mask=mask, logprobs=[0.0] * len(tokens),
                   turns=turns, success=sum(rewards) > 0, error=error)


def test_episode_stats_are_means_over_the_episodes():
    episodes = [episode([1, 2, 3, 4], [0, 1, 0, 1], [0.0, 1.0], 0), episode([1, 2], [0, 1], [0.0], 0, error="boom")]
    assert episode_stats(episodes) == {"success": 0.5, "reward": 0.5, "turns": 1.5, "generated_tokens": 1.5, "errors": 0.5}


def test_a_train_batch_shifts_labels_and_action_mask_by_one_and_pads():
    episodes = [episode([5, 6, 7, 8], [0, 0, 1, 1], [1.0], 3), episode([9, 10], [0, 1], [0.0], 4)]
    batch = TrainBatch.from_episodes(episodes, pad_id=0, device=torch.device("cpu"))
    assert batch.input_ids.tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]]
    assert batch.attention.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    # Position t predicts token t + 1.
    assert batch.labels.tolist() == [[6, 7, 8], [10, -100, -100]]
    assert batch.action_mask.tolist() == [[0, 1, 1], [1, 0, 0]]
    assert (batch.lengths, batch.group_ids, batch.width) == ([4, 2], [3, 4], 4)


ALGORITHM = AlgorithmSection(clip_low=0.2, clip_high=0.2, entropy_coef=0.1, kl_coef=0.5, kl_kind="k3", vf_coef=0.5, value_clip=None)


def test_update_loss_on_policy_is_minus_the_mean_advantage_minus_the_entropy_bonus():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]], dtype=torch.float64, requires_grad=True)
    entropies = torch.tensor([[1.0, 2.0, 0.0], [4.0, 9.0, 9.0]], dtype=torch.float64)
    advantages = torch.tensor([[1.0, 2.0, 3.0], [-1.0, -1.0, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    loss, stats = update_loss(ALGORITHM, logprobs, entropies, mask, logprobs.detach(), advantages, token_share=1.0, unit_share=1.0)
    entropy = (1 + 2 + 0 + 4) / 4
    assert loss.item() == pytest.approx(-(1 + 2 + 3 - 1) / 4 - 0.1 * entropy)
    assert stats["entropy"] == pytest.approx(entropy) and stats["kl"] == stats["approx_kl"] == 0.0
    # A micro-batch's share scales every term and figure.
    half, half_stats = update_loss(ALGORITHM, logprobs, entropies, mask, logprobs.detach(), advantages, token_share=0.5, unit_share=0.5)
    assert half.item() == pytest.approx(loss.item() / 2) and half_stats["entropy"] == pytest.approx(entropy / 2)
    loss.backward()
    assert torch.all(logprobs.grad[mask == 0] == 0)


def test_update_loss_adds_the_reference_kl_unless_it_is_on_the_reward_and_the_value_loss():
    logprobs = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.5, -1.0]], dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.long)
    zeros = torch.zeros(1, 2, dtype=torch.float64)
    values, returns = torch.tensor([[0.5, 0.0]], dtype=torch.float64), torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    base, _ = update_loss(ALGORITHM, logprobs, zeros, mask, logprobs, zeros, token_share=1.0, unit_share=1.0)
    with_kl, stats = update_loss(ALGORITHM, logprobs, zeros, mask, logprobs, zeros, token_share=1.0, unit_share=1.0, ref_logprobs=ref)
    kl = kl_loss(logprobs, ref, mask, kind="k3")
    assert with_kl.item() == pytest.approx(base.item() + 0.5 * kl.item()) and stats["kl"] == pytest.approx(kl.item())
    on_reward, _ = update_loss(ALGORITHM, logprobs, zeros, mask, logprobs, zeros, token_share=1.0, unit_share=1.0,
                               ref_logprobs=ref, kl_in_reward=True)
    assert on_reward.item() == pytest.approx(base.item())
    critic, stats = update_loss(ALGORITHM, logprobs, zeros, mask, logprobs, zeros, token_share=1.0, unit_share=1.0,
                                values=values, old_values=values, returns=returns)
    expected, _ = value_loss(values, values, returns, mask, clip=None)
    assert critic.item() == pytest.approx(base.item() + 0.5 * expected.item()) and stats["value_loss"] == pytest.approx(expected.item())


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.ones(1, 4)
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(returns, 2.5), returns, mask) == pytest.approx(0.0)


def test_due_every_n_steps_and_at_the_last():
    assert [s for s in range(1, 11) if due(s, 4, 10)] == [4, 8, 10]
    assert [s for s in range(1, 11) if due(s, 0, 10)] == [10]


def test_summary_line():
    record = {"step": 3, "train/success": 0.5, "train/horizon": 4, "train/loss": 0.01234, "train/entropy": 1.5, "train/tokens_per_s": 99.6}
    assert summary_line(record, None) == "step 3: train success 0.500 at 4 turns, loss 0.0123, entropy 1.500, 100 tokens/s"
    assert "(last eval success 0.250)" in summary_line(record, 0.25)
    assert "eval success 0.750," in summary_line({**record, "eval/success": 0.75}, 0.25)


class Saving:
    """What save_checkpoint asks of a model and a tokenizer."""

    def save_pretrained(self, path):
        path.mkdir(parents=True, exist_ok=True)
        (path / f"{type(self).__name__}.txt").write_text("saved")


def test_checkpoints_keep_the_newest_and_a_folder_without_its_state_is_not_one(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, Saving(), Saving(), {"step": step}, keep=2)
    assert [p.name for p in checkpoints(tmp_path)] == ["step-000002", "step-000003"]
    (tmp_path / "checkpoints" / "step-000004").mkdir()  # a save cut short: no state file
    assert latest_checkpoint(tmp_path).name == "step-000003"
    assert torch.load(latest_checkpoint(tmp_path) / STATE_FILE) == {"step": 3}


def test_a_resumed_metrics_log_drops_the_steps_after_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path, step=0)
    for step in (1, 2, 3):
        log.write({"step": step, "train/loss": 0.1 * step})
    log.close()
    resumed = MetricsLog(tmp_path, step=2)
    resumed.write({"step": 3, "train/loss": 9.0})
    resumed.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["train/loss"]) for r in records] == [(1, 0.1), (2, 0.2), (3, 9.0)]
