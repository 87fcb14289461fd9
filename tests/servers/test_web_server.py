"""The web environments through a real gymwire server and a real headless Chromium: scripted
solvers reach MiniWoB++'s goals, WebArena task configs are scored against a small site served on
loopback, bad actions are observations, navigation stays on the task's sites, and a killed
Chromium fails only the sessions it hosted."""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import re
import signal
import threading
from pathlib import Path

import pytest

from gymwire.protocol import ErrorCode, ProtocolError
from gymwire.sdk.client import GymClient
from gymwire.sdk.env_spec import EnvSpec
from gymwire.sdk.server import GymServer
from gymwire.servers.web import MiniWoBEnv, WebArenaEnv
from gymwire.servers.web import browser as browser_module
from gymwire.servers.web.miniwob import TASK_TYPES, index_of
from gymwire.servers.web.solvers import SOLVED_TYPES, MiniWoBSolver, parse_tree

SITE = Path(__file__).parent / "web_site"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def site_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(SITE)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def url(site_url):
    # step_timeout_s: the hung-page test waits this long
    shop = EnvSpec.of(WebArenaEnv, tasks=SITE / "tasks.json", sites={"SHOP": site_url}, step_timeout_s=8.0, name="shop")
    with GymServer([MiniWoBEnv, shop], port=0).run_in_thread() as server_url:
        yield server_url


def node_named(text: str, name: str, role: str | None = None) -> int:
    return next(n.id for n in parse_tree(text) if n.name == name and (role is None or n.role == role))


async def solve(client: GymClient, task_type: str) -> dict:
    solver = MiniWoBSolver(task_type)
    async with client.session("miniwob", split="test", index=index_of(task_type, 0), max_turns=20) as session:
        assert session.observation.data["task_type"] == task_type
        result = None
        while not session.done:
            result = await session.step(solver.act(session.observation.text if result is None else result.observation.text))
        return {"type": task_type, "success": result.metrics.success, "reward": result.reward, "turns": result.metrics.turns, "info": result.info}


async def test_solvers_reach_the_goal_on_every_solved_type(url):
    async with GymClient(url) as client:
        limit = asyncio.Semaphore(4)

        async def one(task_type: str) -> dict:
            async with limit:
                return await solve(client, task_type)

        episodes = await asyncio.gather(*(one(t) for t in SOLVED_TYPES))
    assert [e for e in episodes if not e["success"]] == []
    for episode in episodes:
        # The reward is MiniWoB's own, read from the page.
        assert episode["reward"] == episode["info"]["miniwob_raw_reward"] > 0


async def test_metadata_and_same_task_same_page(url):
    async with GymClient(url) as client:
        (info,) = [e for e in await client.list_envs() if e.name == "miniwob"]
        assert info.splits == {"train": 125_000, "test": 500} and info.metadata["task_types"] == list(TASK_TYPES)
        index, other = index_of("click-checkboxes", 1), index_of("click-checkboxes", 2)

        def page(observation) -> list:
            return [observation.text.splitlines()[0], *((n.role, n.name) for n in parse_tree(observation.text))]

        async with client.session("miniwob", split="test", index=index) as session:
            first = page(session.observation)
        async with client.session("miniwob", split="test", index=other) as session:
            assert page(session.observation) != first
            await session.step(f"click [{node_named(session.observation.text, 'Submit')}]")
            # Reset recycles the session's browser context; the task's page is the same.
            assert page(await session.reset(split="test", index=index)) == first


async def test_bad_actions_are_observations_and_nothing_leaves_the_task_site(url):
    async with GymClient(url, encoding="json") as client:
        async with client.session("miniwob", split="test", index=index_of("click-button", 0)) as session:
            tree = session.observation.text
            bad = await session.step("Thought: hmm.\nAction: jump around")
            assert bad.info == {"valid": False} and "Invalid action" in bad.observation.text and "click [id]" in bad.observation.text
            missing = await session.step("click [99999]")
            assert "no element [99999]" in missing.observation.text
            outside = await session.step("```goto [http://example.com/]```")
            assert "only these sites" in outside.observation.text
            assert parse_tree(outside.observation.text) == parse_tree(tree)  # nothing changed
            assert not session.done and session.turns == 3
            stopped = await session.step("stop [done]")
            assert stopped.terminated and stopped.reward == 0 and stopped.metrics.success is False


