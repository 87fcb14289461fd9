"""Success vs training step for a fixed and a staged turn limit (ScalingInter-RL), on `guess`.

    python examples/plot_horizons.py --parallel --seeds 0,1,2  # writes docs/horizon.png (~16 min per seed, 2 cores)
    python examples/plot_horizons.py --high 7 --fixed 3 --staged 2,3@50 --steps 150 --estimator grpo

Both runs start from the same tiny random model (built once) and the same seed, and differ only
in the horizon schedule. Evaluation always uses the longest limit, so the curves are comparable.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import time
from pathlib import Path

from gymwire.trainers.train.config import TrainConfig, load_config, parse_assignments
from gymwire.trainers.train.trainer import Trainer


def run_config(base: Path, args: argparse.Namespace, name: str, horizon: str) -> TrainConfig:
    overrides = {
        "output_dir": str(args.out / name),
        "model.path": str(args.out / "model"),  # shared: both runs start from the same weights
        "model.tiny.numbers": max(10, args.high + 1),  # one token per possible answer
        "env.options": {"low": 1, "high": args.high, "show_range": True},  # as in guess-tiny.yaml
        "horizon": horizon,
        "train.steps": args.steps,
        "train.eval_every": args.eval_every,
        "train.checkpoint_every": 0,
        "train.overwrite": True,  # each invocation trains its runs afresh
        "train.progress": not args.quiet,
        "rollout.episode_tokens": args.episode_tokens,
        # The batch shape behind docs/horizon.png (guess-tiny.yaml now uses 8 tasks x 16 episodes).
        "rollout.tasks_per_step": 16,
        "rollout.group_size": 8,
        "algorithm.estimator": args.estimator,
    }
    return load_config(base, {**overrides, **parse_assignments(args.set)})


def train(base: Path, args: argparse.Namespace, name: str, horizon: str) -> list[dict]:
    with Trainer(run_config(base, args, name, horizon)) as trainer:
        return trainer.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path(__file__).with_name("guess-tiny.yaml"))
    parser.add_argument("--high", type=int, default=15, help="guess a number in 1..HIGH (15: 4 turns of binary search)")
    parser.add_argument("--fixed", default="6", help="the fixed horizon")
    parser.add_argument("--staged", default="3,4,6@75", help="the staged horizon: turns per stage @ steps per stage")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--estimator", default="gae", help="algorithm.estimator (gae learned guess 1..15 here, grpo hardly)")
    parser.add_argument("--episode-tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("runs/horizons"))
    parser.add_argument("--png", type=Path, default=Path("docs/horizon.png"))
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (as gymwire train --set)")
    parser.add_argument("--parallel", action="store_true", help="train both schedules at once, one process each")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; each gets its own tiny model and runs")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from OUT/seed-*/histories.json")
    args = parser.parse_args()

    runs = {f"fixed {args.fixed}": f"fixed:{args.fixed}", f"staged {args.staged}": f"staged:{args.staged}"}
    if not args.replot:
        for seed in (int(s) for s in args.seeds.split(",")):
            train_seed(args, seed, runs)
    histories = {path.parent.name: json.loads(path.read_text()) for path in sorted(args.out.glob("seed-*/histories.json"))}
    if not histories:
        raise SystemExit(f"no {args.out}/seed-*/histories.json to plot; run without --replot first")
    plot(args, histories)
    print(f"wrote {args.png}")


def train_seed(args: argparse.Namespace, seed: int, runs: dict[str, str]) -> None:
    seed_args = argparse.Namespace(**{**vars(args), "out": args.out / f"seed-{seed}", "set": [*args.set, f"seed={seed}"]})
    if args.parallel:
        # Build the shared model first, so the two processes do not race to create it.
        with Trainer(run_config(args.config, seed_args, "build", "fixed:1")):
            pass
    results = {}
    with concurrent.futures.ProcessPoolExecutor(max_workers=2 if args.parallel else 1) as pool:
        started = time.perf_counter()
        futures = {label: pool.submit(train, args.config, seed_args, label.split()[0], horizon) for label, horizon in runs.items()}
        for label, future in futures.items():
            results[label] = future.result()
            final = results[label][-1]["eval/success"]
            print(f"seed {seed}, {label}: {time.perf_counter() - started:.0f} s, final eval success {final:.3f}")
    (seed_args.out / "histories.json").write_text(json.dumps(results))


def plot(args: argparse.Namespace, histories: dict[str, dict[str, list[dict]]]) -> None:
    """Train success (moving average over 10 steps) and test success per seed, thin; the mean of
    the seeds' test success, thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (train_axis, eval_axis) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    labels = list(next(iter(histories.values())))
    for color, label in zip(("tab:blue", "tab:orange"), labels):
        eval_curves = []
        for history in (runs[label] for runs in histories.values()):
            success = [r["train/success"] for r in history]
            smooth = [sum(success[max(0, i - 9) : i + 1]) / len(success[max(0, i - 9) : i + 1]) for i in range(len(success))]
            train_axis.plot([r["step"] for r in history], smooth, color=color, alpha=0.6, linewidth=1)
            evals = [(r["step"], r["eval/success"]) for r in history if "eval/success" in r]
            eval_axis.plot(*zip(*evals), color=color, alpha=0.35, linewidth=1)
            eval_curves.append(evals)
        steps = [step for step, _ in eval_curves[0]]
        mean = [sum(curve[i][1] for curve in eval_curves) / len(eval_curves) for i in range(len(steps))]
        eval_axis.plot(steps, mean, color=color, marker="o", linewidth=2, label=f"{label} (mean of {len(eval_curves)})")
        train_axis.plot([], [], color=color, label=label)
    train_axis.set(title="train episodes, at the step's turn limit (10-step mean)", xlabel="step", ylabel="success rate")
    eval_axis.set(title=f"test split (100 tasks), greedy, {args.fixed} turns", xlabel="step")
    chance = 1 - (1 - 1 / args.high) ** int(args.fixed)  # a uniformly random number every turn
    for axis in (train_axis, eval_axis):
        axis.axhline(chance, color="gray", linestyle=":", label=f"random numbers, {args.fixed} turns")
        axis.grid(alpha=0.3)
        axis.legend()
    seeds = ", ".join(name.removeprefix("seed-") for name in histories)
    plural = "s" if len(histories) > 1 else ""
    figure.suptitle(f"guess 1..{args.high}, tiny GPT-2 from scratch, {args.estimator}, seed{plural} {seeds}")
    figure.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
