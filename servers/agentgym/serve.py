"""Serve gymwire environments with AgentGym's HTTP API, so AgentGym's `agentenv` clients (and
AgentGym-RL's trainer) use them unchanged: `gymwire agentgym-serve textcraft --port 36001`.

Each environment speaks one dialect of `api.DIALECTS` (by default the one of its own name,
else TextCraft's) under `/<name>/` — and also at `/` when only one is served, which is where
AgentGym's clients look (`env_server_base` + `/create`). What it adds to AgentGym's servers: sessions
idle past `--idle-timeout` are closed, every error is an `{"error": ...}` answer (never a dropped
connection), a step after the end of an episode is answered (with a note that it has ended, or, for
TextCraft with AgentGym's rules, played as AgentGym's server plays it), and sync environments run
in a thread pool so one slow step does not stall the others.

A task index (`data_idx`, `session_id`, `item_id`, ... as the dialect names it) is the index into one
split of the environment (`--split`, default the dialect's AgentGym split where the environment has
one, e.g. SciWorld's `agentgym`, else its first); environments without splits take it as seed. An
index past the data is read as AgentGym's server reads it (TextCraft wraps around, SciWorld counts
a negative index from the end). Rewards are in AgentGym's units (SciWorld: score points).
`--option KEY=VALUE` passes session options to every reset, e.g. `--option profile=agentgym` for
TextCraft as AgentGym plays it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Iterator

from gymwire.protocol import origin_refusal, rebinding_refusal

from gymwire.sdk.env_spec import EnvSpec
from gymwire.sdk.environment import Environment, Task, TaskError, as_observation
from gymwire.sdk.errors import port_number
from gymwire.sdk.runners import EnvCrashed, EnvRunner, runner_for

from .api import DIALECTS, Dialect

__all__ = ["AgentGymFacade", "register"]

log = logging.getLogger("gymwire.agentgym.serve")

DEFAULT_DIALECT = "textcraft"


@dataclass(slots=True)
class _Session:
    runner: EnvRunner
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    observation: str = ""
    done: bool = False
    score: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)  # the last reset's observation data
    last_active: float = field(default_factory=time.monotonic)


AFTER_END = "The episode has ended. Reset the environment to play another task."


class _Served:
    """One environment behind one dialect, with its sessions (ids count from 0, as AgentGym's)."""

    def __init__(self, spec: EnvSpec, dialect: Dialect, split: str | None, options: dict[str, Any]) -> None:
        self.spec, self.dialect = spec, dialect
        splits = spec.info().splits
        if split is not None and split not in splits:
            raise ValueError(f"{spec.name} has no split {split!r}; it has {sorted(splits) or 'none (seeds only)'}")
        if split is None and dialect.default_split in splits:
            split = dialect.default_split
        self.split = split or next(iter(splits), None)
        self.size = splits.get(self.split, 0) if self.split is not None else 0
        # With AgentGym's rules the text a client sends is already its action (AgentGym's client read the reply).
        self.agentgym_rules = options.get("profile") == "agentgym"
        self.options = {"input": "action", **options} if self.agentgym_rules else dict(options)
        self.sessions: dict[int, _Session] = {}
        self.ids = itertools.count()

    def task(self, index: int) -> Task:
        if self.split is None:
            return Task(seed=index, options=dict(self.options))
        size = self.size
        rule = self.dialect.index_rule
        if rule == "list" and -size <= index < 0:
            index += size  # AgentGym indexes a Python list
        elif rule == "wrap" and not self.agentgym_rules:
            index %= size  # (with AgentGym's rules the profile wraps by AgentGym's own task count)
        return Task(split=self.split, index=index, options=dict(self.options))


class _BadRequest(Exception):
    pass


def _whole_number(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: 1e999 is JSON's infinity
        raise _BadRequest(what) from None


class AgentGymFacade:
    """An aiohttp application answering AgentGym's API for the given environment classes."""

    def __init__(
        self,
        envs: list[tuple[EnvSpec | type[Environment], str | None]],
        split: str | None = None,
        options: dict[str, Any] | None = None,
        idle_timeout_s: float = 3600.0,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_origins: Iterable[str] = (),
        max_sessions: int = 1000,
    ) -> None:
        self.served: dict[str, _Served] = {}
        # AgentGym's API has no token: the cap keeps one client from holding every thread and all memory.
        if max_sessions < 1:
            raise ValueError(f"--max-sessions must be at least 1, got {max_sessions}")
        self.max_sessions = max_sessions
        # Browsers send Origin with every POST, even one a page may not read the answer of: a page
        # must not create sessions or step them (docs/security.md). AgentGym's clients send none.
        self.allowed_origins = frozenset(allowed_origins)
        for env, dialect_name in envs:
            spec = EnvSpec.coerce(env)
            if spec.name in self.served:
                raise ValueError(f"two environments are named {spec.name!r}")
            name = dialect_name or (spec.name if spec.name in DIALECTS else DEFAULT_DIALECT)
            if name not in DIALECTS:
                raise ValueError(f"unknown AgentGym dialect {name!r}; known: {', '.join(sorted(DIALECTS))}")
            self.served[spec.name] = _Served(spec, DIALECTS[name], split, dict(options or {}))
        self.idle_timeout_s = idle_timeout_s
        self.host, self.port = host, port
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="agentgym-env")
        self._runner: Any = None
        self._reaper: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle --------------------------------------------------------------------------------

    def app(self) -> Any:
        from aiohttp import web

        app = web.Application()
        prefixes = [""] if len(self.served) == 1 else []
        for name, served in self.served.items():
            for prefix in [f"/{name}", *prefixes]:
                app.router.add_get(f"{prefix}/", self._handler(served, self._hello))
                app.router.add_post(f"{prefix}/create", self._handler(served, self._create))
                app.router.add_post(f"{prefix}/reset", self._handler(served, self._reset))
                app.router.add_post(f"{prefix}/step", self._handler(served, self._step))
                app.router.add_get(f"{prefix}/observation", self._handler(served, self._observation))
                app.router.add_post(f"{prefix}/close", self._handler(served, self._close))
        return app

    async def start(self) -> "AgentGymFacade":
        from aiohttp import web

        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - the bound port when 0 was asked
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())
        return self

    async def stop(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        for served in self.served.values():
            for session_id in list(served.sessions):
                await self._drop(served, session_id)
        if self._runner is not None:
            await self._runner.cleanup()
        self.executor.shutdown(wait=False)

    async def __aenter__(self) -> "AgentGymFacade":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[str]:
        """Serve on a private event loop in a thread (for sync callers and tests); yields the URL."""
        import threading

        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(target=loop.run_forever, daemon=True, name="agentgym-facade")
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=30)
            ready.set()
            yield self.url
        finally:
            if ready.is_set():
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    async def _reap_forever(self) -> None:
        period = max(0.05, min(self.idle_timeout_s / 4, 30.0))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for served in self.served.values():
                for session_id, session in list(served.sessions.items()):
                    if not session.lock.locked() and now - session.last_active > self.idle_timeout_s:
                        log.info("closing %s session %s: idle past %g s", served.spec.name, session_id, self.idle_timeout_s)
                        await self._drop(served, session_id)

    async def _drop(self, served: _Served, session_id: int) -> None:
        session = served.sessions.pop(session_id, None)
        if session is not None:
            try:
                await session.runner.close()
            except EnvCrashed as exc:
                log.warning("closing %s session %s: %s", served.spec.name, session_id, exc)

    # -- requests ---------------------------------------------------------------------------------

    def _handler(self, served: _Served, method: Callable[[_Served, Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            refusal = rebinding_refusal(request.headers.get("Host"), self.host) or origin_refusal(
                request.headers.getall("Origin", []), self.allowed_origins
            )
            if refusal is not None:
                return web.json_response({"error": refusal}, status=403)
            body: Any = dict(request.query)
            if request.method == "POST" and request.can_read_body:
                try:
                    body = await request.json()
                except ValueError as exc:
                    body = exc
            try:
                if not isinstance(body, dict):
                    raise _BadRequest(f"the body must be a JSON object ({body})")
                answer = await method(served, body)
            except _BadRequest as exc:
                answer = {"error": str(exc)}
            # AgentGym's convention: errors too are HTTP 200 with {"error": ...}.
            return web.json_response(answer)

        return handle

    def _session(self, served: _Served, body: dict[str, Any]) -> tuple[int, _Session]:
        key = served.dialect.id_key
        session_id = _whole_number(body.get(key), f"give the session as {key!r} (the number /create answered)")
        session = served.sessions.get(session_id)
        if session is None:
            raise _BadRequest(f"no session {session_id}; it was closed, reaped, or never created")
        session.last_active = time.monotonic()
        return session_id, session

    async def _hello(self, served: _Served, body: dict[str, Any]) -> str:
        return f"This is gymwire's {served.spec.name} environment, served with AgentGym's {served.dialect.title} API."

    async def _create(self, served: _Served, body: dict[str, Any]) -> Any:
        d = served.dialect
        if sum(len(other.sessions) for other in self.served.values()) >= self.max_sessions:
            raise _BadRequest(
                f"this server holds its most sessions ({self.max_sessions}); close some (/close) or start it with a larger --max-sessions"
            )
        runner = runner_for(served.spec, "thread", self.executor)
        session_id = next(served.ids)
        session = served.sessions[session_id] = _Session(runner)
        if d.create_answer == "int":
            return session_id
        answer: dict[str, Any] = {d.id_key: session_id}
        if d.create_resets:  # this family's client reads a first observation from /create: task `id`, as AgentGym's
            failed = await self._reset_session(served, session, session_id)
            if failed is not None:
                await self._drop(served, session_id)
                return failed
            answer.update({d.observation_key: session.observation, "done": False, "reward": 0})
        return answer

    async def _reset_session(self, served: _Served, session: _Session, index: int) -> dict[str, Any] | None:
        """Reset; None, or the error answer. Keeps the observation's data for the reset answer."""
        async with session.lock:
            try:
                observation = as_observation(await session.runner.reset(served.task(index)))
            except (TaskError, EnvCrashed) as exc:
                return {"error": str(exc)}
            session.observation = observation.text or ""
            session.data = dict(observation.data or {})
            # A profile may give the fields AgentGym's reset answers (SciWorld: the score of its first move).
            first_score = (session.data.get("agentgym") or {}).get("score", 0)
            session.done, session.score = False, float(first_score) / served.dialect.reward_scale
        return None

    async def _reset(self, served: _Served, body: dict[str, Any]) -> Any:
        d = served.dialect
        session_id, session = self._session(served, body)
        index = _whole_number(body.get(d.reset_key) or 0, f"{d.reset_key!r} must be a whole number")
        failed = await self._reset_session(served, session, index)
        if failed is not None:
            return failed
        if d.reset_answer == "pair":
            return [session.observation, None]
        if d.reset_answer == "text":
            return session.observation
        answer: dict[str, Any] = {key: session.data.get(source) for key, source in d.reset_data.items()}
        text = session.observation
        if d.prefix_key:  # AgentGym sends the task apart; its client shows it, a newline, then the observation
            prefix = str(session.data.get(d.prefix_key, ""))
            answer[d.prefix_key] = prefix
            if prefix and text.startswith(prefix):
                text = text[len(prefix):].lstrip("\n")
        if not d.reset_data and not d.reset_deleted:
            answer[d.id_key] = session_id
        answer.update({d.observation_key: text, "reward": 0})
        if d.score_key:
            answer[d.score_key] = 0
        if d.reset_deleted:
            answer["deleted"] = False
        answer[d.done_key] = False
        if d.actions_key:
            answer[d.actions_key] = []
        answer.update({key: value for key, value in (session.data.get("agentgym") or {}).items() if key in answer})
        return answer

    async def _step(self, served: _Served, body: dict[str, Any]) -> Any:
        d = served.dialect
        _, session = self._session(served, body)
        action = body.get("action")
        if not isinstance(action, str):
            raise _BadRequest("give the action as a string in 'action'")
        if not action.isascii():
            try:  # JSON's "\ud800" is a str no environment can encode; the gym port's decoder refuses it too
                action.encode("utf-8")
            except UnicodeEncodeError:
                raise _BadRequest("the action is not valid Unicode text (it holds a lone surrogate)") from None
        async with session.lock:
            if session.done and not (d.plays_after_end and served.agentgym_rules):
                # AgentGym's clients read `observation` from every answer: an error here would crash them.
                answer = {d.observation_key: AFTER_END, "reward": 0, d.done_key: True}
                if d.score_key:
                    answer[d.score_key] = self._units(d, session.score)
                return answer
            try:
                result = await session.runner.step(action)
            except EnvCrashed as exc:
                return {"error": str(exc)}
            session.observation = as_observation(result.observation).text or ""
            session.done = bool(result.terminated or result.truncated)
            session.score += float(result.reward)
        answer = {d.observation_key: session.observation, "reward": self._units(d, float(result.reward)), d.done_key: session.done}
        if d.score_key:
            answer[d.score_key] = self._units(d, session.score)
        if d.done_key == "terminated":
            answer["truncated"] = bool(result.truncated)
        if d.actions_key:
            answer[d.actions_key] = []
        return answer

    @staticmethod
    def _units(d: Dialect, value: float) -> float:
        """A gymwire reward in the unit AgentGym's server uses (SciWorld: whole score points)."""
        return value if d.reward_scale == 1 else round(value * d.reward_scale)

    async def _observation(self, served: _Served, body: dict[str, Any]) -> Any:
        return self._session(served, body)[1].observation

    async def _close(self, served: _Served, body: dict[str, Any]) -> Any:
        session_id, _ = self._session(served, body)
        await self._drop(served, session_id)
        return True  # as AgentGym's servers answer


# -- command line ---------------------------------------------------------------------------------


def _parse_env(spec: str) -> tuple[str, str | None]:
    """`textcraft` or `mypkg.env:Env=webshop` -> (environment spec, dialect or None)."""
    env, sep, name = spec.rpartition("=")
    return (env, name) if sep and name in DIALECTS else (spec, None)


def _parse_option(text: str) -> tuple[str, Any]:
    """`profile=agentgym` -> ("profile", "agentgym"); a JSON value (`images=true`, `low=5`) is decoded."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--option {text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _serve(args: argparse.Namespace) -> int:
    from gymwire.sdk.commands import env_var_defaults
    from gymwire.sdk.registry import resolve_env

    try:
        import aiohttp  # noqa: F401 - fail here with the install line, not inside the event loop
    except ImportError:
        print("gymwire agentgym-serve: needs aiohttp; pip install 'gymwire[agentgym]'", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        envs = [(resolve_env(env, defaults=env_var_defaults), dialect) for env, dialect in map(_parse_env, args.envs)]
        options = dict(_parse_option(option) for option in args.option)
        facade = AgentGymFacade(
            envs, split=args.split, options=options, idle_timeout_s=args.idle_timeout, host=args.host, port=args.port,
            allowed_origins=args.allow_origin, max_sessions=args.max_sessions,
        )
    except ValueError as exc:
        print(f"gymwire agentgym-serve: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        await facade.start()
        routes = ", ".join(f"{facade.url}/{name} ({s.dialect.title} API)" for name, s in facade.served.items())
        print(f"gymwire: serving with AgentGym's HTTP API: {routes} (Ctrl-C stops)", file=sys.stderr)
        try:
            await asyncio.Event().wait()
        finally:
            await facade.stop()

    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"gymwire agentgym-serve: cannot listen on {args.host}:{args.port}: {exc}; choose another --port", file=sys.stderr)
        return 1
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "agentgym-serve",
        help="serve environments with AgentGym's HTTP API (for AgentGym's agentenv clients)",
        description="Serve gymwire environments with AgentGym's HTTP API. ENV is a built-in name or module:Class, "
        f"optionally =DIALECT to speak another family's dialect ({', '.join(sorted(DIALECTS))}); "
        f"by default an environment named like a family speaks its dialect, others {DEFAULT_DIALECT}'s.",
    )
    parser.add_argument("envs", nargs="+", metavar="ENV[=DIALECT]")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port_number, default=36001, help="port (default 36001; 0 picks a free one)")
    parser.add_argument("--split", help="the split task indices refer to (default: each environment's first)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="session option for every reset (repeatable), e.g. profile=agentgym")
    parser.add_argument("--idle-timeout", type=float, default=3600.0, metavar="S",
                        help="close sessions idle this many seconds (default 3600)")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="let web pages of this origin (or '*') call the API; browsers are refused otherwise")
    parser.add_argument("--max-sessions", type=int, default=1000, metavar="N",
                        help="open sessions at most, all environments together (default 1000); /create answers an error beyond")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(handler=_serve)
