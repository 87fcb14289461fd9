"""The update's memory: micro-batches give the same optimizer step as the whole minibatch, the LM
head on action positions gives the full logits' log-probs, and the update's memory follows the
micro-batch, not the batch."""

from __future__ import annotations

import copy

import pytest
import torch

from gymwire.trainers.train.config import TrainConfigError, TrainConfig
from gymwire.trainers.train.losses import entropy_from_logits, lm_head_logprobs, token_logprobs
from gymwire.trainers.policy import Sampling
from gymwire.trainers.episode import EnvTask
from gymwire.trainers.train.rollout import play_settings
from gymwire.trainers.train.scoring import TrainBatch, pack_micro_batches
from gymwire.trainers.train.trainer import Trainer
from tensor_memory import TensorMemory, synthetic_episodes


def config(tmp_path, model: dict | None = None, **algorithm) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "seed": 0,
            "output_dir": str(tmp_path / "run"),
            "model": model or {"path": str(tmp_path / "model"), "tiny": {"numbers": 10, "corpus_episodes": 4}, "threads": 1},
            "env": {"name": "guess", "options": {"low": 1, "high": 7}, "instructions": False},
            "horizon": 3,
            "rollout": {"tasks_per_step": 4, "group_size": 4, "turn_tokens": 2, "episode_tokens": 96, "temperature": 0.8},
            "algorithm": {"lr": 3e-3, **algorithm},
            "train": {"steps": 1, "progress": False},
        }
    )


def play(trainer: Trainer, count: int) -> list:
    settings = play_settings(trainer.config, 3, Sampling(trainer.config.rollout.temperature))
    tasks = [EnvTask(trainer.env_name, "train", i % 3) for i in range(count)]
    return trainer.rollouts.collect(trainer.policy, trainer.chat, tasks, settings, groups=[i % 3 for i in range(count)])


def test_rows_are_packed_by_padded_tokens_longest_first():
    lengths = [5, 9, 3, 9, 4, 8]
    assert pack_micro_batches([0, 1, 2, 3, 4, 5], lengths, None, None) == [[0, 1, 2, 3, 4, 5]]
    # 2 x 9 = 18 <= 20; then 8 + 5 + 4 (2 x 8 = 16, 3 x 8 = 24 > 20 ends it), then 4 and 3
    assert pack_micro_batches([0, 1, 2, 3, 4, 5], lengths, 20, None) == [[1, 3], [5, 0], [4, 2]]
    assert pack_micro_batches([0, 1, 2, 3, 4, 5], lengths, None, 4) == [[1, 3, 5, 0], [4, 2]]
    assert pack_micro_batches([2, 1], lengths, 5, None) == [[1], [2]]  # a row over the budget goes alone


