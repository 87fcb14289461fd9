"""The server's sessions: who owns each, how many there may be, resume, detaching and reaping.

A session belongs to one connection at a time. When that connection closes the session is detached
and waits `resume_grace_ms` for a `resume` with its token; a session idle past `idle_timeout_ms`,
or detached past the grace, is closed by the reaper.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gymwire.protocol import ErrorCode, Limits, ProtocolError, Resume, Resumed, SessionMachine, TaskRef

from ..metrics import ServerMetrics
from ..runners import EnvRunner
from .request_line import RequestLine

if TYPE_CHECKING:
    from .connections import Connection

log = logging.getLogger("gymwire.server")


now = time.monotonic

@dataclass(eq=False)
class ServerSession:
    id: str
    env_name: str
    resume_token: str
    runner: EnvRunner
    machine: SessionMachine
    owner: "Connection | None"
    line: RequestLine = field(default_factory=RequestLine)
    last_active: float = field(default_factory=now)
    task: TaskRef = field(default_factory=TaskRef)
    options: dict[str, Any] = field(default_factory=dict)
    detached_at: float | None = None


class SessionRegistry:
    """Every live session of a server, by id, and the opens in progress (counted against the caps)."""

    def __init__(self, limits: Limits, metrics: ServerMetrics) -> None:
        self.limits = limits
        self.metrics = metrics
        self.sessions: dict[str, ServerSession] = {}
        self.opening = 0

    def check_room(self, conn: "Connection") -> None:
        """CAPACITY when one more session would pass max_sessions or max_sessions_per_connection."""
        limits = self.limits
        if len(self.sessions) + self.opening >= limits.max_sessions:
            raise ProtocolError(
                ErrorCode.CAPACITY,
                f"server holds max_sessions={limits.max_sessions}; retry later or use another server",
                retry_after_ms=1000,
            )
        if len(conn.sessions) + conn.opening >= limits.max_sessions_per_connection:
            raise ProtocolError(
                ErrorCode.CAPACITY,
                f"connection holds max_sessions_per_connection={limits.max_sessions_per_connection}; "
                "close some or open another connection",
                retry_after_ms=1000,
            )

    def add(self, session: ServerSession) -> None:
        self.sessions[session.id] = session
        self.metrics.session_opened(session.env_name)  # counted now: destroy counts it out on any failure
        if session.owner is not None:
            session.owner.sessions.add(session.id)

    def owned(self, conn: "Connection", session_id: str) -> ServerSession:
        """The session, if `conn` owns it; UNKNOWN_SESSION otherwise."""
        session = self.sessions.get(session_id)
        if session is None or session.owner is not conn:
            # Another connection's session is reported exactly like a missing one: ids leak nothing.
            raise ProtocolError(
                ErrorCode.UNKNOWN_SESSION,
                f"no session {session_id!r} on this connection; open one, or resume it with its token",
                session=session_id,
            )
        session.last_active = now()
        return session

    def resume(self, conn: "Connection", message: Resume) -> Resumed:
        session = self.sessions.get(message.session)
        if session is None or not hmac.compare_digest(session.resume_token.encode(), message.resume_token.encode()):
            raise ProtocolError(
                ErrorCode.UNKNOWN_SESSION,
                f"no session {message.session!r} with that resume token (it may have been reaped); open a new one",
                session=message.session,
            )
        if session.owner is not conn and len(conn.sessions) >= self.limits.max_sessions_per_connection:
            raise ProtocolError(ErrorCode.CAPACITY, "connection holds max_sessions_per_connection", retry_after_ms=1000)
        previous = session.owner
        if previous is not None and previous is not conn:
            previous.sessions.discard(session.id)  # the old connection is half-open; the token wins
        session.owner = conn
        session.detached_at = None
        session.last_active = now()
        conn.sessions.add(session.id)
        machine = session.machine
        return Resumed(
            id=message.id,
            session=session.id,
            state=machine.state.value,
            last_seq=machine.last_seq,
            turns=machine.turns,
            max_turns=machine.max_turns,
        )

    def detach_all(self, conn: "Connection") -> None:
        """The connection closed: its sessions wait for a resume."""
        for session_id in conn.sessions:
            session = self.sessions.get(session_id)
            if session is not None and session.owner is conn:
                session.owner = None
                session.detached_at = now()

    async def destroy(self, session: ServerSession, why: str) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        if session.owner is not None:
            session.owner.sessions.discard(session.id)
        session.machine.closed()
        self.metrics.session_closed(session.env_name)
        log.debug("session %s closed: %s", session.id, why)
        runner = session.runner
        if session.line.busy() and runner.interrupt():
            return

        async def close_after_current_request() -> None:
            async with session.line.join():
                try:
                    await runner.close()
                except Exception as exc:
                    log.warning("environment close of session %s raised: %s", session.id, exc)

        if session.line.busy():
            asyncio.get_running_loop().create_task(close_after_current_request())
        else:
            await close_after_current_request()

    async def reap_forever(self) -> None:
        limits = self.limits
        period = max(0.05, min(limits.idle_timeout_ms, limits.resume_grace_ms) / 4000)
        while True:
            await asyncio.sleep(period)
            moment = now()
            for session in list(self.sessions.values()):
                if session.line.busy():
                    continue
                if session.owner is None and session.detached_at is not None:
                    if moment - session.detached_at > limits.resume_grace_ms / 1000:
                        await self.destroy(session, "not resumed within resume_grace_ms")
                elif moment - session.last_active > limits.idle_timeout_ms / 1000:
                    await self.destroy(session, "idle past idle_timeout_ms")
