"""The fixed table of protocol error codes, and the one exception type the protocol raises.

Codes are stable across minor versions: a minor version may add codes, never renumber them.
A peer that receives an unknown code treats it as INTERNAL with the `retryable` flag it was sent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorSpec:
    code: int
    retryable: bool
    meaning: str


class ErrorCode(enum.Enum):
    """Every error a gymwire v1 peer may send. `value` is the ErrorSpec."""

    BAD_FRAME = ErrorSpec(1, False, "The frame could not be decoded or does not match any message schema.")
    UNSUPPORTED_VERSION = ErrorSpec(2, False, "No protocol version in common; the welcome lists what the server speaks.")
    UNKNOWN_MESSAGE = ErrorSpec(3, False, "The frame names a message type this version does not define.")
    FRAME_TOO_LARGE = ErrorSpec(4, False, "The frame exceeds the negotiated max_frame_bytes.")
    HANDSHAKE_REQUIRED = ErrorSpec(5, False, "A request was sent before the hello/welcome handshake completed.")
    ANSWER_TOO_LARGE = ErrorSpec(
        6, False, "The answer exceeds the receiver's max_frame_bytes; the request was carried out (a step's turn counts)."
    )
    UNKNOWN_ENV = ErrorSpec(10, False, "The server hosts no environment of that name.")
    UNKNOWN_SESSION = ErrorSpec(11, False, "No such session, it was closed, or it belongs to another connection.")
    INVALID_ACTION = ErrorSpec(12, False, "The action is not acceptable at the protocol level (wrong type, too long).")
    EPISODE_FINISHED = ErrorSpec(13, False, "The episode has ended; reset or close the session.")
    INVALID_STATE = ErrorSpec(14, False, "The request is not legal in the session's current state.")
    BAD_SEQUENCE = ErrorSpec(15, False, "The step sequence number is neither the next one nor the last one answered.")
    INVALID_TASK = ErrorSpec(16, False, "The task names an unknown split or an index out of range.")
    CAPACITY = ErrorSpec(20, True, "A limit is reached (sessions, in-flight requests); retry after retry_after_ms.")
    TIMEOUT = ErrorSpec(21, True, "The request's deadline passed before the server could answer it.")
    CANCELLED = ErrorSpec(22, True, "The request was cancelled by the client before it completed.")
    ENV_CRASHED = ErrorSpec(23, False, "The environment raised or died; the session is unusable, close it.")
    DRAINING = ErrorSpec(24, True, "The server is shutting down and takes no new sessions; use another server.")
    UNAUTHORIZED = ErrorSpec(30, False, "The bearer token is missing or wrong.")
    INTERNAL = ErrorSpec(99, True, "An unexpected server fault; the server keeps running.")

    @property
    def code(self) -> int:
        return self.value.code

    @property
    def retryable(self) -> bool:
        return self.value.retryable

    @property
    def meaning(self) -> str:
        return self.value.meaning

    @classmethod
    def from_code(cls, code: int) -> "ErrorCode":
        return _BY_NUMBER.get(code, cls.INTERNAL)


_BY_NUMBER = {member.code: member for member in ErrorCode}


class ProtocolError(Exception):
    """A typed protocol error: what decoders, the state machine and the runtimes raise.

    `request_id` is the id of the request it answers, when one could be read from the frame.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        request_id: int | None = None,
        session: str | None = None,
        retry_after_ms: int | None = None,
        details: dict[str, Any] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.session = session
        self.retry_after_ms = retry_after_ms
        self.details = details
        # Set only for errors received with a code this version does not know (see module doc).
        self._retryable = retryable

    @property
    def retryable(self) -> bool:
        return self.code.retryable if self._retryable is None else self._retryable


def error_table() -> list[dict[str, Any]]:
    """The table as plain rows (for the spec and `gymwire spec`)."""
    return [
        {"code": m.code, "name": m.name, "retryable": m.retryable, "meaning": m.meaning} for m in ErrorCode
    ]
