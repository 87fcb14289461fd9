"""bench/plot_curves.py draws a run's curves from its own metrics.jsonl."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench/plot_curves.py"


def write_metrics(path: Path) -> Path:
    path.parent.mkdir(parents=True)
    records = [{"step": 0, "eval/success": 0.4}]  # bench/learn.py's evaluation before training
    for step in range(1, 13):
        record = {"step": step, "train/success": step / 20, "train/step_s": 5.0, "train/rollout_s": 3.5}
        if step % 4 == 0:
            record["eval/success"] = 0.4 + step / 40
        records.append(record)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def plot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False)


def test_plots_one_or_several_runs_as_png(tmp_path):
    first = write_metrics(tmp_path / "a/metrics.jsonl")
    second = write_metrics(tmp_path / "b/metrics.jsonl")
    png = tmp_path / "docs/curves.png"
    result = plot(str(first), str(second), "--png", str(png), "--title", "guess", "--chance", "0.35")
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_a_broken_metrics_file_is_a_one_line_error(tmp_path):
    broken = tmp_path / "run/metrics.jsonl"
    broken.parent.mkdir()
    broken.write_text('{"step": 1, "train/success": 0.5}\nnot json\n')
    result = plot(str(broken), "--png", str(tmp_path / "x.png"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "metrics.jsonl:2 is not JSON" in result.stderr
    assert not (tmp_path / "x.png").exists()
    labels = plot(str(broken), "--png", str(tmp_path / "x.png"), "--label", "a", "--label", "b")
    assert labels.returncode == 2 and "once per file" in labels.stderr
