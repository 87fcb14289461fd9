"""The browser side every web task shares: a session's context, its tabs, WebArena's actions and
observation. `MiniWoBEnv` and `WebArenaEnv` add where an episode starts and how it is scored.

The environment is async: Playwright's calls are awaited on the server's event loop, and one
session waiting on a slow page never holds up another. Every step has a time limit; when it runs
out the browser is probed, and a browser that no longer answers is killed (its sessions fail
with ENV_CRASHED, new sessions get a new browser), while a page that hangs in a live browser
fails only its own session.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from pydantic import PositiveFloat, PositiveInt

from gymwire.sdk.environment import Environment, Image, Observation, StepOutcome, Task, TaskError

from . import axtree
from .actions import USAGE, Action, ActionError, parse_action, shorten
from .browser import Browser, BrowserCrashed, BrowserPool, origin_of, pool_for
from .egress import EgressProxy

VIEWPORT = {"width": 1280, "height": 720}
SESSIONS_PER_BROWSER = 16
STEP_TIMEOUT_S = 30.0
MAX_TABS = 10
MAX_OBSERVATION_CHARS = 100_000
NAVIGATION_TIMEOUT_MS = 15_000  # a slow navigation is an observation; only a step past step_timeout_s is a crash
LOAD_TIMEOUT_MS = 5000
SETTLE_S = 0.05
STABLE_TRIES = 20  # animation frames to wait for an element to stop moving before clicking it anyway
KEY_BY_KEY_CHARS = 256  # longer text is inserted as one input event (a paste): key by key costs ~3 ms a character
MAX_TITLE_CHARS = 200
MAX_URL_CHARS = 2000
CLOSING_WAIT_MS = 500  # how long a tab whose call failed may take to report that it closed
MAX_IMAGE_BYTES = 1 << 20  # a screenshot PNG past this is sent as a JPEG
JPEG_QUALITY = 80
# The centre may lie under another element (overlapping widgets): then the first point of a grid
# over the element that the element itself receives, as Playwright retries a covered click.
_UNCOVERED_POINT = """function(centre) {
    const element = this.nodeType === Node.ELEMENT_NODE ? this : this.parentElement;
    const hits = (x, y) => { const top = document.elementFromPoint(x, y); return !!top && (element.contains(top) || top.contains(this)); };
    if (!element || hits(centre[0], centre[1])) return null;
    const box = element.getBoundingClientRect();
    for (let i = 1; i < 8; i++) for (let j = 1; j < 8; j++) {
        const x = box.left + box.width * i / 8, y = box.top + box.height * j / 8;
        if (hits(x, y)) return [x, y];
    }
    return null;
}"""
_TWO_FRAMES = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"  # let event handlers and short animations run before the page is read

_KEY_NAMES = {"ctrl": "Control", "control": "Control", "cmd": "Meta", "meta": "Meta", "alt": "Alt", "shift": "Shift",
              "enter": "Enter", "return": "Enter", "esc": "Escape", "escape": "Escape", "tab": "Tab",
              "backspace": "Backspace", "delete": "Delete", "space": "Space", "pageup": "PageUp",
              "pagedown": "PageDown", "up": "ArrowUp", "down": "ArrowDown", "left": "ArrowLeft", "right": "ArrowRight"}


class ActionFailed(Exception):
    """A well-formed action that cannot be done on this page; the message is the observation."""


class RendererCrashed(RuntimeError):
    """A tab's renderer process died (crashed or was killed): the session cannot go on."""


def key_combo(text: str) -> str:
    """`ctrl+a` -> `Control+a`: Playwright's key names, agents' spellings."""
    keys = [k.strip() for k in text.replace(" ", "").split("+") if k.strip()]
    return "+".join(_KEY_NAMES.get(k.lower(), k) for k in keys)


async def _renderer_round_trip(page: Any) -> None:
    """Wait for the page's renderer to answer once more: on a loaded machine a link's navigation
    can be reported later than the fixed settle time, and would be missed (the agent would see
    the old page). A page already navigating away answers with an error, which is as good."""
    from playwright.async_api import Error as PlaywrightError

    try:
        await page.evaluate("() => new Promise(done => setTimeout(done, 0))")
    except PlaywrightError:
        pass


