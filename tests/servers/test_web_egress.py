"""A hostile agent against the web environment, through a real gymwire server and Chromium.

A site on loopback (the task's only origin) redirects, embeds, fetches, opens WebSockets and
popups towards a second local service that holds a secret; that service counts every connection
it gets, and must get none. Also: URL spellings that name loopback another way, non-web schemes,
the tab limit, the observation limit and a killed renderer.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gymwire.protocol import ErrorCode, ProtocolError
from gymwire.sdk.client import GymClient
from gymwire.sdk.env_spec import EnvSpec
from gymwire.sdk.environment import Observation, StepOutcome, Task
from gymwire.sdk.server import GymServer
from gymwire.servers.web import browser as browser_module
from gymwire.servers.web.env import MAX_OBSERVATION_CHARS, MAX_TABS, SESSIONS_PER_BROWSER, BrowserEnv
from gymwire.servers.web.solvers import parse_tree

SECRET = "SECRET-7f3a9c"


class _SecretService(http.server.ThreadingHTTPServer):
    """A local service that is not on any task's list: it counts every connection it accepts."""

    def __init__(self) -> None:
        self.connections = 0
        super().__init__(("127.0.0.1", 0), _SecretPage)

    def process_request(self, request, client_address):
        self.connections += 1
        super().process_request(request, client_address)


class _SecretPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        _answer(self, f"<title>{SECRET}</title><p>{SECRET}</p>".encode())

    def log_message(self, format, *args):
        pass


def _answer(handler: http.server.BaseHTTPRequestHandler, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for key, value in {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(body)), **(headers or {})}.items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


def _pages(secret: str, udp_port: int) -> dict[str, str]:
    """The hostile site's pages; `/go...` answers 302 to the secret service."""
    port = secret.rsplit(":", 1)[1]
    return {
        "/": "<title>Start</title><h1>Start</h1><p>Nothing here.</p>",
        "/links.html": (
            "<title>Links</title><a href='/go/link'>Redirected link</a> "
            "<a href='/go/popup' target='_blank'>Redirected popup</a> "
            "<button onclick=\"window.open('/go/window')\">Open window</button> "
            "<a href='/file.bin'>Download</a>"
        ),
        "/embeds.html": f"""<title>Embeds</title><p>Embeds</p>
            <iframe src="/go/iframe"></iframe><img src="/go/img"><iframe src="{secret}/direct-frame"></iframe>
            <script>
            const log = (what) => document.title += ' ' + what;
            fetch('/go/fetch').then(r => r.text()).then(t => log('fetched:' + t), () => log('fetch-failed'));
            fetch('{secret}/cors', {{mode: 'no-cors'}}).then(() => log('no-cors-ok'), () => log('no-cors-failed'));
            for (const url of ['http://localhost:{port}/dns', 'http://[::1]:{port}/v6', 'http://2130706433:{port}/decimal',
                               'http://0x7f.1:{port}/hex', 'http://127.1:{port}/short', 'http://0.0.0.0:{port}/any'])
                fetch(url, {{mode: 'no-cors'}}).catch(() => 0);
            const ws = new WebSocket('ws://127.0.0.1:{port}/socket');
            ws.onerror = () => log('ws-failed'); ws.onopen = () => log('ws-open');
            navigator.sendBeacon('{secret}/beacon', 'x');
            const rtc = new RTCPeerConnection({{iceServers: [{{urls: 'stun:127.0.0.1:{udp_port}'}}]}});
            rtc.createDataChannel('x'); rtc.createOffer().then(o => rtc.setLocalDescription(o));
            try {{ new WebTransport('https://127.0.0.1:{udp_port}/quic').ready.catch(() => 0); }} catch (e) {{}}
            </script>""",
        "/new-tabs.html": "<title>Tabs</title><a href='/' target='_blank'>Another tab</a> <button onclick=\"window.open('/')\">Open window</button>",
        "/big.html": "<title>Big</title><body><script>for (let i = 0; i < 6000; i++) { const b = document.createElement('button'); b.textContent = 'Button number ' + i; document.body.appendChild(b); }</script>",
        "/long-title.html": "<script>document.title = 'T'.repeat(1000000)</script><p>Long title</p>",
    }


