"""The episode loop's own decisions (trainers/play.py's EpisodeRecorder) and players that are not
language models: a scripted expert plays through the same loop and writes the same record."""

from __future__ import annotations

import asyncio
import re

import pytest

from gymwire.protocol import EpisodeMetrics, Observation, StepResult
from gymwire.sdk.client import GymClient
from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv
from gymwire.trainers.chat import ChatFormat
from gymwire.trainers.episode import TERMINATED, TOKEN_BUDGET, EnvTask, Episode
from gymwire.trainers.play import KEEP_TAIL, EpisodeRecorder, PlaySettings, ScriptedActor, play_task
from gymwire.trainers.policy import Reply
from gymwire.trainers.models.tiny import build_tokenizer


def bisect(recorder: EpisodeRecorder) -> str:
    """A scripted guess player: the middle of what the hints still allow."""
    low, high = 1, 9
    for turn in recorder.episode.turns:
        number, hint = int(turn.action), re.search(r"Go (higher|lower)", turn.observation)
        if hint and hint.group(1) == "higher":
            low = number + 1
        elif hint:
            high = number - 1
    return str((low + high) // 2)


def test_a_scripted_player_goes_through_the_same_loop_and_record():
    async def play() -> Episode:
        async with GymServer([GuessEnv], port=0) as server, GymClient(server.url) as client:
            info = await client.describe("guess")
            settings = PlaySettings(options={"low": 1, "high": 9}, max_turns=5)
            return await play_task(client, EnvTask("guess", "test", 3), ScriptedActor(bisect), settings, info.instructions)

    episode = asyncio.run(play())
    assert episode.finish == TERMINATED and episode.success and episode.reward == 1.0
    # Not a model: no tokens, no sampling, no token budgets, no usage.
    assert (episode.tokens, episode.sampling, episode.turn_tokens, episode.episode_tokens, episode.usage) == ([], None, None, None, None)
    assert all(turn.start is None and turn.stopped is None for turn in episode.turns)
    # The conversation: the prompt, then each reply and the environment's answer but the last.
    conversation = episode.conversation()
    assert episode.prompt_messages == 1 and conversation[0]["role"] == "user" and not conversation[0]["loss"]
    assert [m["content"] for m in conversation if m["loss"]] == [turn.action for turn in episode.turns]
    assert [m["content"] for m in conversation[2::2]] == [turn.observation for turn in episode.turns[:-1]]
    assert episode.text.startswith("[user]\n" + GuessEnv.instructions)
    assert Episode.from_json(episode.to_json()) == episode


@pytest.fixture(scope="module")
def chat():
    return ChatFormat(build_tokenizer(["a long first observation " * 5, "go on"], numbers=10))


def result(text: str, reward: float = 0.0, terminated: bool = False, metrics: EpisodeMetrics | None = None) -> StepResult:
    return StepResult(id=1, session="s", seq=1, observation=Observation(text=text), reward=reward, terminated=terminated,
                      metrics=metrics)


@pytest.mark.parametrize("policy", ["finish", KEEP_TAIL])
def test_a_first_prompt_over_the_budget_ends_the_episode_or_keeps_its_end(chat, policy):
    prompt = chat.prompt("a long first observation " * 5)
    recorder = EpisodeRecorder(EnvTask("guess"), PlaySettings(episode_tokens=len(prompt) - 3, long_first_prompt=policy), chat, 5)
    recorder.begin("a long first observation " * 5)
    if policy == "finish":
        assert recorder.finished and recorder.episode.finish == TOKEN_BUDGET and recorder.episode.tokens == prompt
    else:
        assert not recorder.finished and recorder.episode.tokens == prompt[-(len(prompt) - 4):] and recorder.budget() == 1


def test_a_chat_endpoint_episode_ends_when_the_next_reply_would_not_fit_and_scores_its_reward():
    settings = PlaySettings(turn_tokens=10, episode_tokens=100)
    recorder = EpisodeRecorder(EnvTask("guess"), settings, None, 5)
    recorder.begin("first")
    recorder.add_reply(Reply("one", stopped=True, prompt_tokens=40, completion_tokens=5))
    recorder.add_result("one", result("close", reward=0.5))
    assert not recorder.finished and recorder.episode.messages[-1] == {"role": "user", "content": "close"}
    recorder.add_reply(Reply("two", stopped=False, prompt_tokens=80, completion_tokens=11))  # 80 + 11 + 10 > 100
    recorder.add_result("two", result("closer", reward=0.25))
    episode = recorder.close()
    assert episode.finish == TOKEN_BUDGET and episode.score == 0.75 and not episode.success
    assert episode.messages[-1] == {"role": "assistant", "content": "two"}  # the answer no reply follows is the turn's
    assert episode.usage == {"prompt_tokens": 120, "completion_tokens": 16, "requests": 2}
    assert [turn.stopped for turn in episode.turns] == [True, False]


def test_the_environment_ending_an_episode_gives_the_servers_success_and_score(chat):
    recorder = EpisodeRecorder(EnvTask("guess"), PlaySettings(), None, 5)
    recorder.begin("first")
    recorder.add_reply("x")
    recorder.add_result("x", result("done", reward=1.0, terminated=True,
                                    metrics=EpisodeMetrics(success=True, score=0.9, turns=1, total_reward=1.0)))
    assert recorder.finished and (recorder.episode.success, recorder.episode.score) == (True, 0.9)
