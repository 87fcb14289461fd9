"""Requests in flight: each runs as one task, within its deadline, until answered or cancelled.

A request is answered exactly once: by its task when it finishes, or earlier by whoever stops
waiting for it (a deadline: TIMEOUT; a cancel: CANCELLED; a stopping server: DRAINING), whichever
untracks it first. Work that has not reached its environment is then cancelled. Work that has runs
on in its task and records its answer, so a re-sent seq is answered from record (GW-DEADLINE-3/4,
GW-CANCEL-3, GW-RESUME-4); only its late answer is dropped (GW-DEADLINE-2).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from gymwire.protocol import (
    Cancel,
    CancelAck,
    Error,
    ErrorCode,
    Message,
    Opened,
    ProtocolError,
    Reset,
    Step,
    StepBatch,
    error_message,
)

from .connections import Connection, brief
from .request_line import LinePlace

if TYPE_CHECKING:
    from ..server import GymServer

log = logging.getLogger("gymwire.server")


class Inflight:
    """A request being served by its task."""

    __slots__ = ("message", "execute", "task", "env_started", "places", "deadline")

    def __init__(self, message: Any, execute: Callable[[Connection, Any, "Inflight"], Awaitable[Message]]) -> None:
        self.message = message
        self.execute = execute  # what serves the request
        self.task: asyncio.Task[Any] | None = None
        self.env_started = False
        # Places in line taken on arrival: one for a reset or step, one per entry of a batch (None
        # where the session was not this connection's then).
        self.places: list[LinePlace | None] = []
        self.deadline: asyncio.TimerHandle | None = None

    def release_places(self) -> None:
        for place in self.places:
            if place is not None:
                place.release()

    def stop_unstarted(self) -> bool:
        """Cancel the work if it has not reached its environment (its places go to the next in
        line); False when it has, and runs on to record its answer."""
        if self.env_started:
            return False
        self.release_places()
        if self.task is not None:
            self.task.cancel()
        return True


class Scheduling:
    """GymServer's part that runs requests as tasks: `_spawn` starts one, `_serve_request` answers it,
    `_answer_early` answers one before it is done (deadline, cancel)."""

    def _spawn(
        self: "GymServer", conn: Connection, message: Any, execute: Callable[[Connection, Any, Inflight], Awaitable[Message]]
    ) -> None:
        """Serve a request as a task that runs `execute` and sends its answer."""
        inflight = Inflight(message, execute)
        conn.protocol.track(message.id, inflight)  # CAPACITY beyond max_inflight, before anything starts
        if isinstance(message, (Step, Reset)):
            inflight.places = [self._join_line(conn, message.session)]
        elif isinstance(message, StepBatch):
            inflight.places = [self._join_line(conn, item.session) for item in message.steps]
        inflight.task = conn.loop.create_task(self._serve_request(conn, message))

    def _join_line(self: "GymServer", conn: Connection, session_id: str) -> LinePlace | None:
        session = self.registry.sessions.get(session_id)
        return session.line.join() if session is not None and session.owner is conn else None

    async def _serve_request(self: "GymServer", conn: Connection, message: Any) -> None:
        inflight = conn.inflight[message.id]
        deadline = getattr(message, "deadline_ms", None)
        if deadline is not None:
            inflight.deadline = conn.loop.call_later(
                deadline / 1000, self._deadline_passed, conn, message, inflight
            )
        try:
            reply: Message = await inflight.execute(conn, message, inflight)
        except asyncio.CancelledError:
            # Stopped before its environment (a cancel, a deadline, its connection or the server
            # gone): whoever stopped it answered it, if anyone can be.
            inflight.release_places()
            if inflight.deadline is not None:
                inflight.deadline.cancel()
            conn.protocol.untrack(message.id, inflight)
            return
        except ProtocolError as exc:
            exc.request_id = message.id
            reply = error_message(exc)
        except Exception as exc:
            log.exception("internal error serving %s", message.type)
            reply = error_message(ProtocolError(ErrorCode.INTERNAL, f"internal server error: {brief(exc)}", request_id=message.id))
        inflight.release_places()  # places it never reached (a batch entry refused early)
        if inflight.deadline is not None:
            inflight.deadline.cancel()
        # False when it was answered already (TIMEOUT, CANCELLED, DRAINING): one answer per request.
        if not conn.protocol.untrack(message.id, inflight):
            if isinstance(reply, Opened) and reply.session in self.registry.sessions:
                # Nobody will learn this session's id: close it now that it exists.
                await self.registry.destroy(self.registry.sessions[reply.session], "its open was answered TIMEOUT/CANCELLED")
            return
        if isinstance(reply, Opened):
            reply = await self._opened_or_too_large(conn, reply)
        if isinstance(reply, Error):
            self.metrics.error(reply.name)
        await conn.send(reply)

    def _deadline_passed(self: "GymServer", conn: Connection, message: Any, inflight: Inflight) -> None:
        timeout = ProtocolError(
            ErrorCode.TIMEOUT,
            f"no answer within deadline_ms={message.deadline_ms}; re-send the same seq to get its result",
            request_id=message.id,
            session=getattr(message, "session", None),
        )
        self._answer_early(conn, message.id, inflight, timeout)

    def _answer_early(self: "GymServer", conn: Connection, request_id: int, inflight: Inflight, error: ProtocolError) -> None:
        """Answer a request before its work is done: the work stops if it has not reached its
        environment, else runs on (the server's stop ends it) and its late answer is dropped."""
        if not conn.protocol.untrack(request_id, inflight):
            return
        if not inflight.stop_unstarted() and inflight.task is not None:
            self._abandoned.add(inflight.task)
            inflight.task.add_done_callback(self._abandoned.discard)
        conn.loop.create_task(conn.send_error(error))  # (send_error counts it in the metrics)

    async def _opened_or_too_large(self: "GymServer", conn: Connection, opened: Opened) -> Message:
        """An `opened` the client cannot take (a huge first observation) would leave a session
        nobody holds the resume token of: close it, and answer ANSWER_TOO_LARGE (GW-LIMIT-7)."""
        size = conn.protocol.oversize(opened)
        if size is None:
            return opened
        session = self.registry.sessions.get(opened.session)
        if session is not None:
            await self.registry.destroy(session, "its opened answer was larger than the client takes")
        return error_message(conn.protocol.answer_too_large(opened, size))

    def _cancel(self: "GymServer", conn: Connection, message: Cancel) -> CancelAck:
        inflight = conn.inflight.get(message.target)
        if inflight is not None:
            # Sent after the cancel_ack, which the connection sends as soon as this returns, when
            # the socket has room; with its buffer full the two may leave in either order, as the
            # spec allows (GW-REQUEST-3).
            cancelled = ProtocolError(
                ErrorCode.CANCELLED,
                "cancelled by the client",
                request_id=message.target,
                session=getattr(inflight.message, "session", None),
            )
            self._answer_early(conn, message.target, inflight, cancelled)
        return CancelAck(id=message.id, target=message.target, found=inflight is not None)
