"""Requests in flight: each runs as its own task, within its deadline, until answered or cancelled.

Once a request's environment call has started it is no longer cancelled: it runs to the end and
its answer is recorded, so a re-sent seq is answered from record (GW-DEADLINE-4, GW-RESUME-4).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
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


@dataclass(eq=False)
class Inflight:
    """A request being served."""

    execute: Callable[[Connection, Any, "Inflight"], Awaitable[Message]]  # what serves the request
    task: asyncio.Task[Any] = field(init=False)
    env_started: bool = False
    # Places in line taken on arrival: one for a reset or step, one per entry of a batch (None
    # where the session was not this connection's then).
    places: list[LinePlace | None] = field(default_factory=list)

    def release_places(self) -> None:
        for place in self.places:
            if place is not None:
                place.release()


class Scheduling:
    """GymServer's part that runs requests as tasks: `_spawn` starts one, `_serve_request` answers it
    within its deadline, `_cancel` stops one that has not reached its environment."""

    def _spawn(
        self: "GymServer", conn: Connection, message: Any, execute: Callable[[Connection, Any, Inflight], Awaitable[Message]]
    ) -> None:
        """Serve a request as a task that runs `execute` and sends its answer."""
        inflight = Inflight(execute)
        conn.protocol.track(message.id, inflight)  # CAPACITY beyond max_inflight, before anything starts
        inflight.task = asyncio.get_running_loop().create_task(self._serve_request(conn, message))
        inflight.task.add_done_callback(lambda _: self._answer_if_cancelled_unstarted(conn, message, inflight))
        if isinstance(message, (Step, Reset)):
            inflight.places = [self._join_line(conn, message.session)]
        elif isinstance(message, StepBatch):
            inflight.places = [self._join_line(conn, item.session) for item in message.steps]

    def _join_line(self: "GymServer", conn: Connection, session_id: str) -> LinePlace | None:
        session = self.registry.sessions.get(session_id)
        return session.line.join() if session is not None and session.owner is conn else None

    def _answer_if_cancelled_unstarted(self: "GymServer", conn: Connection, message: Any, inflight: Inflight) -> None:
        # A task cancelled before its first step (a cancel in the same read as its request, or the
        # connection closing) never enters _serve_request, whose handlers answer and unregister.
        if not inflight.task.cancelled() or not conn.protocol.untrack(message.id, inflight):
            return
        inflight.release_places()
        cancelled = ProtocolError(
            ErrorCode.CANCELLED, "cancelled by the client", request_id=message.id, session=getattr(message, "session", None)
        )
        asyncio.get_running_loop().create_task(conn.send_error(cancelled))

    async def _serve_request(self: "GymServer", conn: Connection, message: Any) -> None:
        inflight = conn.inflight[message.id]
        deadline = getattr(message, "deadline_ms", None)
        work = asyncio.ensure_future(inflight.execute(conn, message, inflight))
        work.add_done_callback(lambda _: inflight.release_places())  # places it never reached
        try:
            if deadline is None:
                reply = await asyncio.shield(work)
            else:
                try:
                    reply = await asyncio.wait_for(asyncio.shield(work), deadline / 1000)
                except asyncio.TimeoutError:
                    self._abandon(work, inflight)
                    reply = error_message(
                        ProtocolError(
                            ErrorCode.TIMEOUT,
                            f"no answer within deadline_ms={deadline}; re-send the same seq to get its result",
                            request_id=message.id,
                            session=getattr(message, "session", None),
                        )
                    )
        except asyncio.CancelledError:
            self._abandon(work, inflight)
            reply = error_message(
                ProtocolError(
                    ErrorCode.CANCELLED,
                    "cancelled by the client",
                    request_id=message.id,
                    session=getattr(message, "session", None),
                )
            )
        except ProtocolError as exc:
            exc.request_id = message.id
            reply = error_message(exc)
        except Exception as exc:
            log.exception("internal error serving %s", message.type)
            reply = error_message(ProtocolError(ErrorCode.INTERNAL, f"internal server error: {brief(exc)}", request_id=message.id))
        finally:
            # False when the server already answered it (DRAINING at a stop): one answer per request.
            still_ours = conn.protocol.untrack(message.id, inflight)
        if not still_ours:
            return
        if isinstance(reply, Opened):
            reply = await self._opened_or_too_large(conn, reply)
        if isinstance(reply, Error):
            self.metrics.error(reply.name)
        await conn.send(reply)

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

    def _abandon(self: "GymServer", work: asyncio.Future[Any], inflight: Inflight) -> None:
        """The client gets TIMEOUT or CANCELLED now. Work that has not touched the environment is
        cancelled; work that has runs on and records its result (a re-sent seq gets it), except an
        open: nobody will learn that session's id, so it is closed as soon as it exists."""
        if not inflight.env_started:
            work.cancel()
            return

        def close_orphan(done: asyncio.Future[Any]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            reply = done.result()
            sessions = self.registry.sessions
            if isinstance(reply, Opened) and reply.session in sessions:
                asyncio.get_running_loop().create_task(
                    self.registry.destroy(sessions[reply.session], "its open was answered TIMEOUT/CANCELLED")
                )

        self._abandoned.add(work)
        work.add_done_callback(self._abandoned.discard)
        work.add_done_callback(close_orphan)

    def _cancel(self: "GymServer", conn: Connection, message: Cancel) -> CancelAck:
        inflight = conn.inflight.get(message.target)
        if inflight is not None:
            inflight.task.cancel()
        return CancelAck(id=message.id, target=message.target, found=inflight is not None)
