"""The web environment's limits, timed through a real server (figures for docs/security.md):

    python bench/web_limits.py [--repeats 5]

1. Typing: `type [box] [...]` of 200 and 10,000 characters into MiniWoB's enter-text box (up to
   256 characters are typed key by key, longer text is inserted as one input event).
2. A killed renderer: every renderer process of the session's Chromium is killed between two
   steps; the time until the next step is answered ENV_CRASHED (the step time limit is 30 s).
3. Tabs: 40 `new_tab` actions, then the number of tabs open.
4. Steps through the egress proxy: latency of `scroll [down]` and of a reset (median).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import time
from pathlib import Path

from gymwire.protocol import ProtocolError
from gymwire.sdk.client import GymClient
from gymwire.sdk.env_spec import EnvSpec
from gymwire.sdk.server import GymServer
from gymwire.servers.web import MiniWoBEnv
from gymwire.servers.web import browser as browser_module
from gymwire.servers.web.env import MAX_TABS
from gymwire.servers.web.miniwob import index_of
from gymwire.servers.web.solvers import parse_tree

TASK = {"split": "test", "index": index_of("enter-text", 0)}


# One session per Chromium: the renderers killed are this session's only.
ALONE = EnvSpec.of(MiniWoBEnv, sessions_per_browser=1, name="miniwob-alone")


def renderers(browser_pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.getpgid(int(entry.name)) == browser_pid and b"--type=renderer" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


async def main(repeats: int) -> None:
    async with GymServer([MiniWoBEnv, ALONE], port=0) as server, GymClient(server.url) as client:
        async with client.session("miniwob", max_turns=1000, **TASK) as session:
            box = next(n.id for n in parse_tree(session.observation.text) if n.role == "textbox")
            for length in (200, 10_000):
                times = []
                for _ in range(repeats):
                    started = time.monotonic()
                    result = await session.step(f"type [{box}] [{'x' * length}] [0]")
                    times.append(time.monotonic() - started)
                    assert "not done" not in result.observation.text, result.observation.text[:300]
                print(f"type {length:,} characters: median {statistics.median(times):.2f} s over {repeats} (max {max(times):.2f} s)")
            scrolls = []
            for _ in range(repeats * 4):
                started = time.monotonic()
                await session.step("scroll [down]")
                scrolls.append(time.monotonic() - started)
            resets = []
            for _ in range(repeats):
                started = time.monotonic()
                await session.reset(**TASK)
                resets.append(time.monotonic() - started)
            print(f"scroll step: median {statistics.median(scrolls) * 1000:.0f} ms; reset: median {statistics.median(resets) * 1000:.0f} ms")
            for _ in range(40):
                result = await session.step("new_tab")
            print(f"40 new_tab actions: {len(result.observation.data['tabs'])} tabs open (max_tabs {MAX_TABS})")
        noticed = []
        for _ in range(repeats):
            session = await client.open("miniwob-alone", **TASK)
            (browser,) = [b for pools in list(browser_module._pools.values()) if 1 in pools for b in pools[1].browsers if b.sessions]
            for pid in renderers(browser.pid):
                os.kill(pid, signal.SIGKILL)
            started = time.monotonic()
            try:
                await session.step("scroll [down]")
                print("a step after the renderers were killed was answered normally")
            except ProtocolError as exc:
                noticed.append(time.monotonic() - started)
                message = exc.message
            await session.close()
        print(f"killed renderer: the next step answered ENV_CRASHED after median {statistics.median(noticed):.2f} s (max {max(noticed):.2f} s): {message}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    asyncio.run(main(parser.parse_args().repeats))
