"""The viewer's HTTP server (aiohttp): the static page, and JSON over the catalog's index.

A background task refreshes the index every `follow_s` seconds (in a worker thread), so episodes
and metrics written by a running training appear on the page, which polls `/api/state`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from aiohttp import web

from gymwire.protocol import rebinding_refusal

from .episodes import episode_view, matches_text
from .index import Catalog, EpisodeRow, Run

__all__ = ["make_app", "Tokenizers"]

STATIC = Path(__file__).parent / "static"
PAGE_LIMIT = 500
log = logging.getLogger("gymwire.viewer")


class Tokenizers:
    """Per run, a function from token ids to their text pieces, when a tokenizer can be found:
    `--tokenizer`, the config's model.path, the run's model/ folder, or its latest checkpoint."""

    def __init__(self, override: str | None = None):
        self._override = override
        self._loaded: dict[int, Callable[[Sequence[int]], list[str]] | None] = {}
        self._lock = threading.Lock()

    def candidates(self, run: Run) -> list[Path]:
        if self._override:
            return [Path(self._override)]
        paths = []
        model_path = _setting(run, "model", "path")
        if isinstance(model_path, str):
            paths += [Path(model_path), run.path / model_path, run.path.parent.parent / model_path]
        eval_path = run.config.get("path") if isinstance(run.config, dict) else None  # gymwire eval's run.json
        for spec in (model_path, eval_path):
            gguf = _gguf_file(spec)
            if gguf is not None:
                paths.append(gguf)
        paths.append(run.path / "model")
        paths += sorted((run.path / "checkpoints").glob("step-*"), reverse=True) if run.path.is_dir() else []
        return [p for p in paths if p.suffix == ".gguf" or (p / "tokenizer_config.json").exists() or (p / "tokenizer.json").exists()]

    def get(self, run: Run) -> Callable[[Sequence[int]], list[str]] | None:
        with self._lock:  # the preload at start and an episode request may ask at once
            if run.id not in self._loaded:
                self._loaded[run.id] = self._load(run)
            return self._loaded[run.id]

    def _load(self, run: Run) -> Callable[[Sequence[int]], list[str]] | None:
        found = self.candidates(run)
        if not found:
            return None
        try:
            from transformers import AutoTokenizer

            if found[0].suffix == ".gguf":  # the tokenizer inside the GGUF file
                tokenizer = AutoTokenizer.from_pretrained(str(found[0].parent), gguf_file=found[0].name)
            else:
                tokenizer = AutoTokenizer.from_pretrained(str(found[0]))
        except Exception as exc:  # a missing package or a broken folder: the token view shows ids
            log.warning("no tokenizer for run %s from %s: %s", run.name, found[0], exc)
            return None
        pieces: dict[int, str] = {}

        def decode(ids: Sequence[int]) -> list[str]:
            missing = sorted({i for i in ids if i not in pieces})
            for token_id, text in zip(missing, tokenizer.batch_decode([[i] for i in missing])):
                pieces[token_id] = text
            return [pieces[i] for i in ids]

        return decode


def _setting(run: Run, *keys: str) -> Any:
    """A value from the run's config (config.json or run.json), or None where it is absent."""
    value: Any = run.config
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _wanted_runs(catalog: Catalog, request: web.Request) -> set[int]:
    value = request.query.get("run", "all")
    if value == "all" or not value:
        return {run.id for run in catalog.runs}
    try:
        return {int(part) for part in value.split(",")}
    except ValueError:
        raise web.HTTPBadRequest(text=f"run must be 'all' or run ids separated by commas, not {value!r}") from None


def _optional_int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name, "")
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a whole number, not {value!r}") from None


def _filter(catalog: Catalog, request: web.Request) -> list[EpisodeRow]:
    runs = _wanted_runs(catalog, request)
    env = request.query.get("env") or None
    split = request.query.get("split") or None
    finish = request.query.get("finish") or None
    task = _optional_int(request, "task")
    step = _optional_int(request, "step")
    success = {"1": True, "0": False}.get(request.query.get("success", ""))
    problems = request.query.get("problems") == "1"
    rows = [
        row
        for row in catalog.rows()
        if row.run in runs
        and (env is None or row.env == env)
        and (split is None or row.split == split)
        and (finish is None or row.finish == finish)
        and (task is None or row.task == task)
        and (step is None or row.step == step)
        and (success is None or row.success is success)
        and (not problems or row.problem is not None)
    ]
    text = request.query.get("q", "").strip()
    if text:
        rows = catalog.search(rows, text, matches_text)
    return rows


