"""Policy backend on any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, llama.cpp's
server, hosted APIs), through the `openai` client (`pip install 'gymwire[eval]'`).

The client retries connection errors, timeouts, 408/409/429 and 5xx answers with exponential
backoff, honouring Retry-After; what still fails becomes a PolicyError whose kind names it, and
the evaluation records it as that episode's error. Evaluation only: there are no token ids.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, Sequence

from gymwire.sdk.environment import MissingExtra

from ..policy import Generation, PolicyBackend, PolicyError, Reply, Sampling

__all__ = ["OpenAIPolicy", "request_parameters"]


class OpenAIPolicy(PolicyBackend):
    """`base_url` like http://127.0.0.1:8080/v1; `model` the name the server knows the model by.
    The API key is read from the environment variable `api_key_env` (servers on loopback usually
    need none). At most `concurrency` requests are in flight at once."""

    prompts = "messages"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 4,
        concurrency: int = 64,
        standard_only: bool = False,
    ):
        try:
            import openai
        except ImportError as exc:
            raise MissingExtra("the OpenAI-compatible backend needs the openai package: pip install 'gymwire[eval]'") from exc
        self._openai = openai
        self.model = model
        self.base_url = base_url
        self.timeout = timeout
        self.standard_only = standard_only
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            # The client insists on a key; local servers ignore it.
            api_key=os.environ.get(api_key_env) or "none",
            timeout=timeout,
            max_retries=max_retries,
        )
        self._slots = asyncio.Semaphore(concurrency)

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: Sequence[int], stop_ids: Sequence[int], sampling: Sampling) -> list[Generation]:
        raise TypeError(
            "the OpenAI-compatible backend answers chat messages, not token ids: it can evaluate "
            "(gymwire eval) but not train; train with model.backend transformers or vllm"
        )

    async def chat(self, messages: Sequence[dict[str, str]], max_new_tokens: int, sampling: Sampling) -> Reply:
        openai = self._openai
        async with self._slots:
            try:
                # A last line of defence against a server that accepts the request and never
                # answers: the client's own timeout covers each attempt, this covers all of them.
                response = await asyncio.wait_for(
                    self._client.chat.completions.create(
                        model=self.model, messages=list(messages), **self.request_parameters(sampling, max_new_tokens)
                    ),
                    timeout=self.timeout * (self._client.max_retries + 1) + 60 * self._client.max_retries,
                )
            except (openai.APITimeoutError, asyncio.TimeoutError) as exc:
                raise PolicyError("policy.timeout", f"no answer from {self.base_url} within {self.timeout:g} s (after retries)") from exc
            except openai.APIConnectionError as exc:
                raise PolicyError("policy.connection", f"cannot reach {self.base_url}: {_cause(exc)}") from exc
            except openai.AuthenticationError as exc:
                raise PolicyError("policy.unauthorized", f"{self.base_url} refused the API key (HTTP 401): {_body(exc)}") from exc
            except openai.APIStatusError as exc:
                raise PolicyError(f"policy.http_{exc.status_code}", f"{self.base_url} answered HTTP {exc.status_code}: {_body(exc)}") from exc
            except (openai.APIResponseValidationError, json.JSONDecodeError) as exc:
                raise PolicyError("policy.malformed_response", f"{self.base_url} answered something that is not a chat completion: {exc}") from exc
        return _reply(response, self.base_url)


    def request_parameters(self, sampling: Sampling, max_new_tokens: int) -> dict[str, Any]:
        return request_parameters(sampling, max_new_tokens, self.standard_only)

    async def close(self) -> None:
        await self._client.close()


def request_parameters(sampling: Sampling, max_new_tokens: int, standard_only: bool = False) -> dict[str, Any]:
    """What every request sends besides the model and messages: all sampling parameters,
    explicitly. The non-standard ones go in the body under the names llama.cpp's server
    (repeat_penalty) and vLLM (repetition_penalty) read; `standard_only` leaves them out for APIs
    that refuse unknown fields (then the server's defaults apply to them: recorded as unsent)."""
    every = sampling.parameters()
    sent: dict[str, Any] = {
        "max_tokens": max_new_tokens,
        "n": 1,
        **{name: every[name] for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty")},
    }
    if every["seed"] is not None:
        sent["seed"] = every["seed"]
    if not standard_only:
        sent["extra_body"] = {
            "top_k": every["top_k"],
            "min_p": every["min_p"],
            "repeat_penalty": every["repetition_penalty"],
            "repetition_penalty": every["repetition_penalty"],
        }
    return sent


def _reply(response: Any, base_url: str) -> Reply:
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list):
        raise PolicyError("policy.malformed_response", f"{base_url} answered without choices: {str(response)[:200]!r}")
    if not choices or not getattr(choices[0].message, "content", None):
        raise PolicyError("policy.empty_completion", f"{base_url} answered an empty completion")
    choice = choices[0]
    usage = getattr(response, "usage", None)
    return Reply(
        text=choice.message.content,
        stopped=choice.finish_reason != "length",
        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
    )


def _cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


def _body(exc: Any) -> str:
    return (getattr(exc, "message", "") or str(exc))[:200]
