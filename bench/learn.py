"""Does a model learn? Train a config with a greedy evaluation before the first step and after the
last, within a wall-clock budget; print test success before and after.

    python bench/learn.py examples/smollm2-guess.yaml --device cuda --time-limit 420
    python bench/learn.py examples/smollm2-guess.yaml --steps 3 --set rollout.tasks_per_step=2 ...

The evaluation before training goes into the run's metrics.jsonl as step 0 (the trainer itself
evaluates only after steps), so `bench/plot_curves.py` draws the whole curve from that file.
With --time-limit, training stops after the step in progress once the budget left would not cover
another evaluation (1.5 x the first one's time), as SIGTERM would stop it; the last step is then
evaluated. A JSON summary goes to OUTPUT_DIR/learn.json (or --summary).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

EVAL_MARGIN = 1.5  # reserve this many times the first evaluation's duration for the last one


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="training config, e.g. examples/smollm2-guess.yaml")
    parser.add_argument("--steps", type=int, help="override train.steps")
    parser.add_argument("--device", help="override model.device")
    parser.add_argument("--output-dir", help="override output_dir (a previous run there is overwritten)")
    parser.add_argument("--time-limit", type=float, help="seconds for the whole run, evaluations included")
    parser.add_argument("--summary", type=Path, help="where to write the JSON summary (default OUTPUT_DIR/learn.json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (as gymwire train --set)")
    parser.add_argument("--dry-run", action="store_true", help="only check the config and its overrides, and print the run's settings")
    args = parser.parse_args(argv)

    from gymwire.trainers.train.config import TrainConfigError, load_config, parse_assignments

    started = time.perf_counter()
    overrides: dict[str, Any] = {"train.overwrite": True, "train.progress": False}
    for key, value in (("train.steps", args.steps), ("model.device", args.device), ("output_dir", args.output_dir)):
        if value is not None:
            overrides[key] = value
    try:
        config = load_config(args.config, {**overrides, **parse_assignments(args.set)})
    except TrainConfigError as exc:
        print(f"learn: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        rollout = config.rollout
        print(
            f"learn: {args.config} is valid: {config.env.name} {config.env.options}, model {config.model.path}, "
            f"{config.train.steps} steps of {rollout.tasks_per_step} x {rollout.group_size} episodes, "
            f"horizon {config.horizon}, <= {rollout.turn_tokens} tokens a turn, evaluation on {config.train.eval_tasks} tasks"
        )
        return 0
    from gymwire.trainers.train.bookkeeping import TrainingStopped
    from gymwire.trainers.train.trainer import Trainer

    metrics = Path(config.output_dir) / "metrics.jsonl"
    with Trainer(config) as trainer:
        eval_started = time.perf_counter()
        before = trainer.evaluate()
        eval_seconds = time.perf_counter() - eval_started
        with metrics.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"step": 0, **{f"eval/{k}": v for k, v in before.items()}}) + "\n")
        print(f"before training: test success {before['success']:.3f} ({eval_seconds:.0f} s to evaluate)", flush=True)
        stopped_early = False
        if args.time_limit:
            budget = args.time_limit - (time.perf_counter() - started) - EVAL_MARGIN * eval_seconds
            if budget <= 0:
                print(f"learn: --time-limit {args.time_limit:g} s leaves no time to train", file=sys.stderr)
                return 1
            # The trainer finishes the step in progress on SIGTERM and checkpoints it.
            signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
            signal.setitimer(signal.ITIMER_REAL, budget)
        try:
            history = trainer.train()
        except TrainingStopped as exc:
            print(f"learn: {exc}", flush=True)
            history, stopped_early = trainer.history, True
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if history and "eval/success" in history[-1]:
            after = {k.removeprefix("eval/"): v for k, v in history[-1].items() if k.startswith("eval/")}
        else:  # stopped between evaluations: evaluate the last step's model
            after = trainer.evaluate()
            with metrics.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"step": trainer.step, **{f"eval/{k}": v for k, v in after.items()}}) + "\n")
    seconds = time.perf_counter() - started
    summary = {
        "config": str(args.config),
        "output_dir": config.output_dir,
        "device": str(trainer.device),
        "steps": trainer.step,
        "stopped_by_time_limit": stopped_early,
        "seconds": round(seconds, 1),
        "step_seconds": [round(r["train/step_s"], 2) for r in history],
        "before": before,
        "after": after,
        "gain": after["success"] - before["success"],
    }
    summary_path = args.summary or Path(config.output_dir) / "learn.json"
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=2))
    print(
        f"test success {before['success']:.3f} -> {after['success']:.3f} ({summary['gain']:+.3f}) after "
        f"{trainer.step} steps, {seconds:.0f} s on {trainer.device}; summary in {summary_path}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
