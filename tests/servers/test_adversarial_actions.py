"""Every action string is an observation, for every built-in environment, through a real server.

A few hundred seeded hostile actions each (adversarial_actions.py: very long, huge numbers,
control characters, NUL, unicode, RTL, grammar look-alikes, ids out of range, nested brackets;
fewer for Chromium and the JVM, but the long and huge ones always), plus actions of 3.5 MB with
the server's action limit raised near its frame limit. After each: an observation came back (no
ENV_CRASHED, no other error), within a bound far below a step time limit, and now and then an
ordinary action still works.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from adversarial_actions import generated
from gymwire.protocol import Limits, ProtocolError
from gymwire.sdk.client import GymClient
from gymwire.sdk.env_spec import EnvSpec
from gymwire.sdk.server import GymServer
from gymwire.servers.web.solvers import parse_tree

FRAME_BYTES = 4 * 1024 * 1024
NEAR_FRAME = 3_500_000  # characters: an action near the frame limit, with the request around it
STEP_BOUND_S = 20.0  # far below the 30 s a stalled step used to take, generous for a loaded machine


@dataclass
class Case:
    env: Callable[[], Any]  # the environment class or spec (built lazily: some need their extra)
    verbs: list[str]
    ordinary: str  # an action that must keep working
    count: int
    task: dict[str, Any] = field(default_factory=lambda: {"split": "test", "index": 0})
    check_every: int = 5
    between: str | None = None  # an action sent before every `check_every`-th hostile one (a state to attack)
    extra: Callable[[str], list[str]] | None = None  # hostile actions made from the first observation


def _guess():
    from gymwire.servers.guess import GuessEnv

    return GuessEnv


def _babyai():
    from gymwire.servers.babyai import BabyAIEnv

    return BabyAIEnv


def _textcraft():
    from gymwire.servers.textcraft import TextCraftEnv

    return TextCraftEnv


def _deepsearch():
    from gymwire.servers.deepsearch import DeepSearchEnv

    return DeepSearchEnv


def _sciworld():
    from gymwire.servers.sciworld import SciWorldEnv

    return EnvSpec.of(SciWorldEnv, jvms=1)


def _miniwob():
    from gymwire.servers.web import MiniWoBEnv

    return MiniWoBEnv


def _miniwob_typing(observation: str) -> list[str]:
    """Hostile input into the page's own text box (an id that exists, unlike generated ones)."""
    box = next(n.id for n in parse_tree(observation) if n.role == "textbox")
    return [
        f"type [{box}] [{'x' * 10_000}]",
        f"type [{box}] [{'y' * 60_000}]",
        f"type [{box}] [\x00\x01\x1b[2J\u202e\ufeff🧪\r\n\t] [0]",
        f"type [{box}] [{'e' + chr(0x301) * 300}] [1]",
        f"click [{box}]",
        f"hover [{box}]",
        "press [" + "+".join(["Control"] * 4 + ["a"]) + "]",
        "press [" + "a+" * 3000 + "]",
        "press [\x00]",
        "press [F13+Unidentified]",
        *(f"press [{keys}]" for keys in ("Control+n", "Control+t", "Control+w", "Control+Shift+n", "Control+p", "Control+s", "Control+o", "F12", "Alt+F4", "Control+Shift+i", "Meta+q")),
        f"goto [{'http://127.0.0.1:1/' + 'p' * 9000}]",
        "stop [" + "9" * 5000 + "]",
    ]


def _miniwob_task() -> dict[str, Any]:
    from gymwire.servers.web.miniwob import index_of

    return {"split": "test", "index": index_of("enter-text", 0)}


CASES = {
    "guess": Case(_guess, ["guess", "Action:"], "Action: 50", 300),
    "babyai": Case(_babyai, ["go to", "pick up", "toggle", "turn left", "drop", "check available actions"], "turn left", 300),
    "textcraft": Case(_textcraft, ["get", "craft", "inventory"], "inventory", 300),
    # AgentGym's rules (their own grammar and counts) face the same input.
    "textcraft-agentgym": Case(_textcraft, ["get", "craft", "inventory"], "Action: inventory", 200,
                               {"split": "train", "index": 0, "options": {"profile": "agentgym"}}),
    "babyai-agentgym": Case(_babyai, ["go to", "pickup", "toggle", "turn left", "check available actions"], "Action: turn left", 200,
                            {"split": "train", "index": 0, "options": {"profile": "agentgym"}}),
    "deepsearch": Case(_deepsearch, ["search", "answer", "python"], "<search>capital of France</search>", 200),
    # train 0: a hallway with several doors, so `open door` leaves ScienceWorld waiting for a number.
    "sciworld": Case(_sciworld, ["look at", "open", "go to", "pick up", "focus on", "connect", "wait", "reset task"],
                     "look around", 100, {"split": "train", "index": 0}, between="open door"),
    "miniwob": Case(_miniwob, ["click", "type", "hover", "press", "scroll", "goto", "go_back", "go_forward", "new_tab",
                               "tab_focus", "close_tab", "stop"], "scroll [down]", 0, check_every=8, extra=_miniwob_typing),
}


