"""The agents against OpenRLHF 0.11.2's real base classes and loop, a fake vLLM engine and a real
gymwire server on loopback."""

import asyncio
import threading
import importlib.util
from pathlib import Path

import pytest
import torch
from openrlhf.utils.agent import AgentExecutorBase, MultiTurnAgentExecutor
from openrlhf_fakes import GUESS_FIRST_OBSERVATION, LOGPROB, FakeEngine, FakeSamplingParams

import gymwire.trainers.openrlhf as adapter
from gymwire.protocol import Limits
from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv
from gymwire.trainers.chat import ChatFormat
from gymwire.trainers.train.horizon import horizon_from_config
from gymwire.trainers.openrlhf.agent import (
    EXTRA_LOG_KEYS,
    AgentConfigError,
    AgentSettings,
    GymwireAgentExecutor,
    GymwireAgentInstance,
)
from gymwire.trainers.episode import EnvTask, EnvTaskError
from gymwire.trainers.play import first_message
from gymwire.trainers.openrlhf.pool import pool_for_running_loop
from gymwire.trainers.openrlhf.steps import MemoryStepBoard, StepNotPublished

ADAPTER_DIR = Path(adapter.__file__).parent
# The keys of MultiTurnAgentExecutor.execute's result in openrlhf 0.11.2.
RESULT_KEYS = {
    "prompt", "label", "images", "mm_train_inputs", "reward", "scores", "observation_tokens",
    "action_ranges", "rollout_log_probs", "truncated", "extra_logs",
}


def label(index: int, split: str = "test") -> str:
    return EnvTask("guess", split, index).to_json()


def executor_for(server: GymServer, horizon="fixed:7", step: int = 1, **settings) -> GymwireAgentExecutor:
    board = MemoryStepBoard(step)
    return GymwireAgentExecutor(
        AgentSettings(urls=(server.url,), horizon=horizon_from_config(horizon), step_board=board, **settings)
    )


async def run(executor, engine, tokenizer, index=0, max_length=2048, params=None):
    return await executor.execute(
        prompt="(dataset prompt)", label=label(index), sampling_params=params or FakeSamplingParams(),
        max_length=max_length, hf_tokenizer=tokenizer, llm_engine=engine,
    )


