import pytest
from openrlhf_fakes import GUESS_CORPUS

from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv
from gymwire.trainers.openrlhf.pool import close_pools
from gymwire.trainers.models.tiny import build_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer(GUESS_CORPUS, numbers=101)


@pytest.fixture
async def guess_server():
    async with GymServer([GuessEnv], port=0) as server:
        yield server
        await close_pools()  # before the server stops, or the clients would try to reconnect
