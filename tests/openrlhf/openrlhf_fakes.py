"""Stand-ins for what OpenRLHF hands an agent on a GPU node: vLLM's engine and sampling params.

`FakeEngine.generate` answers like `RolloutRayActor.generate` (openrlhf 0.11.2): a RequestOutput
whose `outputs[0]` has `token_ids` (ending with the stop token when generation stopped on it),
`text` (without the stop token, as vLLM detokenizes), `finish_reason` ("stop" or "length") and,
when asked for, `logprobs` (one {token_id: Logprob} per generated token). Its policy plays the
guess environment by bisection, reading the conversation it is given.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from gymwire.servers.guess import GuessEnv
from gymwire.trainers.play import first_message
from gymwire.trainers.policy import Generation, PolicyBackend, Sampling

LOGPROB = -0.25


@dataclass
class FakeSamplingParams:
    """The fields of vllm.SamplingParams the executors read or set."""

    max_tokens: int | None = None
    logprobs: int | None = None
    temperature: float = 1.0


@dataclass
class Logprob:
    logprob: float


@dataclass
class CompletionOutput:
    token_ids: list[int]
    text: str
    finish_reason: str
    logprobs: list[dict[int, Logprob]] | None


@dataclass
class RequestOutput:
    outputs: list[CompletionOutput]


_HINT = re.compile(r"(-?\d+) is wrong\. Go (higher|lower)\.")


def bisection_guess(conversation: str, low: int = 1, high: int = 100) -> int:
    for number, direction in _HINT.findall(conversation):
        if direction == "higher":
            low = max(low, int(number) + 1)
        else:
            high = min(high, int(number) - 1)
    return (low + high) // 2


@dataclass
class Call:
    prompt_token_ids: list[int]
    max_tokens: int | None


@dataclass
class FakeEngine:
    tokenizer: Any
    # Words said before the number, to make turns longer than one token when a test needs it.
    preamble: str = ""
    calls: list[Call] = field(default_factory=list)
    # Called (and awaited) before answering call number N (1-based), e.g. to drop the connection.
    before_call: dict[int, Callable[[], Any]] = field(default_factory=dict)
    # Always say this number instead of bisecting (a policy that never wins: episodes run to the limit).
    fixed_guess: int | None = None

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        self.calls.append(Call(list(prompt_token_ids), sampling_params.max_tokens))
        hook = self.before_call.get(len(self.calls))
        if hook is not None:
            result = hook()
            if asyncio.iscoroutine(result):
                await result
        await asyncio.sleep(0)  # a real engine yields to the loop while it decodes
        conversation = self.tokenizer.decode(prompt_token_ids, skip_special_tokens=False)
        guess = bisection_guess(conversation) if self.fixed_guess is None else self.fixed_guess
        text = f"{self.preamble} {guess}"
        tokens = self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        finish = "stop"
        if sampling_params.max_tokens is not None and len(tokens) > sampling_params.max_tokens:
            tokens, finish = tokens[: sampling_params.max_tokens], "length"
        visible = tokens[:-1] if finish == "stop" else tokens
        logprobs = None
        if sampling_params.logprobs is not None:
            logprobs = [{token: Logprob(LOGPROB)} for token in tokens]
        return RequestOutput([CompletionOutput(tokens, self.tokenizer.decode(visible), finish, logprobs)])


GUESS_FIRST_OBSERVATION = "I am thinking of a whole number from 1 to 100. Guess it."
GUESS_CORPUS = [
    first_message(GuessEnv.info().instructions, GUESS_FIRST_OBSERVATION),
    GUESS_FIRST_OBSERVATION,
    "I did not see a number. Answer with one whole number from 1 to 100.",
    "Correct! The number was 7.",
    "50 is wrong. Go higher. 50 is wrong. Go lower.",
    "gymwire probe question gymwire probe answer",
    "Let me think step by step about the number",
]


class BisectionPolicy(PolicyBackend):
    """A token policy that plays guess by bisection, reading the conversation it is given: the
    number, then the stop token, each with log-prob LOGPROB (cut at the budget)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def generate(self, prompts, max_new_tokens, stop_ids, sampling):
        out = []
        for prompt, budget in zip(prompts, max_new_tokens):
            guess = bisection_guess(self.tokenizer.decode(list(prompt), skip_special_tokens=False))
            ids = (self.tokenizer.encode(f" {guess}", add_special_tokens=False) + [stop_ids[0]])[:budget]
            out.append(Generation(ids, [LOGPROB] * len(ids), stopped=ids[-1] in stop_ids))
        return out


@dataclass
class PolicyEngine:
    """vLLM's engine interface (as FakeEngine) over a gymwire policy backend, so that the OpenRLHF
    agent can play the same policy as training and eval."""

    policy: PolicyBackend
    tokenizer: Any
    stop_ids: list[int]

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        sampling = Sampling(sampling_params.temperature)
        [generation] = await asyncio.to_thread(
            self.policy.generate, [list(prompt_token_ids)], [sampling_params.max_tokens], self.stop_ids, sampling
        )
        ids = generation.token_ids
        logprobs = [{token: Logprob(lp)} for token, lp in zip(ids, generation.logprobs)] if sampling_params.logprobs is not None else None
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return RequestOutput([CompletionOutput(ids, text, "stop" if generation.stopped else "length", logprobs)])