def _site_handler(pages: dict[str, str], secret: str):
    class Site(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/go"):
                _answer(self, b"", 302, {"Location": f"{secret}{self.path}"})
            elif self.path == "/file.bin":
                _answer(self, SECRET.encode(), headers={"Content-Type": "application/octet-stream", "Content-Disposition": "attachment; filename=gymwire-egress-test.bin"})
            elif self.path.split("?")[0] in pages:
                _answer(self, pages[self.path.split("?")[0]].encode())
            else:
                _answer(self, b"not here", 404)

        def log_message(self, format, *args):
            pass

    return Site


class HostileSiteEnv(BrowserEnv):
    """The web environment's shared browser code on one site (WebArena's scoring is not needed)."""

    name = "hostile"
    splits = {"test": 1}
    default_max_turns = 200

    def __init__(self, site: str, sessions_per_browser: int = SESSIONS_PER_BROWSER) -> None:
        super().__init__(sessions_per_browser)
        self.site = site

    async def reset(self, task: Task) -> Observation:
        self._read_options(task)
        self.objective = "Find the secret."
        await self._guarded(self._open({self.site}, f"{self.site}/"))
        return await self._guarded(self._observe())

    async def step(self, action: str) -> StepOutcome:
        self._check_browser()
        return await self._guarded(self._step(action))

    async def _step(self, action: str) -> StepOutcome:
        done, note = await self._step_action(action)
        return StepOutcome(await self._observe(note), info={"valid": done is not None})


@pytest.fixture(scope="module")
def world():
    secret_service = _SecretService()
    threading.Thread(target=secret_service.serve_forever, daemon=True).start()
    secret = f"http://127.0.0.1:{secret_service.server_address[1]}"
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _site_handler(_pages(secret, udp.getsockname()[1]), secret))
    threading.Thread(target=site.serve_forever, daemon=True).start()
    site_url = f"http://127.0.0.1:{site.server_address[1]}"
    # hostile-alone: one session per Chromium, so that the renderers killed are that session's only.
    envs = [EnvSpec.of(HostileSiteEnv, site=site_url), EnvSpec.of(HostileSiteEnv, site=site_url, sessions_per_browser=1, name="hostile-alone")]
    with GymServer(envs, port=0).run_in_thread() as gym_url:
        yield {"gym": gym_url, "site": site_url, "secret": secret, "service": secret_service, "udp": udp}
    for server in (site, secret_service):
        server.shutdown()
        server.server_close()
    udp.close()


def _secret_port(world) -> str:
    return world["secret"].rsplit(":", 1)[1]


def named(observation: Any, name: str) -> int:
    return next(n.id for n in parse_tree(observation.text) if n.name == name)


async def test_redirects_to_a_local_service_are_error_observations(world):
    blocked = f"127.0.0.1:{_secret_port(world)}"
    async with GymClient(world["gym"]) as client:
        async with client.session("hostile", split="test", index=0) as session:
            by_goto = await session.step(f"goto [{world['site']}/go/goto]")
            assert "goto failed" in by_goto.observation.text and blocked in by_goto.observation.text
            assert by_goto.observation.data["refused"] == [blocked] and SECRET not in by_goto.observation.text
            links = await session.step(f"goto [{world['site']}/links.html]")
            by_link = await session.step(f"click [{named(links.observation, 'Redirected link')}]")
            assert by_link.observation.data["refused"] == [blocked] and SECRET not in by_link.observation.text
            # The session goes on: a page of the site loads as before.
            again = await session.step(f"goto [{world['site']}/links.html]")
            assert again.observation.data["url"] == f"{world['site']}/links.html" and "refused" not in again.observation.data
            assert "not done" not in again.observation.text  # leaving Chromium's error page is no failure
            popup = await session.step(f"click [{named(again.observation, 'Redirected popup')}]")
            assert blocked in popup.observation.data["refused"] and len(popup.observation.data["tabs"]) == 2
            await session.step("tab_focus [0]")
            window = await session.step(f"click [{named(again.observation, 'Open window')}]")
            assert blocked in window.observation.data.get("refused", []) or blocked in popup.observation.data["refused"]
            await session.step("tab_focus [0]")
            download = await session.step(f"click [{named(again.observation, 'Download')}]")
            assert SECRET not in download.observation.text
    assert not list(Path.home().glob("Downloads/gymwire-egress-test*"))
    assert world["service"].connections == 0


