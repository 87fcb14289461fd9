import contextlib
from typing import AsyncIterator

import pytest
from sdk_fault_envs import AsyncSleepEnv, BadTaskEnv, CountingEnv, FaultyEnv, PictureEnv

from gymwire.protocol import Limits
from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv

ALL_ENVS = [GuessEnv, CountingEnv, FaultyEnv, AsyncSleepEnv, BadTaskEnv, PictureEnv]


@contextlib.asynccontextmanager
async def running_server(**kwargs) -> AsyncIterator[GymServer]:
    envs = kwargs.pop("envs", ALL_ENVS)
    server = GymServer(envs, port=0, **kwargs)
    async with server:
        yield server


@pytest.fixture
def make_server():
    return running_server


@pytest.fixture(autouse=True)
def _reset_counters():
    CountingEnv.executed.clear()
    CountingEnv.instances = CountingEnv.closed = 0
    CountingEnv.step_delay = 0.0
    yield


@pytest.fixture
def fast_limits():
    return Limits(heartbeat_interval_ms=200, idle_timeout_ms=60_000, resume_grace_ms=5_000)
