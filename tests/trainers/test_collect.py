"""gymwire collect against real servers: experts' trajectories, filters, resuming, DAgger labels
from an expert following another policy's states, a model, all through the one episode loop
(trainers/play.py), and the command's one-line errors."""

from __future__ import annotations

import asyncio
import json

import pytest

from gymwire.sdk.cli import main
from gymwire.sdk.server import GymServer
from gymwire.servers.babyai import BabyAIEnv
from gymwire.servers.babyai.expert import BabyAIExpert
from gymwire.servers.guess.env import GuessEnv
from gymwire.servers.textcraft import TextCraftEnv
from gymwire.trainers.learn.collect import CollectSettings, ExpertPlayer, ModelPlayer, collect
from gymwire.trainers.learn.trajectories import read_trajectories
from gymwire.trainers.play import ScriptedActor


@pytest.fixture(scope="module")
def url():
    with GymServer([BabyAIEnv, TextCraftEnv, GuessEnv], port=0).run_in_thread() as address:
        yield address


def run(url, player, settings, output):
    return asyncio.run(collect(url, player, settings, output))


def test_the_expert_writes_rewarded_trajectories_and_a_second_run_resumes(url, tmp_path):
    output = tmp_path / "textcraft.jsonl"
    settings = CollectSettings(env="textcraft", indices=range(4), progress=False)
    counts = run(url, ExpertPlayer(), settings, output)
    assert counts == {"played": 4, "kept": 4, "successes": 4, "errors": 0, "skipped": 0, "first_error": None}
    trajectories = read_trajectories(output)
    assert sorted(t.index for t in trajectories) == [0, 1, 2, 3]
    for t in trajectories:
        assert t.success and t.finish == "terminated" and t.reward == 1.0 and t.policy == "expert"
        assert t.observation.startswith("Crafting commands:") and t.instructions == TextCraftEnv.instructions
        assert all(turn.reply == f"Action: {turn.action}" for turn in t.turns)
        assert "task complete" in t.turns[-1].observation
    again = run(url, ExpertPlayer(), CollectSettings(env="textcraft", indices=range(6), progress=False), output)
    assert again["skipped"] == 4 and again["played"] == 2 and len(read_trajectories(output)) == 6


def test_filters_keep_only_successful_episodes(url, tmp_path):
    # BabyAI's expert runs out of turns on some train tasks within 3 turns.
    output = tmp_path / "babyai.jsonl"
    counts = run(url, ExpertPlayer(), CollectSettings(env="babyai", indices=range(12), max_turns=3, success_only=True,
                                                      progress=False), output)
    kept = read_trajectories(output)
    assert 0 < counts["successes"] < 12 and counts["kept"] == counts["successes"] == len(kept)
    assert all(t.success and len(t.turns) <= 3 for t in kept)
    assert all("primitives" in turn.info for t in kept for turn in t.turns)  # the step's info is recorded
    # Every task was played, so a rerun plays nothing, kept or not.
    assert run(url, ExpertPlayer(), CollectSettings(env="babyai", indices=range(12), max_turns=3, success_only=True,
                                                    progress=False), output)["played"] == 0


class TurnLeftPlayer:
    """A learner that always turns left (what the expert labels is its states, not its own)."""

    name = "turn-left"

    def play_settings(self, settings):
        return settings

    async def start(self, task, first, options):
        return ScriptedActor(lambda recorder: "Action: turn left"), None


def test_the_expert_labels_the_states_another_policy_reaches(url, tmp_path):
    output = tmp_path / "dagger.jsonl"
    settings = CollectSettings(env="babyai", indices=[5, 7], max_turns=4, label="expert", progress=False)
    run(url, TurnLeftPlayer(), settings, output)
    for trajectory in read_trajectories(output):
        assert [turn.reply for turn in trajectory.turns] == ["Action: turn left"] * 4 and trajectory.labeller == "expert"
        # A fresh expert, told the same primitives, says the same in each state.
        expert = BabyAIExpert("train", trajectory.index, macros=True)
        for turn in trajectory.turns:
            assert turn.label == f"Action: {expert.act()}"
            expert.observe(turn.info)


