"""Headless Chromium processes shared by many sessions, each session in its own browser context.

A `BrowserPool` (one per event loop) starts Chromium itself (Debian's `chromium`, or
$GYMWIRE_CHROMIUM) with a DevTools port on loopback and drives it through Playwright's
`connect_over_cdp`: owning the process is what lets the pool see it die, kill it when it hangs,
and start another. Sessions are packed onto browsers, `sessions_per_browser` each; when a browser
dies only the sessions on it fail (`BrowserCrashed`), and the next session gets a new browser.

Every context's connections go through its own `EgressProxy` (egress.py), which reaches only the
task's origins. What does not travel as a connection is shut at launch: Chromium resolves no
host name itself (the proxy resolves the listed ones), and WebRTC sends no UDP outside a proxy.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import weakref
from typing import Any, Iterable
from urllib.parse import urlsplit

CHROMIUM_ENV_VAR = "GYMWIRE_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = "pip install 'gymwire[web]' (and Chromium: apt-get install chromium)"
# Flags that work as root on a machine without network: no sandbox, no GPU, no background traffic.
# The viewer's browser tests launch Chromium with these too.
OFFLINE_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
# The pool starts Chromium itself and attaches over the DevTools port, on loopback only.
CHROMIUM_FLAGS = (
    "--headless",
    *OFFLINE_FLAGS,
    # Every name resolves to "not found" in Chromium (no DNS query leaves it); names travel to the
    # contexts' SOCKS5 proxies, which sit on 127.0.0.1.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    # WebRTC would send STUN/TURN over UDP straight to any address a page names; through the proxy only.
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
PR_SET_PDEATHSIG = 1
START_TIMEOUT_S = 30.0
HEALTH_TIMEOUT_S = 10.0  # generous: a busy machine must not pass for a hung browser


class BrowserCrashed(RuntimeError):
    """The Chromium process hosting a session died or stopped answering."""


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def chromium_path() -> str:
    path = os.environ.get(CHROMIUM_ENV_VAR) or shutil.which("chromium") or DEFAULT_CHROMIUM
    if not os.path.exists(path):
        raise RuntimeError(f"Chromium not found at {path}: apt-get install chromium, or set ${CHROMIUM_ENV_VAR}")
    return path


class Browser:
    """One Chromium process and Playwright's connection to it."""

    def __init__(self, process: subprocess.Popen, profile_dir: str, handle: Any, cdp: Any) -> None:
        self.process = process
        self.profile_dir = profile_dir
        self.handle = handle  # playwright Browser
        self.cdp = cdp  # browser-level CDP session, for health checks
        self.sessions = 0
        self.dead = False
        # Chromium runs in its own process group and would outlive this object, or the server.
        self._finalizer = weakref.finalize(self, _kill_process_group, process, profile_dir)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return not self.dead and self.process.poll() is None and self.handle.is_connected()

    async def responsive(self) -> bool:
        """Does the browser process itself still answer (a hung page does not make it hang)?"""
        if not self.alive:
            return False
        try:
            await asyncio.wait_for(self.cdp.send("Browser.getVersion"), HEALTH_TIMEOUT_S)
            return True
        except Exception:
            return False

    async def new_context(self, proxy_url: str, viewport: dict[str, int], storage_state: str | None = None) -> Any:
        """A context whose every connection goes through `proxy_url` (an `EgressProxy`), loopback included."""
        return await self.handle.new_context(
            viewport=viewport,
            service_workers="block",
            accept_downloads=False,
            storage_state=storage_state,
            proxy={"server": proxy_url, "bypass": "<-loopback>"},
        )

    def kill(self) -> None:
        """Kill Chromium and its helper processes (they share its process group)."""
        self.dead = True
        self._finalizer()


def _kill_process_group(process: subprocess.Popen, profile_dir: str) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
    shutil.rmtree(profile_dir, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child before exec: Linux kills Chromium when the thread that started it ends, so a
    server killed with SIGKILL leaves no browser behind."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: kill() and the finalizer still clean up on a normal exit


async def launch_chromium(playwright: Any) -> Browser:
    profile_dir = tempfile.mkdtemp(prefix="gymwire-chromium-")
    process = subprocess.Popen(
        [chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: kill() takes the renderers with it
        preexec_fn=_die_with_parent,
    )
    try:
        endpoint = await asyncio.wait_for(asyncio.to_thread(_read_devtools_endpoint, process), START_TIMEOUT_S)
        handle = await playwright.chromium.connect_over_cdp(endpoint)
        cdp = await handle.new_browser_cdp_session()
    except BaseException:
        _kill_process_group(process, profile_dir)
        raise
    browser = Browser(process, profile_dir, handle, cdp)
    handle.on("disconnected", lambda _: setattr(browser, "dead", True))
    _launched.add(browser)
    return browser


def _read_devtools_endpoint(process: subprocess.Popen) -> str:
    assert process.stderr is not None
    lines = []
    for raw in process.stderr:
        line = raw.decode(errors="replace")
        lines.append(line)
        match = re.search(r"DevTools listening on (ws://\S+)", line)
        if match:
            # Keep draining stderr so Chromium never blocks on a full pipe.
            threading.Thread(target=_drain, args=(process.stderr,), daemon=True).start()
            return match.group(1)
    raise RuntimeError(f"Chromium exited before opening its DevTools port: {''.join(lines)[-500:]}")


def _drain(stream: Any) -> None:
    for _ in stream:
        pass


class BrowserPool:
    """The Chromium processes of one event loop, and the Playwright driver that talks to them."""

    def __init__(self, sessions_per_browser: int) -> None:
        self.sessions_per_browser = sessions_per_browser
        self.browsers: list[Browser] = []
        self._playwright: Any = None
        self._lock = asyncio.Lock()

    async def acquire(self) -> Browser:
        """A live browser with room for one more session (starting one if needed)."""
        async with self._lock:
            for browser in list(self.browsers):
                if not browser.alive:
                    self._discard(browser)
            for browser in self.browsers:
                if browser.sessions < self.sessions_per_browser:
                    browser.sessions += 1
                    return browser
            if self._playwright is None:
                try:
                    from playwright.async_api import async_playwright
                except ImportError as exc:
                    raise RuntimeError(f"the web environment needs Playwright: {INSTALL_HINT}") from exc
                self._playwright = await async_playwright().start()
            browser = await launch_chromium(self._playwright)
            browser.sessions = 1
            self.browsers.append(browser)
            return browser

    def release(self, browser: Browser) -> None:
        browser.sessions -= 1
        # A dead browser goes; so does an idle one while another can take new sessions.
        if not browser.alive or (browser.sessions == 0 and len(self.browsers) > 1):
            self._discard(browser)

    def _discard(self, browser: Browser) -> None:
        browser.kill()
        if browser in self.browsers:
            self.browsers.remove(browser)

    async def close(self) -> None:
        for browser in list(self.browsers):
            self._discard(browser)
        if self._playwright is not None:
            await self._playwright.stop()
            self._playwright = None


_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, BrowserPool]]" = weakref.WeakKeyDictionary()
_launched: "weakref.WeakSet[Browser]" = weakref.WeakSet()  # every live Browser object, for tests and benchmarks


def pool_for(sessions_per_browser: int) -> BrowserPool:
    """The pool of the running event loop (Playwright objects belong to the loop that made them)."""
    pools = _pools.setdefault(asyncio.get_running_loop(), {})
    if sessions_per_browser not in pools:
        pools[sessions_per_browser] = BrowserPool(sessions_per_browser)
    return pools[sessions_per_browser]