async def goto(page: Any, url: str, timeout_ms: float = NAVIGATION_TIMEOUT_MS) -> None:
    """`page.goto`, except that leaving Chromium's error page (a refused site, say) is not taken for
    a failure: Playwright then reports the navigation "interrupted by another navigation to
    chrome-error://" most of the time (12 of 15 tries), although it completes."""
    from playwright.async_api import Error as PlaywrightError

    try:
        await page.goto(url, wait_until="load", timeout=timeout_ms)
    except PlaywrightError as exc:
        if "interrupted by another navigation" not in str(exc):
            raise
        try:
            await page.wait_for_url(lambda now: not now.startswith("chrome-error:"), wait_until="load", timeout=LOAD_TIMEOUT_MS)
        except PlaywrightError:
            raise exc from None


async def _has_closed(page: Any) -> bool:
    """Whether a tab whose call just failed has closed (or is closing): Playwright learns that a
    moment after the call into it fails."""
    if not page.is_closed():
        try:
            await page.wait_for_event("close", timeout=CLOSING_WAIT_MS)
        except Exception:
            pass  # open after all (the failure was another), or its context went first
    return page.is_closed()


async def _close_quietly(page: Any) -> None:
    try:
        await page.close()
    except Exception:
        pass  # its context, or the browser, went first


