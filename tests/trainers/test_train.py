"""The reference trainer: a tiny model learns `guess` from the reward alone; resume is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gymwire.sdk.cli import main
from gymwire.trainers.config import ConfigError, TrainConfig, load_config
from gymwire.trainers.rollout import read_jsonl
from gymwire.trainers.policy import Sampling
from gymwire.trainers.rollout import EpisodeSpec
from gymwire.trainers.trainer import ResumeError, Trainer, _Batch, latest_checkpoint


def tiny_config(tmp_path, **sections) -> TrainConfig:
    data = {
        "seed": 0,
        "output_dir": str(tmp_path / "run"),
        "model": {"path": str(tmp_path / "model"), "tiny": {"numbers": 10, "corpus_episodes": 4}, "threads": 1},
        "env": {"name": "guess", "options": {"low": 1, "high": 7}, "instructions": False},
        "horizon": 3,
        "rollout": {"tasks_per_step": 4, "group_size": 4, "turn_tokens": 2, "episode_tokens": 96},
        "algorithm": {"lr": 3e-3},
        "train": {"steps": 4, "eval_tasks": 8, "progress": False, "rollouts_every": 1},
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(data.get(name), dict):
            data[name].update(values)
        else:
            data[name] = values
    return TrainConfig.from_dict(data)


def run(config: TrainConfig) -> list[dict]:
    with Trainer(config) as trainer:
        return trainer.train()


def test_resume_at_a_stage_boundary_repeats_the_uninterrupted_run_exactly(tmp_path):
    staged = {"kind": "staged", "stages": [2, 3], "stage_steps": 2}
    straight = run(tiny_config(tmp_path / "straight", horizon=staged, train={"checkpoint_every": 2}))

    first = tiny_config(tmp_path / "split", horizon=staged, train={"steps": 2})
    run(first)
    assert latest_checkpoint(first.output_dir).name == "step-000002"
    second = tiny_config(tmp_path / "split", horizon=staged, train={"resume": True})
    with Trainer(second) as trainer:
        assert trainer.step == 2 and trainer.horizon.turns_at(trainer.step + 1) == 3
        resumed = trainer.train()

    assert [r["step"] for r in resumed] == [3, 4]
    assert [r["train/horizon"] for r in straight] == [2, 2, 3, 3]
    episodes = read_jsonl(tmp_path / "split" / "run" / "rollouts" / "step-000003.jsonl")
    assert {e.max_turns for e in episodes} == {3} and max(len(e.turns) for e in episodes) <= 3
    for expected, got in zip(straight[2:], resumed):
        for key in ("train/loss", "train/pg_loss", "train/entropy", "train/success", "train/reward", "train/horizon"):
            assert got[key] == expected[key], key
    assert read_jsonl(tmp_path / "straight" / "run" / "rollouts" / "step-000004.jsonl") == read_jsonl(
        tmp_path / "split" / "run" / "rollouts" / "step-000004.jsonl"
    )
    metrics = (tmp_path / "split" / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [1, 2, 3, 4]


def test_the_update_scores_exactly_the_tokens_the_rollout_sampled(tmp_path):
    config = tiny_config(tmp_path, rollout={"temperature": 0.7, "turn_tokens": 3})
    with Trainer(config) as trainer:
        settings = trainer._settings(3, Sampling(0.7))
        episodes = trainer.rollouts.collect(trainer.policy, trainer.chat, [EpisodeSpec("train", i) for i in range(6)], settings)
        batch = _Batch(episodes, trainer.tokenizer.pad_token_id, trainer.device)
        logprobs = trainer._logprobs(trainer.model, batch)
    for row, episode in enumerate(episodes):
        # Position t of the batch scores token t + 1 of the episode.
        positions = [t for t, trained in enumerate(episode.loss_mask) if trained]
        assert positions and batch.action_mask[row].nonzero().squeeze(-1).add(1).tolist() == positions
        recomputed = [logprobs[row, t - 1].item() for t in positions]
        assert recomputed == pytest.approx([episode.logprobs[t] for t in positions], abs=1e-4)


def test_resume_refuses_a_changed_schedule(tmp_path):
    run(tiny_config(tmp_path, horizon="staged:2,3@2", train={"steps": 1}))
    with pytest.raises(ResumeError, match="same schedule"):
        with Trainer(tiny_config(tmp_path, horizon="staged:2,3@5", train={"resume": True})):
            pass


def test_train_command_runs_from_a_yaml_config(tmp_path, capsys):
    config = tiny_config(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config.to_dict()))  # JSON is YAML
    assert main(["train", str(path), "--steps", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "eval success" in out and "done: 1 steps" in out
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    for key in ("train/success", "train/reward", "train/turns", "train/horizon", "train/kl", "train/entropy",
                "train/loss", "train/tokens_per_s", "eval/success"):
        assert key in record
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert latest_checkpoint(tmp_path / "run") is not None


def test_bad_configs_are_refused_with_the_key_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("env: {name: guess}\nmodel: {path: m}\nalgorithm: {estimator: gae}\n")
    with pytest.raises(ConfigError, match="critic"):
        load_config(path)
    assert main(["train", str(path)]) == 2
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stepz'\] in train"):
        tiny_config(tmp_path, train={"stepz": 3})
    with pytest.raises(ConfigError, match="algorithm.lr must be float"):
        tiny_config(tmp_path, algorithm={"lr": "fast"})
    assert tiny_config(tmp_path, algorithm={"lr": "1e-3"}).algorithm.lr == 1e-3  # YAML 1.1 reads 1e-3 as text


def test_tiny_model_learns_guess_from_the_reward(tmp_path):
    """The README's example config, shortened: the reward alone takes a random model well past chance."""
    example = Path(__file__).resolve().parents[2] / "examples" / "guess-tiny.yaml"
    config = load_config(
        example,
        {
            "output_dir": str(tmp_path / "run"),
            "model.path": str(tmp_path / "model"),
            "train.steps": 75,
            "train.eval_every": 0,
            "train.checkpoint_every": 0,
            "train.rollouts_every": 0,
            "train.progress": False,
        },
    )
    history = run(config)
    chance = 1 - (6 / 7) ** 3  # guessing uniformly at random in 1..7 for 3 turns: 0.37
    assert history[0]["train/success"] < chance
    assert history[-1]["eval/success"] >= chance + 0.25
