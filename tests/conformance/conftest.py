import contextlib
from typing import Iterator

import pytest
from broken_servers import SleepyEnv

from gymwire.protocol import Limits
from gymwire.sdk.server import GymServer

# Short timers so the heartbeat, half-open and resume-grace checks run in about a second each;
# small caps so the limit checks can reach them.
FAST_LIMITS = Limits(
    heartbeat_interval_ms=300,
    resume_grace_ms=800,
    max_inflight=12,
    max_sessions_per_connection=8,
    max_batch=16,
    max_frame_bytes=256 * 1024,
    max_action_bytes=8 * 1024,
)


@contextlib.contextmanager
def serve(envs, server_class=GymServer, **kwargs) -> Iterator[str]:
    """A real server on loopback, in its own thread and event loop; yields its URL."""
    server = server_class(envs, port=0, limits=kwargs.pop("limits", FAST_LIMITS), **kwargs)
    with server.run_in_thread() as url:
        yield url


@pytest.fixture
def serve_envs():
    return serve


@pytest.fixture
def sleepy_env():
    return SleepyEnv
