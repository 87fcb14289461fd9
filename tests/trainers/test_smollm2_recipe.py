"""The SmolLM2 recipe: its example configs validate, `model.path: smollm2` (or a .gguf file) is
prepared once into a cached checkpoint the trainer loads, and bench/learn.py records the test
success before and after training (on the tiny model: SmolLM2 is too slow to train in CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoConfig

from gymwire.sdk.cli import main
from gymwire.servers.textcraft import TextCraftEnv
from gymwire.trainers.train.config import load_config
from gymwire.trainers.models.local import CACHE_ENV_VAR, ModelError, checkpoint_folder, model_file

ROOT = Path(__file__).resolve().parents[2]


def test_the_smollm2_examples_validate_and_match_the_recipe():
    guess = load_config(ROOT / "examples/smollm2-guess.yaml")
    assert guess.model.path == "smollm2" and guess.model.tiny is None
    assert guess.env.options == {"low": 1, "high": 15, "show_range": True} and guess.horizon == 6
    assert (guess.rollout.tasks_per_step, guess.rollout.group_size, guess.rollout.turn_tokens) == (16, 8, 48)
    assert guess.train.eval_tasks == 100 and guess.train.eval_temperature == 0

    textcraft = load_config(ROOT / "examples/smollm2-textcraft.yaml")
    assert textcraft.model.path == "smollm2" and textcraft.env.options == {"depth": 1}
    # The test split is ordered by depth: its first eval_tasks tasks are exactly the depth-1 goals.
    first, last = TextCraftEnv.info().metadata["depth_index_ranges"]["test"]["1"]
    assert (first, last + 1) == (0, textcraft.train.eval_tasks)


def test_a_known_models_name_is_prepared_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    folder = checkpoint_folder("smollm2")
    assert folder.parent == tmp_path / "cache"
    config = AutoConfig.from_pretrained(folder)
    assert config.num_hidden_layers == 30 and not hasattr(config, "quantization_config")
    assert (folder / "chat_template.jinja").exists() or "chat_template" in (folder / "tokenizer_config.json").read_text()
    written = (folder / "model.safetensors").stat().st_mtime_ns
    # Again by name, and by the GGUF's path (the cache is keyed by content): no second conversion.
    assert checkpoint_folder("smollm2") == folder == checkpoint_folder(str(model_file("smollm2")))
    assert (folder / "model.safetensors").stat().st_mtime_ns == written
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # no partial folder left
    assert checkpoint_folder(str(folder)) == folder  # a checkpoint folder is taken as it is


def test_a_missing_gguf_is_a_one_line_config_error(tmp_path, capsys):
    config = tmp_path / "missing.yaml"
    config.write_text(json.dumps({"env": {"name": "guess"}, "model": {"path": str(tmp_path / "nothing.gguf")},
                                  "output_dir": str(tmp_path / "run")}))
    assert main(["train", str(config)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "model.path:" in error and "nothing.gguf" in error
    with pytest.raises(ModelError):
        checkpoint_folder(str(tmp_path / "nothing.gguf"))


def learn(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "bench/learn.py"), str(ROOT / "examples/guess-tiny.yaml"),
               "--output-dir", str(tmp_path / "run"), "--set", f"model.path={tmp_path / 'model'}",
               "--set", "rollout.tasks_per_step=2", "--set", "train.eval_tasks=8", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)


def test_learn_records_the_evaluation_before_training_as_step_0(tmp_path):
    result = learn(tmp_path, "--steps", "2", "--set", "train.eval_every=1")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    assert "train/success" not in records[0] and all("eval/success" in r for r in records)
    summary = json.loads((tmp_path / "run/learn.json").read_text())
    assert summary["before"]["success"] == records[0]["eval/success"]
    assert summary["after"]["success"] == records[-1]["eval/success"] and summary["steps"] == 2
    assert "test success" in result.stdout and not summary["stopped_by_time_limit"]


def test_learn_refuses_a_time_limit_that_leaves_no_time_to_train(tmp_path):
    result = learn(tmp_path, "--steps", "2", "--time-limit", "0.001")
    assert result.returncode == 1 and "leaves no time to train" in result.stderr


def test_gpu_check_dry_run_validates_every_run_it_would_start(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_DRY": "1", "GPU_CHECK_WORK": str(tmp_path / "work")}
    result = subprocess.run(["bash", str(ROOT / "bench/gpu_check.sh"), "all"], capture_output=True, text=True,
                            timeout=300, check=False, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("smollm2-guess", "smollm2-textcraft"):
        assert f"learn: examples/{name}.yaml is valid" in result.stdout
    assert "failed: none" in (tmp_path / "out/gpu_check.log").read_text()

    usage = subprocess.run(["bash", str(ROOT / "bench/gpu_check.sh"), "train"], capture_output=True, text=True, check=False)
    assert usage.returncode == 2 and "usage: bash bench/gpu_check.sh bench|learn|all" in usage.stderr
    for script in ("gpu_check.sh", "gpu_wheels.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "bench" / script)], check=False).returncode == 0
