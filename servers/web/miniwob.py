"""MiniWoB++ tasks in a real Chromium, with WebArena's observation and actions.

The `miniwob` package's HTML tasks are served by a small HTTP server on 127.0.0.1 that the
environment starts (one per process). A task is a task type and a seed: MiniWoB's own
`Math.seedrandom(seed)` before `core.startEpisodeReal()`, so the same task is the same page.
Every MiniWoB++ task type the package registers is offered, except the three `flight.*` types
(their page lives in an iframe; the tree shown is the top frame's).

Reward is MiniWoB's own: after every action the page's `WOB_DONE_GLOBAL` is read and, when the
page has ended the episode, its raw reward (`WOB_RAW_REWARD_GLOBAL`, -1..1, partial for some task
types) is the step's reward; MiniWoB's time-discounted reward and its reason go in `info`. The
episode's JavaScript time limit (10 s, made for scripted agents) is lifted: the turn limit bounds
an episode instead. `stop [...]` ends an unfinished episode with reward 0.

Splits: task index i is task type `TASK_TYPES[i % T]` with the (i // T)-th seed of the split;
train seeds are 0..999, test seeds 1,000,000.. (4 per type). A seed opens train task seed % size.
Option `images: true` adds a PNG screenshot to every observation.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import secrets
import threading
from pathlib import Path
from typing import Any

from gymwire.sdk.environment import Observation, StepOutcome, Task, TaskError

from .actions import shorten
from .browser import INSTALL_HINT
from .env import BrowserEnv

TASK_TYPES = (
    "ascending-numbers bisect-angle book-flight book-flight-nodelay buy-ticket choose-date choose-date-easy "
    "choose-date-medium choose-date-nodelay choose-list circle-center click-button click-button-sequence "
    "click-checkboxes click-checkboxes-large click-checkboxes-soft click-checkboxes-transfer click-collapsible "
    "click-collapsible-2 click-collapsible-2-nodelay click-collapsible-nodelay click-color click-dialog "
    "click-dialog-2 click-link click-menu click-menu-2 click-option click-pie click-pie-nodelay "
    "click-scroll-list click-shades click-shape click-tab click-tab-2 click-tab-2-easy click-tab-2-hard "
    "click-tab-2-medium click-test click-test-2 click-test-transfer click-widget copy-paste copy-paste-2 "
    "count-shape count-sides daily-calendar drag-box drag-circle drag-cube drag-items drag-items-grid "
    "drag-shapes drag-shapes-2 drag-single-shape drag-sort-numbers draw-circle draw-line email-inbox "
    "email-inbox-delete email-inbox-forward email-inbox-forward-nl email-inbox-forward-nl-turk "
    "email-inbox-important email-inbox-nl-turk email-inbox-noscroll email-inbox-reply email-inbox-star-reply "
    "enter-date enter-password enter-text enter-text-2 enter-text-dynamic enter-time find-greatest "
    "find-midpoint find-word focus-text focus-text-2 form-sequence form-sequence-2 form-sequence-3 "
    "generate-number grid-coordinate guess-number highlight-text highlight-text-2 hot-cold identify-shape "
    "login-user login-user-popup multi-layouts multi-orderings navigate-tree number-checkboxes odd-or-even "
    "order-food phone-book read-table read-table-2 resize-textarea right-angle scroll-text scroll-text-2 "
    "search-engine sign-agreement simple-algebra simple-arithmetic social-media social-media-all "
    "social-media-some stock-market terminal text-editor text-transform tic-tac-toe unicode-test "
    "use-autocomplete use-autocomplete-nodelay use-colorwheel use-colorwheel-2 use-slider use-slider-2 "
    "use-spinner visual-addition"
).split()
TRAIN_SEEDS_PER_TYPE = 1000
TEST_SEEDS_PER_TYPE = 4
TEST_SEED_OFFSET = 1_000_000
NO_TIME_LIMIT_MS = 864_000_000  # 10 days: below setTimeout's 2^31 ms ceiling


def html_dir() -> Path:
    spec = importlib.util.find_spec("miniwob")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"MiniWoB++ tasks need the miniwob package: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "html"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    # The task files are UTF-8 and most do not say so: without a charset the browser would read
    # unicode-test's labels as Windows-1252.
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
    }

    def log_message(self, format: str, *args: Any) -> None:
        pass


_server_lock = threading.Lock()
_server_url: str | None = None


def task_server_url() -> str:
    """The loopback URL of this process's MiniWoB++ file server (started on first use)."""
    global _server_url
    with _server_lock:
        if _server_url is None:
            handler = functools.partial(_QuietHandler, directory=str(html_dir()))
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, name="miniwob-files", daemon=True).start()
            _server_url = f"http://127.0.0.1:{server.server_address[1]}"
        return _server_url


