"""How fast `gymwire view` opens a big run: 100,000 episodes (200 rollout files of 500).

Writes a synthetic training run shaped like the tiny guess run (3 turns, ~70 tokens, real
Episode.to_json records), then measures, in this one process:
  index   the first full index of every episode file (what happens when the viewer starts), wall
          and CPU time (on a busy shared machine the CPU time is the steadier figure);
  api     the viewer's HTTP answers over loopback: first state, first page, a filtered page,
          100 pages at random offsets (scrolling), a full-text search;
  browser (with --browser: Debian's chromium via Playwright, already running) from starting a
          fresh `gymwire view` process to it listening, to the first rows of #episodes on screen
          (the index fills in behind them) and to all episodes listed; 30 jumps to random scroll
          positions until their rows are drawn; the frame rate while scrolling 120 steps.

    python bench/viewer_load.py [--episodes 100000] [--browser] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gymwire.trainers.episode import EnvTask, Episode, Turn
from gymwire.trainers.viewer.index import Catalog, find_runs
from gymwire.trainers.viewer.server import make_app

PER_FILE = 500


def write_run(folder: Path, episodes: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    (folder / "rollouts").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"env": {"name": "guess"}, "rollout": {"turn_tokens": 1}}))
    steps = max(1, episodes // PER_FILE)
    with (folder / "metrics.jsonl").open("w") as metrics:
        for step in range(1, steps + 1):
            record = {"step": step, "train/success": min(1.0, step / steps + rng.random() * 0.1), "train/horizon": 3}
            metrics.write(json.dumps(record) + "\n")
    written = 0
    for step in range(1, steps + 1):
        lines = []
        for i in range(min(PER_FILE, episodes - written)):
            target = rng.randint(1, 7)
            turns, tokens = [], list(range(2, 22))
            for t in range(rng.randint(1, 3)):
                guess = rng.randint(1, 7)
                start = len(tokens)
                tokens += [30 + guess]
                observation = "Right!" if guess == target else f"{guess} is wrong. Go {'higher' if guess < target else 'lower'}."
                turns.append(Turn(f" {guess}", observation, float(guess == target), start, start))
                tokens += list(range(40, 60))
                if guess == target:
                    break
            success = turns[-1].reward > 0
            episode = Episode(
                task=EnvTask("guess", "train", rng.randrange(10_000)), group=i // 8, options={"low": 1, "high": 7},
                max_turns=3, prompt_length=20, tokens=tokens, loss_mask=[int(30 <= t < 40) for t in tokens],
                logprobs=[-rng.random() if 30 <= t < 40 else 0.0 for t in tokens], turns=turns,
                finish="terminated" if success else "truncated", success=success, score=float(success),
                text="<user>I am thinking of a whole number from 1 to 7. Guess it.<eot>",
            )
            lines.append(json.dumps(episode.to_json(), ensure_ascii=False))
        written += len(lines)
        (folder / "rollouts" / f"step-{step:06d}.jsonl").write_text("\n".join(lines) + "\n")


async def measure_api(catalog: Catalog, total: int) -> dict[str, float]:
    from aiohttp import ClientSession, web

    runner = web.AppRunner(make_app(catalog))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    figures: dict[str, float] = {}
    try:
        async with ClientSession() as http:
            async def timed(url: str) -> tuple[float, dict]:
                started = time.perf_counter()
                async with http.get(base + url) as response:
                    assert response.status == 200, (url, response.status, await response.text())
                    body = await response.json()
                return time.perf_counter() - started, body

            figures["api_state_s"], _ = await timed("/api/state")
            figures["api_first_page_s"], first = await timed("/api/episodes?offset=0&limit=200")
            assert first["total"] == total, first["total"]
            figures["api_filtered_page_s"], _ = await timed("/api/episodes?success=1&step=100&limit=200")
            rng = random.Random(1)
            pages = [(await timed(f"/api/episodes?offset={rng.randrange(total)}&limit=200"))[0] for _ in range(100)]
            figures["api_scroll_page_median_s"] = statistics.median(pages)
            figures["api_scroll_page_max_s"] = max(pages)
            figures["api_search_s"], found = await timed("/api/episodes?q=go%20higher&limit=200")
            figures["search_hits"] = found["total"]
            figures["api_episode_s"], _ = await timed(f"/api/episode/{first['rows'][0]['id']}")
    finally:
        await runner.cleanup()
    return figures


def measure_browser(folder: Path, total: int) -> dict[str, float]:
    """The whole path a user sees, Chromium already running: `gymwire view` starts, the page opens."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "trainers"))
    from viewer_browser import chromium, viewer  # the browser tests' way to start both

    figures: dict[str, float] = {}
    with chromium() as context:
        page = context.new_page()
        started = time.perf_counter()
        with viewer(folder) as url:
            figures["command_listening_s"] = time.perf_counter() - started
            page.goto(url + "#episodes")
            page.wait_for_selector("#episode-list .erow", timeout=60_000)
            figures["command_to_first_rows_s"] = time.perf_counter() - started
            # All listed: the index is complete and the page's next poll (every 1.5 s) saw it.
            page.wait_for_function(f"document.querySelector('#episode-count')?.textContent.startsWith('{total:,} ')",
                                   timeout=60_000)
            figures["command_to_all_listed_s"] = time.perf_counter() - started
            rng = random.Random(2)
            jumps = []
            for _ in range(30):  # jump to a random place in the list, wait until its rows are drawn
                row = rng.randrange(total - 50)
                t0 = time.perf_counter()
                page.evaluate(f"document.getElementById('episode-list').scrollTop = {row * 26}")
                page.wait_for_selector(f"#episode-list .erow[data-index='{row}']")
                jumps.append(time.perf_counter() - t0)
            figures["browser_scroll_jump_median_s"] = statistics.median(jumps)
            figures["browser_scroll_jump_max_s"] = max(jumps)
            # Scrolling: 120 steps of 10 rows, one per frame; the frame rate Chromium kept up.
            frames, ms = page.evaluate("""async () => {
                const list = document.getElementById('episode-list');
                const t0 = performance.now();
                for (let i = 0; i < 120; i++) { list.scrollTop += 260; await new Promise(r => requestAnimationFrame(r)); }
                return [120, performance.now() - t0];
            }""")
            figures["browser_scroll_fps"] = frames / (ms / 1000)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100_000)
    parser.add_argument("--browser", action="store_true", help="also measure in headless Chromium")
    parser.add_argument("--keep", help="write the run here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gymwire-view-bench-")) / "big-run"
    try:
        if not (folder / "rollouts").exists():
            started = time.perf_counter()
            print(f"writing {args.episodes:,} episodes to {folder} ...", file=sys.stderr, flush=True)
            write_run(folder, args.episodes)
            print(f"  {time.perf_counter() - started:.1f} s", file=sys.stderr)
        size = sum(p.stat().st_size for p in (folder / "rollouts").iterdir())
        started, cpu = time.perf_counter(), time.process_time()
        catalog = Catalog(find_runs([folder]))
        catalog.refresh()
        figures: dict[str, float] = {"episodes": len(catalog.rows()), "megabytes": round(size / 1e6, 1),
                                     "index_s": time.perf_counter() - started, "index_cpu_s": time.process_time() - cpu}
        started = time.perf_counter()
        catalog.refresh()
        figures["refresh_unchanged_s"] = time.perf_counter() - started
        figures.update(asyncio.run(measure_api(catalog, args.episodes)))
        if args.browser:
            figures.update(measure_browser(folder, args.episodes))
        figures["load_average_1min"] = os.getloadavg()[0]  # other work on this machine while measuring
        for key, value in figures.items():
            print(f"{key:28} {value:.4f}" if isinstance(value, float) else f"{key:28} {value}")
    finally:
        if not args.keep:
            shutil.rmtree(folder.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
