"""BabyAI's `profile: agentgym`: AgentGym's observation text, action names, messages, rewards and
episode ends (read from WooooDyy/AgentGym agentenv-babyai/agentenv_babyai/environment.py and
server.py, and the client agentenv/agentenv/envs/babyai.py as of September 2025), its quirks kept.
Equality with AgentGym's own server, episode by episode, is test_agentgym_fidelity.py's."""

from __future__ import annotations

import json
import re

import pytest

from gymwire.sdk.environment import Task, TaskError
from gymwire.servers.babyai import BabyAIEnv
from gymwire.servers.babyai.levels import LEVELS

AGENTGYM = {"profile": "agentgym"}


def available(text: str) -> list[str]:
    head, _, listed = text.rpartition("\nAvailable actions: ")
    assert head, text
    return json.loads(listed)


def reset(index: int, split: str = "train") -> tuple[BabyAIEnv, str]:
    env = BabyAIEnv()
    return env, env.reset(Task(split=split, index=index, options=AGENTGYM)).text


def test_first_observation_is_agentgyms_text():
    # Index i is AgentGym's data_idx i (level i mod 40, seed i div 40); this one is quoted in
    # agentgym-facts.md ("There is a grey key 1 1 steps in front of you and 1 steps to your left").
    env, text = reset(0)
    assert text.startswith(
        "Your goal: go to the red ball\nIn front of you in this room, you can see several objects: "
        "There is a grey key 1 1 steps in front of you and 1 steps to your left.  "
    )
    assert "The room has walls around you. You are facing a wall 6 steps away. You are not carrying anything." in text
    actions = available(text)
    assert actions[:3] == ["turn left", "turn right", "move forward"] and actions[-1] == "check available actions"
    assert "pickup red ball 1" in actions and "go to red ball 1" in actions
    with pytest.raises(TaskError, match="unknown profile"):
        env.reset(Task(split="train", index=0, options={"profile": "other"}))


def test_go_to_succeeds_with_agentgyms_suffix_and_reward():
    env, text = reset(1)
    result = env.step("Thought: the red ball is ahead to the right.\n\nAction: go to red ball 1")
    assert result.terminated and result.reward > 0.5
    assert " The task is completed.\nAvailable actions: [" in result.observation.text


@pytest.mark.parametrize(
    "reply, message",
    [
        ("Action: pickup red ball 9", "The action is not recognized. Please check valid actions."),
        ("Action: ", "No change in state."),
        ("Thought: no action line", "No change in state."),  # the client sends an empty action
        ("Action: go to red ball 1\nAction: turn left", "Error: Only one 'Action' is allowed per response."),
        ("Action: go to the red ball!", "The action is not recognized. Please check valid actions."),
        ("Action: drop", "You cannot drop the object, as you are not carrying anything."),
        ("Action: check available actions", "You can take the following actions: turn left, turn right, move forward, "),
    ],
)
def test_messages(reply, message):
    env, text = reset(0)
    result = env.step(reply)
    assert result.observation.text.startswith(message)
    if "Only one" not in message:  # that one the client answers itself, with no action list
        assert available(result.observation.text) == available(text)  # nothing changed
    assert (result.reward, result.terminated) == (0.0, False)


def test_the_mission_says_and_for_then_and_after_you_as_agentgym():
    missions = []
    for index in range(LEVELS.index("BabyAI-GoToSeqS5R2-v0"), 40 * 20, 40):
        env, text = reset(index)
        missions.append((text.splitlines()[0], env._env.mission))
    rewritten = [(shown, level) for shown, level in missions if " then " in level or "after you" in level]
    assert rewritten and all(" then " not in shown and "after you" not in shown for shown, _ in rewritten)


def test_a_late_success_plays_on_and_the_step_limit_ends_nothing():
    env, text = reset(1)
    limit = env._env.max_steps
    while env._env.step_count < 0.6 * limit or env._env.step_count % 4:  # full turns: the ball is ahead again
        result = env.step("Action: turn left")
        assert not result.terminated and not result.truncated
    result = env.step("Action: go to red ball 1")
    # AgentGym: "completed" is said, but done stays false when the reward is <= 0.5; the reward is kept
    assert not result.terminated and 0 < result.reward <= 0.5 and "The task is completed." in result.observation.text
    kept = env.step("Action: fly")
    assert kept.reward == result.reward and not kept.terminated
    env, _ = reset(1)
    for _ in range(limit + 5):
        result = env.step("Action: turn left")
        assert not result.truncated and not result.terminated


def test_gotoobjs6_is_minigrid_2_3_1s_v0_a_room_of_size_4():
    env, _ = reset(LEVELS.index("BabyAI-GoToObjS6-v1"))
    assert env._env.room_size == 4 and env._data["level"] == "BabyAI-GoToObjS4-v0"
    native = BabyAIEnv()
    native.reset(Task(split="train", index=LEVELS.index("BabyAI-GoToObjS6-v1")))
    assert native._env.room_size == 6


def test_a_level_generator_keeps_its_locked_room_as_minigrid_2_3_1():
    # data_idx 155: SynthLoc, seed 3; AgentGym's server (minigrid 2.3.1) shows this mission.
    _, text = reset(155)
    assert text.startswith("Your goal: go to the red box\n")


def test_every_level_plays_without_error():
    for index in range(40):
        env, text = reset(index, "test" if index < 90 else "train")
        for turn in range(12):
            actions = [a for a in available(text) if a != "check available actions"]
            # Prefer actions that move objects and doors, so pickups, drops and toggles are played too.
            preferred = [a for a in actions if re.match(r"(pickup|toggle|drop|go through)", a)] or actions
            result = env.step(f"Action: {preferred[turn % len(preferred)]}")
            text = result.observation.text
            assert text.endswith("]") and "Available actions" in text
            if result.terminated:
                break


def test_agentgyms_babyai_client_protocol_gets_agentgyms_text_through_the_facade():
    # The requests AgentGym's BabyAI client sends (agentenv/agentenv/envs/babyai.py): /create without
    # a body, /reset with data_idx, /step with the text after `Action:`; it reads observation,
    # reward, score and done.
    import urllib.request

    from gymwire.servers.agentgym.serve import AgentGymFacade

    def post(url, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    with AgentGymFacade([(BabyAIEnv, None)], options=AGENTGYM).run_in_thread() as url:
        session = post(url + "/create")["id"]
        first = post(url + "/reset", {"id": session, "data_idx": 1})
        _, direct = reset(1)
        assert first["observation"] == direct and first["done"] is False
        step = post(url + "/step", {"id": session, "action": "go to red ball 1"})
        assert step["done"] is True and step["reward"] == step["score"] > 0.5
        assert " The task is completed." in step["observation"]
