"""SciWorld's `profile: agentgym`: a simulator of the session's own, played as AgentGym's server plays it
(read from WooooDyy/AgentGym agentenv-sciworld/agentenv_sciworld/environment.py and the client
agentenv/agentenv/envs/sciworld.py). Equality with AgentGym's own server is test_agentgym_fidelity.py's."""

from __future__ import annotations

import pytest

from gymwire.sdk.environment import Task, TaskError
from gymwire.servers.sciworld import SciWorldEnv

AGENTGYM = {"profile": "agentgym"}


async def test_agentgyms_first_observation_raw_actions_and_rewards_in_points():
    env = SciWorldEnv()
    try:
        first = await env.reset(Task(split="agentgym", index=21, options=AGENTGYM))  # boil, variation 21
        answer = first.data["agentgym"]
        assert first.text == f"{answer['task_description']}\n{answer['observation']}"  # one newline, as AgentGym's client
        assert answer["observation"].startswith("This room is called") and (answer["reward"], answer["done"]) == (0, False)
        # The reply is read as AgentGym's client reads it: after the last `Action:`, a trailing </s> cut (with one more character).
        looked = await env.step("Thought: where am I?\nAction: look around </s>")
        assert looked.observation == answer["observation"] and looked.reward == 0.0 and not looked.terminated
        # No `Action:`: the client sends an empty action, and the simulator answers it as it is (no gymwire help).
        empty = await env.step("go to kitchen")
        assert "No known action matches that input." in empty.observation and "Valid actions" not in empty.observation
        moved = await env.step("Action: open door to kitchen")
        assert moved.observation == "The door is now open."
        # Reward is the change in score over 100 (AgentGym says points; agentgym-serve answers in points).
        went = await env.step("Action: go to kitchen")
        assert went.info["points"] == round(went.reward * 100) and went.score == went.info["score"]
    finally:
        await env.close()
    assert env._agentgym is None


async def test_unknown_profile_and_input_are_task_errors():
    env = SciWorldEnv()
    with pytest.raises(TaskError, match="unknown profile"):
        await env.reset(Task(split="agentgym", index=0, options={"profile": "other"}))
    with pytest.raises(TaskError, match="option input"):
        await env.reset(Task(split="agentgym", index=0, options={**AGENTGYM, "input": "text"}))
    await env.close()
