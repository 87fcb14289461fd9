"""Training rollouts, `gymwire eval` and the OpenRLHF agent play through one loop: for the same
policy, sampling and tasks they write the same episode records, field for field (times aside)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from openrlhf_fakes import GUESS_CORPUS, BisectionPolicy, FakeSamplingParams, PolicyEngine

from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv
from gymwire.trainers.chat import ChatFormat
from gymwire.trainers.episode import TERMINATED, TOKEN_BUDGET, TRUNCATED, EnvTask, Episode, read_jsonl
from gymwire.trainers.eval.evaluate import EnvTarget, EvalSettings, evaluate
from gymwire.trainers.models.hf_policy import TransformersPolicy
from gymwire.trainers.train.horizon import horizon_from_config
from gymwire.trainers.openrlhf.agent import AgentSettings, GymwireAgentExecutor
from gymwire.trainers.openrlhf.pool import close_pools
from gymwire.trainers.openrlhf.steps import MemoryStepBoard
from gymwire.trainers.play import PlaySettings, RolloutClient
from gymwire.trainers.policy import Sampling
from gymwire.trainers.models.tiny import TinyModelSpec, build_tiny_model

MAX_TURNS, TURN_TOKENS, STEP_TIMEOUT = 5, 6, 60.0


def by_eval(url: str, policy, tokenizer, tasks: int, episode_tokens: int, output) -> list[Episode]:
    settings = EvalSettings(
        model="m", output=output, tasks=tasks, concurrency=4, sampling=Sampling(0.0), turn_tokens=TURN_TOKENS,
        episode_tokens=episode_tokens, progress=False, step_timeout=STEP_TIMEOUT,
    )
    asyncio.run(evaluate(policy, [EnvTarget("guess", url, max_turns=MAX_TURNS)], settings, tokenizer))
    return sorted(read_jsonl(output / "episodes" / "guess.jsonl"), key=lambda e: e.task.index)


def by_training(url: str, policy, tokenizer, tasks: list[EnvTask], episode_tokens: int) -> list[Episode]:
    settings = PlaySettings(
        max_turns=MAX_TURNS, turn_tokens=TURN_TOKENS, episode_tokens=episode_tokens, sampling=Sampling(0.0),
        step_timeout=STEP_TIMEOUT,
    )
    with RolloutClient(url) as client:
        return client.collect(policy, ChatFormat(tokenizer), tasks, settings)


def by_agent(url: str, policy, tokenizer, tasks: list[EnvTask], episode_tokens: int) -> list[Episode]:
    executor = GymwireAgentExecutor(AgentSettings(
        urls=(url,), horizon=horizon_from_config(MAX_TURNS), step_board=MemoryStepBoard(1), step_timeout=STEP_TIMEOUT,
    ))
    engine = PolicyEngine(policy, tokenizer, ChatFormat(tokenizer).stop_ids)
    params = FakeSamplingParams(max_tokens=TURN_TOKENS, logprobs=1, temperature=0.0)

    async def play_all() -> list[Episode]:
        try:
            played = await asyncio.gather(*(
                executor.play(task.to_json(), params, episode_tokens, tokenizer, engine) for task in tasks
            ))
        finally:
            await close_pools()
        return [episode for episode, _, _ in played]

    return asyncio.run(play_all())


def assert_same_episodes(played: list[Episode], expected: list[Episode]) -> None:
    """Equal field for field; log-probs to float32 rounding (a CPU's thread count changes the last bits)."""
    for a, b in zip(played, expected, strict=True):
        assert dataclasses.replace(a, logprobs=[]) == dataclasses.replace(b, logprobs=[])
        assert a.logprobs == pytest.approx(b.logprobs, rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), GUESS_CORPUS, TinyModelSpec(numbers=101, seed=3))
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("player", ["bisection", "tiny-model"])
def test_training_eval_and_the_openrlhf_agent_record_the_same_episodes(player, tokenizer, tiny_model, tmp_path):
    if player == "bisection":
        policy, episode_tokens = BisectionPolicy(tokenizer), 150
    else:
        model, tokenizer = tiny_model
        # One prompt per forward pass, no kept cache: the same numbers however the loop batches.
        policy, episode_tokens = TransformersPolicy(model, tokenizer.pad_token_id, max_batch=1, reuse_cache=False), 120
    with GymServer([GuessEnv], port=0).run_in_thread() as url:
        evaluated = by_eval(url, policy, tokenizer, 8, episode_tokens, tmp_path / "eval")
        tasks = [e.task for e in evaluated]
        trained = by_training(url, policy, tokenizer, tasks, episode_tokens)
        agent = by_agent(url, policy, tokenizer, tasks, episode_tokens)
    assert len(evaluated) == 8 and all(e.turns for e in evaluated)
    assert_same_episodes(trained, evaluated)
    assert_same_episodes(agent, evaluated)
    # Between them, the two players end episodes in every way play can end them.
    assert {e.finish for e in evaluated} == ({TERMINATED, TRUNCATED} if player == "bisection" else {TOKEN_BUDGET})
    if player == "bisection":
        # A record is also a training row: its conversation, rendered again, gives its tokens and
        # loss mask (every reply stopped on its own: the layout is exactly the rollout's).
        chat = ChatFormat(tokenizer)
        for episode in evaluated:
            conversation = episode.conversation()
            assert sum(m["loss"] for m in conversation) == len(episode.turns)
            assert chat.render(conversation) == (episode.tokens, episode.loss_mask)
