import pytest
from broken_servers import SleepyEnv
from conformance_servers import serve


@pytest.fixture
def serve_envs():
    return serve


@pytest.fixture
def sleepy_env():
    return SleepyEnv