def load_agent_file(name: str):
    """What openrlhf's vllm_engine._load_agent_executor does with --train.agent_func_path."""
    spec = importlib.util.spec_from_file_location("agent_module", ADAPTER_DIR / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.AgentExecutor


def test_agent_file_loads_as_openrlhf_loads_it(monkeypatch):
    monkeypatch.setenv("GYMWIRE_URLS", "ws://a:1, ws://b:2")
    monkeypatch.setenv("GYMWIRE_HORIZON", "staged:3,7@2")
    monkeypatch.setenv("GYMWIRE_STEP_SOURCE", "memory")
    cls = load_agent_file("agent_func.py")
    assert issubclass(cls, AgentExecutorBase)
    executor = cls()
    assert executor.settings.urls == ("ws://a:1", "ws://b:2")
    assert executor.settings.horizon.turns_at(3) == 7
    assert issubclass(load_agent_file("agent_func_multiturn.py"), MultiTurnAgentExecutor)


def test_agent_without_server_urls_says_how_to_set_them(monkeypatch):
    monkeypatch.delenv("GYMWIRE_URLS", raising=False)
    with pytest.raises(AgentConfigError, match="GYMWIRE_URLS"):
        load_agent_file("agent_func.py")()


async def test_trajectory_tokens_ranges_logprobs_and_reward(guess_server, tokenizer):
    engine = FakeEngine(tokenizer)
    result = await run(executor_for(guess_server), engine, tokenizer, index=5, params=FakeSamplingParams(logprobs=1))
    assert set(result) == RESULT_KEYS
    tokens, ranges = result["observation_tokens"], result["action_ranges"]
    assert result["reward"] == 1.0 and result["extra_logs"]["success"] == 1.0
    assert set(result["extra_logs"]) == set(EXTRA_LOG_KEYS)
    assert len(ranges) == len(engine.calls) == result["extra_logs"]["turns"] > 1

    chat = ChatFormat(tokenizer)
    info = GuessEnv.info()
    first = first_message(info.instructions, GUESS_FIRST_OBSERVATION)
    assert ranges[0][0] == len(chat.prompt(first))
    for call, (start, end) in zip(engine.calls, ranges):
        assert call.prompt_token_ids == tokens[:start]  # token-in: the engine saw the trajectory as kept
        assert tokens[end - 1] == tokenizer.eos_token_id  # token-out: the stop token stays
    # Everything between actions is the template's rendering of the environment's reply.
    conversation = [{"role": "user", "content": first}]
    for (start, end), (next_start, _) in zip(ranges, ranges[1:] + [(len(tokens), None)]):
        conversation.append({"role": "assistant", "content": tokenizer.decode(tokens[start:end - 1])})
        if next_start < len(tokens):
            reply = tokenizer.decode(tokens[end:next_start])
            conversation.append({"role": "user", "content": reply.split("<user>")[1].split("<eot>")[0]})
    rendered = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert tokenizer.decode(tokens) + "\n" == rendered
    assert end == len(tokens)  # the last reply is not appended: the episode is over

    # The loss mask OpenRLHF builds from the ranges covers exactly the generated tokens.
    mask = torch.zeros(len(tokens), dtype=torch.long)
    for start, end in ranges:
        mask[start:end] = 1
    assert int(mask.sum()) == sum(end - start for start, end in ranges)
    logprobs = torch.tensor(result["rollout_log_probs"])
    assert len(logprobs) == len(tokens)
    assert torch.all(logprobs[mask.bool()] == LOGPROB) and torch.all(logprobs[~mask.bool()] == 0)
    assert not guess_server.sessions  # closed at the end


async def test_turn_limit_is_the_published_steps_stage(guess_server, tokenizer):
    board = MemoryStepBoard()
    executor = GymwireAgentExecutor(
        AgentSettings(urls=(guess_server.url,), horizon=horizon_from_config("staged:3,7@2"), step_board=board)
    )
    with pytest.raises(StepNotPublished, match="gymwire openrlhf launch"):
        await run(executor, FakeEngine(tokenizer), tokenizer)
    by_step = {}
    for step in (1, 2, 3, 9):
        board.publish(step)
        by_step[step] = [await run(executor, FakeEngine(tokenizer), tokenizer, index=i) for i in range(8)]
    for step, results in by_step.items():
        limit = 3 if step <= 2 else 7
        logs = [r["extra_logs"] for r in results]
        assert all(log["turn_limit"] == limit and log["step"] == step for log in logs)
        assert all(log["turns"] <= limit and len(r["action_ranges"]) == log["turns"] for r, log in zip(results, logs))
    # Bisection needs more than 3 guesses for most numbers: the short stage cuts those episodes.
    short = [r["extra_logs"] for r in by_step[1]]
    assert any(log["success"] == 0 and log["turns"] == 3 for log in short)
    assert all(r["extra_logs"]["success"] == 1 for r in by_step[3])


async def test_per_turn_cap_and_trajectory_budget(guess_server, tokenizer):
    engine = FakeEngine(tokenizer, preamble="Let me think step by step about the number")
    executor = executor_for(guess_server)
    chat = ChatFormat(tokenizer)
    budget = len(chat.prompt(first_message(GuessEnv.info().instructions, GUESS_FIRST_OBSERVATION))) + 50
    # --rollout.max_new_tokens is the per-turn cap: 6 tokens cut the preamble mid-way.
    result = await run(executor, engine, tokenizer, params=FakeSamplingParams(max_tokens=6), max_length=budget)
    tokens, ranges = result["observation_tokens"], result["action_ranges"]
    assert len(ranges) >= 2 and all(end - start == 6 for start, end in ranges)
    assert all(call.max_tokens == min(6, budget - len(call.prompt_token_ids)) for call in engine.calls)
    # A turn cut by the cap did not stop on the turn close: the whole close is appended before the reply.
    start_of_reply = ranges[0][1]
    assert tokens[start_of_reply:start_of_reply + len(chat.turn_close_ids)] == chat.turn_close_ids
    assert result["truncated"] is True
    assert result["extra_logs"]["budget_cut"] == 1.0 and len(tokens) <= budget
    assert result["extra_logs"]["success"] == 0.0
    assert not guess_server.sessions


async def test_hundreds_of_concurrent_samples(guess_server, tokenizer):
    executor = executor_for(guess_server)
    engine = FakeEngine(tokenizer)
    results = await asyncio.gather(*(run(executor, engine, tokenizer, index=i % 100) for i in range(300)))
    assert all(r["reward"] == 1.0 and r["extra_logs"]["success"] == 1.0 for r in results)
    assert sum(len(r["action_ranges"]) for r in results) == len(engine.calls)
    # Same task, same trajectory: samples did not leak into each other's sessions.
    assert results[7]["observation_tokens"] == results[107]["observation_tokens"] == results[207]["observation_tokens"]
    assert not guess_server.sessions
    assert len(pool_for_running_loop(AgentSettings(urls=(guess_server.url,))).clients) == 1  # one shared connection


async def test_connection_dropped_mid_episode_completes_via_resume(guess_server, tokenizer):
    executor = executor_for(guess_server)
    pool = pool_for_running_loop(AgentSettings(urls=(guess_server.url,)))
    dropped = []

    def drop_connections():
        client = pool.clients[guess_server.url]
        dropped.append(client.welcome)
        for conn in list(guess_server.connections):
            conn.transport.abort()

    engine = FakeEngine(tokenizer, before_call={2: drop_connections, 4: drop_connections})
    reference = await run(executor_for(guess_server), FakeEngine(tokenizer), tokenizer, index=11)
    result = await run(executor, engine, tokenizer, index=11)
    assert len(dropped) == 2 and pool.clients[guess_server.url].welcome is not dropped[-1]  # it reconnected
    # The same episode as without the drops: every step ran once, the reward counted once.
    assert result["observation_tokens"] == reference["observation_tokens"]
    assert result["reward"] == 1.0 and result["extra_logs"]["turns"] == len(engine.calls)
    assert not guess_server.sessions


async def test_agents_play_on_the_replicas_left_when_one_is_down_full_or_draining(guess_server, tokenizer):
    import socket

    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        down = f"ws://127.0.0.1:{probe.getsockname()[1]}"
    async with GymServer([GuessEnv], port=0, limits=Limits(max_sessions=1)) as full, \
            GymServer([GuessEnv], port=0) as draining:
        await draining.drain(timeout=0)
        urls = (down, draining.url, full.url, guess_server.url)
        executor = GymwireAgentExecutor(
            AgentSettings(urls=urls, horizon=horizon_from_config(7), step_board=MemoryStepBoard(1))
        )
        results = await asyncio.gather(*(run(executor, FakeEngine(tokenizer), tokenizer, index=i) for i in range(20)))
        assert all(r["reward"] == 1.0 for r in results)
        assert not draining.sessions
        await pool_for_running_loop(AgentSettings(urls=tuple(urls))).close()


async def test_openrlhf_multiturn_loop_with_gymwire_instance(guess_server, tokenizer, tmp_path, monkeypatch):
    tokenizer.save_pretrained(tmp_path / "tok")
    settings = AgentSettings(
        urls=(guess_server.url,), horizon=horizon_from_config("staged:3,7@2"), step_board=MemoryStepBoard(3),
        tokenizer_path=str(tmp_path / "tok"),
    )
    monkeypatch.setattr(GymwireAgentInstance, "settings", settings)
    info = GuessEnv.info()
    # As OpenRLHF's dataset renders a `prepare` row with --data.apply_chat_template.
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": first_message(info.instructions, GUESS_FIRST_OBSERVATION)}],
        tokenize=False, add_generation_prompt=True,
    )
    loop_result = await MultiTurnAgentExecutor(GymwireAgentInstance).execute(
        prompt, label(5), FakeSamplingParams(), 2048, tokenizer, FakeEngine(tokenizer)
    )
    ours = await run(executor_for(guess_server, step=3), FakeEngine(tokenizer), tokenizer, index=5)
    assert loop_result["reward"] == 1.0 and loop_result["extra_logs"]["success"] == 1.0
    assert loop_result["extra_logs"]["turn_limit"] == 7
    # Text in, re-tokenized: with a template that round-trips, the same tokens as token-in/token-out.
    assert loop_result["observation_tokens"][: len(ours["observation_tokens"])] == ours["observation_tokens"]
    assert loop_result["action_ranges"] == ours["action_ranges"]
    await asyncio.sleep(0)
    assert not guess_server.sessions


