"""Success vs training step for a fixed and a staged turn limit (ScalingInter-RL), on `guess`.

    python examples/plot_horizons.py                       # writes docs/horizon.png
    python examples/plot_horizons.py --high 31 --steps 300 --fixed 8 --staged 3,5,8@80

Both runs start from the same tiny random model (built once) and the same seed, and differ only
in the horizon schedule. Evaluation always uses the longest limit, so the curves are comparable.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gymwire.trainers.config import load_config
from gymwire.trainers.trainer import Trainer


def train(base: Path, args: argparse.Namespace, name: str, horizon: str) -> list[dict]:
    overrides = {
        "output_dir": str(args.out / name),
        "model.path": str(args.out / "model"),  # shared: both runs start from the same weights
        "model.tiny.numbers": max(10, args.high + 1),  # one token per possible answer
        "env.options": {"low": 1, "high": args.high, "show_range": True},  # as in guess-tiny.yaml
        "horizon": horizon,
        "train.steps": args.steps,
        "train.eval_every": args.eval_every,
        "train.checkpoint_every": 0,
        "train.progress": not args.quiet,
        "rollout.episode_tokens": args.episode_tokens,
    }
    config = load_config(base, overrides)
    with Trainer(config) as trainer:
        return trainer.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(__file__).with_name("guess-tiny.yaml"))
    parser.add_argument("--high", type=int, default=15, help="guess a number in 1..HIGH (15: 4 turns of binary search)")
    parser.add_argument("--fixed", default="6", help="the fixed horizon")
    parser.add_argument("--staged", default="2,4,6@40", help="the staged horizon: turns per stage @ steps per stage")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--episode-tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("runs/horizons"))
    parser.add_argument("--png", type=Path, default=Path("docs/horizon.png"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {f"fixed {args.fixed}": f"fixed:{args.fixed}", f"staged {args.staged}": f"staged:{args.staged}"}
    results = {}
    for label, horizon in runs.items():
        started = time.perf_counter()
        results[label] = train(args.config, args, label.split()[0], horizon)
        print(f"{label}: {time.perf_counter() - started:.0f} s, final eval success {results[label][-1]['eval/success']:.3f}")

    figure, (train_axis, eval_axis) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for label, history in results.items():
        steps = [r["step"] for r in history]
        train_axis.plot(steps, [r["train/success"] for r in history], label=label, alpha=0.8)
        evals = [r for r in history if "eval/success" in r]
        eval_axis.plot([r["step"] for r in evals], [r["eval/success"] for r in evals], marker="o", label=label)
    train_axis.set(title="train episodes (at the step's turn limit)", xlabel="step", ylabel="success rate")
    eval_axis.set(title=f"test split, greedy, {max(int(args.fixed), int(args.staged.split('@')[0].split(',')[-1]))} turns", xlabel="step")
    for axis in (train_axis, eval_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"guess 1..{args.high}, tiny GPT-2 from scratch, GRPO")
    figure.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.png, dpi=110)
    (args.out / "histories.json").write_text(json.dumps(results))
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
