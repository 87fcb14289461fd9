"""Rollout collection: token-in/token-out, loss masks, chat-template deltas, budgets, turn limit, JSONL."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv
from gymwire.trainers.chat import ChatFormat, ChatTemplateError
from gymwire.trainers.models.hf_policy import TransformersPolicy
from gymwire.trainers.policy import Generation, PolicyBackend, Sampling
from gymwire.trainers.episode import ERROR, TERMINATED, TOKEN_BUDGET, TRUNCATED, EnvTask, read_jsonl, write_jsonl
from gymwire.trainers.play import PlaySettings, PromptConfig, RolloutClient
from gymwire.trainers.models.tiny import TinyModelSpec, build_tiny_model

OPTIONS = {"low": 1, "high": 7}
CORPUS = [
    GuessEnv.instructions,
    "I am thinking of a whole number from 1 to 7. Guess it.",
    "4 is wrong. Go higher. Go lower.",
    "Correct! The number was 4.",
    "I did not see a number. Answer with one whole number from 1 to 7.",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), CORPUS, TinyModelSpec(numbers=10, seed=1))
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def client():
    with GymServer([GuessEnv], port=0).run_in_thread() as url, RolloutClient(url) as rollout_client:
        yield rollout_client


class ScriptedPolicy(PolicyBackend):
    """Says `script[k]` on turn k of every episode (then its stop token, budget permitting)."""

    def __init__(self, tokenizer, script: list[str]):
        self.tokenizer = tokenizer
        self.script = script
        self.bot = tokenizer.convert_tokens_to_ids("<bot>")

    def generate(self, prompts, max_new_tokens, stop_ids, sampling):
        out = []
        for prompt, budget in zip(prompts, max_new_tokens):
            turn = list(prompt).count(self.bot) - 1
            ids = (self.tokenizer.encode(self.script[turn], add_special_tokens=False) + [stop_ids[0]])[:budget]
            out.append(Generation(ids, [-0.5] * len(ids), stopped=ids[-1] in stop_ids))
        return out


class RecordingPolicy(PolicyBackend):
    def __init__(self, inner: PolicyBackend):
        self.inner = inner
        self.calls: list[tuple[list[list[int]], list[Generation]]] = []

    def generate(self, prompts, max_new_tokens, stop_ids, sampling):
        generations = self.inner.generate(prompts, max_new_tokens, stop_ids, sampling)
        self.calls.append(([list(p) for p in prompts], generations))
        return generations


def settings(**overrides) -> PlaySettings:
    values = dict(options=OPTIONS, max_turns=3, turn_tokens=4, episode_tokens=256, prompt=PromptConfig(instructions=False))
    values.update(overrides)
    return PlaySettings(**values)


def guess(split: str, index: int, env: str = "guess") -> EnvTask:
    return EnvTask(env, split, index)


def test_generated_tokens_are_kept_exactly_and_only_they_carry_loss(tiny, client):
    model, tokenizer = tiny
    torch.manual_seed(0)
    policy = RecordingPolicy(TransformersPolicy(model, tokenizer.pad_token_id))
    chat = ChatFormat(tokenizer)
    tasks = [guess("train", i % 3) for i in range(12)]
    episodes = client.collect(policy, chat, tasks, settings(), groups=[i % 3 for i in range(12)])

    # prompt -> what the policy returned for it (episodes of one task share prompts)
    generated: dict[tuple[int, ...], list[Generation]] = {}
    for prompts, generations in policy.calls:
        for prompt, generation in zip(prompts, generations):
            generated.setdefault(tuple(prompt), []).append(generation)
    assert [e.task for e in episodes] == tasks and [e.group for e in episodes] == [i % 3 for i in range(12)]
    assert sum(len(g) for g in generated.values()) == sum(len(e.turns) for e in episodes)
    for episode in episodes:
        trained = [0] * len(episode.tokens)
        for turn in episode.turns:
            candidates = generated[tuple(episode.tokens[: turn.start])]
            kept = (episode.tokens[turn.start : turn.end + 1], episode.logprobs[turn.start : turn.end + 1])
            assert kept in [(g.token_ids, g.logprobs) for g in candidates]
            assert turn.action == tokenizer.decode(kept[0], skip_special_tokens=True)
            trained[turn.start : turn.end + 1] = [1] * (turn.end + 1 - turn.start)
        assert episode.loss_mask == trained
        assert all(lp == 0.0 for lp, m in zip(episode.logprobs, episode.loss_mask) if not m)
        assert episode.text == tokenizer.decode(episode.tokens)


def test_environment_turns_are_rendered_by_the_chat_template(tiny, client):
    _, tokenizer = tiny
    chat = ChatFormat(tokenizer)
    # Turn 1 stops on its own; the 2-token budget cuts turn 2 before its stop token. 9 is never right.
    policy = ScriptedPolicy(tokenizer, [" 9", " 8 9 9", " 9"])
    [episode] = client.collect(policy, chat, [guess("test", 0)], settings(turn_tokens=2))
    assert [turn.action for turn in episode.turns] == [" 9", " 8 9", " 9"]
    messages = [{"role": "user", "content": "I am thinking of a whole number from 1 to 7. Guess it."}]
    for turn in episode.turns[:-1]:
        messages += [{"role": "assistant", "content": turn.action}, {"role": "user", "content": turn.observation}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    last = episode.turns[-1]
    # Everything up to the last turn's generation is exactly what the template renders.
    assert tokenizer.decode(episode.tokens[: last.start]) == rendered
    assert episode.tokens[: last.start] == tokenizer.encode(rendered, add_special_tokens=False)


def test_turn_limit_goes_to_the_server(tiny, client):
    _, tokenizer = tiny
    policy = ScriptedPolicy(tokenizer, [" 9"] * 5)  # never right in 1..7
    episodes = client.collect(policy, ChatFormat(tokenizer), [guess("test", i) for i in range(4)], settings(max_turns=2))
    for episode in episodes:
        assert (len(episode.turns), episode.finish, episode.max_turns, episode.success) == (2, TRUNCATED, 2, False)


def test_a_correct_guess_ends_the_episode_with_success(tiny, client):
    _, tokenizer = tiny
    policy = ScriptedPolicy(tokenizer, [f" {n}" for n in range(1, 8)])
    # With 7 turns, guessing 1, 2, ... 7 finds every number.
    episodes = client.collect(policy, ChatFormat(tokenizer), [guess("test", i) for i in range(5)], settings(max_turns=7))
    for episode in episodes:
        assert episode.finish == TERMINATED and episode.success and episode.reward == 1.0
        assert episode.turns[-1].reward == 1.0 and episode.turns[-1].observation.startswith("Correct!")


def test_turn_token_budget(tiny, client):
    model, tokenizer = tiny
    torch.manual_seed(1)
    policy = TransformersPolicy(model, tokenizer.pad_token_id)
    episodes = client.collect(policy, ChatFormat(tokenizer), [guess("train", i) for i in range(16)], settings(turn_tokens=2))
    lengths = [turn.end - turn.start + 1 for e in episodes for turn in e.turns]
    assert max(lengths) == 2 and min(lengths) >= 1


def test_episode_token_budget_stops_an_episode_before_it_overflows(tiny, client):
    _, tokenizer = tiny
    chat = ChatFormat(tokenizer)
    prompt_length = len(chat.prompt("I am thinking of a whole number from 1 to 7. Guess it."))
    budget = prompt_length + 12  # room for the first turn, not for the second one's feedback and answer
    policy = ScriptedPolicy(tokenizer, [" 9"] * 5)
    episodes = client.collect(policy, chat, [guess("test", i) for i in range(3)], settings(episode_tokens=budget))
    for episode in episodes:
        assert episode.finish == TOKEN_BUDGET
        assert len(episode.tokens) <= budget and len(episode.turns) == 1


class CrashingGuess(GuessEnv):
    """Crashes on every step when the hidden number is odd."""

    name = "crashing-guess"

    def step(self, action):
        if self.target % 2:
            raise RuntimeError("simulated crash")
        return super().step(action)


def test_a_step_error_ends_only_its_episode(tiny, client):
    _, tokenizer = tiny
    policy = ScriptedPolicy(tokenizer, [" 9"] * 3)
    with GymServer([CrashingGuess], port=0).run_in_thread() as url, RolloutClient(url) as crashing:
        tasks = [guess("test", i, env="crashing-guess") for i in range(12)]
        episodes = crashing.collect(policy, ChatFormat(tokenizer), tasks, settings())
    failed = [e for e in episodes if e.finish == ERROR]
    played = [e for e in episodes if e.finish == TRUNCATED]
    assert failed and played and len(failed) + len(played) == len(episodes)
    for episode in failed:
        assert episode.turns == [] and episode.error and "crash" in episode.error.lower()
        assert episode.loss_mask.count(1) == 2  # " 9" and the stop token, kept though the step failed
    assert all(len(e.turns) == 3 and e.error is None for e in played)


def test_jsonl_is_readable_and_round_trips(tiny, client, tmp_path):
    model, tokenizer = tiny
    torch.manual_seed(2)
    episodes = client.collect(
        TransformersPolicy(model, tokenizer.pad_token_id), ChatFormat(tokenizer), [guess("train", i) for i in range(4)], settings()
    )
    path = write_jsonl(episodes, tmp_path / "rollouts.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4
    first = json.loads(lines[0])
    assert list(first)[:4] == ["env", "task", "options", "success"]
    assert first["turns"][0]["observation"] == episodes[0].turns[0].observation
    assert "<user>I am thinking of a whole number" in first["text"]
    assert read_jsonl(path) == episodes


def test_policy_logprobs_match_a_forward_pass_with_left_padding(tiny):
    model, tokenizer = tiny
    chat = ChatFormat(tokenizer)
    long = chat.prompt("I am thinking of a whole number from 1 to 7. Guess it.")
    short = chat.prompt("Guess it.")
    torch.manual_seed(3)
    generations = TransformersPolicy(model, tokenizer.pad_token_id).generate([long, short], [5, 5], chat.stop_ids, Sampling(0.7))
    for prompt, generation in zip([long, short], generations):
        ids = torch.tensor([prompt + generation.token_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt) - 1 : -1] / 0.7
        expected = logits.log_softmax(-1).gather(-1, torch.tensor(generation.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(generation.logprobs), expected, atol=1e-4)


def test_chat_format_restores_what_the_template_writes_after_the_stop_token(tiny):
    _, tokenizer = tiny
    chat = ChatFormat(tokenizer)
    eot, newline = tokenizer.convert_tokens_to_ids(["<eot>", "\n"])
    assert chat.turn_close_ids == [eot, newline] and eot in chat.stop_ids
    after_stop = chat.user_turn("4 is wrong. Go higher.", [7, eot], stopped=True)
    after_cut = chat.user_turn("4 is wrong. Go higher.", [7], stopped=False)
    assert after_cut == [eot] + after_stop
    assert tokenizer.decode(after_stop) == "\n<user>4 is wrong. Go higher.<eot>\n<bot>"


def test_templates_that_rewrite_history_are_refused(tiny):
    _, tokenizer = tiny
    rewriting = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    # Shows only the last assistant message, like templates that strip past reasoning.
    rewriting.chat_template = (
        "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{{ '<user>' + m['content'] + '<eot>' }}"
        "{%- elif loop.last -%}{{ '<bot>' + m['content'] + '<eot>' }}{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<bot>' }}{%- endif -%}"
    )
    chat = ChatFormat(rewriting)
    with pytest.raises(ChatTemplateError, match="re-renders earlier turns"):
        chat.user_turn("Go higher.", [7], stopped=False)
    rewriting.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat_template"):
        ChatFormat(rewriting)


def test_settings_refuse_budgets_that_allow_no_generation():
    with pytest.raises(ValueError, match="token budgets"):
        PlaySettings(turn_tokens=0)


class KillingPolicy(ScriptedPolicy):
    """A scripted policy that kills a replica's process while the first turn is generated."""

    def __init__(self, tokenizer, script, victim):
        super().__init__(tokenizer, script)
        self.victim = victim

    def generate(self, prompts, max_new_tokens, stop_ids, sampling):
        self.victim.kill()
        return super().generate(prompts, max_new_tokens, stop_ids, sampling)


