"""Guess's session options through a real server: bad values and unknown names are INVALID_TASK with
what is valid (the review saw low="abc" and low=10, high=1 crash the session: ENV_CRASHED)."""

from __future__ import annotations

import pytest

from gymwire.protocol import ErrorCode, ProtocolError
from gymwire.sdk.client import GymClient
from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"low": "abc"}, "option low must be a whole number"),
        ({"high": 2.5}, "option high must be a whole number"),
        ({"low": True}, "option low must be a whole number"),
        ({"low": 10, "high": 1}, "low=10 must be below high=1"),
        ({"low": 5, "high": 5}, "low=5 must be below high=5"),
        ({"high": 10**15}, "from -999999999999 to 999999999999"),
        ({"show_range": "yes"}, "show_range must be true or false"),
        ({"lo": 1, "verbose": True}, "unknown option(s) 'lo', 'verbose'; guess takes high (largest number, default 100), low"),
    ],
)
async def test_bad_options_are_invalid_tasks_that_say_what_is_valid(options, says):
    async with GymServer([GuessEnv], port=0) as server, GymClient(server.url) as client:
        with pytest.raises(ProtocolError) as caught:
            await client.open("guess", split="test", index=0, options=options)
        assert caught.value.code is ErrorCode.INVALID_TASK and says in caught.value.message
        assert server.stats()["sessions"] == 0
        fine = await client.open("guess", split="test", index=0, options={"low": -5, "high": 5, "show_range": True})
        assert "from -5 to 5" in fine.observation.text
