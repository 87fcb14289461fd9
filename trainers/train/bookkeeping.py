"""The trainer's bookkeeping: the run's folder, checkpoints and resume, the metrics log, when to
evaluate / checkpoint / print, and stopping on a signal.

    output_dir/config.json      the run's configuration
    output_dir/metrics.jsonl    one record per step (also in tensorboard/)
    output_dir/rollouts/        a step's episodes every train.rollouts_every steps
    output_dir/checkpoints/step-N/   model, tokenizer and trainer_state.pt (optimizer, RNG states,
                                     horizon, value head), the state file written last
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from gymwire.sdk.errors import UserError

__all__ = [
    "STATE_FILE",
    "RUN_FILES",
    "ResumeError",
    "TrainingStopped",
    "checkpoints",
    "latest_checkpoint",
    "checkpoint_step",
    "previous_run_files",
    "save_checkpoint",
    "load_state",
    "MetricsLog",
    "StopOnSignal",
    "due",
    "summary_line",
    "resume_hint",
]

STATE_FILE = "trainer_state.pt"
# What a run writes into output_dir; `overwrite` deletes these and nothing else (the tiny model is
# often built inside output_dir, and output_dir may be a folder holding other things).
RUN_FILES = ("config.json", "metrics.jsonl", "tensorboard", "rollouts", "checkpoints")


class ResumeError(UserError, RuntimeError):
    """A checkpoint cannot continue this run."""


class TrainingStopped(RuntimeError):
    """Training stopped before `train.steps`: a signal, or the environment server went away. The
    last completed step is checkpointed (`checkpoint`, None when no step completed)."""

    def __init__(self, message: str, checkpoint: Path | None, exit_code: int):
        super().__init__(message)
        self.checkpoint = checkpoint
        self.exit_code = exit_code


def checkpoint_step(path: Path) -> int:
    # By number: names sort wrongly past step-999999.
    return int(path.name.removeprefix("step-"))


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The complete checkpoints (their state file written) of a run, oldest step first."""
    found = [state.parent for state in Path(output_dir, "checkpoints").glob("step-*/" + STATE_FILE)]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def previous_run_files(output_dir: Path) -> list[Path]:
    """What a previous run left in `output_dir` (RUN_FILES that exist)."""
    return [output_dir / name for name in RUN_FILES if (output_dir / name).exists()]


def save_checkpoint(output_dir: Path, step: int, model: Any, tokenizer: Any, state: dict[str, Any], keep: int) -> Path:
    """Model, tokenizer and the trainer's `state` under checkpoints/step-N; only the `keep` newest
    checkpoints stay."""
    path = output_dir / "checkpoints" / f"step-{step:06d}"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    # Written last: a folder without it is an interrupted save and is never resumed from.
    torch.save(state, path / STATE_FILE)
    for old in checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old)
    return path


def load_state(path: Path) -> dict[str, Any]:
    return torch.load(path / STATE_FILE, weights_only=False)


class MetricsLog:
    """One record per step into metrics.jsonl and TensorBoard. Opened on a resumed run, records
    of steps after `step` (the checkpoint's) are dropped: the resumed run replays them."""

    def __init__(self, output_dir: Path, step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.path = output_dir / "metrics.jsonl"
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=step + 1)

    def write(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if key != "step":
                self.writer.add_scalar(key, value, record["step"])
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def due(step: int, every: int, last: int) -> bool:
    """Every `every` steps (0: never) and at the last one."""
    return step == last or (every > 0 and step % every == 0)


def summary_line(record: dict[str, Any], last_eval: float | None) -> str:
    if "eval/success" in record:
        evaluation = f"eval success {record['eval/success']:.3f}, "
    else:
        evaluation = "" if last_eval is None else f"(last eval success {last_eval:.3f}), "
    return (
        f"step {record['step']}: train success {record['train/success']:.3f} at {record['train/horizon']} turns, "
        f"{evaluation}loss {record['train/loss']:.4f}, "
        f"entropy {record['train/entropy']:.3f}, {record['train/tokens_per_s']:.0f} tokens/s"
    )


def resume_hint(checkpoint: Path | None) -> str:
    if checkpoint is None:
        return "no step completed, so nothing was checkpointed"
    return f"checkpoint in {checkpoint}; continue with --resume"


class StopOnSignal:
    """While training: SIGTERM or the first Ctrl-C asks to stop after the current step (`signal`
    says which); a second Ctrl-C interrupts at once. Signals can only be caught in the main thread:
    elsewhere this does nothing."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, number: int, frame: Any) -> None:
        if self.signal is signal.SIGINT and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(number)
        print(f"\n{self.signal.name}: stopping after this step and checkpointing it (Ctrl-C again to quit now)", flush=True)