async def _step(session, action: str) -> Any:
    started = time.monotonic()
    try:
        result = await session.step(action)
    except ProtocolError as exc:
        pytest.fail(f"{action[:120]!r} ({len(action):,} characters) got {exc.code.name}: {exc.message[:300]}")
    elapsed = time.monotonic() - started
    assert elapsed < STEP_BOUND_S, f"{action[:120]!r} took {elapsed:.1f} s"
    text = result.observation.text
    assert isinstance(text, str) and text.strip(), action[:120]
    assert len(text) <= 200_000, f"{action[:120]!r} gave an observation of {len(text):,} characters"
    return result


@pytest.mark.parametrize("name", list(CASES))
async def test_every_action_is_an_observation(name):
    case = CASES[name]
    env = case.env()
    task = _miniwob_task() if name == "miniwob" else case.task
    limits = Limits(max_frame_bytes=FRAME_BYTES, max_action_bytes=FRAME_BYTES - 64 * 1024)
    try:
        async with GymServer({name: env}, port=0, limits=limits) as server, GymClient(server.url) as client:
            async with client.session(name, max_turns=100_000, **task) as session:
                actions = generated(case.verbs, case.count, seed=25)
                if case.extra is not None:
                    actions = case.extra(session.observation.text) + actions
                rng = random.Random(25)
                actions += ["a" * NEAR_FRAME, f"{case.verbs[0]} [{'9' * NEAR_FRAME}]", rng.choice(case.verbs) + " x" * (NEAR_FRAME // 2)]
                for i, action in enumerate(actions):
                    if case.between is not None and i % case.check_every == 0:
                        await _step(session, case.between)
                    result = await _step(session, action)
                    if session.done:
                        await session.reset(**task)
                    if i % case.check_every == case.check_every - 1:
                        ordinary = await _step(session, case.ordinary)
                        assert ordinary.info.get("valid", True) is not False, (name, action[:120], ordinary.observation.text[:300])
                        if session.done:
                            await session.reset(**task)
                assert result is not None
    finally:
        if name == "sciworld":
            env.make().pool.shutdown()


def test_deepsearch_tags_are_found_as_the_regex_finds_them():
    """`first_action` (linear) agrees with the regex it replaced (quadratic on unclosed tags)."""
    import re

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from gymwire.servers.deepsearch.env import first_action

    regex = re.compile(r"<(search|answer|python)>(.*?)</\1>", re.DOTALL)
    pieces = st.sampled_from(["<search>", "</search>", "<answer>", "</answer>", "<python>", "</python>", "x", " ", "<sea", "rch>", "\n", "</"])

    @settings(max_examples=500, deadline=None)
    @given(st.lists(pieces, max_size=14).map("".join))
    def agrees(text: str) -> None:
        match = regex.search(text)
        assert first_action(text) == (None if match is None else (match.group(1), match.group(2)))

    agrees()


def test_webarena_scores_any_answer():
    """WebArena's `stop [answer]` shares the browser code above (miniwob); its matchers get the
    hostile answers here (a reply's answer is at most 10,000 characters, actions.py)."""
    from gymwire.servers.web.actions import ActionError, parse_action
    from gymwire.servers.web.webarena import contents_score, string_score, url_score

    for reply in generated(["stop"], 300, seed=25):
        try:
            answer = parse_action(reply).text
        except ActionError:
            continue
        for references in ({"exact_match": "$3"}, {"must_include": ["Monday", "Friday"]}, {"must_include": ["lamp"]}, {"fuzzy_match": "N/A"}):
            assert 0.0 <= string_score(references, answer) <= 1.0
        assert url_score("http://shop/item?sku=1 |OR| http://shop/x", answer) in (0.0, 1.0)
        assert 0.0 <= contents_score({"must_include": ["a |OR| b"]}, answer) <= 1.0


def test_a_text_action_past_the_cap_is_refused_with_a_readable_note():
    from gymwire.sdk.actions import MAX_ACTION_CHARS, ActionParseError, action_line

    assert action_line("Thought: hm\nAction: " + "x" * MAX_ACTION_CHARS, "Usage.") == "x" * MAX_ACTION_CHARS
    with pytest.raises(ActionParseError) as info:
        action_line("Action: " + "x" * 60_000, "Usage.")
    assert str(info.value) == f"Your action is 60,000 characters long; an action is at most {MAX_ACTION_CHARS:,}. Usage."