@pytest.mark.parametrize(
    "algorithm",
    [
        {"estimator": "grpo", "loss_agg": "token-mean"},
        {"estimator": "grpo", "loss_agg": "seq-mean-token-mean", "kl_coef": 0.1, "kl_kind": "k3"},
        {"estimator": "gae", "loss_agg": "seq-mean-token-sum"},
        {"estimator": "gae", "loss_agg": "token-mean", "kl_coef": 0.1, "kl_in": "reward"},
    ],
    ids=lambda a: f"{a['estimator']}-{a['loss_agg']}" + ("-kl" if "kl_coef" in a else ""),
)
def test_micro_batched_update_equals_the_whole_minibatch_update(tmp_path, algorithm):
    """Loss, stats, the last minibatch's gradients and the parameters after two optimizer steps
    (2 minibatches of 6) are those of the unsplit update, for micro-batches of uneven sizes."""
    with Trainer(config(tmp_path, minibatches=2, entropy_coef=0.05, **algorithm)) as trainer:
        # float64 so the only differences left are those of summation order.
        trainer.model.double()
        for module in (trainer.value_head, trainer.reference):
            if module is not None:
                module.double()
        episodes = play(trainer, 12)
        batch = TrainBatch.from_episodes(episodes, trainer.tokenizer.pad_token_id, trainer.device)
        start = copy.deepcopy((trainer.model.state_dict(), trainer.optimizer.state_dict()))
        start_head = copy.deepcopy(trainer.value_head.state_dict()) if trainer.value_head is not None else None
        budget = 3 * sorted(batch.lengths)[6]  # 3 rows of the shorter half, fewer of the longer

        def update(**knobs):
            trainer.model.load_state_dict(start[0])
            trainer.optimizer.load_state_dict(start[1])
            if start_head is not None:
                trainer.value_head.load_state_dict(start_head)
            for key, value in knobs.items():
                setattr(trainer.config.algorithm, key, value)
            torch.manual_seed(1)
            stats = trainer.update(episodes)
            grads = [p.grad.clone() for p in trainer.trained_parameters]
            return stats, grads, [p.detach().clone() for p in trainer.trained_parameters]

        whole = update(micro_batch_tokens=None, micro_batch_rows=None)
        by_rows = update(micro_batch_rows=4)
        row_sizes = [len(m) for m in trainer.scorer.micro_batches(torch.arange(6), batch)]
        by_tokens = update(micro_batch_tokens=budget, micro_batch_rows=None)
        token_sizes = [len(m) for m in trainer.scorer.micro_batches(torch.arange(12), batch)]
    assert row_sizes == [4, 2] and len(token_sizes) >= 4 and len(set(token_sizes)) > 1, (row_sizes, token_sizes)
    for split in (by_rows, by_tokens):
        assert split[0].keys() == whole[0].keys()
        for key, value in whole[0].items():
            assert split[0][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        for expected, got in zip(whole[1], split[1]):
            torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
        for expected, got in zip(whole[2], split[2]):
            torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    assert whole[0]["loss"] != 0 and any(g.abs().sum() > 0 for g in whole[1])


def _llama_checkpoint(tmp_path, tokenizer) -> str:
    """A tiny random Llama (SmolLM2's architecture) with the tiny model's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
        )
    )
    path = tmp_path / "llama"
    llama.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_log_probs_from_action_hidden_states_equal_the_full_logits(tmp_path):
    """GPT-2 (the tiny model) and Llama: log-probs and entropies of the LM head applied to the
    action positions' hidden states are those of the model's own full logits, and log-probs are
    what the rollout sampled with."""
    with Trainer(config(tmp_path)) as trainer:
        llama = _llama_checkpoint(tmp_path, trainer.tokenizer)
    for name, path in (("gpt2", str(tmp_path / "model")), ("llama", llama)):
        with Trainer(config(tmp_path / name, model={"path": path, "threads": 1})) as trainer:
            episodes = play(trainer, 6)
            batch = TrainBatch.from_episodes(episodes, trainer.tokenizer.pad_token_id, trainer.device)
            rows = torch.arange(6)
            (logprobs, entropies), _ = trainer.scorer.forward(trainer.model, batch, rows)
            scored, _ = trainer.scorer.score(trainer.model, batch)
            with torch.no_grad():
                logits = trainer.model(input_ids=batch.input_ids, attention_mask=batch.attention).logits[:, :-1] / 0.8
        mask = batch.action_mask != 0
        assert mask.sum() > 6
        torch.testing.assert_close(logprobs[mask], token_logprobs(logits, batch.labels)[mask], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(entropies[mask], entropy_from_logits(logits)[mask], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(scored, logprobs.detach())
        assert torch.all(logprobs[~mask] == 0) and torch.all(entropies[~mask] == 0)
        sampled = torch.tensor([lp for e in episodes for lp, trained in zip(e.logprobs[1:], e.loss_mask[1:]) if trained])
        rows_tokens = torch.cat([scored[row][mask[row]] for row in range(6)])
        torch.testing.assert_close(rows_tokens, sampled, rtol=1e-4, atol=1e-4)


def test_chunked_lm_head_matches_log_softmax_and_its_gradient():
    """Many chunks (3 positions each), recomputed in backward: the log-softmax's values and gradients."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=False).double()
    hidden = torch.randn(10, 8, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (10,))
    logprobs, entropies = lm_head_logprobs(hidden, labels, head, temperature=0.7, chunk_elements=33)
    logits = head(hidden) / 0.7
    reference = torch.log_softmax(logits, -1).gather(-1, labels[:, None]).squeeze(-1)
    reference_entropy = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(logprobs, reference)
    torch.testing.assert_close(entropies, reference_entropy)
    ours = torch.autograd.grad((logprobs + 0.3 * entropies).sum(), [hidden, head.weight])
    theirs = torch.autograd.grad((reference + 0.3 * reference_entropy).sum(), [hidden, head.weight])
    for got, expected in zip(ours, theirs):
        torch.testing.assert_close(got, expected)


def test_update_memory_follows_the_micro_batch_not_the_batch(tmp_path):
    """Peak bytes of the tensors of one update (synthetic 96-token episodes): a batch of 64 in
    micro-batches of 8 needs about what a batch of 8 does, far less than 64 at once."""
    with Trainer(config(tmp_path, model={"path": str(tmp_path / "model"), "tiny": {"numbers": 10, "n_embd": 128, "corpus_episodes": 4}})) as trainer:
        vocabulary = len(trainer.tokenizer)

        def peak(rows: int, micro_rows: int) -> int:
            trainer.config.algorithm.micro_batch_rows = micro_rows
            episodes = synthetic_episodes(rows, 96, vocabulary)
            trainer.update(episodes)  # the optimizer's state exists before the measured update
            with TensorMemory() as memory:
                trainer.update(episodes)
            return memory.peak

        whole, micro, small = peak(64, 64), peak(64, 8), peak(8, 8)
        tokens = trainer.config.algorithm
        tokens.micro_batch_rows, tokens.micro_batch_tokens = None, 8 * 96
        by_tokens = peak(64, None)
    assert micro < 0.3 * whole
    assert micro < 1.5 * small and by_tokens < 1.5 * small


def test_gradient_checkpointing_trains_the_same_and_micro_batch_knobs_are_checked(tmp_path):
    episodes = synthetic_episodes(8, 48, 20)
    results = []
    for checkpointing in (False, True):
        model = {"path": str(tmp_path / "model"), "tiny": {"numbers": 10, "corpus_episodes": 4}, "gradient_checkpointing": checkpointing}
        with Trainer(config(tmp_path / str(checkpointing), model=model)) as trainer:
            torch.manual_seed(0)
            results.append(trainer.update(episodes))
            assert any(getattr(m, "gradient_checkpointing", False) for m in trainer.model.modules()) is checkpointing
    for key, value in results[0].items():
        assert results[1][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    for knob in ("micro_batch_tokens", "micro_batch_rows"):
        with pytest.raises(TrainConfigError, match=f"algorithm.{knob} must be a whole number >= 1, or null"):
            config(tmp_path, **{knob: 0})


def test_episodes_without_action_tokens_make_micro_batches_that_add_nothing(tmp_path):
    """Episodes that never acted (e.g. their session failed to open), each alone in a micro-batch:
    the update runs (a loss with nothing to differentiate) and is the one without splitting."""
    episodes = synthetic_episodes(8, 48, 20)
    for episode in episodes[:3]:
        episode.loss_mask = [0] * len(episode.tokens)
        episode.turns = []
    results = []
    with Trainer(config(tmp_path)) as trainer:
        start = copy.deepcopy((trainer.model.state_dict(), trainer.optimizer.state_dict()))
        for rows in (None, 1):
            trainer.model.load_state_dict(start[0])
            trainer.optimizer.load_state_dict(start[1])
            trainer.config.algorithm.micro_batch_rows = rows
            torch.manual_seed(0)
            results.append(trainer.update(episodes))
    for key, value in results[0].items():
        assert results[1][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
