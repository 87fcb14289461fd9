"""The trainer as a user runs it: output folders, resume, errors, signals, progress, step timeouts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from gymwire.sdk.cli import main
from gymwire.sdk.server import GymServer
from gymwire.trainers.train.config import TrainConfigError
from gymwire.trainers.train.bookkeeping import ResumeError, TrainingStopped, checkpoints, latest_checkpoint
from gymwire.trainers.train.trainer import Trainer
from test_train import play, run, tiny_config
from trainer_envs import CoinEnv, HangingCoinEnv


def write_config(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(tiny_config(tmp_path, **sections).to_dict()))  # JSON is YAML
    return path


def metric_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_new_run_refuses_a_previous_runs_folder_unless_told_to_overwrite(tmp_path, capsys):
    path = write_config(tmp_path, train={"steps": 2, "checkpoint_every": 1, "keep_checkpoints": 5})
    assert main(["train", str(path)]) == 0
    capsys.readouterr()
    assert main(["train", str(path), "--steps", "1"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "holds a previous run" in error and "--overwrite" in error
    assert metric_steps(tmp_path / "run") == [1, 2]  # untouched

    assert main(["train", str(path), "--steps", "1", "--overwrite"]) == 0
    assert metric_steps(tmp_path / "run") == [1]
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["step-000001"]
    assert len(list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert (tmp_path / "model" / "config.json").exists()  # not part of the run: kept


def test_checkpoints_are_ordered_by_step_number_not_by_name(tmp_path):
    for step in (999_999, 1_000_000, 20):
        folder = tmp_path / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.pt").write_bytes(b"")
    (tmp_path / "checkpoints" / "step-2000000").mkdir()  # an interrupted save: no state file
    assert [p.name for p in checkpoints(tmp_path)] == ["step-000020", "step-999999", "step-1000000"]
    assert latest_checkpoint(tmp_path).name == "step-1000000"


def test_resume_without_a_checkpoint_is_an_error_and_a_finished_run_says_so(tmp_path, capsys):
    path = write_config(tmp_path, train={"steps": 1})
    with pytest.raises(ResumeError, match="nothing to resume"):
        with Trainer(tiny_config(tmp_path, train={"resume": True})):
            pass
    assert main(["train", str(path), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()

    assert main(["train", str(path)]) == 0
    capsys.readouterr()
    assert main(["train", str(path), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "nothing to do: the run in" in out and "already completed 1 steps" in out and "done:" not in out


def test_configuration_mistakes_are_one_line_errors(tmp_path, capsys):
    unknown = write_config(tmp_path, env={"name": "nosuchenv"})
    assert main(["train", str(unknown)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "env.name: unknown environment 'nosuchenv'" in error

    no_model = write_config(tmp_path, model={"path": str(tmp_path / "missing"), "tiny": None})
    assert main(["train", str(no_model)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no Hugging Face checkpoint at" in error

    with GymServer([CoinEnv], port=0).run_in_thread() as url:
        remote = write_config(tmp_path, env={"name": "guess", "server": url})
        assert main(["train", str(remote)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "env.name:" in error and "coin" in error


def test_a_users_own_environment_class_trains_on_the_embedded_server(tmp_path, monkeypatch):
    (tmp_path / "mywordle.py").write_text(
        "from gymwire.servers.guess import GuessEnv\n\nclass Wordle(GuessEnv):\n    name = 'wordle'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    history = run(tiny_config(tmp_path, env={"name": "mywordle:Wordle"}, train={"steps": 1, "rollouts_every": 1}))
    assert history[0]["train/errors"] == 0.0
    episode = json.loads((tmp_path / "run" / "rollouts" / "step-000001.jsonl").read_text().splitlines()[0])
    assert episode["env"] == "wordle"


def test_a_server_lost_mid_training_checkpoints_the_last_step_then_stops(tmp_path, monkeypatch):
    serving = GymServer([CoinEnv], port=0).run_in_thread()
    url = serving.__enter__()
    running = True
    try:
        config = tiny_config(tmp_path, env={"name": "coin", "server": url, "options": {}}, horizon=1,
                             train={"steps": 5, "checkpoint_every": 0})
        with Trainer(config) as trainer:
            trainer.rollouts.client.reconnect_attempts = 1  # give up on the server at once, not after ~20 s
            train_step = trainer.train_step

            def step_then_lose_the_server():
                nonlocal running
                record = train_step()
                if trainer.step == 2:
                    serving.__exit__(None, None, None)
                    running = False
                return record

            monkeypatch.setattr(trainer, "train_step", step_then_lose_the_server)
            with pytest.raises(TrainingStopped) as stopped:
                trainer.train()
    finally:
        if running:
            serving.__exit__(None, None, None)
    assert "step 3 failed at the environment server: could not reconnect" in str(stopped.value) and "--resume" in str(stopped.value)
    assert stopped.value.checkpoint == latest_checkpoint(tmp_path / "run") and stopped.value.checkpoint.name == "step-000002"
    assert metric_steps(tmp_path / "run") == [1, 2]
    with GymServer([CoinEnv], port=0).run_in_thread() as new_url:
        config = tiny_config(tmp_path, env={"name": "coin", "server": new_url, "options": {}}, horizon=1,
                             train={"steps": 5, "resume": True})
        with Trainer(config) as trainer:
            assert trainer.step == 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_the_current_step_and_exits_cleanly(tmp_path, sig):
    path = write_config(tmp_path, train={"steps": 1000, "log_every": 1, "eval_tasks": 2})
    process = subprocess.Popen(
        [sys.executable, "-m", "gymwire.sdk.cli", "train", str(path), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = []
        for line in process.stdout:  # bounded: the run has 1000 steps and is stopped at step 2
            lines.append(line)
            if line.startswith("step 2:"):
                break
        process.send_signal(sig)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + sig.value, (out, err)
    message = err.strip().splitlines()[-1]
    assert "Traceback" not in err and message.startswith(f"gymwire train: stopped by {sig.name} after step ")
    stopped_at = int(message.split("after step ")[1].split(";")[0])
    assert stopped_at >= 2 and "continue with --resume" in message
    assert latest_checkpoint(tmp_path / "run").name == f"step-{stopped_at:06d}"
    assert metric_steps(tmp_path / "run") == list(range(1, stopped_at + 1))


@pytest.mark.parametrize("steps, log_every, printed", [(4, 2, ["step 2", "step 4"]), (11, None, ["step 10", "step 11"])])
def test_without_a_progress_bar_a_line_is_printed_every_log_every_steps(tmp_path, capsys, steps, log_every, printed):
    path = write_config(tmp_path, train={"steps": steps, "eval_every": 0, "log_every": log_every, "eval_tasks": 2})
    assert main(["train", str(path), "--no-progress"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == printed
    assert "eval success" not in lines[0] and "eval success" in lines[1]  # evaluated after the last step only


def test_the_progress_bar_keeps_the_last_evaluation(tmp_path, capsys):
    path = write_config(tmp_path, train={"steps": 4, "eval_every": 2, "progress": True})
    assert main(["train", str(path)]) == 0
    bar = capsys.readouterr().err
    states = [part for part in bar.replace("\n", "\r").split("\r") if "/4 [" in part]
    third = [state for state in states if " 3/4 [" in state]
    assert third and all("eval=" in state for state in third), states


def test_a_hung_environment_step_ends_its_episode_with_a_timeout(tmp_path):
    release = HangingCoinEnv.release = threading.Event()
    try:
        with GymServer([HangingCoinEnv], port=0).run_in_thread() as url:
            config = tiny_config(tmp_path, env={"name": "hanging-coin", "server": url, "options": {}, "step_timeout": 0.5},
                                 horizon=1)
            with Trainer(config) as trainer:
                # The hang ends by itself after 30 s, so that without a timeout this test fails rather than hangs.
                threading.Timer(30, release.set).start()
                started = time.monotonic()
                episodes = play(trainer, 8, turns=1)
                waited = time.monotonic() - started
                release.set()  # before the server stops: its thread finishes the step
    finally:
        release.set()
    hung, *fine = sorted(episodes, key=lambda e: e.task.index != HangingCoinEnv.hangs_on)
    assert hung.finish == "error" and "TIMEOUT" in hung.error and waited < 30
    assert all(e.finish == "terminated" and e.error is None for e in fine)


def test_step_timeout_must_be_positive(tmp_path):
    with pytest.raises(TrainConfigError, match="env.step_timeout must be > 0"):
        tiny_config(tmp_path, env={"step_timeout": 0})
