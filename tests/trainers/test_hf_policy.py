"""TransformersPolicy's own decoding loop: the log-probs it records are the ones a full forward
pass gives (as the trainer recomputes them), on every generation path, with and without kept
caches; greedy decoding gives `model.generate`'s tokens."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.generation.logits_process import TopPLogitsWarper

from gymwire.sdk.server import GymServer
from gymwire.servers.guess import GuessEnv
from gymwire.trainers.models.backends import make_policy
from gymwire.trainers.chat import ChatFormat
from gymwire.trainers.models.hf_policy import TransformersPolicy
from gymwire.trainers.train.losses import token_logprobs
from gymwire.trainers.policy import Sampling
from gymwire.trainers.episode import EnvTask
from gymwire.trainers.play import PlaySettings, PromptConfig, RolloutClient
from gymwire.trainers.models.tiny import TinyModelSpec, build_tiny_model

CORPUS = [
    GuessEnv.instructions,
    "I am thinking of a whole number from 1 to 9. Guess it.",
    "4 is wrong. Go higher. Go lower. It is between 5 and 9.",
    "Correct! The number was 4.",
]
PATHS = {
    "greedy": Sampling(temperature=0),
    "temperature": Sampling(temperature=0.7),
    "top_p": Sampling(temperature=1.3, top_p=0.8),
}
TOLERANCE = 5e-5  # fp32 rounding: the same sums in another order (largest seen: 1.3e-5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    # Large initial weights: a peaked, far from uniform distribution, so that top-p cuts deep.
    spec = TinyModelSpec(n_layer=2, n_head=4, n_embd=64, numbers=10, init_std=0.3, seed=5)
    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), CORPUS, spec)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def tiny_llama(tiny):
    """SmolLM2's architecture in miniature (rotary positions, grouped-query attention), with the
    tiny tokenizer: rotary positions must count only real tokens across kept caches too."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = tiny
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id, initializer_range=0.3,
    )
    torch.manual_seed(6)
    return LlamaForCausalLM(config).eval(), tokenizer


@pytest.fixture(params=["gpt2", "llama"])
def either(request, tiny, tiny_llama):
    return tiny if request.param == "gpt2" else tiny_llama


def recomputed(model, tokens: list[int], start: int, sampling: Sampling) -> torch.Tensor:
    """Log-probs of tokens[start:] from one forward pass over all of `tokens`, as the trainer's
    update computes them (logits / temperature, log-softmax, gather), with top-p applied by
    transformers' own warper where the sampling used it."""
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0, start - 1 : -1]
    logits = logits / (sampling.temperature or 1.0)
    if sampling.top_p < 1:
        logits = TopPLogitsWarper(sampling.top_p)(None, logits)
    return token_logprobs(logits[None], torch.tensor([tokens[start:]]))[0]


def assert_logprobs_match(model, prompt, generation, sampling):
    expected = recomputed(model, list(prompt) + generation.token_ids, len(prompt), sampling)
    assert torch.isfinite(torch.tensor(generation.logprobs)).all()
    assert torch.allclose(torch.tensor(generation.logprobs), expected, atol=TOLERANCE, rtol=0)


def prompts_of(tokenizer, count: int, seed: int) -> list[list[int]]:
    chat = ChatFormat(tokenizer)
    words = CORPUS[2].split()
    rng = random.Random(seed)
    return [chat.prompt(" ".join(rng.choices(words, k=rng.randint(1, 12)))) for _ in range(count)]


@pytest.mark.parametrize("path", PATHS)
def test_logprobs_of_one_call_match_a_full_forward(tiny, path):
    model, tokenizer = tiny
    prompts = prompts_of(tokenizer, 6, seed=1)  # different lengths: left padding
    budgets = [1, 3, 8, 8, 5, 8]
    torch.manual_seed(0)
    generations = TransformersPolicy(model, tokenizer.pad_token_id).generate(
        prompts, budgets, ChatFormat(tokenizer).stop_ids, PATHS[path]
    )
    for prompt, budget, generation in zip(prompts, budgets, generations):
        assert 1 <= len(generation.token_ids) <= budget
        assert_logprobs_match(model, prompt, generation, PATHS[path])


