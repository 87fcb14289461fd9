"""Policy backend on vLLM (needs `pip install vllm` and a CUDA GPU).

UNTESTED: vLLM does not install on the CPU-only machines this project is built and tested on, so
no test exercises this module. It is written against vLLM's documented offline API (v0.10 and
later, the V1 engine): `LLM.generate` with `TokensPrompt` and per-prompt `SamplingParams`, the
engine option `logprobs_mode="processed_logprobs"`, `worker_extension_cls` with
`LLM.collective_rpc` to run a method in every worker, and `LLM.reset_prefix_cache`. Check it on a
GPU before relying on it (docs/training.md says what to check).

What vLLM gives without more code: continuous batching (a finished sequence frees its slot at
once) and automatic prefix caching (an episode's next turn reuses the cached blocks of its
history), the two things TransformersPolicy does by hand.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..policy import Generation, PolicyBackend, Sampling

__all__ = ["VLLMPolicy", "TrainerWeights"]


class VLLMPolicy(PolicyBackend):
    """Generates with a vLLM engine holding a copy of the trainer's model.

    The engine loads the checkpoint folder `checkpoint`; `load_weights(model)` copies the
    trainer's current weights into it after each update, and empties its prefix cache (blocks
    computed with the old weights). Log-probs are the processed ones (after temperature and
    top-p), i.e. of the distribution sampled from, as TransformersPolicy reports them.
    `engine_options` go to `vllm.LLM` (e.g. gpu_memory_utilization, dtype, max_model_len).
    """

    def __init__(self, checkpoint: str, tokenizer: Any, **engine_options: Any):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError(
                "model.backend 'vllm' needs the vllm package (pip install vllm, on a machine with a CUDA GPU); "
                "use backend 'transformers' otherwise"
            ) from exc
        options = {
            # The trainer's model, optimizer and activations share the GPU with the engine.
            "gpu_memory_utilization": 0.4,
            "logprobs_mode": "processed_logprobs",
            "enable_prefix_caching": True,
            "worker_extension_cls": f"{__name__}.TrainerWeights",
            **engine_options,
        }
        self.llm = LLM(model=checkpoint, tokenizer=tokenizer.name_or_path, **options)

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
                top_p=sampling.top_p,  # top_k left at its default: no cut, as in TransformersPolicy
                min_p=0.0,
                repetition_penalty=1.0,
                presence_penalty=0.0,
                frequency_penalty=0.0,
                stop_token_ids=list(stop_ids),
                logprobs=0,  # the sampled token's only
                detokenize=False,
            )
            for budget in max_new_tokens
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
        stops = set(stop_ids)
        generations = []
        for output in outputs:
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            logprobs = [entry[token].logprob for token, entry in zip(ids, completion.logprobs)]
            generations.append(Generation(ids, logprobs, stopped=bool(ids) and ids[-1] in stops))
        return generations

    def load_weights(self, model: Any) -> None:
        # CPU copies travel through vLLM's RPC serialisation to the worker, which copies them into
        # its own parameters (casting to its dtype). For models far larger than SmolLM2-135M,
        # CUDA IPC handles would avoid the round trip through host memory.
        weights = [(name, tensor.detach().to("cpu")) for name, tensor in model.state_dict().items()]
        self.llm.collective_rpc("load_trainer_weights", args=(weights,))
        self.llm.reset_prefix_cache()


class TrainerWeights:
    """Mixed into vLLM's worker class (`worker_extension_cls`): a method `collective_rpc` can call
    by name in every worker. `self` is the worker; `model_runner.model.load_weights` takes
    (name, tensor) pairs named as in a Hugging Face checkpoint."""

    def load_trainer_weights(self, weights: list[tuple[str, Any]]) -> None:
        self.model_runner.model.load_weights(weights=weights)  # type: ignore[attr-defined]
