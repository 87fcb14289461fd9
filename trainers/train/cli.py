"""`gymwire train CONFIG.yaml`: the reference trainer's command (a `gymwire.commands` plugin)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model with RL against gymwire environments (reference trainer)",
        description="Train a causal LM with GRPO-style RL against a gymwire environment; see docs/training.md.",
    )
    parser.add_argument("config", help="YAML training config, e.g. examples/guess-tiny.yaml")
    parser.add_argument("--steps", type=int, help="override train.steps")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an output_dir holding a previous run: deletes its metrics, logs, rollouts and checkpoints",
    )
    parser.add_argument("--device", help="override model.device (cpu, cuda, auto)")
    parser.add_argument("--seed", type=int, help="override seed")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar: a line every train.log_every steps and per evaluation"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, value in YAML: --set algorithm.estimator=gae --set env.options='{high: 15}'",
    )
    parser.set_defaults(handler=_train)


def _fail(message: Any, code: int = 2) -> int:
    print(f"gymwire train: {message}", file=sys.stderr)
    return code


def _train(args: argparse.Namespace) -> int:
    from .config import load_config, parse_assignments

    overrides = parse_assignments(args.set)
    for key, value in (
        ("train.steps", args.steps),
        ("output_dir", args.output_dir),
        ("model.device", args.device),
        ("seed", args.seed),
    ):
        if value is not None:
            overrides[key] = value
    if args.resume:
        overrides["train.resume"] = True
    if args.overwrite:
        overrides["train.overwrite"] = True
    if args.no_progress:
        overrides["train.progress"] = False
    config = load_config(args.config, overrides)  # the whole config, checked before anything loads

    from .bookkeeping import TrainingStopped
    from .trainer import Trainer

    try:
        with Trainer(config) as trainer:
            if trainer.step >= config.train.steps:
                print(
                    f"nothing to do: the run in {config.output_dir} already completed {trainer.step} steps "
                    f"(train.steps is {config.train.steps}); pass a larger --steps to train on"
                )
                return 0
            if trainer.step:
                print(f"resumed from step {trainer.step} in {config.output_dir}")
            history = trainer.train()
    except TrainingStopped as exc:
        return _fail(exc, exc.exit_code)
    final = {k: v for k, v in history[-1].items() if k.startswith("eval/")}
    summary = ", ".join(f"{k} {v:.3f}" for k, v in final.items())
    print(f"done: {config.train.steps} steps; {summary}; output in {config.output_dir}")
    return 0