async def test_multiturn_instance_closes_a_session_the_budget_cut(guess_server, tokenizer, tmp_path, monkeypatch):
    import gc

    tokenizer.save_pretrained(tmp_path / "tok")
    settings = AgentSettings(urls=(guess_server.url,), tokenizer_path=str(tmp_path / "tok"))
    monkeypatch.setattr(GymwireAgentInstance, "settings", settings)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Guess it."}], tokenize=False,
                                           add_generation_prompt=True)
    result = await MultiTurnAgentExecutor(GymwireAgentInstance).execute(
        prompt, label(5), FakeSamplingParams(), 30, tokenizer, FakeEngine(tokenizer)
    )
    assert result["extra_logs"]["success"] == 0.0
    gc.collect()
    for _ in range(50):
        if not guess_server.sessions:
            break
        await asyncio.sleep(0.01)
    assert not guess_server.sessions


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('{"env":"guess","split":"test","index":3}', EnvTask("guess", "test", 3)),
        ({"env": "guess", "seed": 9}, EnvTask("guess", seed=9)),
        (EnvTask("x", "train", 0).to_json(), EnvTask("x", "train", 0)),
    ],
)
def test_labels_parse(raw, expected):
    assert EnvTask.parse(raw) == expected


@pytest.mark.parametrize(
    "raw, message",
    [
        ("guess/test/3", "not JSON"),
        ('{"split":"test","index":3}', "env"),
        ('{"env":"guess","split":"test"}', "both"),
        ('{"env":"guess","task":1}', "unknown"),
    ],
)
def test_bad_labels_say_what_a_label_is(raw, message):
    with pytest.raises(EnvTaskError, match=message):
        EnvTask.parse(raw)


