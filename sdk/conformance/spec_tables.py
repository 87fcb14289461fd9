"""What protocol v1.0 defines, written out from spec/PROTOCOL.md for the suite to check against.

The suite's own copy, on purpose: it never takes these from gymwire.protocol, so a server built
on a wrong implementation table is caught instead of agreeing with itself.
tests/conformance/test_conformance_spec_tables.py reads them back out of PROTOCOL.md.
"""

from __future__ import annotations

# Section 3: the WebSocket subprotocol of each encoding.
SUBPROTOCOL_BY_ENCODING = {"msgpack": "gymwire.v1+msgpack", "json": "gymwire.v1+json"}

# Section 4 (GW-HANDSHAKE-4): the optional features a welcome may list.
CAPABILITIES = ("batch", "resume", "cancel", "deadlines", "images", "auth", "heartbeat")

# Section 5: what a server may send (answers, plus unsolicited notice and error); anything else
# breaks GW-VERSION-6.
SERVER_MESSAGE_TYPES = frozenset({
    "welcome", "env_list", "env_description", "opened", "reset_result", "step_result", "step_batch_result", "closed",
    "cancel_ack", "ping", "pong", "resumed", "notice", "error",
})

# Section 12: every limit a welcome announces.
LIMIT_FIELDS = (
    "max_frame_bytes", "max_sessions", "max_sessions_per_connection", "max_inflight", "max_batch",
    "max_action_bytes", "heartbeat_interval_ms", "idle_timeout_ms", "resume_grace_ms",
)

# Section 4: the smallest hello.max_frame_bytes a client may announce.
MIN_CLIENT_FRAME_BYTES = 512

# Section 13: code -> (name, retryable).
ERROR_TABLE: dict[int, tuple[str, bool]] = {
    1: ("BAD_FRAME", False),
    2: ("UNSUPPORTED_VERSION", False),
    3: ("UNKNOWN_MESSAGE", False),
    4: ("FRAME_TOO_LARGE", False),
    5: ("HANDSHAKE_REQUIRED", False),
    6: ("ANSWER_TOO_LARGE", False),
    10: ("UNKNOWN_ENV", False),
    11: ("UNKNOWN_SESSION", False),
    12: ("INVALID_ACTION", False),
    13: ("EPISODE_FINISHED", False),
    14: ("INVALID_STATE", False),
    15: ("BAD_SEQUENCE", False),
    16: ("INVALID_TASK", False),
    20: ("CAPACITY", True),
    21: ("TIMEOUT", True),
    22: ("CANCELLED", True),
    23: ("ENV_CRASHED", False),
    24: ("DRAINING", True),
    30: ("UNAUTHORIZED", False),
    99: ("INTERNAL", True),
}
ERROR_CODE_BY_NAME = {name: code for code, (name, _) in ERROR_TABLE.items()}