def test_top_p_cuts_the_distribution(tiny):
    """The top-p path is not trivially the temperature one: its log-probs differ from those of
    temperature alone, i.e. the nucleus left tokens out."""
    model, tokenizer = tiny
    prompts = prompts_of(tokenizer, 4, seed=2)
    torch.manual_seed(1)
    sampling = PATHS["top_p"]
    generations = TransformersPolicy(model, tokenizer.pad_token_id).generate(prompts, [8] * 4, [], sampling)
    differences = [
        (torch.tensor(g.logprobs) - recomputed(model, p + g.token_ids, len(p), Sampling(sampling.temperature))).abs().max()
        for p, g in zip(prompts, generations)
    ]
    assert max(differences) > 0.01


def test_greedy_decoding_gives_the_tokens_of_plain_generate(either):
    model, tokenizer = either
    chat = ChatFormat(tokenizer)
    prompts = prompts_of(tokenizer, 5, seed=3)
    generations = TransformersPolicy(model, tokenizer.pad_token_id).generate(prompts, [12] * 5, chat.stop_ids, PATHS["greedy"])
    for prompt, generation in zip(prompts, generations):
        config = GenerationConfig(
            max_new_tokens=12, do_sample=False, eos_token_id=chat.stop_ids, pad_token_id=tokenizer.pad_token_id
        )
        plain = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long), generation_config=config)
        assert generation.token_ids == plain[0, len(prompt):].tolist()


def test_sampling_draws_what_generate_draws_from_the_same_seed(tiny):
    """Same distribution, same use of the RNG: seeded runs sample what they sampled with generate."""
    model, tokenizer = tiny
    prompts = prompts_of(tokenizer, 6, seed=4)
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
    sampling = PATHS["top_p"]
    config = GenerationConfig(
        max_new_tokens=6, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=[],
    )
    torch.manual_seed(7)
    plain = model.generate(input_ids, attention_mask=(input_ids != tokenizer.pad_token_id).long(), generation_config=config)
    torch.manual_seed(7)
    generations = TransformersPolicy(model, tokenizer.pad_token_id).generate(prompts, [6] * 6, [], sampling)
    assert [g.token_ids for g in generations] == plain[:, width:].tolist()


@pytest.mark.parametrize("path", PATHS)
def test_kept_caches_across_turns_give_full_forward_logprobs(either, path):
    """Episodes of several turns: each call's prompts extend the previous call's (in a new order,
    some episodes gone, a new one joining), with environment answers of different lengths. Only
    the new tokens are encoded, and every log-prob is still a full forward's."""
    model, tokenizer = either
    chat = ChatFormat(tokenizer)
    sampling = PATHS[path]
    rng = random.Random(8)
    policy = TransformersPolicy(model, tokenizer.pad_token_id)
    episodes = {k: p for k, p in enumerate(prompts_of(tokenizer, 6, seed=5))}
    ends_after = {0: 1, 1: 2, 2: 4, 3: 4, 4: 3, 5: 4}  # turns each episode plays
    new_tokens = {k: len(p) for k, p in episodes.items()}  # what the next call must encode
    torch.manual_seed(2)
    for turn in range(4):
        if turn == 2:
            episodes[6] = prompts_of(tokenizer, 1, seed=6)[0]  # starts late: nothing kept for it
            new_tokens[6], ends_after[6] = len(episodes[6]), 4
        keys = [k for k in episodes if ends_after[k] > turn]
        rng.shuffle(keys)
        prompts = [episodes[k] for k in keys]
        encoded_before = policy.encoded_tokens
        generations = policy.generate(prompts, [rng.randint(1, 6) for _ in keys], chat.stop_ids, sampling)
        assert policy.encoded_tokens - encoded_before == sum(new_tokens[k] for k in keys)
        for key, prompt, generation in zip(keys, prompts, generations):
            assert_logprobs_match(model, prompt, generation, sampling)
            words = rng.choices(CORPUS[2].split(), k=rng.randint(1, 9))
            feedback = chat.user_turn(" ".join(words), generation.token_ids, generation.stopped)
            episodes[key] = prompt + generation.token_ids + feedback
            new_tokens[key] = 1 + len(feedback)  # the last generated token was never encoded


