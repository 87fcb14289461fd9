"""Policy backend on a transformers causal LM: the trainer's own model, on CPU or one CUDA GPU.

It decodes with a loop of its own over the model's forward pass and a `DynamicCache` rather than
with `model.generate`, for two reasons:
- the sampled tokens' log-probs are computed on the device and only they, with the token ids,
  are copied back (`generate` can only hand out every step's full-vocabulary scores);
- each row's keys and values are kept after a call, under the tokens they encode. A later prompt
  that extends kept tokens (an episode's next turn: its history, the tokens just generated, the
  environment's answer) starts from them and encodes only its new tokens, instead of the whole
  history every turn.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from ..policy import Generation, PolicyBackend, Sampling
from .precision import autocast_for

__all__ = ["TransformersPolicy", "sample_next"]


@dataclass
class _KeptRow:
    """The keys and values of one row's tokens, per layer: (heads, length, head_dim) tensors. Per
    layer so that memory follows the live tokens: a turn moves the rows into the batch's cache and
    back out of it a layer at a time, each layer's old copy freed as its new one is made, so that
    at no point are all of them held twice."""

    keys: list[torch.Tensor | None]
    values: list[torch.Tensor | None]


class TransformersPolicy(PolicyBackend):
    """Samples from `model` on left-padded batches of at most `max_batch` rows; log-probs are those
    of the distribution actually sampled from (logits / temperature, then top-p; greedy: the
    model's own), computed on the device.

    With `reuse_cache`, the caches of the latest rows stay on the device (at least `max_batch`
    rows, or all of the latest call's; least recently used dropped first) until `release` or
    `load_weights`, which must follow any change of the model's weights."""

    def __init__(self, model: Any, pad_id: int | None = None, max_batch: int = 256, reuse_cache: bool = True):
        self.model = model
        self.pad_id = pad_id
        self.max_batch = max_batch
        self.reuse_cache = reuse_cache
        self._kept: OrderedDict[tuple[int, ...], _KeptRow] = OrderedDict()
        self._kept_lock = threading.Lock()  # `generate` runs off the event loop; `forget` on it
        self.encoded_tokens = 0  # prompt tokens run through the model (not read from a kept cache), for benchmarks
        # transformers 5.24 renamed forward's `past_key_values` to `cache`; 4.57 knows only the old name.
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: Sequence[int],
        stop_ids: Sequence[int],
        sampling: Sampling,
    ) -> list[Generation]:
        if len(prompts) != len(max_new_tokens):
            raise ValueError(f"{len(prompts)} prompts but {len(max_new_tokens)} token budgets")
        if any(budget < 1 for budget in max_new_tokens):
            raise ValueError("every prompt needs a token budget of at least 1")
        if any(len(prompt) < 1 for prompt in prompts):
            raise ValueError("every prompt needs at least one token")
        results: list[Generation] = []
        was_training = self.model.training
        self.model.eval()
        try:
            with autocast_for(self.model.device):
                for start in range(0, len(prompts), self.max_batch):
                    chunk = slice(start, start + self.max_batch)
                    results += self._generate(prompts[chunk], max_new_tokens[chunk], list(stop_ids), sampling)
        finally:
            self.model.train(was_training)
        with self._kept_lock:
            while len(self._kept) > max(self.max_batch, len(prompts)):
                self._kept.popitem(last=False)
        return results

    def release(self) -> None:
        with self._kept_lock:
            self._kept.clear()

    def forget(self, tokens: Sequence[int]) -> None:
        # The kept rows that begin `tokens` (an episode's last prompt and reply) serve nothing now.
        with self._kept_lock:
            for length in {len(key) for key in self._kept}:
                if length <= len(tokens):
                    self._kept.pop(tuple(tokens[:length]), None)

    def load_weights(self, model: Any) -> None:
        # Kept keys and values were computed with the old weights.
        self.release()

    def _take_kept(self, prompts: Sequence[Sequence[int]]) -> list[tuple[int, _KeptRow | None]]:
        """Per prompt, the longest kept row whose tokens begin it and leave at least one token to
        encode, and that row's length; (0, None) if none. Several prompts may start from one row
        (episodes of a group share their first prompt, and with one-token turns their history
        too). Rows taken are removed: their extensions are kept in their place."""
        with self._kept_lock:
            if not self.reuse_cache or not self._kept:
                return [(0, None)] * len(prompts)
            lengths = sorted({len(key) for key in self._kept}, reverse=True)
            taken: dict[tuple[int, ...], _KeptRow] = {}
            found = []
            for prompt in prompts:
                match: tuple[int, _KeptRow | None] = (0, None)
                for length in lengths:
                    key = tuple(prompt[:length])
                    if length < len(prompt) and key in self._kept:
                        match = (length, taken.setdefault(key, self._kept[key]))
                        break
                found.append(match)
            for key in taken:
                del self._kept[key]
            return found

    def _generate(
        self, prompts: Sequence[Sequence[int]], budgets: Sequence[int], stop_ids: list[int], sampling: Sampling
    ) -> list[Generation]:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        model = self.model
        device = model.device
        pad_id = self.pad_id if self.pad_id is not None else stop_ids[0]
        kept = self._take_kept(prompts)
        past = [length for length, _ in kept]
        fresh = [list(prompt[length:]) for prompt, length in zip(prompts, past)]
        self.encoded_tokens += sum(len(tokens) for tokens in fresh)
        rows, cached, width = len(prompts), max(past), max(len(tokens) for tokens in fresh)
        # Row r: [pad | its kept tokens | pad | its new tokens]; padding is masked out, and position
        # ids count only real tokens, so a row computes what it would alone.
        input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
        attention = torch.zeros((rows, cached + width), dtype=torch.long)
        for r, tokens in enumerate(fresh):
            input_ids[r, width - len(tokens):] = torch.tensor(tokens, dtype=torch.long)
            attention[r, cached - past[r] : cached] = 1
            attention[r, cached + width - len(tokens):] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, cached:]
        cache = DynamicCache(ddp_cache_data=_batched(kept, cached) if cached else None, config=model.config)
        del kept
        input_ids, attention, positions = input_ids.to(device), attention.to(device), positions.to(device)

        budget = torch.tensor(budgets, device=device)
        stops = torch.tensor(stop_ids, dtype=torch.long, device=device)
        done = torch.zeros(rows, dtype=torch.bool, device=device)
        tokens, logprobs = [], []
        logits = model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=1, **{self._cache_arg: cache}
        ).logits[:, -1]
        for step in range(max(budgets)):
            token, logprob = sample_next(logits.float(), sampling)
            token = token.masked_fill(done, pad_id)
            tokens.append(token)
            logprobs.append(logprob)
            done = done | torch.isin(token, stops) | (budget <= step + 1)
            if bool(done.all()):
                break
            attention = torch.cat([attention, attention.new_ones((rows, 1))], dim=1)
            positions = positions[:, -1:] + 1
            logits = model(
                input_ids=token[:, None], attention_mask=attention, position_ids=positions, **{self._cache_arg: cache}
            ).logits[:, -1]
        new_tokens = torch.stack(tokens, 1).tolist()
        new_logprobs = torch.stack(logprobs, 1).float().tolist()

        stop_set = set(stop_ids)
        generations = []
        for r, limit in enumerate(budgets):
            ids: list[int] = []
            for token in new_tokens[r][:limit]:
                ids.append(token)
                if token in stop_set:
                    break
            generations.append(Generation(ids, new_logprobs[r][: len(ids)], stopped=ids[-1] in stop_set))
        # Kept only where every layer is a plain, full-attention cache of one shape (sliding-window
        # or recurrent layers keep something else).
        layers = cache.layers
        if self.reuse_cache and all(type(layer) is DynamicLayer for layer in layers) and len({layer.keys.shape for layer in layers}) == 1:
            spans = []
            for r, generation in enumerate(generations):
                # Encoded: the prompt and every generated token but the last (never fed back).
                end = cached + width + len(generation.token_ids) - 1
                spans.append((slice(cached - past[r], cached), slice(cached + width - len(fresh[r]), end)))
            kept_rows = _cut_rows(layers, spans)
            del cache, layers
            with self._kept_lock:
                for prompt, generation, row in zip(prompts, generations, kept_rows):
                    self._kept[tuple(prompt) + tuple(generation.token_ids[:-1])] = row
        return generations


