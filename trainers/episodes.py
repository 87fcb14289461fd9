"""Play one episode at a time, each as its own coroutine: how `gymwire eval` runs episodes.

Training plays a batch in lockstep (rollout.collect_episodes) so that a seeded run repeats
exactly; evaluation instead lets every episode go at its own pace, so a slow one holds up no
other and each is written the moment it ends. Token-level backends still generate in batches:
`GenerationBatcher` gathers the requests of all episodes waiting for the model into one
`generate` call. Chat-message backends (OpenAI-compatible endpoints) get one request per turn.

Both kinds record episodes in the training rollouts' schema (rollout.Episode).
"""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from gymwire.protocol import ProtocolError
from gymwire.sdk.client import GymClient

from .chat import ChatFormat
from .policy import Generation, PolicyBackend, PolicyError, Sampling
from .rollout import (
    ERROR,
    TERMINATED,
    TOKEN_BUDGET,
    TRUNCATED,
    Episode,
    EpisodeSpec,
    RolloutSettings,
    Turn,
    first_message,
    open_session,
    record_turn,
    start_episode,
    step_deadline_ms,
)

__all__ = ["PromptConfig", "GenerationBatcher", "play_episode"]


@dataclass(frozen=True)
class PromptConfig:
    """How an environment is put to the model. `system`: a system message (None: the chat
    template's default); `examples`: few-shot messages ({"role", "content"}) before the first
    user turn; `action_pattern`: a regular expression whose first group (or whole match, the
    last one in the reply) is sent as the action, instead of the whole reply (environments read
    ReAct `Action:` lines themselves); `instructions`: begin with the environment's instructions."""

    system: str | None = None
    examples: tuple[dict[str, str], ...] = field(default_factory=tuple)
    action_pattern: str | None = None
    instructions: bool = True

    def __post_init__(self) -> None:
        for message in self.examples:
            if set(message) != {"role", "content"} or message["role"] not in ("user", "assistant"):
                raise ValueError(f"a few-shot example is a {{role: user|assistant, content: ...}} message, got {message!r}")
        if self.action_pattern is not None:
            try:
                re.compile(self.action_pattern)
            except re.error as exc:
                raise ValueError(f"action_pattern {self.action_pattern!r} is not a regular expression: {exc}") from exc

    def action(self, reply: str) -> str:
        """What goes to the environment: the pattern's last match in the reply, or the reply."""
        if self.action_pattern is None:
            return reply
        matches = list(re.finditer(self.action_pattern, reply))
        if not matches:
            return reply
        last = matches[-1]
        return (last.group(1) if last.re.groups else last.group(0)).strip()


