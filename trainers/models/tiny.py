"""Build a tiny, randomly initialised chat model in a local folder: no hub downloads.

The tokenizer is word-level: a vocabulary of the words, numbers and punctuation seen in a corpus
of the environment's own texts, each piece keeping its leading whitespace (as GPT-2's BPE does) so
that `decode(encode(text)) == text` for any text made of known pieces. The chat template is small
and ordinary; the trainer treats it like any other model's template.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from gymwire.sdk.errors import UserError

__all__ = ["TinyModelSpec", "build_tiny_model", "tiny_model_ready", "env_corpus", "CHAT_TEMPLATE", "SPECIAL_TOKENS", "RECIPE_FILE"]

# What a tiny model was built from (its spec, seed and the environment its vocabulary came from),
# written beside it: a run never silently trains another run's initial weights.
RECIPE_FILE = "gymwire-tiny.json"

# Leading whitespace stays with its word, number or punctuation mark; other whitespace runs
# are pieces of their own.
PIECE_PATTERN = r"\s*[A-Za-z]+|\s*\d+|\s*[^\sA-Za-z\d]|\s+"
PAD, UNK, USER, BOT, EOT = "<pad>", "<unk>", "<user>", "<bot>", "<eot>"
SPECIAL_TOKENS = (PAD, UNK, USER, BOT, EOT)
# A turn ends with "<eot>" and a newline, so the text after the model's stop token is not empty:
# rollouts must restore it (see chat.ChatFormat), as with real templates such as ChatML.
CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}{{ '<bot>' + m['content'] + '<eot>\n' }}"
    "{%- else -%}{{ '<user>' + m['content'] + '<eot>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<bot>' }}{%- endif -%}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the GPT-2 the builder makes. `numbers` adds the whole numbers 0..numbers-1 to the
    vocabulary (with and without a leading space) so a policy can say any of them in one token."""

    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    n_positions: int = 512
    numbers: int = 101
    init_std: float = 0.02
    seed: int = 0


def _pieces(text: str) -> list[str]:
    from tokenizers import Regex, pre_tokenizers

    splitter = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
    return [piece for piece, _ in splitter.pre_tokenize_str(text)]


def build_tokenizer(corpus: Iterable[str], numbers: int):
    """A word-level `PreTrainedTokenizerFast` whose vocabulary covers `corpus` and 0..numbers-1."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words: set[str] = {"\n", " "}
    for text in corpus:
        words.update(_pieces(text))
    for n in range(numbers):
        words.update((str(n), f" {n}"))
    words.difference_update(SPECIAL_TOKENS)
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *sorted(words)])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        eos_token=EOT,
        additional_special_tokens=[USER, BOT],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def tiny_model_ready(path: str | Path, recipe: dict[str, Any], replace: bool) -> bool:
    """True when `path` holds the tiny model `recipe` describes; False when there is none yet (or
    `replace` and another one, which is then deleted). Another recipe's model is a UserError: a
    run with another seed must not continue from it."""
    path = Path(path)
    if not path.exists():
        return False
    recorded_file = path / RECIPE_FILE
    recorded = json.loads(recorded_file.read_text()) if recorded_file.exists() else None
    if recorded == recipe:
        return True
    if replace:
        shutil.rmtree(path)
        return False
    if recorded is None:
        what = "a model of unknown recipe (no " + RECIPE_FILE + ")"
    else:
        changed = sorted(k for k in {**recorded, **recipe} if recorded.get(k) != recipe.get(k))
        what = "a tiny model built with " + ", ".join(f"{k}={recorded.get(k)!r} (this run: {recipe.get(k)!r})" for k in changed)
    raise UserError(
        f"model.path {path} holds {what}; a run must not start from another run's model: leave model.path out "
        "(the tiny model is then built in output_dir), give another model.path, or pass --overwrite when it is inside output_dir"
    )


def build_tiny_model(
    path: str | Path, corpus: Iterable[str], spec: TinyModelSpec = TinyModelSpec(), recipe: dict[str, Any] | None = None
) -> Path:
    """Write a randomly initialised GPT-2 and its tokenizer to `path`; `from_pretrained(path)` loads
    it. `recipe` (what it was built from) is recorded beside it for `tiny_model_ready`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    path = Path(path)
    tokenizer = build_tokenizer(corpus, spec.numbers)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=spec.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        initializer_range=spec.init_std,
        # No dropout: rollouts and updates must be reproducible from the RNG state alone.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = GPT2LMHeadModel(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if recipe is not None:
        (path / RECIPE_FILE).write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
    return path


async def env_corpus(
    client: Any, env: str, info: Any, split: str, options: dict[str, Any], seed: int, numbers: int, episodes: int
) -> list[str]:
    """Texts of an environment for a tiny model's vocabulary: its instructions and what it says
    over `episodes` episodes of `split` played with random whole numbers (and one non-number)."""
    rng = random.Random(seed)
    texts = [info.instructions, info.description]
    for index in range(episodes):
        async with client.session(env, split=split, index=index, options=options, max_turns=8) as session:
            texts.append(session.observation.text if session.observation else "")
            actions = ["hello"] + [str(rng.randrange(numbers)) for _ in range(7)]
            for action in actions:
                if session.done:
                    break
                texts.append((await session.step(action)).observation.text)
    return texts