async def test_screenshots_when_asked(url):
    async with GymClient(url, capabilities=["images"]) as client:
        async with client.session("miniwob", split="test", index=0, options={"images": True}) as session:
            (image,) = session.observation.images
            assert image.data.startswith(b"\x89PNG") and image.width == 1280
            result = await session.step("scroll [down]")
            assert result.observation.images[0].data.startswith(b"\x89PNG")
        async with client.session("miniwob", split="test", index=0) as session:
            assert not session.observation.images


async def test_webarena_tasks_scored_by_their_matchers(url):
    async with GymClient(url) as client:

        async def play(index: int, actions) -> tuple:
            async with client.session("shop", split="test", index=index) as session:
                observation = session.observation.text
                for make_action in actions:
                    result = await session.step(make_action(observation))
                    observation = result.observation.text
                return result.reward, result.metrics.success, observation

        def click(name, role=None):
            return lambda obs: f"click [{node_named(obs, name, role)}]"

        # string_match exact_match, a wrong then a right answer (separate episodes)
        assert (await play(0, [click("Products"), lambda obs: "stop [$4]"]))[:2] == (0.0, False)
        assert (await play(0, [click("Products"), lambda obs: "Thought: it says $3.\nAction: stop [$3]"]))[:2] == (1.0, True)
        # must_include, reading a page opened through a link
        assert (await play(1, [click("Contact"), lambda obs: "stop [Monday to Friday]"]))[:2] == (1.0, True)
        # url_match: the reference page with its query
        assert (await play(2, [click("Products"), click("Blue mug", "link"), lambda obs: "stop []"]))[:2] == (1.0, True)
        assert (await play(2, [click("Products"), click("Red pen", "link"), lambda obs: "stop []"]))[:2] == (0.0, False)
        # program_html on the last page, after typing (no Enter) and clicking
        reward, _, obs = await play(
            3, [lambda obs: f"type [{node_named(obs, 'Quantity', 'spinbutton')}] [4] [0]", click("Add to cart", "button"), lambda obs: "stop"]
        )
        assert reward == 1.0 and "Cart: 4 x Red pen" in obs
        # url_match and program_html (WebArena's get_query_text helper) together; Enter submits the form
        assert (await play(4, [lambda obs: f"type [{node_named(obs, 'Search', 'textbox')}] [lamps]", lambda obs: "stop"]))[:2] == (1.0, True)
        # fuzzy_match "N/A" is an exact match; other fuzzy answers need an LLM judge: INVALID_TASK
        assert (await play(5, [lambda obs: "stop [N/A]"]))[:2] == (1.0, True)
        with pytest.raises(ProtocolError) as info:
            await client.open("shop", split="test", index=6)
        assert info.value.code is ErrorCode.INVALID_TASK and "LLM judge" in info.value.message


async def test_tabs_and_blocked_links(url, site_url):
    async with GymClient(url) as client:
        async with client.session("shop", split="test", index=0) as session:
            elsewhere = await session.step(f"click [{node_named(session.observation.text, 'Elsewhere')}]")
            assert "example.com" not in elsewhere.observation.data["url"]  # the request was aborted, not sent
            contact = await session.step(f"goto [{site_url}/contact.html]")
            popup = await session.step(f"click [{node_named(contact.observation.text, 'Products in a new tab')}]")
            assert popup.observation.data["tabs"] == ["Contact", "Products"] and popup.observation.data["current_tab"] == 1
            assert "TABS: Tab 0: Contact | Tab 1 (current): Products" in popup.observation.text
            back = await session.step("tab_focus [0]")
            assert back.observation.data["current_tab"] == 0 and "Write to shop@example.org" in back.observation.text
            assert "there is no tab 5" in (await session.step("tab_focus [5]")).observation.text
            closed = await session.step("close_tab")
            assert closed.observation.data["tabs"] == ["Products"]
            opened = await session.step("new_tab")
            assert opened.observation.data["current_tab"] == 1 and opened.observation.data["url"] == "about:blank"
            went_back = await session.step("tab_focus [0]")
            assert went_back.observation.data["url"] == f"{site_url}/products.html"