def task_of(split: str, index: int) -> tuple[str, int]:
    """(task type, MiniWoB seed) of a task index."""
    per_type, round_ = index % len(TASK_TYPES), index // len(TASK_TYPES)
    seed = round_ if split == "train" else TEST_SEED_OFFSET + round_
    return TASK_TYPES[per_type], seed


def index_of(task_type: str, round_: int) -> int:
    """The task index of a task type's `round_`-th seed in a split (inverse of task_of)."""
    return TASK_TYPES.index(task_type) + round_ * len(TASK_TYPES)


_START_EPISODE = """([seed, token, noLimit]) => {
    Math.seedrandom(seed);
    core.EPISODE_MAX_TIME = noLimit;
    const style = document.createElement('style');
    style.textContent = '#reward-display { display: none; }';
    document.head.appendChild(style);
    window.__gymwireEpisode = token;
    core.startEpisodeReal();
}"""
# The token tells the task's page from any other page the agent may have opened since.
_READ_REWARD = """(token) => window.__gymwireEpisode === token && WOB_DONE_GLOBAL
    ? [WOB_RAW_REWARD_GLOBAL, WOB_REWARD_GLOBAL, WOB_REWARD_REASON] : null"""


class MiniWoBEnv(BrowserEnv):
    name = "miniwob"
    description = (
        "MiniWoB++ web tasks (125 task types) in headless Chromium: WebArena's accessibility-tree "
        "observation and id-based actions; reward is MiniWoB's own (-1..1)."
    )
    instructions = (
        "The observation is the page's accessibility tree, one element per line as `[id] role 'name'`. "
        "Do what OBJECTIVE says with one action per turn, e.g. `Thought: ... Action: click [12]`. "
        "Actions: click [id], type [id] [text] [0|1] (1 = press Enter after, the default), hover [id], "
        "press [key combo], scroll [up|down], goto [url], go_back, go_forward, new_tab, tab_focus [i], "
        "close_tab, stop [answer]. On a drop-down, type [id] [option] picks that option."
    )
    splits = {"train": len(TASK_TYPES) * TRAIN_SEEDS_PER_TYPE, "test": len(TASK_TYPES) * TEST_SEEDS_PER_TYPE}
    default_max_turns = 10
    requires = ("playwright.async_api", "miniwob")

    @classmethod
    def info(cls):  # type: ignore[override]
        return super().info().model_copy(update={"metadata": {"task_types": list(TASK_TYPES)}})

    async def reset(self, task: Task) -> Observation:
        split, index = self.task_index(task, default_split="train")
        self._read_options(task)
        self.task_type, self.seed = task_of(split, index)
        self._token = secrets.token_hex(8)
        base = task_server_url()
        await self._guarded(self._start(base))
        self._data = {"task_type": self.task_type, "seed": self.seed, "split": split, "index": index, "utterance": self.objective}
        return await self._guarded(self._observe(data=self._data))

    async def _start(self, base: str) -> None:
        await self._open({base}, f"{base}/miniwob/{self.task_type}.html")
        await self._page.evaluate(_START_EPISODE, [self.seed, self._token, NO_TIME_LIMIT_MS])
        await self._page.wait_for_function("WOB_TASK_READY", timeout=10_000)
        self.objective = await self._page.evaluate("core.getUtterance()")
        if isinstance(self.objective, dict):  # some tasks give {utterance, fields}
            self.objective = self.objective.get("utterance", "")

    async def step(self, action: str) -> StepOutcome:
        self._check_browser()
        return await self._guarded(self._step(action))

    async def _step(self, reply: str) -> StepOutcome:
        done, note = await self._step_action(reply)
        info: dict[str, Any] = {"valid": done is not None}
        if done is not None and done.name == "stop":
            observation = await self._observe("You stopped before the task was done.", self._data)
            return StepOutcome(observation, reward=0.0, terminated=True, info=info, success=False, score=0.0)
        outcome = await self._page_reward()
        if outcome is not None:
            raw, discounted, reason = outcome
            info.update(miniwob_reward=discounted, miniwob_raw_reward=raw, miniwob_reason=reason)
            text = f"The task is over: MiniWoB gave reward {raw:g}."
            observation = await self._observe(text, self._data)
            return StepOutcome(observation, reward=float(raw), terminated=True, info=info, success=raw > 0, score=float(raw))
        return StepOutcome(await self._observe(note, self._data), info=info)

    async def _page_reward(self) -> tuple[float, float, Any] | None:
        for page in self._context.pages:
            try:
                outcome = await page.evaluate(_READ_REWARD, self._token)
            except Exception:
                continue  # a page without MiniWoB, or one that is navigating
            if outcome is not None:
                return float(outcome[0]), float(outcome[1]), shorten(str(outcome[2]), 200)
        return None


__all__ = ["MiniWoBEnv", "TASK_TYPES", "task_of", "index_of", "task_server_url"]