class GenerationBatcher:
    """Turns one-prompt requests from concurrent episodes into batched `policy.generate` calls,
    run off the event loop. Requests that arrive while a batch generates form the next batch."""

    def __init__(self, policy: PolicyBackend, stop_ids: Sequence[int], sampling: Sampling, gather_s: float = 0.02):
        self.policy = policy
        self.stop_ids = list(stop_ids)
        self.sampling = sampling
        self.gather_s = gather_s  # first wait, so that episodes starting together share a batch
        self._pending: list[tuple[Sequence[int], int, asyncio.Future[Generation]]] = []
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0

    async def generate(self, prompt: Sequence[int], budget: int) -> Generation:
        future: asyncio.Future[Generation] = asyncio.get_running_loop().create_future()
        self._pending.append((prompt, budget, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        await asyncio.sleep(self.gather_s)
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending, []
            prompts, budgets, futures = zip(*batch)
            try:
                generations = await loop.run_in_executor(
                    None, self.policy.generate, list(prompts), list(budgets), self.stop_ids, self.sampling
                )
            except Exception as exc:  # the model failed: every episode of the batch hears why
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            for future, generation in zip(futures, generations):
                if not future.done():
                    future.set_result(generation)


async def play_episode(
    client: GymClient,
    policy: PolicyBackend,
    spec: EpisodeSpec,
    settings: RolloutSettings,
    prompt: PromptConfig,
    instructions: str,
    chat: ChatFormat | None = None,
    batcher: GenerationBatcher | None = None,
) -> Episode:
    """Play `spec` to its end. Token backends need `chat` and `batcher`. Failures of the policy
    or the environment end the episode with finish "error" and their reason; it is returned,
    never raised."""
    instructions = instructions if prompt.instructions else ""
    try:
        session = await open_session(client, spec, settings)
    except ProtocolError as exc:
        return _failed(spec, settings, f"env.{exc.code.name.lower()}", str(exc))
    step = functools.partial(session.step, deadline_ms=step_deadline_ms(client, settings))
    try:
        if policy.prompts == "messages":
            return await _play_messages(session, step, policy, spec, settings, prompt, first_message(instructions, session))
        assert chat is not None and batcher is not None
        return await _play_tokens(session, step, chat, batcher, spec, settings, prompt, first_message(instructions, session))
    finally:
        if session.id in client.sessions:
            try:
                await session.close()
            except (ProtocolError, OSError):
                pass  # the episode is recorded; the server reaps what it could not close


async def _play_tokens(
    session: Any,
    step: Callable[[str], Awaitable[Any]],
    chat: ChatFormat,
    batcher: GenerationBatcher,
    spec: EpisodeSpec,
    settings: RolloutSettings,
    prompt: PromptConfig,
    user_text: str,
) -> Episode:
    episode = start_episode(chat, spec, session, settings, user_text, prompt.examples)
    while not episode.finish:
        budget = min(settings.turn_tokens, settings.episode_tokens - len(episode.tokens))
        generation = await batcher.generate(episode.tokens, budget)
        action = prompt.action(chat.tokenizer.decode(generation.token_ids, skip_special_tokens=True))
        try:
            result: Any = await step(action)
        except ProtocolError as exc:
            result = exc
        record_turn(episode, chat, generation, action, result, settings)
    episode.text = chat.tokenizer.decode(episode.tokens)
    episode.usage = {
        "prompt_tokens": episode.prompt_length,
        "completion_tokens": episode.generated_tokens,
        "requests": len(episode.turns) + (episode.finish == ERROR),
    }
    return episode


async def _play_messages(
    session: Any,
    step: Callable[[str], Awaitable[Any]],
    policy: PolicyBackend,
    spec: EpisodeSpec,
    settings: RolloutSettings,
    prompt: PromptConfig,
    user_text: str,
) -> Episode:
    messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
    messages += [dict(m) for m in prompt.examples] + [{"role": "user", "content": user_text}]
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0}
    episode = Episode(
        env=settings.env,
        spec=spec,
        options=dict(settings.options),
        max_turns=session.max_turns,
        prompt_length=0,
        tokens=[],
        loss_mask=[],
        logprobs=[],
        messages=messages,
        usage=usage,
    )
    while not episode.finish:
        try:
            reply = await policy.chat(messages, settings.turn_tokens, settings.sampling)
        except PolicyError as exc:
            episode.error, episode.error_kind, episode.finish = str(exc), exc.kind, ERROR
            break
        usage["requests"] += 1
        usage["prompt_tokens"] += reply.prompt_tokens
        usage["completion_tokens"] += reply.completion_tokens
        messages.append({"role": "assistant", "content": reply.text})
        action = prompt.action(reply.text)
        try:
            result = await step(action)
        except ProtocolError as exc:
            episode.error, episode.error_kind, episode.finish = str(exc), f"env.{exc.code.name.lower()}", ERROR
            break
        episode.turns.append(Turn(action, result.observation.text, result.reward, None, None))
        if result.terminated or result.truncated:
            if result.metrics is not None:
                episode.success, episode.score = result.metrics.success, result.metrics.score
            episode.finish = TERMINATED if result.terminated else TRUNCATED
            break
        messages.append({"role": "user", "content": result.observation.text})
        # The server's count of this conversation so far, plus room for the next reply.
        if reply.prompt_tokens + reply.completion_tokens + settings.turn_tokens > settings.episode_tokens:
            episode.score = episode.reward
            episode.finish = TOKEN_BUDGET
    episode.text = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)
    return episode


def _failed(spec: EpisodeSpec, settings: RolloutSettings, kind: str, message: str) -> Episode:
    return Episode(
        env=settings.env,
        spec=spec,
        options=dict(settings.options),
        max_turns=settings.max_turns or 0,
        prompt_length=0,
        tokens=[],
        loss_mask=[],
        logprobs=[],
        finish=ERROR,
        error=message,
        error_kind=kind,
    )