async def test_a_hung_page_fails_only_its_session(url):
    async with GymClient(url) as client:
        frozen = await client.open("shop", split="test", index=7)
        neighbour = await client.open("shop", split="test", index=0)  # on the same Chromium
        stuck = asyncio.create_task(frozen.step(f"click [{node_named(frozen.observation.text, 'Freeze this page', 'button')}]"))
        await asyncio.sleep(0.5)
        # While that step waits on its page, the other session steps on the same Chromium.
        assert "Products" in (await neighbour.step("scroll [down]")).observation.text
        assert not stuck.done()
        with pytest.raises(ProtocolError) as info:
            await stuck
        assert info.value.code is ErrorCode.ENV_CRASHED and "did not answer" in info.value.message
        assert "Products" in (await neighbour.step("scroll [up]")).observation.text


async def test_reset_leaves_nothing_of_the_last_episode(url):
    async with GymClient(url) as client:
        async with client.session("shop", split="test", index=8) as session:
            assert "Memo: none; cookie: none" in session.observation.text
            kept = await session.step(f"click [{node_named(session.observation.text, 'Remember', 'button')}]")
            assert "Memo: kept; cookie: seen=1" in kept.observation.text
            assert (await session.step("new_tab")).observation.data["tabs"] == ["Memo", ""]
            again = await session.reset(split="test", index=8)
            assert "Memo: none; cookie: none" in again.text and again.data["tabs"] == ["Memo"]


# Two sessions per Chromium, so that one test can hold sessions on two browsers; the hung-browser
# part waits step_timeout_s.
SMALL_BROWSERS_MINIWOB = EnvSpec.of(MiniWoBEnv, sessions_per_browser=2, step_timeout_s=5.0)


async def test_killed_chromium_fails_only_its_sessions_and_is_replaced():
    with GymServer([SMALL_BROWSERS_MINIWOB], port=0).run_in_thread() as server_url:
        async with GymClient(server_url) as client:
            task = {"split": "test", "index": index_of("click-test-2", 0)}
            first, second, third = [await client.open("miniwob", **task) for _ in range(3)]
            hosts = [b for b in list(browser_module._launched) if b.alive and b.sessions]
            assert sorted(b.sessions for b in hosts) == [1, 2]
            doomed = next(b for b in hosts if b.sessions == 2)
            spared = next(b for b in hosts if b.sessions == 1)
            os.killpg(doomed.pid, signal.SIGKILL)  # mid-episode: every session has just been reset
            for session in (first, second):
                with pytest.raises(ProtocolError) as info:
                    await session.step("click [3]")
                assert info.value.code is ErrorCode.ENV_CRASHED and re.search(r"Chromium \(pid \d+\)", info.value.message)
            survivor = await third.step("scroll [down]")
            assert "OBJECTIVE" in survivor.observation.text and not third.done
            # New sessions work: one joins the surviving browser, the next starts a new Chromium.
            fresh = [await client.open("miniwob", **task) for _ in range(2)]
            for session in fresh:
                solver = MiniWoBSolver("click-test-2")
                result = await session.step(solver.act(session.observation.text))
                assert result.metrics.success
            live = [b for b in list(browser_module._launched) if b.alive]
            assert doomed not in live and len([b for b in live if b.sessions]) == 2
            # A browser that stops answering is killed; its session fails, a new one gets a new Chromium.
            probe = await client.open("miniwob", **task)
            frozen = next(b for b in live if b.sessions and b is not spared)
            os.killpg(frozen.pid, signal.SIGSTOP)
            with pytest.raises(ProtocolError) as info:
                await probe.step("scroll [down]")
            assert info.value.code is ErrorCode.ENV_CRASHED and "stopped answering" in info.value.message
            assert not frozen.alive and frozen.process.poll() is not None
            again = await client.open("miniwob", **task)
            assert (await again.step(MiniWoBSolver("click-test-2").act(again.observation.text))).metrics.success