class NavigationWatch:
    """Sees whether the main frame of a page started loading a new document, and when it got it."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.started = False
        self.done = asyncio.Event()
        self._handlers = {"request": self._on_request, "requestfailed": self._on_failed, "framenavigated": self._on_navigated}
        for event, handler in self._handlers.items():
            page.on(event, handler)

    def _main(self, request: Any) -> bool:
        return request.is_navigation_request() and request.frame == self.page.main_frame

    def _on_request(self, request: Any) -> None:
        if self._main(request):
            self.started = True

    def _on_failed(self, request: Any) -> None:
        if self._main(request):
            self.done.set()

    def _on_navigated(self, frame: Any) -> None:
        if frame == self.page.main_frame:
            self.done.set()

    async def settled(self) -> None:
        """Wait for a navigation that started to commit (or fail); nothing to wait for otherwise."""
        if self.started:
            try:
                await asyncio.wait_for(self.done.wait(), NAVIGATION_TIMEOUT_MS / 1000)
            except asyncio.TimeoutError:
                pass  # still loading: the agent sees the page as it is

    def stop(self) -> None:
        for event, handler in self._handlers.items():
            self.page.remove_listener(event, handler)


class BrowserEnv(Environment):
    """Base of the web environments (not served by itself)."""

    version = "1.0.0"
    observation_fields = ["text", "data", "images"]
    images = True
    seedable = True
    requires: ClassVar[tuple[str, ...]] = ("playwright.async_api",)
    extra: ClassVar[str] = "web"
    known_options: ClassVar[dict[str, str]] = {"images": "add a screenshot to each observation, default false"}

    def __init__(
        self, sessions_per_browser: PositiveInt = SESSIONS_PER_BROWSER, step_timeout_s: PositiveFloat = STEP_TIMEOUT_S,
        max_tabs: PositiveInt = MAX_TABS, max_observation_chars: PositiveInt = MAX_OBSERVATION_CHARS,
    ) -> None:
        """`sessions_per_browser`: sessions one Chromium hosts; `step_timeout_s`: a step (or reset)
        still running then means a hung page or browser, and crashes the session. `max_tabs`: a
        session's tabs (new_tab, links to new tabs and window.open all count); `max_observation_chars`:
        the observation's text, past which the tree is cut with a note."""
        self.sessions_per_browser = sessions_per_browser
        self.step_timeout_s = step_timeout_s
        self.max_tabs = max_tabs
        self.max_observation_chars = max_observation_chars
        self._pool: BrowserPool | None = None
        self._browser: Browser | None = None
        self._context: Any = None
        self._page: Any = None
        self._cdp_sessions: dict[Any, Any] = {}
        self._proxy: EgressProxy | None = None
        self._origins: set[str] = set()
        self._own_pages = 0  # pages the environment itself is opening: not counted against max_tabs
        self._tab_notes: list[str] = []
        self._renderer_died = asyncio.Event()
        self._tree = axtree.AXTree("", frozenset())
        self._images = False
        self.objective = ""

    # -- episode lifecycle (used by subclasses) ---------------------------------------------------

    def _read_options(self, task: Task) -> None:
        self._images = task.options.get("images", False)
        if not isinstance(self._images, bool):
            raise TaskError(f"option images must be true or false, got {self._images!r}")

    async def _open(self, origins: set[str], url: str, storage_state: str | None = None) -> None:
        """One tab at `url` in a clean context on this session's browser (a new browser if it died).

        The session's context is recycled when it can be: its other tabs closed, its cookies and the
        task origins' storage cleared (the HTTP cache stays: it holds no episode state). Its tab then
        stays in the same renderer process, which saves most of a reset's cost. A storage state to load, other origins, or a dead
        browser get a new context."""
        origins = {origin_of(o) for o in origins}
        if self._browser is not None and not self._browser.alive:
            await self._close_context()
            self._release()
        if self._context is not None and (storage_state is not None or origins != self._origins or not await self._recycled()):
            await self._close_context()
        await self._acquire_browser()
        if self._context is None:
            self._origins = origins
            self._proxy = await EgressProxy(origins).start()
            self._context = await self._browser.new_context(self._proxy.url, VIEWPORT, storage_state)
            self._context.on("page", self._on_new_page)
            self._page = await self.new_page()
        self._tab_notes.clear()
        await self._page.goto(url, wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)

    async def _acquire_browser(self) -> None:
        if self._browser is None:
            self._pool = pool_for(self.sessions_per_browser)
            self._browser = await self._pool.acquire()

    async def _recycled(self) -> bool:
        """Clean the session's context for the next episode; False when that did not work out."""
        from playwright.async_api import Error as PlaywrightError

        try:
            pages = [p for p in self._context.pages if not p.is_closed()]
            if not pages:
                return False
            for extra in pages[1:]:
                await extra.close()
            self._page = pages[0]
            await goto(self._page, "about:blank", LOAD_TIMEOUT_MS)
            await self._context.clear_cookies()
            cdp = await self._cdp(self._page)
            for origin in self._origins:
                await cdp.send("Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "all"})
            return True
        except PlaywrightError:
            return False

    async def new_page(self) -> Any:
        """A tab the environment opens itself (the first tab, a task's start URLs, a scoring
        check): never refused by the tab limit."""
        self._own_pages += 1
        try:
            return await self._context.new_page()
        finally:
            self._own_pages -= 1

    def _on_new_page(self, page: Any) -> None:
        page.on("crash", lambda _: self._renderer_died.set())
        if self._own_pages:
            self._page = page
            return
        if len([p for p in self._context.pages if not p.is_closed()]) > self.max_tabs:
            # A page opened it (a link to a new tab, window.open): past the limit it goes at once.
            asyncio.ensure_future(_close_quietly(page))
            self._tab_notes.append(f"A page tried to open another tab; this session already has {self.max_tabs} tabs, the most it may have, so it was closed.")
            return
        self._page = page  # a link that opens a tab moves the agent there, as in WebArena

    async def _close_context(self) -> None:
        context, self._context, self._page = self._context, None, None
        proxy, self._proxy = self._proxy, None
        self._cdp_sessions.clear()
        self._renderer_died = asyncio.Event()
        if context is not None and self._browser is not None and self._browser.alive:
            try:
                await asyncio.wait_for(context.close(), 10)
            except Exception:
                pass  # a context of a dying browser goes with it
        if proxy is not None:
            await proxy.close()

    def _release(self) -> None:
        if self._browser is not None and self._pool is not None:
            self._pool.release(self._browser)
        self._browser = None

    async def close(self) -> None:
        await self._close_context()
        self._release()

    def _check_browser(self) -> None:
        if self._browser is None or self._context is None:
            raise RuntimeError("no episode: reset first")
        if not self._browser.alive:
            raise BrowserCrashed(f"Chromium (pid {self._browser.pid}) hosting this session died")
        if self._renderer_died.is_set():
            raise RendererCrashed("a tab's renderer process died (crashed or was killed); the session cannot go on")

    async def _guarded(self, coro: Any) -> Any:
        """Run browser work under the step time limit; tell a hung page from a hung browser. A tab
        whose renderer dies ends the wait at once (calls into a dead renderer may never return)."""
        # Starting Chromium (and Playwright) is bounded by START_TIMEOUT_S, not by a step's limit.
        try:
            await self._acquire_browser()
        except BaseException:
            coro.close()
            raise
        work = asyncio.ensure_future(coro)
        died = asyncio.ensure_future(self._renderer_died.wait())
        try:
            done, _ = await asyncio.wait({work, died}, timeout=self.step_timeout_s, return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                return work.result()
            if died in done:
                work.cancel()
                self._check_browser()
                raise RendererCrashed("a tab's renderer process died (crashed or was killed); the session cannot go on")
            work.cancel()
            raise asyncio.TimeoutError
        except asyncio.TimeoutError:
            browser = self._browser
            if browser is None:
                raise RuntimeError(f"Chromium did not start within {self.step_timeout_s:g} s") from None
            if not await browser.responsive():
                browser.kill()
                raise BrowserCrashed(f"Chromium (pid {browser.pid}) stopped answering and was killed") from None
            await self._close_context()
            raise RuntimeError(f"the page did not answer within {self.step_timeout_s:g} s") from None
        except RendererCrashed:
            raise
        except Exception as exc:
            if self._browser is not None and not self._browser.alive:
                raise BrowserCrashed(f"Chromium (pid {self._browser.pid}) hosting this session died: {exc}") from exc
            raise
        finally:
            died.cancel()
            if not work.done():
                work.cancel()

    # -- acting -----------------------------------------------------------------------------------

    async def _perform(self, action: Action) -> None:
        """Do one action on the current tab. Raises ActionFailed with what went wrong."""
        from playwright.async_api import Error as PlaywrightError

        page = self._current_page()
        # Input can start a navigation (a link, a form's Enter) that the input call does not wait for.
        watch = NavigationWatch(page) if action.name in ("click", "hover", "type", "press") else None
        try:
            if action.name in ("click", "hover", "type"):
                await self._on_element(page, action)
            elif action.name == "press":
                await page.keyboard.press(key_combo(action.text))
            elif action.name == "scroll":
                sign = "" if action.text == "down" else "-"
                await page.evaluate(f"window.scrollBy(0, {sign}window.innerHeight)")
            elif action.name == "goto":
                url = action.text if "://" in action.text else f"http://{action.text}"
                if origin_of(url) not in self._origins:
                    raise ActionFailed(f"goto {shorten(url)}: only these sites can be visited: {', '.join(sorted(self._origins))}")
                await goto(page, url)
            elif action.name == "go_back":
                await page.go_back(wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
            elif action.name == "go_forward":
                await page.go_forward(wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
            elif action.name == "new_tab":
                self._check_tab_room("new_tab")
                await self.new_page()  # becomes current through _on_new_page
            elif action.name == "tab_focus":
                pages = self._context.pages
                if not 0 <= (action.tab or 0) < len(pages):
                    raise ActionFailed(f"there is no tab {action.tab}; tabs are 0..{len(pages) - 1}")
                self._page = pages[action.tab or 0]
                await self._page.bring_to_front()
            elif action.name == "close_tab":
                await page.close()
                self._page = None
                if not self._context.pages:
                    await self.new_page()
            await asyncio.sleep(SETTLE_S)
            if watch is not None:
                if not watch.started:
                    await _renderer_round_trip(page)
                await watch.settled()
        except PlaywrightError as exc:
            self._check_browser()
            raise ActionFailed(f"{action.name} failed: {shorten(str(exc).splitlines()[0], 300)}") from exc
        finally:
            if watch is not None:
                watch.stop()
        if self._page is not None and not self._page.is_closed():
            try:
                await self._page.wait_for_load_state("load", timeout=LOAD_TIMEOUT_MS)
            except PlaywrightError:
                pass  # still loading: the agent sees the page as it is

    def _check_tab_room(self, action: str) -> None:
        if len([p for p in self._context.pages if not p.is_closed()]) >= self.max_tabs:
            raise ActionFailed(f"{action} would open a tab, and this session has {self.max_tabs} tabs, the most it may have; close_tab one first")

    def _current_page(self) -> Any:
        if self._page is None or self._page.is_closed():
            open_pages = [p for p in self._context.pages if not p.is_closed()]
            self._page = open_pages[-1]
        return self._page

    async def _cdp(self, page: Any) -> Any:
        if page not in self._cdp_sessions:
            self._cdp_sessions[page] = await self._context.new_cdp_session(page)
        return self._cdp_sessions[page]

    async def _on_element(self, page: Any, action: Action) -> None:
        if action.element not in self._tree.ids:
            raise ActionFailed(f"there is no element [{action.element}] on the page; use an id from the tree")
        cdp = await self._cdp(page)
        node = {"backendNodeId": action.element}
        if action.name == "type" and await self._is_select(cdp, node):
            await self._select(cdp, node, action.text)
            return
        try:
            await cdp.send("DOM.scrollIntoViewIfNeeded", node)
            x, y = await self._stable_center(page, cdp, node)
            x, y = await self._call_on(cdp, node, _UNCOVERED_POINT, [x, y]) or (x, y)
        except ActionFailed:
            raise
        except Exception as exc:
            raise ActionFailed(f"element [{action.element}] cannot be reached: {str(exc).splitlines()[0]}") from exc
        if action.name == "hover":
            await page.mouse.move(x, y)
            return
        opens_tab = action.name == "click" and await self._call_on(
            cdp, node, "function() { const a = (this.closest ? this : this.parentElement).closest('a[target]'); return !!a && a.target !== '_self'; }"
        )
        if opens_tab:
            self._check_tab_room("this link")
            # A link to another tab: wait for the tab, so the observation shows it.
            async with self._context.expect_page(timeout=LOAD_TIMEOUT_MS) as new_page:
                await page.mouse.click(x, y)
            await (await new_page.value).wait_for_load_state("load", timeout=LOAD_TIMEOUT_MS)
            return
        await page.mouse.click(x, y)
        if action.name == "type":
            await page.keyboard.press("Control+a")
            await page.keyboard.press("Backspace")
            if len(action.text) <= KEY_BY_KEY_CHARS:
                await page.keyboard.type(action.text)
            else:
                await page.keyboard.insert_text(action.text)
            if action.press_enter:
                await page.keyboard.press("Enter")

    async def _stable_center(self, page: Any, cdp: Any, node: dict) -> tuple[float, float]:
        """The element's centre once it stops moving (as Playwright waits for a stable box): a click
        during an animation would land where the element was."""
        previous = None
        for _ in range(STABLE_TRIES):
            quads = (await cdp.send("DOM.getContentQuads", node))["quads"]
            if not quads:
                raise ActionFailed(f"element [{node['backendNodeId']}] is not visible")
            if quads[0] == previous:
                break
            previous = quads[0]
            await page.evaluate(_TWO_FRAMES)
        return sum(previous[0::2]) / 4, sum(previous[1::2]) / 4

    async def _call_on(self, cdp: Any, node: dict, function: str, *args: Any) -> Any:
        target = (await cdp.send("DOM.resolveNode", node))["object"]["objectId"]
        result = await cdp.send(
            "Runtime.callFunctionOn",
            {"objectId": target, "functionDeclaration": function, "arguments": [{"value": a} for a in args], "returnByValue": True},
        )
        return result.get("result", {}).get("value")

    async def _is_select(self, cdp: Any, node: dict) -> bool:
        return bool(await self._call_on(cdp, node, "function() { return this.tagName === 'SELECT'; }"))

    async def _select(self, cdp: Any, node: dict, label: str) -> None:
        """`type` on a drop-down picks the option with that text (its popup is not part of the page)."""
        chosen = await self._call_on(
            cdp,
            node,
            """function(label) {
                const want = label.trim().toLowerCase();
                const option = [...this.options].find(o => o.text.trim().toLowerCase() === want);
                if (!option) return [...this.options].map(o => o.text.trim());
                this.value = option.value;
                this.dispatchEvent(new Event('input', {bubbles: true}));
                this.dispatchEvent(new Event('change', {bubbles: true}));
                return null;
            }""",
            label,
        )
        if chosen is not None:
            raise ActionFailed(f"the drop-down has no option {label!r}; its options: {chosen}")

    # -- observing --------------------------------------------------------------------------------

    async def _observe(self, note: str = "", data: dict[str, Any] | None = None) -> Observation:
        """The current tab as the agent sees it. A tab may close itself at any moment (a page's
        `window.close()`, one opened past the tab limit): a tab that closes while it is observed is
        left out and the observation taken again of the tab the agent is on then. Before, such a
        tab failed the session (ENV_CRASHED) in 5 of 6 tries."""
        from playwright.async_api import Error as PlaywrightError

        for _ in range(self.max_tabs):
            page = self._current_page()
            try:
                return await self._observe_tab(page, note, data)
            except PlaywrightError:
                if not await _has_closed(page):
                    raise
                self._cdp_sessions.pop(page, None)
        return await self._observe_tab(self._current_page(), note, data)

    async def _tab_titles(self, current: Any) -> tuple[list[Any], list[str]]:
        from playwright.async_api import Error as PlaywrightError

        pages, titles = [], []
        for page in self._context.pages:
            try:
                title = await page.title()
            except PlaywrightError:
                if page is current or not await _has_closed(page):
                    raise
                continue  # closed while the tabs were listed
            pages.append(page)
            titles.append(shorten(title, MAX_TITLE_CHARS))
        return pages, titles

    async def _observe_tab(self, page: Any, note: str, data: dict[str, Any] | None) -> Observation:
        cdp = await self._cdp(page)
        nodes = (await cdp.send("Accessibility.getFullAXTree"))["nodes"]
        self._tree = axtree.render(nodes)
        pages, titles = await self._tab_titles(page)
        current = pages.index(page)
        url = shorten(page.url, MAX_URL_CHARS)
        tabs = " | ".join(f"Tab {i}{' (current)' if i == current else ''}: {t}" for i, t in enumerate(titles))
        head = [note] if note else []
        head += self._tab_notes
        self._tab_notes = []
        refused = self._proxy.take_refused() if self._proxy is not None else []
        if refused:
            head.append(
                "The browser may reach only the task's sites; it refused connections to "
                f"{', '.join(refused)} (a link, a redirect, or something the page loads)."
            )
        head += [f"OBJECTIVE: {self.objective}", f"URL: {url}", f"TABS: {tabs}", ""]
        text = "\n".join(head)
        text += self._tree_within(self.max_observation_chars - len(text))
        payload = {"url": url, "tabs": titles, "current_tab": current, **(data or {})}
        if refused:
            payload["refused"] = refused
        images = None
        if self._images:
            images = [await self._screenshot(page)]
        return Observation(text=text, data=payload, images=images)

    def _tree_within(self, budget: int) -> str:
        """The tree's text, cut at a line end when it would pass `budget` characters, with a note."""
        tree = self._tree.text
        if len(tree) <= budget:
            return tree
        budget = max(budget - 200, 0)  # room for the note
        cut = tree.rfind("\n", 0, budget)
        cut = cut if cut > budget // 2 else budget
        hidden = tree.count("\n", cut) + 1
        return (
            f"{tree[:cut]}\n[The page is too long to show whole: the observation stops here, "
            f"{len(tree) - cut:,} characters ({hidden:,} lines) later in the tree are not shown.]"
        )

    async def _screenshot(self, page: Any) -> Image:
        png = await page.screenshot(type="png")
        if len(png) <= MAX_IMAGE_BYTES:
            return Image(mime="image/png", width=VIEWPORT["width"], height=VIEWPORT["height"], data=png)
        jpeg = await page.screenshot(type="jpeg", quality=JPEG_QUALITY)
        return Image(mime="image/jpeg", width=VIEWPORT["width"], height=VIEWPORT["height"], data=jpeg)

    async def _step_action(self, reply: str) -> tuple[Action | None, str]:
        """Parse and perform; (action done or None, note for the observation)."""
        try:
            action = parse_action(reply)
        except ActionError as exc:
            return None, f"Invalid action: {exc}. Nothing was done. Valid actions: {USAGE}"
        if action.name == "stop":
            return action, ""
        try:
            await self._perform(action)
        except ActionFailed as exc:
            return None, f"The action was not done: {exc}."
        return action, ""


__all__ = ["BrowserEnv", "ActionFailed", "BrowserCrashed", "RendererCrashed", "NAVIGATION_TIMEOUT_MS", "VIEWPORT", "key_combo"]