class Api:
    def __init__(self, catalog: Catalog, tokenizers: Tokenizers):
        self.catalog = catalog
        self.tokenizers = tokenizers
        self._search_cache: tuple[Any, list[EpisodeRow]] | None = None
        self._state: tuple[Any, dict[str, Any]] | None = None

    async def state(self, request: web.Request) -> web.Response:
        # Every open page asks every 1.5 s: the answer is rebuilt only when something was read.
        key = (self.catalog.generation, self.catalog.indexed)
        if self._state is None or self._state[0] != key:
            self._state = (key, {
                "generation": self.catalog.generation,
                "indexed": self.catalog.indexed,
                "runs": [run.info() for run in self.catalog.runs],
            })
        return web.json_response(self._state[1])

    async def metrics(self, request: web.Request) -> web.Response:
        runs = _wanted_runs(self.catalog, request)
        return web.json_response({
            str(run.id): run.metric_records()[0] for run in self.catalog.runs if run.id in runs
        })

    async def facets(self, request: web.Request) -> web.Response:
        runs = _wanted_runs(self.catalog, request)
        envs, splits, finishes, steps, tasks = set(), set(), set(), set(), set()
        for row in self.catalog.rows():
            if row.run in runs:
                envs.add(row.env)
                splits.add(row.split)
                finishes.add(row.finish)
                steps.add(row.step)
                tasks.add(row.task)
        clean = lambda values: sorted(v for v in values if v not in (None, ""))  # noqa: E731
        return web.json_response({
            "env": clean(envs), "split": clean(splits), "finish": clean(finishes), "step": clean(steps),
            "tasks": len(clean(tasks)),
        })

    async def episodes(self, request: web.Request) -> web.Response:
        offset = _optional_int(request, "offset") or 0
        limit = min(_optional_int(request, "limit") or 100, PAGE_LIMIT)
        # Paging through search results must not scan the files again for every page.
        key = (self.catalog.generation, tuple(sorted((k, v) for k, v in request.query.items() if k not in ("offset", "limit"))))
        if self._search_cache is not None and self._search_cache[0] == key:
            rows = self._search_cache[1]
        elif request.query.get("q", "").strip():
            rows = await asyncio.to_thread(_filter, self.catalog, request)
            self._search_cache = (key, rows)
        else:
            rows = _filter(self.catalog, request)
        return web.json_response({
            "total": len(rows),
            "offset": offset,
            "rows": [row.summary() for row in rows[offset : offset + limit]],
        })

    async def episode(self, request: web.Request) -> web.Response:
        try:
            row = self.catalog.row(request.match_info["id"])
        except KeyError:
            raise web.HTTPNotFound(text=f"no episode {request.match_info['id']} (the file may have been rewritten)") from None
        run = self.catalog.runs[row.run]
        record, raw = await asyncio.to_thread(self.catalog.read_record, row)
        decode = await asyncio.to_thread(self.tokenizers.get, run)
        # The per-turn token cap: a training config's rollout.turn_tokens, an eval's run.json turn_tokens.
        turn_tokens = _setting(run, "rollout", "turn_tokens") or _setting(run, "turn_tokens")
        if not isinstance(turn_tokens, int):
            turn_tokens = None
        view = await asyncio.to_thread(
            episode_view, record, raw, full=request.query.get("full") == "1", decode=decode, turn_tokens=turn_tokens
        )
        view.update({
            "id": row.key,
            "summary": row.summary(),
            "run_name": run.name,
            "file": str(run.files[row.file].path),
            "line": row.line,
            "problem": row.problem,
        })
        return web.json_response(view)


async def _follow(catalog: Catalog, tokenizers: Tokenizers, every_s: float) -> None:
    first = True
    while True:
        try:
            await asyncio.to_thread(catalog.refresh)
        except OSError as exc:  # a file vanished or became unreadable mid-read: try again next time
            log.warning("refresh failed: %s", exc)
        if first:  # load tokenizers now (transformers takes seconds to import), not when an episode opens
            await asyncio.to_thread(lambda: [tokenizers.get(run) for run in catalog.runs if tokenizers.candidates(run)])
            first = False
        await asyncio.sleep(every_s)


@web.middleware
async def _errors_as_text(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:  # one bad request shows its error and leaves the server running
        log.exception("error answering %s", request.path)
        return web.Response(status=500, text=f"viewer error: {type(exc).__name__}: {exc}")


def _refusing_rebinding(listening_on: str) -> Callable[..., Any]:
    """A page whose DNS name is rebound to 127.0.0.1 would read every episode (its GETs are, to the
    browser, same-origin); its requests name its own host in Host (gymwire.protocol.rebinding_refusal)."""

    @web.middleware
    async def refuse(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        refusal = rebinding_refusal(request.headers.get("Host"), listening_on)
        if refusal is not None:
            return web.Response(status=403, text=f"viewer: {refusal}")
        return await handler(request)

    return refuse


def make_app(catalog: Catalog, *, tokenizer: str | None = None, follow_s: float = 1.0, host: str = "127.0.0.1") -> web.Application:
    app = web.Application(middlewares=[_refusing_rebinding(host), _errors_as_text])
    tokenizers = Tokenizers(tokenizer)
    api = Api(catalog, tokenizers)

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC)
    app.router.add_get("/api/state", api.state)
    app.router.add_get("/api/metrics", api.metrics)
    app.router.add_get("/api/facets", api.facets)
    app.router.add_get("/api/episodes", api.episodes)
    app.router.add_get("/api/episode/{id}", api.episode)

    async def follow(app: web.Application):  # cleanup context: runs for the app's lifetime
        task = asyncio.create_task(_follow(catalog, tokenizers, follow_s))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(follow)
    return app


def _gguf_file(spec: Any) -> Path | None:
    """The GGUF file a run's model setting names (a known model such as smollm2, or a .gguf path)."""
    if not isinstance(spec, str):
        return None
    from ..models.local import KNOWN_MODELS, ModelError, model_file

    if spec in KNOWN_MODELS:
        try:
            return model_file(spec)
        except ModelError:
            return None
    path = Path(spec)
    return path if path.suffix == ".gguf" and path.is_file() else None
