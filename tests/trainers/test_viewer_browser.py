"""`gymwire view` in a real browser (Debian's chromium through Playwright) over a real training run:
pages load, a filter applies, an episode opens with its turns and tokens, curves are drawn, new
steps appear without a reload, and no console errors. Screenshots go to $GYMWIRE_VIEWER_SCREENSHOTS
when set (docs/viewer/ is made this way from a 30-step run given as $GYMWIRE_VIEWER_RUN):

    GYMWIRE_VIEWER_RUN=runs/view-demo GYMWIRE_VIEWER_SCREENSHOTS=docs/viewer \\
        python -m pytest -q tests/trainers/test_viewer_browser.py
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from gymwire.trainers.config import TrainConfig
from gymwire.trainers.trainer import Trainer
from viewer_browser import chromium, viewer

SCREENSHOTS = os.environ.get("GYMWIRE_VIEWER_SCREENSHOTS")
GIVEN_RUN = os.environ.get("GYMWIRE_VIEWER_RUN")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """A real training run (trained here, or a copy of $GYMWIRE_VIEWER_RUN) and a run with bad files."""
    root = tmp_path_factory.mktemp("viewer")
    run = root / "guess-tiny"
    if GIVEN_RUN:
        shutil.copytree(GIVEN_RUN, run, ignore=shutil.ignore_patterns("tensorboard"))
    else:
        config = TrainConfig.from_dict({
            "seed": 0,
            "output_dir": str(run),
            "model": {"path": str(root / "model"), "tiny": {"numbers": 10, "corpus_episodes": 4, "init_std": 0.08}, "threads": 1},
            "env": {"name": "guess", "options": {"low": 1, "high": 7, "show_range": True}, "instructions": False},
            "horizon": "staged:2,3@2",
            "rollout": {"tasks_per_step": 4, "group_size": 4, "turn_tokens": 1, "episode_tokens": 128},
            "algorithm": {"lr": 1e-3, "entropy_coef": 0.05},
            "train": {"steps": 4, "eval_every": 2, "eval_tasks": 8, "progress": False, "rollouts_every": 1, "checkpoint_every": 4},
        })
        with Trainer(config) as trainer:
            trainer.train()
    bad = root / "broken-run"
    (bad / "rollouts").mkdir(parents=True)
    good = (run / "rollouts" / sorted(os.listdir(run / "rollouts"))[0]).read_text().splitlines()[0]
    record = json.loads(good)
    record["turns"][0]["observation"] = "x" * 1_000_000
    record["judge"] = {"verdict": "lucky guess"}
    (bad / "rollouts" / "step-000001.jsonl").write_text(
        good + "\n" + good[: len(good) // 3] + "\n" + json.dumps(record) + "\n"
    )
    return run, bad


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


def shoot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))


def episode_count(page) -> int:
    page.wait_for_function("/^[\\d,]+ episode/.test(document.querySelector('#episode-count')?.textContent || '')")
    return int(page.inner_text("#episode-count").split()[0].replace(",", ""))


def test_browse_a_training_run(page, runs):
    run, _ = runs
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
    shoot(page, "episode")

    page.wait_for_selector(".compare-link")
    page.click(".compare-link >> nth=0")
    page.wait_for_selector("#compare-view .episode >> nth=1")
    tasks = page.eval_on_selector_all("#compare-view .episode-head .title", "ts => ts.map(t => t.textContent.split('·').pop())")
    assert tasks[0].split('"index":')[1].split(",")[0] == tasks[1].split('"index":')[1].split(",")[0]
    shoot(page, "compare")


def test_bad_input_is_shown_not_hidden(page):
    page.goto(page.base_url + "#runs")
    page.wait_for_selector("#runs-table >> text=broken-run")
    notes = page.inner_text("#runs-table")
    assert "no metrics file" in notes and "1 episode line(s) could not be read" in notes

    page.goto(page.base_url + "#episodes?run=1")
    assert episode_count(page) == 3
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
    run, _ = runs
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
