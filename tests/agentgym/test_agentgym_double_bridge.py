"""The two bridges against each other, all on loopback:

    gymwire environment -> AgentGym HTTP facade -> AgentGym bridge -> gymwire server -> client

The conformance suite passes against the far end, and an episode played through the double bridge
equals the one played directly, step for step, in every AgentGym dialect.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import pytest
from conformance_servers import serve

from gymwire.sdk.client import GymClient
from gymwire.sdk.conformance import run_conformance
from gymwire.servers.agentgym import bridge_spec
from gymwire.servers.agentgym.api import DIALECTS
from gymwire.servers.agentgym.serve import AgentGymFacade
from gymwire.servers.guess import GuessEnv
from gymwire.servers.textcraft import TextCraftEnv
from gymwire.servers.textcraft.recipes import load_book
from gymwire.servers.textcraft.solver import plan


@contextlib.contextmanager
def double_bridge(env_cls, dialect: str, name: str, split: str = "test") -> Iterator[str]:
    """Serve env_cls with AgentGym's API in `dialect` (task index = index into `split`), bridge it
    back, and serve the bridge over gymwire; its one split "all" is then `split`."""
    facade = AgentGymFacade([(env_cls, dialect)], split=split)
    with facade.run_in_thread() as facade_url:
        bridge = bridge_spec(
            f"{dialect}={facade_url},name={name},tasks={env_cls.info().splits[split]},max_turns={env_cls.default_max_turns}"
        )
        with serve([bridge]) as url:
            yield url


class Bisect:
    """Guess's player: halves the range after each hint, so a second run repeats the first exactly."""

    def __init__(self) -> None:
        self.low, self.high, self.guess = 1, 100, 0

    def __call__(self, observation: str) -> str:
        if "higher" in observation:
            self.low = self.guess + 1
        elif "lower" in observation:
            self.high = self.guess - 1
        self.guess = (self.low + self.high) // 2
        return f"Thought: halve the range.\nAction: {self.guess}"


def scripted(actions: list[str]):
    """A player that sends `actions` in order, whatever it sees."""
    remaining = iter(actions)
    return lambda _observation: next(remaining)


async def play(url: str, env: str, split: str, index: int, policy) -> list[tuple]:
    """Observation, reward and episode flags of the reset and every step, then the episode metrics."""
    async with GymClient(url) as client:
        session = await client.open(env, split=split, index=index)
        trace = [(session.observation.text,)]
        while not session.done:
            result = await session.step(policy(trace[-1][0]))
            trace.append((result.observation.text, result.reward, result.terminated, result.truncated))
        trace.append(("metrics", result.metrics.success, result.metrics.score, result.metrics.turns))
        await session.close()
    return trace


async def test_conformance_passes_through_both_bridges():
    with double_bridge(GuessEnv, "textcraft", "guess-twice-bridged") as url:
        report = await run_conformance(url, env="guess-twice-bridged", max_wait=1, reply_timeout=10)
    assert report.ok, report.summary()
    statuses = {r.name: r.status for r in report.results}
    assert statuses["episode-msgpack"] == statuses["episode-json"] == "pass", report.summary()


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
async def test_guess_episodes_through_the_double_bridge_equal_the_direct_ones(dialect):
    # Index 3 is won by bisection; the repeated guess 50 of the second runs into the turn limit.
    with serve([GuessEnv]) as direct_url:
        direct = [await play(direct_url, "guess", "test", 3, Bisect()), await play(direct_url, "guess", "test", 4, lambda _: "Action: 50")]
    with double_bridge(GuessEnv, dialect, "guess") as bridged_url:
        bridged = [await play(bridged_url, "guess", "all", 3, Bisect()), await play(bridged_url, "guess", "all", 4, lambda _: "Action: 50")]
    assert direct[0][-1][:2] == ("metrics", True) and len(direct[0]) > 3
    assert direct[1][-2][3] is True  # truncated at the turn limit
    # Rewards come back in gymwire's unit; a score is AgentGym's (SciWorld: points, 100 per unit).
    scale = DIALECTS[dialect].reward_scale
    assert bridged == [[*episode[:-1], (*episode[-1][:2], episode[-1][2] * scale, episode[-1][3])] for episode in direct]


async def test_solved_textcraft_episode_through_the_double_bridge_equals_the_direct_one():
    book = load_book()
    actions = [f"Thought: next.\nAction: {a}" for a in plan(book, book.splits["test"][37])]
    with serve([TextCraftEnv]) as direct_url:
        direct = await play(direct_url, "textcraft", "test", 37, scripted(actions))
    with double_bridge(TextCraftEnv, "textcraft", "textcraft") as bridged_url:
        bridged = await play(bridged_url, "textcraft", "all", 37, scripted(actions))
    assert direct[-1][:2] == ("metrics", True)
    assert bridged == direct
