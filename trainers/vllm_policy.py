"""Policy backend on vLLM (needs `pip install vllm` and a CUDA GPU).

Not exercised by the test suite: vLLM does not install on the CPU-only CI machines. It follows
vLLM's documented offline API (`LLM.generate` with `TokensPrompt`, per-prompt `SamplingParams`,
`LLM.collective_rpc`); check it on a GPU before relying on it.
"""

from __future__ import annotations

from typing import Any, Sequence

from .policy import Generation, PolicyBackend, Sampling

__all__ = ["VLLMPolicy"]


class VLLMPolicy(PolicyBackend):
    """Generates with a vLLM engine holding a copy of the trainer's model.

    The engine loads the checkpoint at `model.name_or_path`; `load_weights(model)` copies the
    trainer's current weights into it after each update. Log-probs are the processed ones (after
    temperature and top-p, `logprobs_mode="processed_logprobs"`), i.e. of the distribution sampled
    from, as TransformersPolicy reports them. `engine_options` go to `vllm.LLM`.
    """

    def __init__(self, model: Any, tokenizer: Any, **engine_options: Any):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError(
                "model.backend 'vllm' needs the vllm package (pip install vllm, on a machine with a CUDA GPU); "
                "use backend 'transformers' otherwise"
            ) from exc
        options = {"gpu_memory_utilization": 0.4, "logprobs_mode": "processed_logprobs", **engine_options}
        self.llm = LLM(model=model.name_or_path, tokenizer=tokenizer.name_or_path, **options)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: Sequence[int],
        stop_ids: Sequence[int],
        sampling: Sampling,
    ) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [
            SamplingParams(
                max_tokens=budget,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                stop_token_ids=list(stop_ids),
                logprobs=0,  # just the sampled token's
                detokenize=False,
            )
            for budget in max_new_tokens
        ]
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False
        )
        stops = set(stop_ids)
        generations = []
        for output in outputs:
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            logprobs = [entry[token].logprob for token, entry in zip(ids, completion.logprobs)]
            generations.append(Generation(ids, logprobs, stopped=bool(ids) and ids[-1] in stops))
        return generations

    def load_weights(self, model: Any) -> None:
        weights = [(name, tensor.detach().cpu()) for name, tensor in model.state_dict().items()]
        self.llm.collective_rpc(_load_into_worker, args=(weights,))


def _load_into_worker(worker: Any, weights: list[tuple[str, Any]]) -> None:
    worker.model_runner.model.load_weights(weights=weights)
