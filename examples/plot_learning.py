"""Loss per agent token against trained tokens, from the metrics.jsonl of `gymwire learn` runs.

    python examples/plot_learning.py runs/babyai-bc/metrics.jsonl runs/babyai-bc-more/metrics.jsonl \\
        --label "expert, <=6 turns" --label "+ expert, <=10 turns" --output docs/learning-babyai-bc.png

Runs given in order are stages of one model (each started from the one before): their tokens add up
along the x axis, and each stage has its own colour.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def stage_points(path: Path) -> list[tuple[int, float]]:
    """(trained tokens, loss) of each logged optimizer step; the run's summary record has no loss."""
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "loss" in record:
            points.append((int(record["trained_tokens"]), float(record["loss"])))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.jsonl of each stage, in order")
    parser.add_argument("--label", action="append", default=[], help="one per stage")
    parser.add_argument("--title", default="")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    if args.label and len(args.label) != len(args.metrics):
        parser.error(f"give one --label per metrics file ({len(args.metrics)}), or none")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.6))
    offset = 0
    for number, path in enumerate(args.metrics):
        points = stage_points(path)
        if not points:
            parser.error(f"{path} has no logged loss")
        label = args.label[number] if args.label else path.parent.name
        axes.plot([offset + tokens for tokens, _ in points], [loss for _, loss in points], marker=".", label=label)
        offset += points[-1][0]
    axes.set_xlabel("trained tokens")
    axes.set_ylabel("loss per agent token")
    axes.set_title(args.title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
