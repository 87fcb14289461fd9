"""ClientSession: one environment session on a GymClient, and its seq bookkeeping (section 7.1)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, AsyncIterator

from gymwire.protocol import ClientSessionMachine, Close, Message, Observation, ProtocolError, Reset, Resume, Step, StepResult, TaskRef
from gymwire.protocol.steps import step_map

if TYPE_CHECKING:
    from .client import GymClient

__all__ = ["ClientSession", "closing_session", "require_text_action"]


def require_text_action(action: Any) -> None:
    """Refuse, before a seq is taken, an action no frame can carry."""
    if not isinstance(action, str):
        raise TypeError(f"an action is text, got {type(action).__name__}")
    if not action.isascii():  # (a flag of the string: ASCII costs nothing more)
        try:
            action.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"an action is UTF-8 text; this one holds a lone surrogate at {exc.start}") from None


class ClientSession:
    """One environment session on a GymClient. Not for concurrent steps: an episode is sequential.

    Its seq bookkeeping (section 7.1) is `machine`, a ClientSessionMachine of the protocol package."""

    def __init__(self, client: GymClient, opened: Any) -> None:
        self.client = client
        self.id: str = opened.session
        self.resume_token: str = opened.resume_token
        self.env: str = opened.env
        self.max_turns: int = opened.max_turns
        self.observation: Observation | None = opened.observation
        self.info: dict[str, Any] = opened.info
        self.machine = ClientSessionMachine()

    @property
    def seq(self) -> int:
        """The last sequence number this session took."""
        return self.machine.seq

    @property
    def turns(self) -> int:
        return self.machine.turns

    @property
    def done(self) -> bool:
        return self.machine.done

    async def settle(self) -> None:
        """Before a request that takes a seq: after a TIMEOUT, CANCELLED or ANSWER_TOO_LARGE answer the
        server may have run the request; ask it (a resume) instead of guessing the seq."""
        if not self.machine.uncertain:
            return
        self.client.require(
            "resume",
            f"session {self.id} is in an unknown state after a TIMEOUT, CANCELLED or ANSWER_TOO_LARGE answer; "
            "close it and open a new one",
        )
        resumed = await self.client.request(
            Resume(id=self.client.next_id(), session=self.id, resume_token=self.resume_token)
        )
        self.machine.resumed(resumed)  # type: ignore[arg-type]

    async def request(self, message: Message | dict[str, Any]) -> Message:
        """Send a request that took a seq, and keep the seq bookkeeping right however it ends."""
        try:
            return await self.client.request(message)
        except ProtocolError as exc:
            self.machine.refused(exc.code)
            raise
        except (asyncio.TimeoutError, asyncio.CancelledError):
            # Given up here (request_timeout, or the caller cancelled), but the server may still
            # run it: ask before the next request instead of guessing the seq.
            self.machine.gave_up()
            raise

    def step_answered(self, result: StepResult) -> None:
        """Record a step's answer: the seq bookkeeping and the latest observation."""
        self.machine.step_answered(result)
        self.observation = result.observation

    async def step(self, action: str, deadline_ms: int | None = None) -> StepResult:
        if deadline_ms is not None:
            self.client.require("deadlines")  # before the seq is taken
        require_text_action(action)
        if self.machine.uncertain:
            await self.settle()
        if deadline_ms is None:  # every field is known good: the step goes as its wire map (steps.py)
            message: Step | dict[str, Any] = step_map(self.client.next_id(), self.id, self.machine.take_seq(), action)
        else:
            # Built before the seq is taken: a deadline_ms out of range fails here, with nothing sent.
            seq = self.machine.seq + 1
            message = Step(id=self.client.next_id(), session=self.id, seq=seq, action=action, deadline_ms=deadline_ms)
            self.machine.take_seq()
        result = await self.request(message)
        self.step_answered(result)  # type: ignore[arg-type]
        return result  # type: ignore[return-value]

    async def reset(
        self, *, split: str | None = None, index: int | None = None, seed: int | None = None, deadline_ms: int | None = None
    ) -> Observation:
        if deadline_ms is not None:
            self.client.require("deadlines")  # before the seq is taken
        await self.settle()
        task = TaskRef(split=split, index=index, seed=seed) if (split is not None or seed is not None) else None
        seq = self.machine.take_seq()
        message = Reset(id=self.client.next_id(), session=self.id, seq=seq, task=task, deadline_ms=deadline_ms)
        result = await self.request(message)
        self.machine.reset_answered(seq)
        self.observation = result.observation  # type: ignore[attr-defined]
        return self.observation  # type: ignore[return-value]

    async def close(self) -> None:
        self.client.sessions.pop(self.id, None)
        await self.client.request(Close(id=self.client.next_id(), session=self.id))


@contextlib.asynccontextmanager
async def closing_session(opening: Any) -> AsyncIterator[ClientSession]:
    session: ClientSession = await opening
    try:
        yield session
    finally:
        if session.id in session.client.sessions and session.client.usable:
            with contextlib.suppress(ProtocolError, ConnectionError):
                await session.close()
