"""What is checked before a server serves: its limits, and where it can listen."""

from __future__ import annotations

import errno
import resource
import socket

from gymwire.protocol import Limits
from ..errors import UserError

# The smallest value of each limit with which a server is still usable: a frame must hold a hello,
# a server with no session, no request in flight or no time left is no server.
LIMIT_MINIMUMS = {
    "max_frame_bytes": 512,
    "max_sessions": 1,
    "max_sessions_per_connection": 1,
    "max_inflight": 1,
    "max_batch": 1,
    "max_action_bytes": 1,
    "heartbeat_interval_ms": 10,
    "idle_timeout_ms": 10,
    "resume_grace_ms": 0,  # 0: a dropped connection's sessions are not kept for a resume
}


def check_limits(limits: Limits) -> None:
    """Raise ValueError naming the first limit below its minimum (and its `gymwire serve` flag)."""
    for name, value in limits.model_dump().items():
        minimum = LIMIT_MINIMUMS[name]
        if value < minimum:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"limit {name} ({flag}) must be at least {minimum}, got {value}")


class ListenError(UserError, OSError):
    """The server cannot listen where it was asked to; the message names the option to change."""


def listen_error(option: str, host: str, port: int, exc: OSError) -> ListenError:
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return ListenError(f"cannot listen on host {host!r}: {exc.strerror or exc}; check --host (an address of this machine)")
    if exc.errno == errno.EADDRINUSE:
        hint = f"port {port} is in use; choose another {option}"
    elif exc.errno == errno.EACCES:
        hint = f"no permission to listen on port {port}; choose another {option} (above 1023)"
    else:
        hint = f"check --host and {option}"
    return ListenError(f"cannot listen on {host}:{port} ({option}): {exc.strerror or exc}; {hint}")


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (as Go's runtime does), for a
    process that only serves: each connection, each sandbox run's pipes, each browser socket holds
    one. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # a hard limit the kernel refuses as a soft one (above nr_open)
            return soft
        return hard
    return soft


def unwelcomed_cap(requested: int) -> int:
    """At most a quarter of the open-file limit for connections that have shown no token: a flood of
    them leaves the descriptors that sessions need (GW-HANDSHAKE-10)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return requested if soft == resource.RLIM_INFINITY else max(1, min(requested, soft // 4))
