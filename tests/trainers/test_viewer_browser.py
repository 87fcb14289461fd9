"""`gymwire view` in a real browser (Debian's chromium through Playwright) over a real training run
and two eval outputs of it: pages load, a filter applies, an episode opens with its turns and
tokens, curves are drawn, new steps appear without a reload, and no console errors. Screenshots go
to $GYMWIRE_VIEWER_SCREENSHOTS when set; docs/viewer/ is made this way, from examples/guess-tiny.yaml
trained for 30 steps:

    GYMWIRE_VIEWER_STEPS=30 GYMWIRE_VIEWER_SCREENSHOTS=docs/viewer \
        python -m pytest -q tests/trainers/test_viewer_browser.py
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from gymwire.trainers.train.config import load_config
from gymwire.trainers.policy import Sampling
from gymwire.trainers.episode import EnvTask, write_jsonl
from gymwire.trainers.train.rollout import play_settings
from gymwire.trainers.train.trainer import Trainer
from viewer_browser import chromium, viewer

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = os.environ.get("GYMWIRE_VIEWER_SCREENSHOTS")
STEPS = int(os.environ.get("GYMWIRE_VIEWER_STEPS", "0"))  # 0: a 4-step run with small batches (CI)


def write_eval(trainer: Trainer, folder: Path, label: str, *, finished: bool) -> None:
    """The trainer's current policy on the first test tasks, written as `gymwire eval` writes its
    output (format gymwire.eval/1); results.json only when `finished` (else: an eval still running)."""
    cfg = trainer.config
    tasks = [EnvTask(trainer.env_name, "test", index) for index in range(cfg.train.eval_tasks)]
    episodes = trainer.rollouts.collect(
        trainer.policy, trainer.chat, tasks, play_settings(trainer.config, trainer.horizon.max_turns, Sampling(0.0)), groups=range(len(tasks))
    )
    (folder / "episodes").mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({
        "format": "gymwire.eval/1", "model": label, "backend": "transformers", "split": "test", "tasks": len(tasks),
        "turn_tokens": cfg.rollout.turn_tokens, "episode_tokens": cfg.rollout.episode_tokens,
    }))
    write_jsonl(episodes, folder / "episodes" / "guess.jsonl")
    if finished:
        n, k = len(episodes), sum(e.success for e in episodes)
        z, p = 1.96, k / n  # Wilson score interval, as gymwire eval reports it
        centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        turns = [len(e.turns) for e in episodes]
        mean = sum(turns) / n
        spread = 1.96 * math.sqrt(sum((t - mean) ** 2 for t in turns) / (n - 1) / n)  # normal approximation
        (folder / "results.json").write_text(json.dumps({"format": "gymwire.eval/1", "model": label, "envs": {"guess": {
            "episodes": n, "tasks": n, "success": {"mean": p, "low": centre - half, "high": centre + half, "method": "wilson"},
            "turns": {"mean": mean, "low": mean - spread, "high": mean + spread, "method": "normal"},
            "finish": {f: sum(e.finish == f for e in episodes) for f in {e.finish for e in episodes}},
        }}}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, ...]:
    """A real training run of examples/guess-tiny.yaml, evals of its policy before and after, and a
    run with bad files."""
    root = tmp_path_factory.mktemp("viewer")
    run = root / "guess-tiny"
    steps = STEPS or 4
    overrides = {"output_dir": str(run), "model.path": str(root / "model"), "train.steps": steps, "train.progress": False,
                 "train.rollouts_every": max(1, steps // 6), "train.eval_every": max(2, steps // 3), "train.checkpoint_every": steps}
    if not STEPS:  # small batches: CI's run takes seconds
        overrides.update({"rollout.tasks_per_step": 4, "rollout.group_size": 4, "train.eval_tasks": 8})
    evals = root / "evals"
    with Trainer(load_config(ROOT / "examples" / "guess-tiny.yaml", overrides)) as trainer:
        write_eval(trainer, evals / "step-0", "guess-tiny step 0", finished=True)
        trainer.train()
        write_eval(trainer, evals / f"step-{steps}", f"guess-tiny step {steps}", finished=False)
    bad = root / "broken-run"
    (bad / "rollouts").mkdir(parents=True)
    good = (run / "rollouts" / sorted(os.listdir(run / "rollouts"))[0]).read_text().splitlines()[0]
    record = json.loads(good)
    record["turns"][0]["observation"] = "x" * 1_000_000
    record["judge"] = {"verdict": "lucky guess"}
    (bad / "rollouts" / "step-000001.jsonl").write_text(
        good + "\n" + good[: len(good) // 3] + "\n" + json.dumps(record) + "\n"
    )
    return run, bad, evals


@pytest.fixture
def page(runs):
    with viewer(*runs) as url, chromium() as context:
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.base_url = url
        yield page
        assert errors == [], errors


def shoot(page, name: str, full_page: bool = False) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=full_page)


def episode_count(page) -> int:
    page.wait_for_function("/^[\\d,]+ episode/.test(document.querySelector('#episode-count')?.textContent || '')")
    return int(page.inner_text("#episode-count").split()[0].replace(",", ""))


def test_browse_a_training_run(page, runs):
    run = runs[0]
    page.goto(page.base_url + "#runs")
    page.wait_for_selector("#runs-table td >> text=guess-tiny")
    assert "config" in page.inner_text("#runs-table")
    shoot(page, "runs")

    page.click("nav >> text=Curves")
    page.wait_for_selector("#charts svg path.series-line")
    labels = page.eval_on_selector_all("#charts path.series-line", "ps => ps.map(p => p.dataset.label)")
    for key in ("train/success", "train/reward", "train/turns", "train/horizon", "train/kl", "train/entropy", "train/loss", "train/tokens_per_s"):
        assert key in labels
    segments = page.eval_on_selector("#charts path[data-label='train/success']", "p => p.getAttribute('d').split('L').length")
    steps = len((run / "metrics.jsonl").read_text().splitlines())
    assert segments == steps  # one point per logged step
    assert page.locator("#charts g.series-points[data-label='eval/success'] circle").count() >= 1
    shoot(page, "curves")

    page.click("nav >> text=Evals")
    page.wait_for_selector("table.eval-steps")
    headers = page.inner_text("#eval-table thead")
    assert "guess-tiny step 0" in headers and "running: from the episodes so far" in headers
    assert "success" in page.inner_text("#eval-table tbody")
    shoot(page, "evals")

    page.goto(page.base_url + "#episodes?run=0")
    total = episode_count(page)
    assert total > 0
    page.select_option("select[data-filter=success]", "1")
    page.wait_for_function(f"!document.querySelector('#episode-count').textContent.startsWith('{total:,} ')")
    successes = episode_count(page)
    assert 0 < successes < total
    page.wait_for_selector("#episode-list .erow")
    assert set(page.eval_on_selector_all("#episode-list .erow > span:nth-child(8)", "cells => cells.map(c => c.textContent)")) == {"✓"}
    assert "success=1" in page.url
    shoot(page, "episodes")

    page.select_option("select[data-filter=success]", "")
    page.wait_for_function(f"document.querySelector('#episode-count').textContent.startsWith('{total:,} ')")
    page.fill("input[data-filter=q]", "correct!")  # what the environment says to a right guess, only then
    page.press("input[data-filter=q]", "Enter")
    page.wait_for_function(f"!document.querySelector('#episode-count').textContent.startsWith('{total:,} ')")
    assert episode_count(page) == successes
    page.wait_for_selector("#episode-list .erow")

    expected_turns = int(page.inner_text("#episode-list .erow >> nth=0 >> span:nth-child(11)"))
    page.click("#episode-list .erow >> nth=0 >> span:nth-child(4)")
    page.wait_for_selector("#turns .turn")
    assert page.locator("#turns .turn").count() == expected_turns
    assert "Correct!" in page.inner_text("#turns .turn >> nth=-1")
    assert page.locator("#token-view .token-text .tok-model").count() == expected_turns  # one token per answer
    shade = page.get_attribute("#token-view .token-text .tok-model >> nth=0", "style")
    assert shade.startswith("background:hsl(")  # shaded by its log-prob
    assert page.locator("#token-view .token-text .tok-prompt").count() > 0
    # The environment's answers become tokens between turns; the last one (the episode ended) does not.
    assert (page.locator("#token-view .token-text .tok-env").count() > 0) == (expected_turns > 1)
    assert page.locator("#token-view .token-text .cut").count() == expected_turns  # turn_tokens is 1: every answer used it
    shoot(page, "episode", full_page=True)

    page.wait_for_selector(".compare-link")
    page.click(".compare-link >> nth=0")
    page.wait_for_selector("#compare-view .episode >> nth=1")
    tasks = page.eval_on_selector_all("#compare-view .episode-head .title", "ts => ts.map(t => t.textContent.split('·').pop())")
    # The run's periodic evaluations are episodes too: the first success may be a train or a test task.
    assert tasks[0].split("(")[0] == tasks[1].split("(")[0] and (" train task " in tasks[0] or " test task " in tasks[0])

    # Two models on the same test task: the evals before and after training.
    page.goto(page.base_url + "#episodes?run=2&task=2")  # runs: 0 training, 1 broken, 2 eval at step 0, 3 after
    page.click("#episode-list .erow >> nth=0 >> span:nth-child(4)")
    page.wait_for_selector(".compare-link")
    # The same test task elsewhere: the eval after training, and the training run's periodic evaluations.
    after = page.locator(".compare-link", has_text=f"guess-tiny step {STEPS or 4}")
    assert after.count() == 1 and page.locator(".compare-link").count() > 1
    after.click()
    page.wait_for_selector("#compare-view .episode >> nth=1")
    titles = page.eval_on_selector_all("#compare-view .episode-head .title", "ts => ts.map(t => t.textContent)")
    assert titles[0].startswith("guess-tiny step 0 ") and titles[1].startswith("guess-tiny step ") and titles[1] != titles[0]
    assert all(t.endswith("· guess · test task 2 (group 2)") for t in titles)
    shoot(page, "compare")


def test_bad_input_is_shown_not_hidden(page):
    page.goto(page.base_url + "#runs")
    page.wait_for_selector("#runs-table >> text=broken-run")
    notes = page.inner_text("#runs-table")
    assert "no metrics file" in notes and "1 episode line(s) could not be read" in notes

    page.goto(page.base_url + "#episodes?run=1")
    assert episode_count(page) == 3
    page.wait_for_selector("#episode-list .erow.bad")
    assert "line 2: not valid JSON" in page.inner_text("#episode-list .erow.bad .note")
    shoot(page, "bad-lines")
    page.click("#episode-list .erow.bad")
    page.wait_for_selector(".problem")
    assert "not valid JSON" in page.inner_text(".problem")
    assert "The line as it is" in page.inner_text("main")

    page.goto(page.base_url + "#episodes?run=1")
    page.click("#episode-list .erow >> nth=2 >> span:nth-child(4)")
    page.wait_for_selector(".episode .notes")
    assert "1,000,000 characters, showing the first 20,000" in page.inner_text(".episode .notes")
    assert "lucky guess" in page.inner_text("section.unknown")
    shoot(page, "bad-input")


def test_new_steps_appear_without_a_reload(page, runs):
    run = runs[0]
    page.goto(page.base_url + "#episodes?run=0")
    before = episode_count(page)
    page.evaluate("window.notReloaded = true")
    last = sorted((run / "rollouts").glob("step-*.jsonl"))[-1]
    step = int(last.stem.split("-")[1]) + 1
    shutil.copy(last, run / "rollouts" / f"step-{step:06d}.jsonl")
    added = len(last.read_text().splitlines())
    page.wait_for_function(f"document.querySelector('#episode-count').textContent.startsWith('{before + added:,} ')")

    page.click("nav >> text=Curves")
    page.wait_for_selector("#charts path[data-label='train/success']")
    points = page.eval_on_selector("#charts path[data-label='train/success']", "p => p.getAttribute('d').split('L').length")
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    with (run / "metrics.jsonl").open("a") as out:
        out.write(json.dumps({**record, "step": step}) + "\n")
    page.wait_for_function(
        f"document.querySelector(\"#charts path[data-label='train/success']\").getAttribute('d').split('L').length === {points + 1}"
    )
    assert page.evaluate("window.notReloaded") is True
