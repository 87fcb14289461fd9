"""Every environment's instructions against its own parser: a reply written the way the instructions
show it is read as the action it names (a model that copies the example must not be told
"invalid action"), and, for BabyAI, a real session accepts it."""

from __future__ import annotations

import asyncio
import re

import pytest

from gymwire.sdk.server import GymServer
from gymwire.servers.babyai import BabyAIEnv
from gymwire.servers.babyai.env import extract_action
from gymwire.servers.deepsearch.env import DeepSearchEnv
from gymwire.servers.sciworld.actions import parse_action as sciworld_action
from gymwire.servers.sciworld.env import SciWorldEnv
from gymwire.servers.textcraft.actions import Get, parse_action as textcraft_action
from gymwire.servers.textcraft.env import TextCraftEnv
from gymwire.servers.web.actions import Action, parse_action as web_action
from gymwire.servers.web.miniwob import MiniWoBEnv
from gymwire.servers.web.webarena import WebArenaEnv


def examples(instructions: str) -> list[str]:
    """The example replies an instruction text shows in backticks that carry an `Action:` label."""
    return [quoted for quoted in re.findall(r"`([^`]+)`", instructions) if "action:" in quoted.lower()]


def react(instructions: str, action: str) -> list[str]:
    """Replies in the form the instructions ask for, with `action` filled in: each shown example
    with its action replaced, on one line as shown and on two lines."""
    shown = examples(instructions)
    assert shown, "the instructions show no `Action:` example"
    replies = []
    for example in shown:
        thought, _, _ = example.partition("Action:")
        thought = thought.strip() if thought.strip() != "Thought: ..." else "Thought: I know what to do."
        replies += [f"{thought} Action: {action}", f"{thought}\nAction: {action}"]
    return replies


def test_babyais_one_line_example_is_read_as_its_action():
    assert examples(BabyAIEnv.instructions) == ["Thought: the ball is to my left. Action: go to red ball 1"]
    for reply in [*examples(BabyAIEnv.instructions), *react(BabyAIEnv.instructions, "go to red ball 1")]:
        assert extract_action(reply) == "go to red ball 1"


def test_web_examples_are_read_as_their_action():
    for env in (MiniWoBEnv, WebArenaEnv):
        assert examples(env.instructions), env.name
        for reply in examples(env.instructions):
            assert web_action(reply) == Action("click", element=12)
        for reply in react(env.instructions, "type [7] [hello] [0]"):
            assert web_action(reply) == Action("type", element=7, text="hello", press_enter=False)


@pytest.mark.parametrize("env, parse, action, expected", [
    (TextCraftEnv, textcraft_action, "get 2 oak log", Get("oak log", 2)),
    (SciWorldEnv, sciworld_action, "open door to kitchen", "open door to kitchen"),
])
def test_react_replies_as_instructed_are_read(env, parse, action, expected):
    for reply in react(env.instructions, action):
        assert parse(reply) == expected, reply


def test_deep_search_replies_as_instructed_are_read():
    from gymwire.servers.deepsearch.env import first_action

    assert "<think>" in DeepSearchEnv.instructions and "<search>query</search>" in DeepSearchEnv.instructions
    for reply in ("<think>I need the capital.</think>\n<search>capital of France</search>", "<search>capital of France</search>"):
        assert first_action(reply) == ("search", "capital of France")


def test_a_babyai_session_accepts_the_instructions_example():
    async def play() -> tuple[str, str]:
        async with GymServer([BabyAIEnv], port=0) as server:
            from gymwire.sdk.client import GymClient

            async with GymClient(server.url) as client:
                # Train task 1 is BabyAI-GoToRedBall: a red ball is in view at the start.
                async with client.session("babyai", split="train", index=1) as session:
                    first = session.observation.text
                    result = await session.step(examples(BabyAIEnv.instructions)[0])
                    return first, result.observation.text

    first, answer = asyncio.run(play())
    assert '"go to red ball 1"' in first
    assert not answer.startswith("Invalid action") and answer.startswith("You did: go to red ball 1.")