async def test_a_new_tokenizer_object_per_prompt_reuses_one_chat_format(guess_server, tokenizer):
    import pickle

    executor = executor_for(guess_server)
    for index in range(3):  # as Ray unpickles the tokenizer anew for each generate_responses call
        copy = pickle.loads(pickle.dumps(tokenizer))
        assert (await run(executor, FakeEngine(copy), copy, index=index))["reward"] == 1.0
    assert len(executor._formats) == 1


async def test_pool_asks_for_an_env_description_once_and_forgets_failures(guess_server):
    from gymwire.protocol import ProtocolError

    pool = pool_for_running_loop(AgentSettings(urls=(guess_server.url,)))
    infos = await asyncio.gather(*(pool.describe("guess") for _ in range(50)))
    assert all(info is infos[0] for info in infos) and infos[0].name == "guess"  # one answer, shared
    for _ in range(2):
        with pytest.raises(ProtocolError):
            await pool.describe("nosuchenv")
    assert "nosuchenv" not in pool._infos


async def test_agent_file_configured_by_environment_plays_at_the_file_boards_step(
    guess_server, tokenizer, tmp_path, monkeypatch
):
    from gymwire.trainers.openrlhf.steps import FileStepBoard

    monkeypatch.setenv("GYMWIRE_URLS", guess_server.url)
    monkeypatch.setenv("GYMWIRE_HORIZON", "staged:3,7@2")
    monkeypatch.setenv("GYMWIRE_STEP_SOURCE", f"file:{tmp_path}/step.json")
    monkeypatch.setenv("GYMWIRE_TURN_TOKENS", "5")
    executor = load_agent_file("agent_func.py")()
    FileStepBoard(tmp_path / "step.json").publish(2)  # the trainer's side
    engine = FakeEngine(tokenizer, fixed_guess=0)
    first = await run(executor, engine, tokenizer, params=FakeSamplingParams(max_tokens=100))
    FileStepBoard(tmp_path / "step.json").publish(3)
    second = await run(executor, engine, tokenizer)
    assert (first["extra_logs"]["turn_limit"], first["extra_logs"]["turns"]) == (3, 3)
    assert (second["extra_logs"]["turn_limit"], second["extra_logs"]["turns"]) == (7, 7)
    assert {call.max_tokens for call in engine.calls} == {5}  # GYMWIRE_TURN_TOKENS wins over max_new_tokens


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_bad_turn_token_cap_is_refused(value, monkeypatch):
    monkeypatch.setenv("GYMWIRE_URLS", "ws://a:1")
    monkeypatch.setenv("GYMWIRE_TURN_TOKENS", value)
    with pytest.raises(AgentConfigError, match="GYMWIRE_TURN_TOKENS"):
        AgentSettings.from_env()


class CrashingGuess(GuessEnv):
    """Guess whose step raises on task 0: an environment bug the server reports as ENV_CRASHED."""

    name = "crashing-guess"

    def reset(self, task):
        self.broken = task.index == 0
        return super().reset(task)

    def step(self, action):
        if self.broken:
            raise RuntimeError("environment bug")
        return super().step(action)


async def test_an_environment_crash_ends_only_its_own_episode(tokenizer):
    async with GymServer([CrashingGuess], port=0) as server:
        executor = executor_for(server)
        results = await asyncio.gather(*(
            executor.execute("p", EnvTask("crashing-guess", "test", i).to_json(), FakeSamplingParams(), 2048,
                             tokenizer, FakeEngine(tokenizer))
            for i in range(3)
        ))
        await pool_for_running_loop(AgentSettings(urls=(server.url,))).close()
    crashed, *fine = results
    assert crashed["extra_logs"]["env_crashed"] == 1.0 and crashed["reward"] == 0.0 and len(crashed["action_ranges"]) == 1
    assert all(r["extra_logs"]["env_crashed"] == 0.0 and r["reward"] == 1.0 for r in fine)


