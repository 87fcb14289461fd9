"""What a rollout asks of a policy: token ids in, sampled token ids and their log-probs out; or,
for backends that only speak chat messages, messages in and reply text out.

Backends: `TransformersPolicy` (trainers/models/hf_policy.py; CPU or one CUDA GPU) and `VLLMPolicy`
(trainers/models/vllm_policy.py; needs the `vllm` package) work on token ids and can train;
`OpenAIPolicy` (trainers/models/openai_policy.py) calls any OpenAI-compatible chat-completions endpoint
and can only evaluate. `backends.make_policy` picks a token backend by name for the trainer (this
module imports no backend: they import it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

__all__ = ["Generation", "Reply", "PolicyError", "Sampling", "PolicyBackend", "POLICY_BACKENDS"]

POLICY_BACKENDS = ("transformers", "vllm")


@dataclass(frozen=True)
class Sampling:
    """How to sample. temperature 0 is greedy decoding. `seed` seeds a server-side sampler (token
    backends follow torch's seeded generator). Nothing else reshapes the distribution: no top-k or
    min-p cut, no repetition, presence or frequency penalty. `parameters()` spells all of it out,
    so that a backend's own defaults never apply unseen (llama.cpp's server applies a repeat
    penalty of 1.1, top-k 40 and min-p 0.05 to requests that do not say otherwise)."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def parameters(self) -> dict[str, Any]:
        """Every sampling parameter and its value, neutral ones included (what run metadata records)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": 0,  # 0: no cut
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "seed": self.seed,
        }

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Generation:
    """One continuation, exactly as sampled. `logprobs[i]` is the log-probability of `token_ids[i]`
    under the distribution it was sampled from. `stopped`: it ended on a stop token (which is the
    last of `token_ids`); otherwise the token budget cut it. `text`: the reply as the backend
    detokenized it (None: the episode decodes `token_ids` without special tokens)."""

    token_ids: list[int]
    logprobs: list[float]
    stopped: bool
    text: str | None = None


@dataclass
class Reply:
    """One answer to chat messages. `stopped`: the model ended its turn (else the token budget cut
    it). Token counts are the server's own figures."""

    text: str
    stopped: bool
    prompt_tokens: int
    completion_tokens: int


class PolicyError(RuntimeError):
    """The policy could not answer (after any retries). `kind` names the failure for summaries,
    e.g. "policy.timeout", "policy.http_429", "policy.empty_completion"."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class PolicyBackend(ABC):
    """Generates continuations of token-id prompts, as a batch; or, where `prompts` is "messages",
    answers chat messages one conversation per call (`chat`)."""

    #: "tokens": `generate` on token ids (token-in/token-out: training and evaluation);
    #: "messages": `chat` on chat messages built from the environment's text (evaluation only).
    prompts: ClassVar[str] = "tokens"

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: Sequence[int],
        stop_ids: Sequence[int],
        sampling: Sampling,
    ) -> list[Generation]:
        """One continuation per prompt, at most `max_new_tokens[i]` (>= 1) tokens for prompt i,
        ending at the first token in `stop_ids` (kept). A backend may keep what it computed for
        a prompt and its continuation, to start a later prompt that extends them from there
        (an episode's next turn); `release` and `load_weights` drop it."""

    async def chat(self, messages: Sequence[dict[str, str]], max_new_tokens: int, sampling: Sampling) -> Reply:
        """The assistant's next reply to `messages` (role/content dicts), at most `max_new_tokens`
        tokens. Raises PolicyError when it cannot answer."""
        raise NotImplementedError(f"{type(self).__name__} generates from token ids (generate), not chat messages")

    async def close(self) -> None:
        """Release connections, on the event loop that used them. Most backends hold none."""

    def release(self) -> None:
        """Free what the backend kept between `generate` calls for reuse (a rollout ended)."""

    def forget(self, tokens: Sequence[int]) -> None:
        """The episode whose tokens these are ended: free what was kept for continuing it."""

    def load_weights(self, model: Any) -> None:
        """Bring the backend up to date with the trainer's `model` after an update (also: drop
        what was kept for reuse, computed with the old weights)."""