@pytest.mark.parametrize("path", ["temperature", "top_p"])
def test_episodes_of_a_group_share_what_they_have_in_common(tiny, path):
    """One-token turns (examples/guess-tiny.yaml): a group's episodes all extend the same kept
    row (their shared prompt); each still encodes only its own new tokens, and log-probs hold."""
    model, tokenizer = tiny
    chat = ChatFormat(tokenizer)
    sampling = PATHS[path]
    policy = TransformersPolicy(model, tokenizer.pad_token_id)
    prompts = prompts_of(tokenizer, 2, seed=11) * 4  # two tasks, four episodes each
    new_tokens = sum(len(p) for p in prompts)
    torch.manual_seed(5)
    for _ in range(3):
        before = policy.encoded_tokens
        generations = policy.generate(prompts, [1] * len(prompts), chat.stop_ids, sampling)
        assert policy.encoded_tokens - before == new_tokens
        answers = [chat.user_turn("Go higher.", g.token_ids, g.stopped) for g in generations]
        for prompt, generation in zip(prompts, generations):
            assert_logprobs_match(model, prompt, generation, sampling)
        prompts = [p + g.token_ids + a for p, g, a in zip(prompts, generations, answers)]
        new_tokens = sum(1 + len(a) for a in answers)  # the generated token and the answer


def test_caches_are_kept_across_batches_of_one_call(tiny):
    """More prompts than `max_batch`: every batch's rows are kept, and the next call finds them."""
    model, tokenizer = tiny
    chat = ChatFormat(tokenizer)
    policy = TransformersPolicy(model, tokenizer.pad_token_id, max_batch=2)
    prompts = prompts_of(tokenizer, 5, seed=12)
    first = policy.generate(prompts, [3] * 5, chat.stop_ids, PATHS["greedy"])
    answers = [chat.user_turn("Go lower.", g.token_ids, g.stopped) for g in first]
    extended = [p + g.token_ids + a for p, g, a in zip(prompts, first, answers)]
    before = policy.encoded_tokens
    for prompt, generation in zip(extended, policy.generate(extended, [3] * 5, chat.stop_ids, PATHS["greedy"])):
        assert_logprobs_match(model, prompt, generation, PATHS["greedy"])
    assert policy.encoded_tokens - before == sum(1 + len(a) for a in answers)


def test_reused_and_fresh_encodings_sample_the_same(tiny):
    """Seeded, a second turn from kept caches samples exactly what encoding it in full samples."""
    model, tokenizer = tiny
    chat = ChatFormat(tokenizer)
    prompts = prompts_of(tokenizer, 5, seed=9)
    answer = chat.user_turn("4 is wrong. Go higher.", [], stopped=False)
    outcomes = []
    for reuse in (True, False):
        policy = TransformersPolicy(model, tokenizer.pad_token_id, reuse_cache=reuse)
        torch.manual_seed(3)
        first = policy.generate(prompts, [4] * 5, chat.stop_ids, PATHS["temperature"])
        second = policy.generate([p + g.token_ids + answer for p, g in zip(prompts, first)], [6] * 5, chat.stop_ids, PATHS["temperature"])
        outcomes.append([(g.token_ids, g.logprobs) for g in first + second])
    for (ids, kept), (same_ids, full) in zip(*outcomes):
        assert ids == same_ids
        assert torch.allclose(torch.tensor(kept), torch.tensor(full), atol=TOLERANCE, rtol=0)


def test_new_weights_drop_the_kept_caches(tiny):
    model, tokenizer = tiny
    chat = ChatFormat(tokenizer)
    policy = TransformersPolicy(model, tokenizer.pad_token_id)
    [prompt] = prompts_of(tokenizer, 1, seed=10)
    [generation] = policy.generate([prompt], [3], chat.stop_ids, PATHS["greedy"])
    extended = prompt + generation.token_ids + chat.user_turn("Go lower.", generation.token_ids, generation.stopped)
    for drop in (policy.load_weights, lambda _: policy.release()):
        policy.generate([prompt], [3], chat.stop_ids, PATHS["greedy"])
        drop(model)
        before = policy.encoded_tokens
        policy.generate([extended], [3], chat.stop_ids, PATHS["greedy"])
        assert policy.encoded_tokens - before == len(extended)


