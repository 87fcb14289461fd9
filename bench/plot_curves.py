"""Learning curves of training runs as a PNG, from the runs' own metrics.jsonl.

    python bench/plot_curves.py runs/smollm2-guess/metrics.jsonl --png docs/smollm2-guess.png
    python bench/plot_curves.py A/metrics.jsonl B/metrics.jsonl --title "guess 1..15" --chance 0.35

Left: success per step: train episodes (sampled, moving mean over --smooth steps) and the greedy
test evaluations (points; a record with step 0, as bench/learn.py writes, is the model before
training). Right: seconds per step, the rollout part and the whole step. Each run is labelled with
its folder's name unless --label is given once per file. Runs of `gymwire learn` (records with a
"stage"): the training loss on the agent's tokens and the trained tokens/s instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


class MetricsError(ValueError):
    """A metrics file cannot be read; the message says which and why."""


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, by step (a step evaluated after a stop may appear twice)."""
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise MetricsError(f"cannot read {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MetricsError(f"{path}:{number} is not JSON: {exc.msg}") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise MetricsError(f"{path}:{number} is not a metrics record with a whole-number step")
        records.append(record)
    if not records:
        raise MetricsError(f"{path} holds no records")
    return sorted(records, key=lambda r: r["step"])


def moving_mean(values: list[float], window: int) -> list[float]:
    return [sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if key in r]
    return [s for s, _ in points], [v for _, v in points]


def plot(runs: dict[str, list[dict[str, Any]]], png: Path, title: str = "", smooth: int = 5, chance: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (success_axis, time_axis) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if all(any(r.get("stage") in ("sft", "dpo") for r in records) for records in runs.values()):
        return _plot_supervised(plt, figure, (success_axis, time_axis), colors, runs, png, title)
    for index, (label, records) in enumerate(runs.items()):
        color = colors[index % len(colors)]
        steps, train = series(records, "train/success")
        if steps:
            success_axis.plot(steps, moving_mean(train, smooth), color=color, alpha=0.5, linewidth=1, marker=".",
                              label=f"{label}: train (sampled, {smooth}-step mean)")
        steps, test = series(records, "eval/success")
        if steps:
            success_axis.plot(steps, test, color=color, marker="o", linewidth=2, label=f"{label}: test (greedy)")
        steps, total = series(records, "train/step_s")
        if steps:
            time_axis.plot(steps, total, color=color, linewidth=1.5, marker=".", label=f"{label}: step")
            time_axis.plot(*series(records, "train/rollout_s"), color=color, linestyle="--", linewidth=1, label=f"{label}: rollout")
    if chance is not None:
        success_axis.axhline(chance, color="gray", linestyle=":", label="chance")
    success_axis.set(xlabel="step", ylabel="success rate", ylim=(0, 1), title="success")
    time_axis.set(xlabel="step", ylabel="seconds", title="time per step")
    return _save(plt, figure, (success_axis, time_axis), png, title)


def _plot_supervised(plt: Any, figure: Any, axes: Any, colors: list[str], runs: dict[str, list[dict[str, Any]]],
                     png: Path, title: str) -> Path:
    """gymwire learn runs (records with a "stage"): the training loss and trained tokens/s per optimizer step."""
    loss_axis, speed_axis = axes
    for index, (label, records) in enumerate(runs.items()):
        color = colors[index % len(colors)]
        loss_axis.plot(*series(records, "loss"), color=color, marker=".", linewidth=1.5, label=f"{label}: loss (agent tokens)")
        speed_axis.plot(*series(records, "tokens_per_s"), color=color, marker=".", linewidth=1.5, label=f"{label}: trained tokens/s")
    loss_axis.set(xlabel="optimizer step", ylabel="cross-entropy per agent token", title="training loss")
    speed_axis.set(xlabel="optimizer step", ylabel="tokens/s (all tokens of the rows)", title="throughput since the start")
    return _save(plt, figure, axes, png, title)


def _save(plt: Any, figure: Any, axes: Any, png: Path, title: str) -> Path:
    for axis in axes:
        axis.grid(alpha=0.3)
        if axis.has_data():
            axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=110)
    plt.close(figure)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.jsonl of a run (several: one line each)")
    parser.add_argument("--png", type=Path, required=True, help="the PNG to write, e.g. docs/smollm2-guess.png")
    parser.add_argument("--label", action="append", default=[], help="a run's label (once per file, in order)")
    parser.add_argument("--title", default="")
    parser.add_argument("--smooth", type=int, default=5, help="moving mean of train success over N steps (default 5)")
    parser.add_argument("--chance", type=float, help="draw this success rate as a dotted line")
    args = parser.parse_args(argv)
    if args.label and len(args.label) != len(args.metrics):
        parser.error(f"--label given {len(args.label)} times for {len(args.metrics)} files: once per file, or not at all")
    labels = args.label or [path.parent.name or str(path) for path in args.metrics]
    try:
        runs = {label: read_metrics(path) for label, path in zip(labels, args.metrics)}
    except MetricsError as exc:
        print(f"plot_curves: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {plot(runs, args.png, args.title, max(1, args.smooth), args.chance)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
