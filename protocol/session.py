"""The per-session state machine, shared by server and client. Pure: no I/O, no clocks.

    open(reset=False) -> OPENED --reset--> RUNNING --step--> RUNNING | FINISHED
    open(reset=True)  -> RUNNING            FINISHED --reset--> RUNNING
    any state --close--> CLOSED;  any live state --crash--> CRASHED

Every reset and step carries `seq`, the session's next sequence number (the open is seq 0). The
machine answers EXECUTE for the next number and REPLAY for the number it answered last (a client
re-sending after a reconnect), so a step is never executed twice.
"""

from __future__ import annotations

import enum
from typing import Any

from .errors import ErrorCode, ProtocolError


class SessionState(str, enum.Enum):
    OPENED = "opened"
    RUNNING = "running"
    FINISHED = "finished"
    CRASHED = "crashed"
    CLOSED = "closed"


class Decision(enum.Enum):
    EXECUTE = "execute"
    REPLAY = "replay"


def _quoted_seq(seq: int) -> str:
    """A seq as an error quotes it: JSON carries integers of any length, and an error must not echo
    thousands of digits (GW-ERROR-8)."""
    text = str(seq)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} digits)"


class SessionMachine:
    __slots__ = ("session", "state", "last_seq", "turns", "max_turns", "last_reply", "total_reward")

    def __init__(self, session: str, max_turns: int) -> None:
        self.session = session
        self.state = SessionState.OPENED
        self.last_seq = 0
        self.turns = 0
        self.max_turns = max_turns
        self.total_reward = 0.0
        self.last_reply: Any = None  # the answer to last_seq, kept for replay

    def _fail(self, code: ErrorCode, message: str) -> ProtocolError:
        return ProtocolError(code, message, session=self.session)

    def _check_seq(self, seq: int) -> Decision:
        if seq == self.last_seq and self.last_reply is not None:
            return Decision.REPLAY
        if seq != self.last_seq + 1:
            raise self._fail(
                ErrorCode.BAD_SEQUENCE,
                f"seq {_quoted_seq(seq)} is out of order: the last answered is {self.last_seq}, send {self.last_seq + 1}",
            )
        return Decision.EXECUTE

    def _check_live(self) -> None:
        if self.state is SessionState.CLOSED:
            raise self._fail(ErrorCode.UNKNOWN_SESSION, f"session {self.session} is closed; open a new one")
        if self.state is SessionState.CRASHED:
            raise self._fail(ErrorCode.ENV_CRASHED, f"session {self.session} crashed earlier; close it and open another")

    def check_reset(self, seq: int) -> Decision:
        self._check_live()
        return self._check_seq(seq)

    def check_step(self, seq: int) -> Decision:
        self._check_live()
        decision = self._check_seq(seq)
        if decision is Decision.REPLAY:
            return decision
        if self.state is SessionState.OPENED:
            raise self._fail(ErrorCode.INVALID_STATE, "the session has not been reset; send reset before step")
        if self.state is SessionState.FINISHED:
            raise self._fail(ErrorCode.EPISODE_FINISHED, "the episode has ended; reset or close the session")
        return decision

    def check_close(self) -> None:
        if self.state is SessionState.CLOSED:
            raise self._fail(ErrorCode.UNKNOWN_SESSION, f"session {self.session} is already closed")

    def opened(self, did_reset: bool) -> None:
        if did_reset:
            self.state = SessionState.RUNNING

    def reset_done(self, seq: int, reply: Any) -> None:
        self.state = SessionState.RUNNING
        self.turns = 0
        self.total_reward = 0.0
        self.record(seq, reply)

    def step_done(self, reward: float, terminated: bool, truncated: bool) -> bool:
        """Count the turn; return the final `truncated` (the turn limit truncates the episode)."""
        self.turns += 1
        self.total_reward += reward
        if not terminated and self.turns >= self.max_turns:
            truncated = True
        if terminated or truncated:
            self.state = SessionState.FINISHED
        return truncated

    def record(self, seq: int, reply: Any) -> None:
        self.last_seq = seq
        self.last_reply = reply

    def crashed(self) -> None:
        self.state = SessionState.CRASHED

    def closed(self) -> None:
        self.state = SessionState.CLOSED
        self.last_reply = None
