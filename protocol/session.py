"""The per-session rules of section 7, one object per role. Pure: no I/O, no clocks.

`SessionMachine` is the server's record of a session: its state, the seq it answered last and that
answer (for replay), the turn count, the turn limit and the episode's metrics. `ClientSessionMachine`
is the client's view of the same session: which seq to send next, and whether the server may have
run a request whose answer never arrived.

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
from .messages import Resumed, StepResult
from .steps import step_result_map


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
    __slots__ = (
        "session", "state", "last_seq", "turns", "max_turns", "last_reply", "total_reward", "success", "score",
    )

    def __init__(self, session: str, max_turns: int) -> None:
        self.session = session
        self.state = SessionState.OPENED
        self.last_seq = 0
        self.turns = 0
        self.max_turns = max_turns
        self.total_reward = 0.0
        self.last_reply: Any = None  # the answer to last_seq, kept for replay
        # What the environment last said of the episode's outcome; None: derive it (see finish_step).
        self.success: bool | None = None
        self.score: float | None = None

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

    def replay(self, kind: str, request_id: int) -> Any:
        """The recorded answer to a re-sent seq (after check_* said REPLAY), under the new request's
        id. `kind` is the answer's type: a step's answer is kept as its wire map, a reset's as its model."""
        reply = self.last_reply
        plain = isinstance(reply, dict)
        answered_with = reply["type"] if plain else reply.type
        if answered_with != kind:
            # The seq went to a reset and this is a step (or the reverse): not a retry of it.
            raise self._fail(
                ErrorCode.BAD_SEQUENCE,
                f"seq {self.last_seq} was answered with a {answered_with}, so this is no retry; send {self.last_seq + 1}",
            )
        return {**reply, "id": request_id} if plain else reply.model_copy(update={"id": request_id})

    def reset_done(self, seq: int, reply: Any) -> None:
        self.state = SessionState.RUNNING
        self.turns = 0
        self.total_reward = 0.0
        self.success = self.score = None
        self.record(seq, reply)

    def finish_step(
        self,
        request_id: int,
        seq: int,
        observation: dict[str, Any],
        reward: float,
        terminated: bool,
        truncated: bool,
        info: dict[str, Any],
        success: bool | None = None,
        score: float | None = None,
    ) -> dict[str, Any]:
        """Count an executed step and record its answer, the `step_result` as the map it is sent as
        (see `steps.step_result_map`). The episode's metrics ride on the answer that ends it
        (section 8): success and score as the environment last gave them, else success = a positive
        reward on termination and score = the total reward."""
        truncated = self.step_done(reward, terminated, truncated)
        if success is not None:
            self.success = success
        if score is not None:
            self.score = score
        metrics = None
        if terminated or truncated:
            metrics = {
                "success": self.success if self.success is not None else reward > 0 and terminated,
                "score": float(self.score if self.score is not None else self.total_reward),
                "turns": self.turns,
                "total_reward": self.total_reward,
            }
        reply = step_result_map(request_id, self.session, seq, observation, reward, terminated, truncated, info, metrics)
        self.record(seq, reply)
        return reply

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


class ClientSessionMachine:
    """The client's side of section 7.1. A seq is taken for each reset or step sent; the server's
    answer settles it. A refusal (any error but TIMEOUT, CANCELLED or ANSWER_TOO_LARGE) means the
    server did not use the number; after those or a local give-up the server may have run the
    request, so the session is `uncertain` until a `resumed` says where the server stands."""

    __slots__ = ("answered_seq", "outstanding", "turns", "done", "uncertain")

    def __init__(self) -> None:
        self.answered_seq = 0  # the open is seq 0
        self.outstanding = 0  # seqs taken whose answer has not come
        self.turns = 0
        self.done = False
        self.uncertain = False

    @property
    def seq(self) -> int:
        """The last seq taken."""
        return self.answered_seq + self.outstanding

    def take_seq(self) -> int:
        self.outstanding += 1
        return self.answered_seq + self.outstanding

    def refused(self, code: ErrorCode) -> None:
        """An error answered a request that took a seq."""
        if code in _MAYBE_RAN:
            self.uncertain = True
        else:
            self.outstanding -= 1  # refused before execution: the number was not used

    def gave_up(self) -> None:
        """The client stopped waiting (its own timeout, a cancelled caller): the server may still run it."""
        self.uncertain = True

    def _answered(self, seq: int) -> None:
        self.outstanding -= 1
        self.answered_seq = max(self.answered_seq, seq)

    def step_answered(self, result: StepResult) -> None:
        self.outstanding -= 1
        if result.seq > self.answered_seq:
            self.answered_seq = result.seq
        self.turns += 1
        self.done = result.terminated or result.truncated

    def reset_answered(self, seq: int) -> None:
        self._answered(seq)
        self.turns = 0
        self.done = False

    def resumed(self, resumed: Resumed) -> None:
        """Where the server stands, from its `resumed`: nothing is outstanding any more."""
        self.answered_seq = resumed.last_seq
        self.outstanding = 0
        self.turns = resumed.turns
        self.done = resumed.state == SessionState.FINISHED.value
        self.uncertain = False


# Errors after which the request may have run (ANSWER_TOO_LARGE: it did, but its answer is unknown).
_MAYBE_RAN = (ErrorCode.TIMEOUT, ErrorCode.CANCELLED, ErrorCode.ANSWER_TOO_LARGE)
