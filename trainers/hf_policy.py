"""Policy backend on a transformers causal LM: the trainer's own model, on CPU or one CUDA GPU."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .policy import Generation, PolicyBackend, Sampling

__all__ = ["TransformersPolicy", "autocast_for"]


class TransformersPolicy(PolicyBackend):
    """Samples with `model.generate` on left-padded batches; log-probs come from the processed
    scores, i.e. the distribution actually sampled from (temperature and top-p applied)."""

    def __init__(self, model: Any, pad_id: int | None = None, max_batch: int = 256):
        self.model = model
        self.pad_id = pad_id
        self.max_batch = max_batch

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
        results: list[Generation] = []
        for start in range(0, len(prompts), self.max_batch):
            chunk = slice(start, start + self.max_batch)
            results += self._generate(prompts[chunk], max_new_tokens[chunk], list(stop_ids), sampling)
        return results

    def _generate(
        self, prompts: Sequence[Sequence[int]], budgets: Sequence[int], stop_ids: list[int], sampling: Sampling
    ) -> list[Generation]:
        from transformers import GenerationConfig

        pad_id = self.pad_id if self.pad_id is not None else stop_ids[0]
        device = self.model.device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            attention[row, width - len(prompt):] = 1
        if sampling.temperature == 0:
            strategy: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        else:
            # top_k=0: transformers samples from the top 50 unless told otherwise.
            strategy = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
        config = GenerationConfig(
            max_new_tokens=max(budgets),
            **strategy,
            eos_token_id=stop_ids,
            pad_token_id=pad_id,
            output_scores=True,
            return_dict_in_generate=True,
        )
        was_training = self.model.training
        self.model.eval()
        try:
            with autocast_for(device):
                out = self.model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=config
                )
        finally:
            self.model.train(was_training)
        new_tokens = out.sequences[:, width:].cpu()
        # (steps, batch, vocab) -> log-prob of each sampled token.
        scores = torch.stack(out.scores).float().log_softmax(-1).cpu()
        chosen = scores.gather(-1, new_tokens.T.unsqueeze(-1)).squeeze(-1).T
        stops = set(stop_ids)
        generations = []
        for row, budget in enumerate(budgets):
            ids: list[int] = []
            for token in new_tokens[row, :budget].tolist():
                ids.append(token)
                if token in stops:
                    break
            generations.append(Generation(ids, chosen[row, : len(ids)].tolist(), stopped=ids[-1] in stops))
        return generations


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA; full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)
