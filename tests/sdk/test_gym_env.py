"""GymnasiumEnv is a real gymnasium.Env: text spaces, wrappers, registration, and seeds that pick
tasks of the split it was asked for."""

from __future__ import annotations

import random
import subprocess
import sys

import gymnasium
import pytest
from gymnasium.wrappers import RecordEpisodeStatistics

from gymwire.sdk.gym_env import GymnasiumEnv, register_env
from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv


def _secret(split: str, index: int) -> int:
    return random.Random(f"guess:{split}:{index}").randint(1, 100)  # how GuessEnv picks a task's number


@pytest.fixture(scope="module")
def url():
    with GymServer([GuessEnv], port=0).run_in_thread() as url:
        yield url


def test_a_seed_plays_that_task_of_the_split(url):
    assert _secret("test", 5) != _secret("train", 5)
    env = GymnasiumEnv(url, "guess", split="test")
    try:
        obs, info = env.reset(seed=5)
        assert info["task"] == {"split": "test", "index": 5}
        _, reward, terminated, _, _ = env.step(str(_secret("test", 5)))
        assert (reward, terminated) == (1.0, True)
        _, info = env.reset()  # unseeded: the split's next task
        assert info["task"] == {"split": "test", "index": 6}
        _, info = env.reset(seed=105)  # seeds wrap around the split's size
        assert info["task"] == {"split": "test", "index": 5}
        _, info = env.reset(options={"index": 3})
        assert info["task"] == {"split": "test", "index": 3}
        _, reward, terminated, _, info = env.step(f"Action: {_secret('test', 3)}")
        assert terminated and info["metrics"]["success"] is True
        obs, info = env.reset(seed=7, options={"split": None, "low": 1, "high": 4})
        assert info["task"] == {"seed": 7} and "from 1 to 4" in obs
    finally:
        env.close()


def test_it_is_a_gymnasium_env_with_text_spaces(url):
    env = GymnasiumEnv(url, "guess", split="test")
    try:
        assert isinstance(env, gymnasium.Env)
        assert isinstance(env.observation_space, gymnasium.spaces.Text)
        obs, _ = env.reset(seed=1)
        assert env.observation_space.contains(obs) and env.action_space.contains("Thought: halve. Action: 50!")
        assert env.action_space.contains(env.action_space.sample())
    finally:
        env.close()


def test_record_episode_statistics_wraps_it(url):
    env = RecordEpisodeStatistics(GymnasiumEnv(url, "guess", split="test"))
    try:
        env.reset(seed=2)
        env.step("50")
        _, _, terminated, _, info = env.step(str(_secret("test", 2)))
        assert terminated and info["episode"]["l"] == 2 and info["episode"]["r"] == 1.0
    finally:
        env.close()


def test_gymnasium_make_builds_registered_gymwire_envs(url):
    assert "gymwire/guess" in gymnasium.registry  # every installed environment, on import
    env = gymnasium.make("gymwire/guess", url=url, split="test")  # with gymnasium's env checker
    try:
        obs, info = env.reset(seed=4)
        assert obs.startswith("I am thinking") and info["task"]["index"] == 4
        assert env.step(str(_secret("test", 4)))[2] is True
    finally:
        env.close()
    assert register_env("my-own") == "gymwire/my-own" and gymnasium.spec("gymwire/my-own").kwargs == {"env": "my-own"}


def test_an_unknown_split_is_refused_up_front(url):
    with pytest.raises(ValueError, match="no split 'dev'"):
        GymnasiumEnv(url, "guess", split="dev")


def test_without_gymnasium_the_import_names_the_extra():
    hide = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'gymnasium':\n"
        "            raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "try:\n"
        "    import gymwire.sdk.gym_env\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, check=True).stdout
    assert "pip install 'gymwire[gymnasium]'" in out
