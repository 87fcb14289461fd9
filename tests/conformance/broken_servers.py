"""Servers that break the protocol on purpose, each by overriding one GymServer method, so the
conformance tests can show that every such fault is caught and named by its requirement ids.

Also `SleepyEnv`, a test environment with a known slow action and a known crashing action, which
unlock the suite's checks that need a request in progress (--slow-action, --crash-action).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Response

import msgpack

from gymwire.protocol import (
    SUBPROTOCOL_JSON, Close, ErrorCode, Hello, Open, ProtocolError, Reset, Resume, ServerConnection, Step, StepBatch,
)
from gymwire.sdk import Environment, StepOutcome, Task
from gymwire.sdk.server import GymServer
from gymwire.sdk.serving.connections import Connection

SLOW_ACTION = "sleep"
SLOW_MS = 500
CRASH_ACTION = "crash"
FINISH_ACTION = "finish"


class SleepyEnv(Environment):
    """Answers anything with an observation; `sleep` takes SLOW_MS, `crash` raises, `finish` wins."""

    name = "sleepy"
    version = "1.0.0"
    description = "A test environment with a slow action and a crashing one."
    # As long as a real environment's (its env_list is then larger than a welcome: answer-too-large runs).
    instructions = (
        f"Write any text and the environment repeats its first 40 characters. `{SLOW_ACTION}` takes {SLOW_MS} ms, "
        f"`{CRASH_ACTION}` makes the environment raise (the session is then crashed) and `{FINISH_ACTION}` ends the "
        "episode with reward 1. Nothing else ends an episode before its turn limit. The environment keeps no state "
        "between turns, so any sequence of actions is valid, and every task of the test split plays the same. It "
        "exists to unlock the conformance checks that need a request in progress (concurrency, cancel, deadlines, "
        "max_inflight) and the one that needs a session crash; a conformance run against it should skip only the "
        "checks of capabilities it lacks (images)."
    )
    splits = {"test": 5}
    default_max_turns = 10

    def reset(self, task: Task) -> str:
        self.task_index(task)  # raises TaskError for tasks outside `splits`
        return "ready"

    def step(self, action: str) -> StepOutcome:
        if action == SLOW_ACTION:
            time.sleep(SLOW_MS / 1000)
        elif action == CRASH_ACTION:
            raise RuntimeError("crash requested by the test")
        elif action == FINISH_ACTION:
            return StepOutcome("you win", reward=1.0, terminated=True)
        return StepOutcome(f"you said {action[:40]!r}")


class InlineSleepyEnv(SleepyEnv):
    """SleepyEnv run on the event loop: its steps take the server's in-place path."""

    inline = True


class _LockstepConnection(Connection):
    def _on_frame(self, frame: bytes | str) -> Any:
        return self._lockstep(super()._on_frame(frame))

    async def _lockstep(self, rest: Any) -> None:
        if rest is not None:
            await rest
        running = [inflight.task for inflight in self.inflight.values()]
        if running:
            await asyncio.wait(running)


class LockstepServer(GymServer):
    """Serves each connection's requests one at a time: reads no frame until the last is answered."""

    connection_class = _LockstepConnection


class _CrashOnBadFrameConnection(Connection):
    def _on_frame(self, frame: bytes | str) -> Any:
        try:
            self.codec.decode(frame)
        except ProtocolError as exc:
            raise RuntimeError(f"unhandled bad frame: {exc}") from exc
        return super()._on_frame(frame)


class CrashOnBadFrameServer(GymServer):
    """Lets a decoding error escape, which kills the connection instead of answering BAD_FRAME."""

    connection_class = _CrashOnBadFrameConnection


def _forget_the_answer_to(machine: Any, seq: int) -> None:
    if machine.last_reply is not None and seq == machine.last_seq:
        machine.last_seq -= 1


class DoubleStepServer(GymServer):
    """Forgets the recorded answer when a seq is re-sent, so the step runs a second time (both step
    paths: in place, and as a task, batches included)."""

    def _step_in_place(self, conn: Any, request_id: int, session_id: str, seq: int, action: str) -> Any:
        session = self.registry.sessions.get(session_id)
        runs_in_place = (
            session is not None and session.runner.steps_at_once and session.owner is conn and not session.line.busy()
        )  # (else the task path's _step_session below forgets it)
        if runs_in_place:
            _forget_the_answer_to(session.machine, seq)
        return super()._step_in_place(conn, request_id, session_id, seq, action)

    async def _step_session(self, session: Any, request_id: int, seq: int, *args: Any, **kwargs: Any) -> Any:
        _forget_the_answer_to(session.machine, seq)
        return await super()._step_session(session, request_id, seq, *args, **kwargs)