class HangingGuess(GuessEnv):
    """Guess whose step on task 0 blocks until `release` is set: a hung environment."""

    name = "hanging-guess"
    inline = False  # runs in the server's thread pool, so the server itself stays responsive
    release = threading.Event()

    def reset(self, task):
        self.hangs = task.index == 0
        return super().reset(task)

    def step(self, action):
        if self.hangs:
            type(self).release.wait(timeout=60)
        return super().step(action)


async def test_a_hung_environment_step_ends_its_episode_at_the_step_timeout(tokenizer, monkeypatch):
    HangingGuess.release = threading.Event()
    # Without a deadline the hang ends by itself after 30 s, so the test fails rather than hangs.
    asyncio.get_running_loop().call_later(30, HangingGuess.release.set)
    monkeypatch.setenv("GYMWIRE_STEP_TIMEOUT", "0.5")
    try:
        async with GymServer([HangingGuess], port=0) as server:
            monkeypatch.setenv("GYMWIRE_URLS", server.url)
            executor = load_agent_file("agent_func.py")()
            results = await asyncio.gather(*(
                executor.execute("p", EnvTask("hanging-guess", "test", i).to_json(), FakeSamplingParams(), 2048,
                                 tokenizer, FakeEngine(tokenizer))
                for i in range(3)
            ))
            HangingGuess.release.set()
            await pool_for_running_loop(AgentSettings(urls=(server.url,))).close()
    finally:
        HangingGuess.release.set()
    hung, *fine = results
    assert hung["extra_logs"]["env_timeout"] == 1.0 and hung["reward"] == 0.0 and len(hung["action_ranges"]) == 1
    assert all(r["extra_logs"]["env_timeout"] == 0.0 and r["reward"] == 1.0 for r in fine)


@pytest.mark.parametrize("value, seconds", [(None, 60.0), ("2.5", 2.5), ("none", None)])
def test_the_step_timeout_is_on_by_default(value, seconds, monkeypatch):
    monkeypatch.setenv("GYMWIRE_URLS", "ws://a:1")
    if value is not None:
        monkeypatch.setenv("GYMWIRE_STEP_TIMEOUT", value)
    assert AgentSettings.from_env().step_timeout == seconds
    monkeypatch.setenv("GYMWIRE_STEP_TIMEOUT", "0")
    with pytest.raises(AgentConfigError, match="GYMWIRE_STEP_TIMEOUT"):
        AgentSettings.from_env()


async def test_a_replica_lost_mid_episode_ends_only_its_own_episodes(tokenizer):
    from server_process import server_processes

    with server_processes(2, ("guess",)) as (victim, survivor):
        settings = AgentSettings(urls=(victim.url, survivor.url), horizon=horizon_from_config("fixed:7"), step_board=MemoryStepBoard(1))
        executor = GymwireAgentExecutor(settings)

        on_victim = []

        async def kill_once_all_are_open():
            # Every generation waits until all 8 sessions are open (no episode can end first).
            pool = pool_for_running_loop(settings)
            for _ in range(3000):
                if sum(len(client.sessions) for client in pool.clients.values()) == 8:
                    break
                await asyncio.sleep(0.01)
            if not on_victim:
                on_victim.append(len(pool.clients[victim.url].sessions))
                victim.kill()

        # A policy that never wins: every episode runs to the turn limit unless its replica is lost.
        engine = FakeEngine(tokenizer, before_call=dict.fromkeys(range(1, 9), kill_once_all_are_open), fixed_guess=0)
        try:
            results = await asyncio.gather(*(run(executor, engine, tokenizer, index=i) for i in range(8)))
        finally:
            await pool_for_running_loop(settings).close()
    lost = [r for r in results if r["extra_logs"]["env_lost"] == 1.0]
    played = [r for r in results if r["extra_logs"]["env_lost"] == 0.0]
    assert 0 < on_victim[0] < 8  # spread over both replicas
    assert len(lost) == on_victim[0] and all(r["extra_logs"]["turns"] < 7 for r in lost)
    assert len(played) == 8 - on_victim[0] and all(r["extra_logs"]["turns"] == 7 for r in played)