async def test_subresources_fetch_websockets_webrtc_and_quic_reach_nothing_local(world):
    port = _secret_port(world)
    async with GymClient(world["gym"]) as client:
        async with client.session("hostile", split="test", index=0) as session:
            embeds = await session.step(f"goto [{world['site']}/embeds.html]")
            refused = set(embeds.observation.data.get("refused", []))
            await asyncio.sleep(1.0)  # the page's fetches and the WebSocket fail in their own time
            later = await session.step("scroll [down]")
            refused |= set(later.observation.data.get("refused", []))
            assert {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"0.0.0.0:{port}"} <= refused
            title = later.observation.data["tabs"][0]
            assert "ws-failed" in title and "fetch-failed" in title and "ws-open" not in title and SECRET not in later.observation.text
    assert world["service"].connections == 0
    with pytest.raises(BlockingIOError):
        world["udp"].recvfrom(2048)  # no STUN (WebRTC) or QUIC (WebTransport) packet came


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "view-source:{secret}/",
        "chrome://version",
        "javascript:alert(document.cookie)",
        "data:text/html,<script>location='{secret}'</script>",
        "http://localhost:{port}/",
        "http://localhost.localdomain:{port}/",
        "http://[::1]:{port}/",
        "http://2130706433:{port}/",
        "http://127.0.0.1.:{port}/",
        "{secret}/",
        "{site}@127.0.0.1:{port}/",
    ],
)
async def test_goto_outside_the_site_is_refused(world, url):
    url = url.format(secret=world["secret"], port=_secret_port(world), site=world["site"])
    async with GymClient(world["gym"]) as client:
        async with client.session("hostile", split="test", index=0) as session:
            result = await session.step(f"goto [{url}]")
            assert "only these sites can be visited" in result.observation.text
            assert result.observation.data["url"] == f"{world['site']}/" and SECRET not in result.observation.text
    assert world["service"].connections == 0


async def test_the_tab_limit_holds(world):
    cap = MAX_TABS
    async with GymClient(world["gym"]) as client:
        async with client.session("hostile", split="test", index=0) as session:
            for _ in range(40):
                result = await session.step("new_tab")
            assert len(result.observation.data["tabs"]) == cap and f"has {cap} tabs" in result.observation.text
            await session.reset(split="test", index=0)
            page = await session.step(f"goto [{world['site']}/new-tabs.html]")
            for _ in range(cap + 2):
                result = await session.step(f"click [{named(page.observation, 'Another tab')}]")
                await session.step("tab_focus [0]")
            assert len(result.observation.data["tabs"]) == cap and "close_tab one first" in result.observation.text
            await session.reset(split="test", index=0)
            page = await session.step(f"goto [{world['site']}/new-tabs.html]")
            notes = []
            for _ in range(cap + 2):
                result = await session.step(f"click [{named(page.observation, 'Open window')}]")
                notes.append(result.observation.text)
                result = await session.step("tab_focus [0]")
            assert len(result.observation.data["tabs"]) <= cap
            assert any(f"already has {cap} tabs" in note for note in notes)


async def test_observations_are_capped_with_a_note(world):
    async with GymClient(world["gym"]) as client:
        async with client.session("hostile", split="test", index=0) as session:
            big = await session.step(f"goto [{world['site']}/big.html]")
            assert len(big.observation.text) <= MAX_OBSERVATION_CHARS
            assert "Button number 0" in big.observation.text and "Button number 5999" not in big.observation.text
            assert "The page is too long to show whole" in big.observation.text.splitlines()[-1]
            # An id shown is still usable.
            assert "Invalid" not in (await session.step(f"click [{named(big.observation, 'Button number 3')}]")).observation.text
            titled = await session.step(f"goto [{world['site']}/long-title.html]")
            assert len(titled.observation.data["tabs"][0]) <= 200 and len(titled.observation.text) < 10_000


def _renderers(browser_pid: int) -> list[int]:
    """Chromium's renderer processes (its process group, `--type=renderer`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != browser_pid:
                continue
            if b"--type=renderer" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
    return found


async def test_a_killed_renderer_is_noticed_at_the_next_action(world):
    async with GymClient(world["gym"]) as client:
        session = await client.open("hostile-alone", split="test", index=0)
        (browser,) = [b for pools in list(browser_module._pools.values()) if 1 in pools for b in pools[1].browsers if b.sessions]
        for pid in _renderers(browser.pid):
            os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(ProtocolError) as info:
            await session.step("scroll [down]")
        # Noticed at once, not after the step time limit (30 s).
        assert info.value.code is ErrorCode.ENV_CRASHED and "renderer" in info.value.message
        assert time.monotonic() - started < 10
        await session.close()
        # The browser itself lives on, and a new session works.
        async with client.session("hostile-alone", split="test", index=0) as fresh:
            assert (await fresh.step("scroll [down]")).observation.data["url"] == f"{world['site']}/"