class DeadlineIgnoringServer(GymServer):
    """Drops every deadline_ms: requests run to the end however late."""

    async def _serve_request(self, conn: Any, message: Any) -> None:
        if getattr(message, "deadline_ms", None) is not None:
            message = message.model_copy(update={"deadline_ms": None})
        await super()._serve_request(conn, message)


class _AnyTokenRules(ServerConnection):
    def receive(self, message: Any) -> Any:
        if isinstance(message, Hello) and self.token is not None:
            message = message.model_copy(update={"token": self.token})
        return super().receive(message)


class AnyTokenServer(GymServer):
    """Requires a token, announces auth, and then welcomes any token at all."""

    connection_rules = _AnyTokenRules


class NoDrainServer(GymServer):
    """Stops without the drain phase: no drain notice, in-flight requests cut off."""

    async def drain(self, timeout: float = 30.0) -> None:
        return None


class _SessionIdsOnlyRules(ServerConnection):
    """Connection rules that look for a reused in-flight id only among session requests."""

    def _receive(self, message: Any) -> Any:
        if self.welcomed and not isinstance(message, (Open, Reset, Step, StepBatch, Close, Resume)):
            inflight, self.inflight = self.inflight, {}
            try:
                return super()._receive(message)
            finally:
                self.inflight = inflight
        return super()._receive(message)


class ControlIdReuseServer(GymServer):
    """Refuses a reused in-flight id only for session requests: ping, list_envs, describe_env and
    cancel with that id are served, so one id gets two answers."""

    connection_rules = _SessionIdsOnlyRules


class _BytesKeyConnection(Connection):
    def _on_frame(self, frame: bytes | str) -> Any:
        if isinstance(frame, bytes):
            try:
                obj = msgpack.unpackb(frame, raw=False)
            except Exception:
                obj = None
            if isinstance(obj, dict):
                keys = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
                frame = msgpack.packb(keys, use_bin_type=True)
        return super()._on_frame(frame)


class BytesKeyServer(GymServer):
    """Takes msgpack maps with binary (bytes) keys as if the keys were strings."""

    connection_class = _BytesKeyConnection


def _quote_seq_whole(exc: ProtocolError, seq: int, machine: Any) -> None:
    if exc.code is ErrorCode.BAD_SEQUENCE:
        exc.message = f"seq {seq} is out of order; send {machine.last_seq + 1}"


class SeqEchoServer(GymServer):
    """Quotes an out-of-order seq whole in BAD_SEQUENCE, however many digits it has (both step
    paths)."""

    def _step_in_place(self, conn: Any, request_id: int, session_id: str, seq: int, action: str) -> Any:
        try:
            return super()._step_in_place(conn, request_id, session_id, seq, action)
        except ProtocolError as exc:
            session = self.registry.sessions.get(session_id)
            if session is not None:
                _quote_seq_whole(exc, seq, session.machine)
            raise

    async def _step_session(self, session: Any, request_id: int, seq: int, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._step_session(session, request_id, seq, *args, **kwargs)
        except ProtocolError as exc:
            _quote_seq_whole(exc, seq, session.machine)
            raise


def break_error_table(monkeypatch: Any, name: str, *, code: int | None = None, retryable: bool | None = None) -> None:
    """Gives the implementation's ErrorCode a wrong entry (another number or retryable flag for
    `name`), so every server in this process sends it: the suite must catch it from the spec."""
    wrong = ErrorCode[name]
    real_code, real_retryable = ErrorCode.code, ErrorCode.retryable
    if code is not None:
        monkeypatch.setattr(ErrorCode, "code", property(lambda m: code if m is wrong else real_code.fget(m)))
    if retryable is not None:
        monkeypatch.setattr(ErrorCode, "retryable", property(lambda m: retryable if m is wrong else real_retryable.fget(m)))


class JsonOnlyServer(GymServer):
    """Not broken: speaks only gymwire.v1+json, which the spec allows (it is not a fault to refuse msgpack)."""

    def _select_subprotocol(self, ws: Any, offered: list[str]) -> str | None:
        return SUBPROTOCOL_JSON if SUBPROTOCOL_JSON in offered else None

    def _process_request(self, ws: Any, request: Any) -> Any:
        offered = [p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",")]
        if SUBPROTOCOL_JSON in offered:
            return super()._process_request(ws, request)  # its other rules (browser origins) still hold
        body = f"UNSUPPORTED_VERSION: this server speaks only {SUBPROTOCOL_JSON}\n".encode()
        return Response(400, "Bad Request", Headers([("Content-Type", "text/plain")]), body)
