"""The requests that reach an environment: open, reset, step, step_batch, close and resume.

A step checks its action, takes the session's place in line (`_step_session`), asks the session
machine (execute or replay), calls the runner and records the answer as its wire map
(`_step_answered`, shared by both paths). A runner whose steps never wait (`steps_at_once`) has its
step run right in `_step_in_place` as plain calls, with no task or coroutine, when nothing is queued.
Every environment failure becomes ENV_CRASHED in one place, `_crash`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from typing import TYPE_CHECKING, Any, Coroutine

from gymwire.protocol import (
    Close,
    Closed,
    Decision,
    Error,
    ErrorCode,
    Open,
    Opened,
    ProtocolError,
    Reset,
    ResetResult,
    Resume,
    Resumed,
    SessionMachine,
    Step,
    StepBatch,
    StepBatchResult,
    StepResult,
    TaskRef,
    error_message,
)
from gymwire.protocol.steps import StepFields, observation_map, step_message

from ..environment import StepOutcome, Task, TaskError, as_observation
from ..runners import EnvCrashed, runner_for
from .connections import Connection, brief
from .request_line import LinePlace
from .scheduling import Inflight
from .sessions import ServerSession, now

if TYPE_CHECKING:
    from ..server import GymServer

log = logging.getLogger("gymwire.server")

def _task_text(task: TaskRef) -> str:
    return " ".join(f"{key}={value}" for key, value in task.model_dump(exclude_none=True).items()) or "of the env's choice"


def _crash(session: ServerSession, what: str, exc: BaseException, task: TaskRef | None = None) -> ProtocolError:
    """An environment failure, the one way it is reported: the session is crashed, the operator's
    log gets the traceback, the client one line (ENV_CRASHED)."""
    session.machine.crashed()
    log.error(
        "session %s of %s (task %s): %s failed; the session is crashed",
        session.id, session.env_name, _task_text(task or session.task), what, exc_info=exc,
    )
    return ProtocolError(ErrorCode.ENV_CRASHED, f"{what} failed: {brief(exc)}", session=session.id)


class SessionRequests:
    """GymServer's part that serves the session requests (see the module doc)."""

    # ------------------------------------------------------------------ open, reset

    async def _open(self: "GymServer", conn: Connection, message: Open, inflight: Inflight) -> Opened:
        spec = self.envs.get(message.env)
        if spec is None:
            raise ProtocolError(ErrorCode.UNKNOWN_ENV, f"no environment {message.env!r}; this server has {sorted(self.envs)}")
        if self.draining:
            raise ProtocolError(ErrorCode.DRAINING, "server is draining; open the session elsewhere", retry_after_ms=1000)
        try:
            spec.env_class.check_options(message.options)
        except TaskError as exc:
            raise ProtocolError(ErrorCode.INVALID_TASK, brief(exc)) from None
        registry = self.registry
        registry.check_room(conn)
        max_turns = message.max_turns or self.env_infos[message.env].default_max_turns
        session_id = secrets.token_urlsafe(12)
        # Count the open before any await so concurrent opens cannot overshoot the caps.
        registry.opening += 1
        conn.opening += 1
        inflight.env_started = True
        try:
            if spec.env_class.inline and self.isolation == "thread":
                # An environment that runs on the loop is cheap by its own declaration: made here,
                # without the thread hop (a third of an open's time on a busy machine).
                runner = runner_for(spec, self.isolation, self.executor)
            else:
                runner = await asyncio.get_running_loop().run_in_executor(
                    self.executor, runner_for, spec, self.isolation, self.executor
                )
        except Exception as exc:
            log.error("environment %s failed to start (task %s)", message.env, _task_text(message.task), exc_info=exc)
            raise ProtocolError(ErrorCode.ENV_CRASHED, f"environment {message.env!r} failed to start: {brief(exc)}") from exc
        finally:
            registry.opening -= 1
            conn.opening -= 1
        session = ServerSession(
            id=session_id,
            env_name=message.env,
            resume_token=secrets.token_urlsafe(24),
            runner=runner,
            machine=SessionMachine(session_id, max_turns),
            owner=conn,
            task=message.task,
            options=message.options,
        )
        registry.add(session)
        observation = None
        if message.reset:
            try:
                observation = as_observation(await runner.reset(Task.from_ref(message.task, message.options)))
            except BaseException as exc:
                if isinstance(exc, TaskError):
                    await registry.destroy(session, "reset failed on open")
                    raise ProtocolError(ErrorCode.INVALID_TASK, brief(exc)) from None
                if isinstance(exc, (EnvCrashed, TypeError)):
                    crashed = _crash(session, "reset", exc)
                    crashed.session = None  # the client never learns this session: it is closed now
                    await registry.destroy(session, "reset failed on open")
                    raise crashed from None
                await registry.destroy(session, "reset failed on open")
                raise
        if conn.closed:
            # The connection died during the open: nobody will ever learn this session's id or token.
            await registry.destroy(session, "its connection closed during the open")
            raise ProtocolError(ErrorCode.CANCELLED, "the connection closed before the session was opened")
        session.machine.opened(did_reset=message.reset)
        log.debug("session %s opened on %s", session_id, message.env)
        return Opened(
            id=message.id,
            session=session_id,
            resume_token=session.resume_token,
            env=message.env,
            max_turns=max_turns,
            observation=observation,
        )

    async def _reset(self: "GymServer", conn: Connection, message: Reset, inflight: Inflight) -> ResetResult:
        session = self.registry.owned(conn, message.session)
        async with inflight.places[0] or session.line.join():
            if session.machine.check_reset(message.seq) is Decision.REPLAY:
                return session.machine.replay(ResetResult.TYPE, message.id)
            task = session.task if message.task is None else message.task
            inflight.env_started = True
            try:
                observation = as_observation(await session.runner.reset(Task.from_ref(task, session.options)))
            except TaskError as exc:
                raise ProtocolError(ErrorCode.INVALID_TASK, brief(exc), session=session.id) from None
            except (EnvCrashed, TypeError) as exc:
                raise _crash(session, "reset", exc, task) from None
            reply = ResetResult(id=message.id, session=session.id, seq=message.seq, observation=observation)
            session.task = task  # only now: a refused task leaves the session as it was (GW-SESSION-2)
            session.machine.reset_done(message.seq, reply)
            return reply

    # ------------------------------------------------------------------ steps

    def _serve_step(self: "GymServer", conn: Connection, request: Step | StepFields) -> dict[str, Any] | None:
        """A step, a plain step's fields or a `Step`: run in place when it can be (its answer), else
        in a task (None)."""
        if type(request) is tuple:
            answer = self._step_in_place(conn, *request)
            if answer is not None:
                return answer
            request = step_message(request)
        # (A `Step` comes here only when the rules could not read it as plain fields: it has a
        # deadline, which runs it in a task.)
        self._spawn(conn, request, self._step)
        return None

    def _step_in_place(
        self: "GymServer", conn: Connection, request_id: int, session_id: str, seq: int, action: str
    ) -> dict[str, Any] | None:
        """A step of a session whose runner steps at once, with nothing queued and no deadline, runs
        here, as plain calls: nothing can interleave with it. None when it cannot."""
        session = self.registry.sessions.get(session_id)
        if session is None or not session.runner.steps_at_once or session.owner is not conn or session.line.busy():
            return None
        started = session.last_active = now()
        self._check_action_size(session, action)
        machine = session.machine
        if machine.check_step(seq) is Decision.REPLAY:
            return machine.replay(StepResult.TYPE, request_id)  # type: ignore[no-any-return]
        try:
            result = session.runner.step_now(action)
        except (EnvCrashed, TaskError) as exc:
            raise _crash(session, "step", exc) from None
        return self._step_answered(session, request_id, seq, result, started)

    def _step(self: "GymServer", conn: Connection, message: Step, inflight: Inflight) -> Coroutine[Any, Any, dict[str, Any]]:
        """The step path's coroutine itself (one frame less a step): its task awaits it."""
        session = self.registry.owned(conn, message.session)
        return self._step_session(session, message.id, message.seq, message.action, inflight, inflight.places[0])

    async def _step_session(
        self: "GymServer",
        session: ServerSession,
        request_id: int,
        seq: int,
        action: str,
        inflight: Inflight,
        place: LinePlace | None,
    ) -> dict[str, Any]:
        """The one step path of a step that may wait (see the module doc)."""
        self._check_action_size(session, action)
        started = now()
        async with place or session.line.join():
            machine = session.machine
            if machine.check_step(seq) is Decision.REPLAY:
                return machine.replay(StepResult.TYPE, request_id)  # type: ignore[no-any-return]
            inflight.env_started = True
            try:
                result: Any = await session.runner.step(action)
            except (EnvCrashed, TaskError) as exc:
                raise _crash(session, "step", exc) from None
            return self._step_answered(session, request_id, seq, result, started)

    def _step_answered(
        self: "GymServer", session: ServerSession, request_id: int, seq: int, result: Any, started: float
    ) -> dict[str, Any]:
        """Check what the environment's step returned and record the answer, as its wire map (either path)."""
        try:
            if not isinstance(result, StepOutcome):
                raise EnvCrashed(f"step must return gymwire.sdk.StepOutcome, got {type(result).__name__}")
            observation = observation_map(result.observation)
            reward = float(result.reward)
            score = None if result.score is None else float(result.score)
            if not math.isfinite(reward) or (score is not None and not math.isfinite(score)):
                # JSON cannot carry them (GW-FRAME-9) and no trainer can use them.
                raise EnvCrashed(f"step returned reward={reward}, score={score}; both must be finite numbers")
            success = result.success
            if success is not None and success not in (True, False):  # numpy's bool_ and 0/1 are fine
                raise EnvCrashed(f"step returned success={str(success)[:80]}; it must be a bool or None")
            info = result.info
            if not isinstance(info, dict) or (info and not all(isinstance(key, str) for key in info)):
                raise EnvCrashed(f"step's info must be a dict with str keys, got {type(info).__name__} {str(info)[:80]}")
            info = dict(info)  # the answer is kept for replay: an environment may reuse its dict
            terminated, truncated = bool(result.terminated), bool(result.truncated)
        except (EnvCrashed, TypeError, ValueError) as exc:
            raise _crash(session, "step", exc) from None
        reply = session.machine.finish_step(
            request_id, seq, observation, reward, terminated, truncated, info,
            None if success is None else bool(success), score,
        )
        metrics = self.registry.metrics
        if metrics.enabled:
            metrics.step(session.env_name, now() - started)
        return reply

    def _check_action_size(self: "GymServer", session: ServerSession, action: str) -> None:
        limit = self.limits.max_action_bytes
        # UTF-8 takes at most 4 bytes a character: only long actions are worth encoding to measure.
        if 4 * len(action) > limit and len(action.encode("utf-8", "surrogatepass")) > limit:
            raise ProtocolError(
                ErrorCode.INVALID_ACTION,
                f"action longer than max_action_bytes={limit}; shorten it",
                session=session.id,
            )

    async def _step_batch(self: "GymServer", conn: Connection, message: StepBatch, inflight: Inflight) -> StepBatchResult:
        if len(message.steps) > self.limits.max_batch:
            raise ProtocolError(
                ErrorCode.INVALID_ACTION,
                f"batch of {len(message.steps)} steps exceeds max_batch={self.limits.max_batch}; split it",
            )

        async def one(item: Any, place: LinePlace | None) -> dict[str, Any] | Error:
            try:
                session = self.registry.owned(conn, item.session)
                return await self._step_session(session, message.id, item.seq, item.action, inflight, place)
            except ProtocolError as exc:
                exc.request_id = message.id
                exc.session = exc.session or item.session
                return error_message(exc)

        results = await asyncio.gather(*(one(item, place) for item, place in zip(message.steps, inflight.places)))
        return StepBatchResult(id=message.id, results=list(results))  # the answers' wire maps become models here

    # ------------------------------------------------------------------ close, resume

    async def _close(self: "GymServer", conn: Connection, message: Close, inflight: Inflight) -> Closed:
        session = self.registry.owned(conn, message.session)
        session.machine.check_close()
        await self.registry.destroy(session, "closed by client")
        return Closed(id=message.id, session=session.id)

    async def _resume(self: "GymServer", conn: Connection, message: Resume, inflight: Inflight) -> Resumed:
        return self.registry.resume(conn, message)