def _cut_rows(layers: Sequence[Any], spans: list[tuple[slice, slice]]) -> list[_KeptRow]:
    """Each row's keys and values out of the batch's cache, without its padding; each layer's
    batch tensors freed once its rows are cut out."""
    rows = [_KeptRow([], []) for _ in spans]
    for layer in layers:
        for r, (row, (first, second)) in enumerate(zip(rows, spans)):
            row.keys.append(torch.cat([layer.keys[r, :, first], layer.keys[r, :, second]], dim=1))
            row.values.append(torch.cat([layer.values[r, :, first], layer.values[r, :, second]], dim=1))
        layer.keys = layer.values = None
    return rows


def _batched(kept: list[tuple[int, _KeptRow | None]], width: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the kept keys and values of every row, right-aligned in `width` positions (rows
    without a kept cache are zeros, masked out like any padding). A generator: the cache copies a
    layer in before the next is made, and the rows' own tensors of a layer are freed once it is
    (a row several prompts start from is copied into each of them first)."""
    template = next(row for _, row in kept if row is not None)
    depth = len(template.keys)
    heads, _, dim = template.keys[0].shape
    rows = {id(row): row for _, row in kept if row is not None}.values()
    for layer in range(depth):
        keys = template.keys[layer].new_zeros((len(kept), heads, width, dim))
        values = template.values[layer].new_zeros((len(kept), heads, width, dim))
        for r, (length, row) in enumerate(kept):
            if row is not None:
                keys[r, :, width - length:] = row.keys[layer]
                values[r, :, width - length:] = row.values[layer]
        for row in rows:
            row.keys[layer] = row.values[layer] = None
        yield keys, values
        del keys, values


def sample_next(logits: torch.Tensor, sampling: Sampling) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token of each row of `logits` (rows, vocabulary; float) and its log-probability
    under the distribution it was drawn from. Greedy (temperature 0): the most likely token, with
    its log-prob under the model's own distribution. Otherwise the distribution is that of
    `model.generate` with the same settings: logits / temperature, then only the smallest set of
    most likely tokens whose probability reaches top_p; the draw uses torch's RNG the same way."""
    if sampling.temperature == 0:
        token = logits.argmax(-1)
        scores = logits
    else:
        scores = logits / sampling.temperature
        if sampling.top_p < 1:
            scores = _top_p(scores, sampling.top_p)
        token = torch.multinomial(scores.softmax(-1), num_samples=1).squeeze(1)
    return token, scores.log_softmax(-1).gather(-1, token[:, None]).squeeze(1)


def _top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """`scores` with -inf on the tokens outside the nucleus: going from the least likely token up,
    drop tokens while the probability dropped so far stays within 1 - top_p; the most likely
    token always stays."""
    ascending, order = scores.sort(-1)
    dropped = ascending.softmax(-1).cumsum(-1) <= 1 - top_p
    dropped[:, -1] = False
    return scores.masked_fill(dropped.scatter(-1, order, dropped), float("-inf"))