@pytest.mark.parametrize("path", ["temperature", "top_p"])
def test_rollout_logprobs_match_the_trainers_recomputation(tiny, path):
    """Whole episodes through a real server: episodes end at different turns (a right guess ends
    one early); every action token's recorded log-prob is the full forward's over the episode."""
    model, tokenizer = tiny
    sampling = PATHS[path]
    settings = PlaySettings(
        options={"low": 1, "high": 9}, max_turns=4, turn_tokens=3, episode_tokens=512,
        sampling=sampling, prompt=PromptConfig(instructions=False),
    )
    policy = TransformersPolicy(model, tokenizer.pad_token_id)
    torch.manual_seed(4)
    with GymServer([GuessEnv], port=0).run_in_thread() as url, RolloutClient(url) as client:
        episodes = client.collect(policy, ChatFormat(tokenizer), [EnvTask("guess", "train", i) for i in range(12)], settings)
    assert len({len(e.turns) for e in episodes}) > 1
    for episode in episodes:
        expected = recomputed(model, episode.tokens, 1, sampling)
        mask = torch.tensor(episode.loss_mask[1:], dtype=torch.bool)
        assert torch.allclose(torch.tensor(episode.logprobs[1:])[mask], expected[mask], atol=TOLERANCE, rtol=0)
    assert not policy._kept  # released when the batch ended


def test_the_policy_interface_imports_no_backend():
    """trainers/policy.py is what backends import; the factory lives in trainers/models/backends.py."""
    code = "import sys, gymwire.trainers.policy; print(sorted(m for m in sys.modules if m.startswith('gymwire.trainers.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['gymwire.trainers.policy']"


def test_the_vllm_backend_without_vllm_says_what_to_install(tiny):
    model, tokenizer = tiny
    with pytest.raises(ImportError, match="pip install vllm"):
        make_policy("vllm", model, tokenizer)


def test_kept_caches_are_not_copied_again_while_a_turn_is_generated():
    """An episode's next turn starts from its kept keys and values, which move into the batch's
    cache and back out of it a layer at a time: the turn's tensors at their peak stay near those
    of the episodes' live tokens (holding the kept rows, the batch's cache and the rows cut out of
    it all at once made it 2.4 times as much)."""
    from tensor_memory import TensorMemory
    from transformers import LlamaConfig, LlamaForCausalLM

    layers, heads, kv_heads, hidden = 16, 4, 2, 64  # deep: the layers' caches dominate the peak
    config = LlamaConfig(vocab_size=64, hidden_size=hidden, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(6)
    policy = TransformersPolicy(LlamaForCausalLM(config).eval(), pad_id=0)
    rows, stops = 8, [1]
    prompts = [[5 + (r + i) % 40 for i in range(300 + 10 * r)] for r in range(rows)]
    first = policy.generate(prompts, [4] * rows, stops, Sampling(0))
    turn = [p + g.token_ids + [7, 8, 9] for p, g in zip(prompts, first)]
    with TensorMemory() as memory:
        policy.generate(turn, [4] * rows, stops, Sampling(0))
    live = sum(len(t) + 4 for t in turn) * 2 * layers * kv_heads * (hidden // heads) * 4  # keys and values, fp32
    assert policy.encoded_tokens == sum(len(p) for p in prompts) + rows * 4  # the second turn encoded its new tokens only
    assert memory.peak < 1.7 * live, (memory.peak, live)


def test_an_ended_episode_leaves_nothing_kept(tiny):
    """Evaluation tells the policy when an episode ends: no cache outlives its episode."""
    import asyncio

    from gymwire.trainers.eval.evaluate import EnvTarget, EvalSettings, evaluate

    model, tokenizer = tiny
    policy = TransformersPolicy(model, tokenizer.pad_token_id, max_batch=4)
    with GymServer([GuessEnv], port=0).run_in_thread() as url, tempfile_dir() as folder:
        settings = EvalSettings(model="tiny", output=folder, tasks=6, concurrency=3, turn_tokens=3, progress=False)
        results = asyncio.run(evaluate(policy, [EnvTarget("guess", url, options={"low": 1, "high": 9}, max_turns=4)], settings, tokenizer))
    assert results["envs"]["guess"]["episodes"] == 6 and sum(results["envs"]["guess"]["finish"].values()) == 6
    assert not policy._kept


def tempfile_dir():
    import tempfile
    from contextlib import contextmanager
    from pathlib import Path

    @contextmanager
    def folder():
        with tempfile.TemporaryDirectory() as name:
            yield Path(name)

    return folder()
