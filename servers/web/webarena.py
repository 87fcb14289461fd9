"""WebArena task configs against your own deployment of its sites.

WebArena's sites are Docker images gymwire cannot ship; a user who runs them points this
environment at them. A task config (WebArena's JSON: `task_id`, `start_url`, `intent`, `eval`,
optionally `storage_state`) names sites by placeholder (`__SHOPPING__`, `__GITLAB__`, ...); the
operator maps each placeholder to a base URL. Navigation is limited to those sites.

Scoring, when the agent answers `stop [answer]`, follows WebArena's evaluators and multiplies
their scores: `string_match` (`exact_match`, `must_include`; `fuzzy_match` only as "N/A", since
anything else needs an LLM judge), `url_match` (reference URL, alternatives joined by ` |OR| `,
its path contained in the page's and its query parameters present) and `program_html` (a
JavaScript locator, or the whole page, on the last page or a given URL, checked with
`exact_match` / `must_include`; the `func:` helpers of WebArena's own sites are not supported).
A task that needs what is not supported fails at reset with INVALID_TASK, saying why.

Serving: `gymwire serve 'gymwire.servers.web:WebArenaEnv:tasks=tasks.json,sites={"SHOPPING": "http://host:7770"}'`
(`sites` may also be written `SHOPPING=http://host:7770,GITLAB=...` in a serve file or $GYMWIRE_WEBARENA_SITES),
or `EnvSpec.of(WebArenaEnv, tasks=path, sites={...})` in code.
All tasks form one split, `test`, in file order (a directory: files sorted by task id).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import PositiveFloat, PositiveInt

from gymwire.protocol import EnvInfo
from gymwire.sdk.environment import Observation, StepOutcome, Task, TaskError
from gymwire.sdk.errors import UserError

from .actions import shorten
from .env import MAX_OBSERVATION_CHARS, MAX_TABS, NAVIGATION_TIMEOUT_MS, SESSIONS_PER_BROWSER, STEP_TIMEOUT_S, BrowserEnv

_PLACEHOLDER = re.compile(r"__[A-Z_]+__")
_QUERY_TEXT = re.compile(r"""^func:get_query_text(_lowercase)?\(__page__,\s*["'](.+)["']\)$""")


class WebArenaConfigError(UserError, ValueError):
    """A task file or site mapping that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class WebTask:
    task_id: Any
    intent: str
    start_urls: tuple[str, ...]
    eval: dict[str, Any]
    storage_state: str | None


def load_tasks(path: str | os.PathLike[str]) -> list[WebTask]:
    """WebArena task configs: one JSON file (an object or a list of them) or a directory of them."""
    path = Path(path)
    if path.is_dir():
        raw = [_read_json(p) for p in sorted(path.glob("*.json"))]
        # WebArena names its files 0.json..811.json: order by task id, not by name (stable for the rest).
        raw.sort(key=lambda c: c["task_id"] if isinstance(c, dict) and isinstance(c.get("task_id"), int) else -1)
    elif path.is_file():
        data = _read_json(path)
        raw = data if isinstance(data, list) else [data]
    else:
        raise WebArenaConfigError(f"{path}: no such file or directory of WebArena task configs")
    tasks = []
    for i, config in enumerate(raw):
        if not isinstance(config, dict) or not all(k in config for k in ("start_url", "intent", "eval")):
            raise WebArenaConfigError(f"{path}: task {i} needs the fields start_url, intent and eval")
        storage = config.get("storage_state")
        if storage and not Path(storage).is_absolute():
            storage = str((path if path.is_dir() else path.parent) / storage)
        tasks.append(
            WebTask(
                task_id=config.get("task_id", i),
                intent=str(config["intent"]),
                start_urls=tuple(u.strip() for u in str(config["start_url"]).split("|AND|")),
                eval=dict(config["eval"]),
                storage_state=storage,
            )
        )
    return tasks


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WebArenaConfigError(f"{path}: {exc}") from exc


def parse_sites(text: str) -> dict[str, str]:
    """`__SHOPPING__=http://h:7770,GITLAB=http://h:8023` -> {'__SHOPPING__': ..., '__GITLAB__': ...}."""
    sites = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, url = item.partition("=")
        if not sep or "://" not in url:
            raise WebArenaConfigError(f"site mapping {item!r}: write PLACEHOLDER=http://host:port")
        key = key.strip().strip("_").upper()
        sites[f"__{key}__"] = url.strip().rstrip("/")
    return sites


# -- WebArena's matchers ------------------------------------------------------------------------


def clean_answer(text: str) -> str:
    text = str(text).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return text.lower()


def exact_match(reference: str, answer: str) -> float:
    return float(clean_answer(reference) == clean_answer(answer))


def must_include(reference: str, answer: str, whole_word: bool) -> float:
    """A one-word reference that stands alone must match a whole word of the answer."""
    reference, answer = clean_answer(reference), clean_answer(answer)
    if whole_word and len(reference.split()) == 1:
        return float(reference in re.findall(r"[\w$%.-]+|[^\w\s]", answer) or reference in answer.split())
    return float(reference in answer)


def string_score(answers: dict[str, Any], answer: str) -> float:
    score = 1.0
    for kind, value in answers.items():
        if kind == "exact_match":
            score *= exact_match(value, answer)
        elif kind == "must_include":
            values = value if isinstance(value, list) else [value]
            for item in values:
                score *= must_include(item, answer, whole_word=len(values) == 1)
        elif kind == "fuzzy_match":
            if value != "N/A":
                raise TaskError("fuzzy_match needs an LLM judge, which this environment does not run")
            score *= exact_match("N/A", answer)
    return score


def url_score(reference: str, url: str) -> float:
    """WebArena's "GOLD in PRED": one alternative's path within the URL's, its query values present."""
    current = urlsplit(url.rstrip("/"))
    current_base, current_query = current.netloc + current.path, parse_qs(current.query)
    for alternative in reference.split(" |OR| "):
        gold = urlsplit(alternative.strip().rstrip("/"))
        if gold.netloc + gold.path in current_base and all(
            set(values) <= set(current_query.get(key, [])) for key, values in parse_qs(gold.query).items()
        ):
            return 1.0
    return 0.0


def contents_score(required: dict[str, Any], content: str) -> float:
    if "exact_match" in required:
        return exact_match(required["exact_match"], content)
    score = 1.0
    for item in required.get("must_include", []):
        score *= float(any(must_include(alt, content, whole_word=False) for alt in item.split(" |OR| ")))
    return score


# -- the environment ----------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _load(path: str) -> tuple[WebTask, ...]:
    return tuple(load_tasks(path))


def _tasks_of(path: str | os.PathLike[str] | None) -> tuple[WebTask, ...]:
    return _load(str(path)) if path else ()


def _split_sizes(tasks: tuple[WebTask, ...]) -> dict[str, int]:
    return {"test": len(tasks)} if tasks else {}


def site_map(sites: dict[str, str] | str | None) -> dict[str, str]:
    """Placeholder -> base URL, from a mapping or `parse_sites` text."""
    if sites is None:
        return {}
    if isinstance(sites, str):
        return parse_sites(sites)
    return parse_sites(",".join(f"{key}={url}" for key, url in sites.items()))


class WebArenaEnv(BrowserEnv):
    name = "webarena"
    description = "WebArena tasks on your own deployment of its sites, in headless Chromium."
    instructions = (
        "The observation is the page's accessibility tree, one element per line as `[id] role 'name'`. "
        "Achieve OBJECTIVE with one action per turn, e.g. `Thought: ... Action: click [12]`. Actions: click [id], "
        "type [id] [text] [0|1] (1 = press Enter after, the default), hover [id], press [key combo], "
        "scroll [up|down], goto [url], go_back, go_forward, new_tab, tab_focus [i], close_tab, stop [answer]. "
        "Finish with stop [answer] (stop [N/A] if the task cannot be done); the answer is scored."
    )
    default_max_turns = 30
    seedable = False

    @classmethod
    def info(cls, tasks: str | os.PathLike[str]) -> EnvInfo:
        # Reads the task file (once per process; a bad one fails here, naming it, before a server starts).
        return super().info().model_copy(update={"splits": _split_sizes(_tasks_of(tasks))})

    def __init__(
        self, tasks: str | os.PathLike[str], sites: dict[str, str] | str | None = None,
        sessions_per_browser: PositiveInt = SESSIONS_PER_BROWSER, step_timeout_s: PositiveFloat = STEP_TIMEOUT_S,
        max_tabs: PositiveInt = MAX_TABS, max_observation_chars: PositiveInt = MAX_OBSERVATION_CHARS,
    ) -> None:
        """`tasks`: a WebArena task config file, or a folder of them; `sites`: placeholder -> base
        URL of your deployment (`{"SHOPPING": "http://host:7770"}`, or `SHOPPING=http://host:7770,...`)."""
        super().__init__(sessions_per_browser, step_timeout_s, max_tabs, max_observation_chars)
        self.tasks = _tasks_of(tasks)
        self.splits = _split_sizes(self.tasks)
        self.sites = site_map(sites)

    def _resolve_url(self, url: str) -> str:
        sites = self.sites

        def replace(match: re.Match) -> str:
            if match.group(0) not in sites:
                raise TaskError(f"the task uses site {match.group(0)}, which is not mapped to a URL (the option sites)")
            return sites[match.group(0)]

        return _PLACEHOLDER.sub(replace, url)

    async def reset(self, task: Task) -> Observation:
        if not self.splits:
            raise TaskError("no WebArena tasks loaded: serve webarena with tasks=PATH (a task config file or folder)")
        split, index = self.task_index(task)
        self._read_options(task)
        self.task = self.tasks[index]
        self._check_supported()
        urls = [self._resolve_url(u) for u in self.task.start_urls]
        self.objective = self.task.intent
        self._data = {"task_id": self.task.task_id, "split": split, "index": index}
        await self._guarded(self._start(urls))
        return await self._guarded(self._observe(data=self._data))

    def _check_supported(self) -> None:
        spec = self.task.eval
        unknown = set(spec.get("eval_types", [])) - {"string_match", "url_match", "program_html"}
        if unknown:
            raise TaskError(f"task {self.task.task_id}: unsupported eval types {sorted(unknown)}")
        fuzzy = spec.get("reference_answers", {}) or {}
        if "string_match" in spec.get("eval_types", []) and fuzzy.get("fuzzy_match", "N/A") != "N/A":
            raise TaskError(f"task {self.task.task_id}: fuzzy_match needs an LLM judge, which this environment does not run")
        for target in spec.get("program_html", []) if "program_html" in spec.get("eval_types", []) else []:
            for field in ("url", "locator"):
                value = str(target.get(field, ""))
                if value.startswith("func:") and not _QUERY_TEXT.match(value):
                    raise TaskError(f"task {self.task.task_id}: program_html {field} {value!r} calls a site helper that is not supported")

    async def _start(self, urls: list[str]) -> None:
        storage = self.task.storage_state if self.task.storage_state and os.path.exists(self.task.storage_state) else None
        await self._open(set(self.sites.values()), urls[0], storage_state=storage)
        for url in urls[1:]:
            page = await self.new_page()
            await page.goto(url, wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
        self._page = self._context.pages[0]

    async def step(self, action: str) -> StepOutcome:
        self._check_browser()
        return await self._guarded(self._step(action))

    async def _step(self, reply: str) -> StepOutcome:
        done, note = await self._step_action(reply)
        info = {"valid": done is not None}
        if done is not None and done.name == "stop":
            score = await self._evaluate(done.text)
            observation = await self._observe(f"You stopped with the answer {shorten(done.text, 200)!r}. Score: {score:g}.", self._data)
            return StepOutcome(observation, reward=score, terminated=True, info={**info, "answer": done.text}, success=score == 1.0, score=score)
        return StepOutcome(await self._observe(note, self._data), info=info)

    async def _evaluate(self, answer: str) -> float:
        spec = self.task.eval
        types = spec.get("eval_types", [])
        score = 1.0
        if "string_match" in types:
            score *= string_score(spec.get("reference_answers") or {}, answer)
        if "url_match" in types:
            score *= url_score(self._resolve_url(spec.get("reference_url", "")), self._current_page().url)
        if "program_html" in types:
            for target in spec.get("program_html", []):
                content = await self._locate(target)
                score *= contents_score(target.get("required_contents", {}), content)
        return score

    async def _locate(self, target: dict[str, Any]) -> str:
        """The text a program_html check looks at: on the last page, or on its URL in a new tab."""
        url = str(target.get("url", "last"))
        last = self._current_page()
        page = last if url == "last" else await self.new_page()
        locator = str(target.get("locator", "")).strip()
        query_text = _QUERY_TEXT.match(locator)
        try:
            if page is not last:
                await page.goto(self._resolve_url(url), wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
            if not locator:
                return await page.content()
            if query_text:
                text = await page.evaluate("(s) => [...document.querySelectorAll(s)].map(e => e.outerText).join(' ')", query_text.group(2))
                return text.lower() if query_text.group(1) else text
            return str(await page.evaluate(f"() => {locator}"))
        except Exception:
            self._check_browser()
            return ""  # WebArena scores a page or locator that gives nothing as empty content
        finally:
            if page is not last:
                await page.close()
                self._page = last


__all__ = ["WebArenaEnv", "WebTask", "load_tasks", "parse_sites", "site_map", "string_score", "url_score", "contents_score", "WebArenaConfigError"]
