"""Checks, their registry, the context they run in, and their results.

A check is an async function registered with `@check(...)`: it names the requirement ids of
spec/requirements.json it covers, its area, the level that runs it and the capabilities it needs.
It fails by raising CheckFailed (which names the ids actually broken) and skips with Skipped.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Awaitable, Callable

from .spec_tables import CAPABILITIES, ERROR_CODE_BY_NAME
from .wire import ConnectionLost, NoAnswer, RawConnection, Transcript, Violation

LEVELS = ("core", "full")
# Arbitrary text: environments answer actions they cannot use with an observation (GW-STEP-7).
DEFAULT_PROBE_ACTION = "noop"
CLIENT_NAME = "gymwire-conformance"


class CheckFailed(Exception):
    def __init__(self, requirements: tuple[str, ...] | list[str], message: str) -> None:
        super().__init__(message)
        self.requirements = tuple(requirements)
        self.message = message


class Skipped(Exception):
    """The check cannot run against this server or with these options; the text says why."""


@dataclass(frozen=True)
class Check:
    name: str
    area: str
    level: str
    requirements: tuple[str, ...]
    needs: tuple[str, ...]
    func: Callable[["Context"], Awaitable[None]]
    summary: str
    final: bool = False  # it stops the server, so it runs after every other check


CHECKS: list[Check] = []


def check(
    name: str, *, area: str, requirements: tuple[str, ...], level: str = "core", needs: tuple[str, ...] = (), final: bool = False
) -> Callable[[Callable[["Context"], Awaitable[None]]], Callable[["Context"], Awaitable[None]]]:
    def register(func: Callable[["Context"], Awaitable[None]]) -> Callable[["Context"], Awaitable[None]]:
        if level not in LEVELS:
            raise ValueError(f"check {name}: level must be one of {LEVELS}")
        if any(c.name == name for c in CHECKS):
            raise ValueError(f"check {name} is registered twice")
        summary = (func.__doc__ or "").strip().splitlines()[0] if func.__doc__ else name
        CHECKS.append(Check(name, area, level, tuple(requirements), tuple(needs), func, summary, final))
        return func

    return register


@dataclass
class ConformanceOptions:
    """How to run the suite. `slow_action` is an action of `env` that keeps the environment busy
    for at least `slow_ms` milliseconds; it enables the checks that need a request in progress
    (concurrency, cancelling and timing out a running step, max_inflight)."""

    token: str | None = None
    env: str | None = None
    probe_action: str = DEFAULT_PROBE_ACTION  # what the checks play; it must not end an episode by itself
    open_options: dict[str, Any] = field(default_factory=dict)  # `options` of every open (environment-specific)
    level: str = "full"
    max_wait: float = 10.0
    reply_timeout: float = 5.0
    slow_action: str | None = None
    slow_ms: int = 500
    crash_action: str | None = None
    expected_failures: frozenset[str] = frozenset()
    checks: frozenset[str] | None = None  # run only these check names (None: all of the level)
    shutdown: Callable[[], Awaitable[Any]] | None = None  # starts the server's graceful shutdown (drain check)


@dataclass
class Context:
    """What a check gets: the server's welcome, the environment under test, and helpers that
    record everything sent and received as evidence."""

    url: str
    options: ConformanceOptions
    welcome: dict[str, Any]
    env_info: dict[str, Any]
    transcript: Transcript = field(default_factory=Transcript)
    encodings: tuple[str, ...] = ("msgpack", "json")  # those the server accepts, preferred first
    connections: list[RawConnection] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    # ------------------------------------------------------------------ facts about the server

    @property
    def env(self) -> str:
        return self.env_info["name"]

    @property
    def limits(self) -> dict[str, Any]:
        return self.welcome.get("limits") or {}

    @property
    def capabilities(self) -> list[str]:
        return list(self.welcome.get("capabilities") or [])

    @property
    def timeout(self) -> float:
        return self.options.reply_timeout

    @property
    def probe(self) -> str:
        return self.options.probe_action

    def next_id(self) -> int:
        return next(self._ids)

    def task(self) -> dict[str, Any]:
        """A task every environment can play: the first split's first task, else a seed."""
        splits = self.env_info.get("splits") or {}
        if splits:
            return {"split": next(iter(splits)), "index": 0}
        return {"seed": 0} if self.env_info.get("seedable", True) else {}

    def need_encoding(self, encoding: str) -> None:
        if encoding not in self.encodings:
            raise Skipped(f"the server does not speak gymwire.v1+{encoding} (it refused the upgrade)")

    def need_slow_action(self, why: str) -> str:
        if not self.options.slow_action:
            raise Skipped(
                f"{why} needs a request that stays in progress; pass --slow-action (an action of "
                f"{self.env!r} that takes at least --slow-ms={self.options.slow_ms} ms)"
            )
        return self.options.slow_action

    # ------------------------------------------------------------------ connections and requests

    async def connect(
        self,
        encoding: str | None = None,
        *,
        handshake: bool = True,
        answer_pings: bool = True,
        subprotocols: list[str] | None = None,
        label: str | None = None,
        **hello_fields: Any,
    ) -> RawConnection:
        encoding = encoding or self.encodings[0]
        if subprotocols is None:
            self.need_encoding(encoding)
        conn = await RawConnection.open(
            self.url,
            encoding=encoding,
            label=label or f"c{len(self.connections) + 1}",
            transcript=self.transcript,
            subprotocols=subprotocols,
            answer_pings=answer_pings,
            timeout=self.timeout,
        )
        self.connections.append(conn)
        if handshake:
            welcome = await self.request(conn, self.hello(**hello_fields))
            self.expect_type(welcome, "welcome", ("GW-HANDSHAKE-3",), "a valid hello")
        return conn

    def hello(self, **fields: Any) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "hello",
            "id": self.next_id(),
            "version": "1.0",
            "client": {"name": CLIENT_NAME, "version": _suite_version()},
            "capabilities": list(CAPABILITIES),
        }
        if self.options.token is not None:
            message["token"] = self.options.token
        message.update(fields)
        return {k: v for k, v in message.items() if v is not None}

    async def request(self, conn: RawConnection, message: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        if "id" not in message:
            message["id"] = self.next_id()
        return await conn.request(message, timeout or self.timeout)

    async def open_session(
        self,
        conn: RawConnection,
        *,
        max_turns: int | None = 2,
        reset: bool = True,
        task: dict[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        message = self.open_message(task=task if task is not None else self.task(), reset=reset, **fields)
        if max_turns is not None:
            message["max_turns"] = max_turns
        opened = await self.request(conn, message)
        self.expect_type(opened, "opened", ("GW-SESSION-3",), f"open of {self.env!r} with task {message['task']}")
        return opened

    def open_message(self, **fields: Any) -> dict[str, Any]:
        """An open of the environment under test, with --options, a fresh id and the default task."""
        message: dict[str, Any] = {"type": "open", "id": self.next_id(), "env": self.env, "task": self.task()}
        if self.options.open_options:
            message["options"] = dict(self.options.open_options)
        message.update(fields)
        return message

    async def step(self, conn: RawConnection, session: str, seq: int, action: str | None = None, **fields: Any) -> dict[str, Any]:
        return await self.request(conn, self.step_message(session, seq, action, **fields))

    def step_message(self, session: str, seq: int, action: str | None = None, **fields: Any) -> dict[str, Any]:
        return {"type": "step", "id": self.next_id(), "session": session, "seq": seq, "action": action or self.probe, **fields}

    # ------------------------------------------------------------------ expectations

    def fail(self, requirements: tuple[str, ...] | list[str], message: str) -> None:
        raise CheckFailed(requirements, message)

    def expect(self, condition: Any, requirements: tuple[str, ...], message: str) -> None:
        if not condition:
            raise CheckFailed(requirements, message)

    def expect_type(self, message: dict[str, Any], kind: str, requirements: tuple[str, ...], what: str) -> None:
        if message.get("type") != kind:
            raise CheckFailed(requirements, f"{what}: expected {kind!r}, got {_describe(message)}")

    def expect_error(
        self,
        message: dict[str, Any],
        name: str | tuple[str, ...],
        requirements: tuple[str, ...],
        what: str,
        *,
        request_id: int | None = None,
        session: str | None = None,
    ) -> None:
        names = (name,) if isinstance(name, str) else name
        if not set(names) <= set(ERROR_CODE_BY_NAME):
            raise ValueError(f"the check expects an error name v1 does not define: {names}")
        if message.get("type") != "error" or message.get("name") not in names:
            raise CheckFailed(requirements, f"{what}: expected error {' or '.join(names)}, got {_describe(message)}")
        if request_id is not None and message.get("id") != request_id:
            raise CheckFailed(("GW-ERROR-2",), f"{what}: the error must carry the request id {request_id}, got {message.get('id')!r}")
        if session is not None and message.get("session") != session:
            raise CheckFailed(("GW-ERROR-3",), f"{what}: the error must carry session {session!r}, got {message.get('session')!r}")

    async def expect_alive(self, conn: RawConnection, requirements: tuple[str, ...], after: str) -> None:
        """The connection still answers a ping after something hostile was sent."""
        try:
            pong = await self.request(conn, {"type": "ping"})
        except (NoAnswer, ConnectionLost) as exc:
            raise CheckFailed(requirements, f"after {after}, the connection no longer answers: {exc}") from None
        self.expect_type(pong, "pong", requirements, f"ping after {after}")

    def violations(self) -> list[Violation]:
        return [v for conn in self.connections for v in conn.violations]

    async def close(self) -> None:
        for conn in self.connections:
            try:
                await conn.close()
            except Exception:  # closing a connection the server already dropped may fail; it is gone either way
                pass


@functools.cache
def _suite_version() -> str:
    try:
        return metadata.version("gymwire")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _describe(message: dict[str, Any]) -> str:
    if message.get("type") == "error":
        return f"error {message.get('name')} ({message.get('code')}): {str(message.get('message'))[:160]}"
    text = repr({k: v for k, v in message.items() if k not in ("observation", "info")})
    return f"{message.get('type')!r} {text[:200]}"


@dataclass
class CheckResult:
    name: str
    area: str
    level: str
    requirements: tuple[str, ...]
    status: str  # pass | fail | skip | xfail (failed, as the expected-failures file says)
    message: str = ""
    failed_requirements: tuple[str, ...] = ()
    evidence: list[str] = field(default_factory=list)
    seconds: float = 0.0
    unexpected_pass: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "area": self.area,
            "level": self.level,
            "requirements": list(self.requirements),
            "status": self.status,
            "seconds": round(self.seconds, 3),
        }
        if self.message:
            out["message"] = self.message
        if self.failed_requirements:
            out["failed_requirements"] = list(self.failed_requirements)
        if self.evidence:
            out["evidence"] = self.evidence
        if self.unexpected_pass:
            out["unexpected_pass"] = True
        return out