@pytest.mark.parametrize("on_server_lost", ["reopen", "drop"])
def test_a_replica_lost_mid_batch_costs_only_its_episodes(tiny, on_server_lost):
    import asyncio

    from server_process import server_processes

    from gymwire.sdk.pool import GymPool
    from gymwire.trainers.episode import SERVER_LOST
    from gymwire.trainers.play import collect_episodes

    _, tokenizer = tiny
    tasks = [guess("test", i) for i in range(8)]
    with server_processes(2, ("guess",)) as (victim, survivor):
        policy = KillingPolicy(tokenizer, [" 9"] * 3, victim)

        async def collect():
            async with GymPool([victim.url, survivor.url]) as pool:
                return await collect_episodes(pool, policy, ChatFormat(tokenizer), tasks, settings(on_server_lost=on_server_lost))

        episodes = asyncio.run(collect())
    assert [e.task for e in episodes] == tasks  # the whole batch, in order
    lost = [e for e in episodes if e.error_kind == SERVER_LOST]
    played = [e for e in episodes if e.finish == TRUNCATED and len(e.turns) == 3]
    if on_server_lost == "reopen":  # played again from the start on the survivor
        assert not lost and len(played) == 8
    else:  # the 4 on the killed replica end as errors; the others play on
        assert len(lost) == 4 and all(e.finish == ERROR and e.turns == [] for e in lost) and len(played) == 4
