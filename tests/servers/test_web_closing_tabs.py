"""Tabs that close themselves, against the web environment through a real server and Chromium
(red-team review): a tab opened by a link whose page calls `window.close()` (as a sign-in popup
does when it is done), at once or a moment later, closed while the step observed it, and the
session failed with ENV_CRASHED (`Page.title` / `CDPSession.send`: target closed) in 5 of 6 tries.
A form that opens its answer in a new tab past the tab limit raced the same way. Now the tab is
left out and the agent sees the tab it is on."""

from __future__ import annotations

import asyncio
import http.server
import threading

import pytest
from test_web_egress import HostileSiteEnv, _answer, named

from gymwire.sdk.client import GymClient
from gymwire.sdk.env_spec import EnvSpec
from gymwire.sdk.server import GymServer
from gymwire.servers.web.env import MAX_TABS

WAIT = 60  # a step takes about a second on a loaded machine; a hang would outlast this

PAGES = {
    "/": "<title>Start</title><p>start</p>",
    "/opener.html": (
        "<title>Opener</title><a href='/closer.html' target=_blank>Closes soon</a> "
        "<a href='/closer-now.html' target=_blank>Closes at once</a> "
        "<form action='/' target=_blank><button>Answer in a new tab</button></form>"
    ),
    "/closer.html": "<title>Closer</title><script>setTimeout(() => window.close(), 150)</script><p>closing soon</p>",
    "/closer-now.html": "<title>Closer now</title><script>window.close()</script><p>closing now</p>",
}


class _Site(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        _answer(self, PAGES.get(self.path.split("?")[0], "<p>?</p>").encode())

    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def gym():
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    site_url = f"http://127.0.0.1:{site.server_address[1]}"
    with GymServer([EnvSpec.of(HostileSiteEnv, site=site_url)], port=0).run_in_thread() as gym_url:
        yield gym_url, site_url
    site.shutdown()
    site.server_close()


async def test_tabs_that_close_themselves_leave_the_session_usable(gym):
    gym_url, site = gym
    async with GymClient(gym_url) as client:
        for _ in range(2):
            async with client.session("hostile", split="test", index=0) as session:
                opener = (await session.step(f"goto [{site}/opener.html]")).observation
                for i in range(2 * MAX_TABS):
                    link = ("Closes soon", "Closes at once", "Answer in a new tab")[i % 3]
                    result = await asyncio.wait_for(session.step(f"click [{named(opener, link)}]"), WAIT)
                    assert result.observation.data["url"].startswith(("http://", "chrome-error:")), result.observation.text[:300]
                    await asyncio.sleep(0.05 * (i % 4))  # land the next step before, during and after a close
                    await asyncio.wait_for(session.step("scroll [down]"), WAIT)
                    back = await asyncio.wait_for(session.step("tab_focus [0]"), WAIT)
                    assert back.observation.data["current_tab"] == 0
                assert len(back.observation.data["tabs"]) <= MAX_TABS
                final = await asyncio.wait_for(session.step(f"goto [{site}/]"), WAIT)
                assert "start" in final.observation.text