def test_a_model_plays_through_the_episode_loop_and_is_recorded(url, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gymwire.trainers.models.backends import make_policy
    from gymwire.trainers.policy import Sampling
    from gymwire.trainers.models.tiny import TinyModelSpec, build_tiny_model

    path = build_tiny_model(tmp_path / "tiny", ["I am thinking of a whole number from 1 to 7. Guess it.", "is wrong. Go higher lower."],
                            TinyModelSpec(numbers=10, n_positions=2048))  # BabyAI's first prompt is long
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(path)
    policy = make_policy("transformers", AutoModelForCausalLM.from_pretrained(path), tokenizer, max_batch=4)
    player = ModelPlayer("tiny", policy, tokenizer, Sampling(1.0), turn_tokens=2)
    output = tmp_path / "guess.jsonl"
    counts = run(url, player, CollectSettings(env="guess", indices=[0, 1], samples=2, max_turns=3,
                                              options={"low": 1, "high": 7}, progress=False), output)
    trajectories = read_trajectories(output)
    assert counts["played"] == 4 and len(trajectories) == 4
    assert sorted((t.index, t.sample) for t in trajectories) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for t in trajectories:
        assert t.policy == "tiny" and t.observation.startswith("I am thinking")
        assert 1 <= len(t.turns) <= 3 and t.finish in ("terminated", "truncated")
        assert t.success == (t.reward == 1.0)
    # The same model on BabyAI with the expert labelling its states (it answers numbers: invalid
    # actions, so the expert's label is the same in every state).
    dagger = tmp_path / "dagger.jsonl"
    run(url, player, CollectSettings(env="babyai", indices=[1], max_turns=2, label="expert", progress=False), dagger)
    labelled, = read_trajectories(dagger)
    assert len(labelled.turns) == 2 and all(turn.label == "Action: go to red ball 1" for turn in labelled.turns)
    assert all(turn.info == {"valid": False, "primitives": []} for turn in labelled.turns)


@pytest.mark.parametrize("args, message", [
    (["collect", "nosuchenv", "--output", "x.jsonl"], "no expert for 'nosuchenv'"),
    (["collect", "babyai", "--label", "expert", "--output", "x.jsonl"], "nothing to relabel"),
    (["collect", "babyai", "--tasks", "one-two", "--output", "x.jsonl"], "--tasks"),
    (["collect", "babyai", "--tasks", "0-3,9-5", "--output", "x.jsonl"], "the range 9-5 runs backwards; write it as 5-9"),
    (["collect", "babyai", "--tasks", "90", "--output", "x.jsonl"], "write 0-89 for the first 90 tasks, or 90-90 for task 90 alone"),
    (["collect", "babyai", "--options", "[1, 2]", "--output", "x.jsonl"], "--options"),
    (["learn", "sft", "missing.jsonl", "--output", "run"], "no such file"),
])
def test_collect_and_learn_errors_are_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error and "Traceback" not in error


def test_a_collection_where_every_episode_errs_says_why_and_retries_them_next_time(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The expert plays gymwire's own BabyAI text: under AgentGym's profile every episode is an error.
    args = ["collect", "babyai", "--options", "{profile: agentgym}", "--tasks", "0-1", "--output", "x.jsonl", "--no-progress"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "2 errors (first: the BabyAI expert plays gymwire's own text, not profile 'agentgym')" in captured.out
    assert captured.err.count("\n") == 1 and "every episode of babyai failed (" in captured.err
    # Nothing is marked done: the same command, fixed, plays both tasks.
    assert not (tmp_path / "x.jsonl.done").exists() or not (tmp_path / "x.jsonl.done").read_text().strip()
    assert main(args[:2] + args[4:]) == 0
    assert "played 2 episodes (0 already done), 2 successful, 0 errors;" in capsys.readouterr().out


def test_convert_writes_agenttraj_and_openrlhf_rows(url, tmp_path, capsys):
    data = tmp_path / "t.jsonl"
    run(url, ExpertPlayer(), CollectSettings(env="textcraft", indices=[0, 1], progress=False), data)
    assert main(["learn", "convert", str(data), "--to", "agenttraj", "--output", str(tmp_path / "a.json")]) == 0
    items = json.loads((tmp_path / "a.json").read_text())
    assert sorted(i["item_id"] for i in items) == ["textcraft_0", "textcraft_1"]
    assert main(["learn", "convert", str(tmp_path / "a.json"), "--to", "sft", "--output", str(tmp_path / "sft.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert [m["role"] for m in rows[0]["messages"]][:3] == ["user", "assistant", "user"]
    assert rows[0]["messages"][-1]["role"] == "assistant"


def test_learn_evolve_runs_end_to_end_on_a_tiny_model(tmp_path, capsys):
    """gymwire learn evolve's wiring: explore with the model (collect), keep the rewarded, learn (sft), twice."""
    from gymwire.trainers.models.tiny import TinyModelSpec, build_tiny_model

    path = build_tiny_model(tmp_path / "tiny", ["I am thinking of a whole number from 1 to 7. Guess it.", "is wrong. Go higher lower."],
                            TinyModelSpec(numbers=10))
    base = tmp_path / "base.jsonl"
    asyncio.run(_tiny_base(base))
    code = main(["learn", "evolve", str(base), "--env", "guess", "--model", str(path), "--output", str(tmp_path / "evolve"),
                 "--iterations", "2", "--tasks", "0-20", "--tasks-per-iteration", "3", "--samples", "2", "--max-turns", "3",
                 "--options", "{low: 1, high: 7}", "--turn-tokens", "2", "--batch-rows", "2", "--lr", "1e-3", "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "evolve" / "evolve.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2] and all(r["episodes"] == 6 for r in records)
    assert records[1]["learned_episodes"] == 1 + records[0]["kept"] + records[1]["kept"]
    assert (tmp_path / "evolve" / "iter-2" / "model" / "config.json").exists()


async def _tiny_base(path):
    """One successful guess episode as base data (the number of task 0, found by trying)."""
    from gymwire.trainers.learn.trajectories import Trajectory, TrajectoryTurn, write_trajectories

    for guess in range(1, 8):
        async with GymServer([GuessEnv], port=0) as server:
            from gymwire.sdk.client import GymClient

            async with GymClient(server.url) as client:
                async with client.session("guess", split="train", index=0, options={"low": 1, "high": 7}) as session:
                    first = session.observation.text
                    result = await session.step(str(guess))
        if result.metrics is not None and result.metrics.success:
            write_trajectories(path, [Trajectory(env="guess", split="train", index=0, instructions="", observation=first,
                                                 turns=[TrajectoryTurn(reply=f" {guess}", action=f" {guess}", observation=result.observation.text, reward=1.0)],
                                                 success=True, score=1.0, finish="terminated")])
            return
    raise AssertionError("no guess from 1 to 7 won task 0")


def test_the_deep_search_expert_answers_the_built_in_questions(tmp_path):
    from gymwire.servers.deepsearch import DeepSearchEnv

    output = tmp_path / "deepsearch.jsonl"
    with GymServer([DeepSearchEnv], port=0).run_in_thread() as address:
        counts = run(address, ExpertPlayer(), CollectSettings(env="deepsearch", indices=range(3), progress=False), output)
    assert counts == {"played": 3, "kept": 3, "successes": 3, "errors": 0, "skipped": 0, "first_error": None}
    for t in read_trajectories(output):
        assert t.turns[0].action.startswith("<search>") and t.turns[-1].action.startswith("<answer>")
        assert "correct" in t.turns[-1].observation
