"""Collect episodes: many at once through one gymwire client, token-in/token-out.

All episodes of a batch advance turn by turn together: the policy generates for every episode
still running in one batched call, then all actions go to the server in batched step frames. Batch
composition therefore depends only on the episodes, not on network timing, so a seeded run
samples the same tokens every time (exact resume relies on it). Each turn's prompt is the whole
episode so far; a backend that kept the previous turn's cache (TransformersPolicy) encodes only
the tokens added since, and the cache is released when the batch ends.

An episode's `tokens` are the prompt, then per turn the policy's tokens exactly as generated
(loss mask 1, with their sampling log-probs) and the environment's answer rendered by the model's
chat template (loss mask 0). The turn limit goes to the server at open (`max_turns`), which
truncates the episode; token budgets are enforced here.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from gymwire.protocol import ProtocolError
from gymwire.sdk.client import ClientSession, Disconnected, GymClient
from gymwire.sdk.batching import step_sessions
from gymwire.sdk.pool import GymPool
from gymwire.sdk.sync import SyncGymClient

from .chat import ChatFormat
from .policy import Generation, PolicyBackend, Sampling

__all__ = [
    "EpisodeSpec",
    "RolloutSettings",
    "Turn",
    "Episode",
    "collect_episodes",
    "first_message",
    "start_episode",
    "record_turn",
    "write_jsonl",
    "read_jsonl",
    "RolloutClient",
]

# Why an episode ended.
TERMINATED = "terminated"  # the environment ended it (goal reached or failed)
TRUNCATED = "truncated"  # the server's turn limit
TOKEN_BUDGET = "token_budget"  # the next turn would not fit the per-episode token budget
ERROR = "error"  # the server answered a step with an error (TIMEOUT: over the step timeout), or was lost
SERVER_LOST = "env.server_lost"  # error_kind of an episode whose server (a pool's replica) was lost
REOPENS = 2  # times one episode starts over on another replica before it is dropped


@dataclass(frozen=True)
class EpisodeSpec:
    """Which task to play. `group`: episodes of one group play the same task (GRPO, RLOO)."""

    split: str | None = None
    index: int | None = None
    seed: int | None = None
    group: int = 0


@dataclass(frozen=True)
class RolloutSettings:
    """`max_turns` goes to the server at open; `turn_tokens` caps one generation and
    `episode_tokens` the whole token sequence (prompt, actions and observations)."""

    env: str
    options: dict[str, Any] = field(default_factory=dict)
    max_turns: int | None = None
    turn_tokens: int = 64
    episode_tokens: int = 4096
    sampling: Sampling = Sampling()
    instructions: bool = True  # prefix the first observation with the environment's instructions
    step_timeout: float | None = None  # seconds the server may take for an open or a step (None: no limit)
    # An episode whose replica is lost: "reopen" plays it again from its start on another replica of
    # the pool (up to REOPENS times), "drop" ends it as an error; the batch goes on either way.
    on_server_lost: str = "reopen"

    def __post_init__(self) -> None:
        if self.on_server_lost not in ("reopen", "drop"):
            raise ValueError(f"on_server_lost must be 'reopen' or 'drop', got {self.on_server_lost!r}")
        if self.turn_tokens < 1 or self.episode_tokens < 2:
            raise ValueError(
                f"token budgets must allow generation: turn_tokens={self.turn_tokens} (>= 1), "
                f"episode_tokens={self.episode_tokens} (>= 2)"
            )


@dataclass
class Turn:
    action: str
    observation: str
    reward: float
    start: int | None  # index in `tokens` of the turn's first generated token (None: chat backends have no tokens)
    end: int | None  # index in `tokens` of its last generated token


@dataclass
class Episode:
    env: str
    spec: EpisodeSpec
    options: dict[str, Any]
    max_turns: int
    prompt_length: int
    tokens: list[int]
    loss_mask: list[int]
    logprobs: list[float]  # sampling log-prob of generated tokens, 0.0 on prompt/environment tokens
    turns: list[Turn] = field(default_factory=list)
    finish: str = ""
    success: bool = False
    score: float = 0.0
    error: str | None = None
    text: str = ""
    # Chat-message backends (no token ids): the conversation exactly as sent, and the server's
    # token counts {"prompt_tokens", "completion_tokens", "requests"} summed over the episode.
    messages: list[dict[str, str]] | None = None
    usage: dict[str, int] | None = None
    error_kind: str | None = None  # short class of `error` for summaries, e.g. "policy.timeout"

    @property
    def reward(self) -> float:
        return sum(turn.reward for turn in self.turns)

    @property
    def generated_tokens(self) -> int:
        if self.usage is not None and not self.tokens:
            return self.usage["completion_tokens"]
        return sum(self.loss_mask)

    def to_json(self) -> dict[str, Any]:
        """Readable fields first: what happened, then the conversation, then the token arrays."""
        return {
            "env": self.env,
            "task": {k: v for k, v in asdict(self.spec).items() if v is not None},
            "options": self.options,
            "success": self.success,
            "score": self.score,
            "reward": self.reward,
            "finish": self.finish,
            "error": self.error,
            "max_turns": self.max_turns,
            "turns": [asdict(turn) for turn in self.turns],
            "text": self.text,
            "prompt_length": self.prompt_length,
            "tokens": self.tokens,
            "loss_mask": self.loss_mask,
            "logprobs": self.logprobs,
            "messages": self.messages,
            "usage": self.usage,
            "error_kind": self.error_kind,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Episode":
        return cls(
            env=data["env"],
            spec=EpisodeSpec(**data["task"]),
            options=data["options"],
            max_turns=data["max_turns"],
            prompt_length=data["prompt_length"],
            tokens=data["tokens"],
            loss_mask=data["loss_mask"],
            logprobs=data["logprobs"],
            turns=[Turn(**turn) for turn in data["turns"]],
            finish=data["finish"],
            success=data["success"],
            score=data["score"],
            error=data["error"],
            text=data["text"],
            messages=data.get("messages"),
            usage=data.get("usage"),
            error_kind=data.get("error_kind"),
        )


class _Running:
    """An episode in progress and its session."""

    def __init__(self, episode: Episode, session: ClientSession):
        self.episode = episode
        self.session = session
        self.done = False
        self.reopens = 0


def step_deadline_ms(client: GymClient | GymPool, settings: RolloutSettings) -> int | None:
    """The step timeout as the server's deadline. A server without `deadlines` gets none (and a
    hung step there stalls: there is no safe way to give up on a step the server may still run)."""
    if settings.step_timeout is None or not client.supports("deadlines"):
        return None
    return max(1, round(settings.step_timeout * 1000))


async def open_session(client: GymClient | GymPool, spec: EpisodeSpec, settings: RolloutSettings) -> ClientSession:
    """Open `spec`'s session with the settings' options, turn limit and step timeout."""
    return await client.open(
        settings.env,
        split=spec.split,
        index=spec.index,
        seed=spec.seed,
        options=settings.options,
        max_turns=settings.max_turns,
        deadline_ms=step_deadline_ms(client, settings),
    )


async def collect_episodes(
    client: GymClient | GymPool,
    policy: PolicyBackend,
    chat: ChatFormat,
    specs: Sequence[EpisodeSpec],
    settings: RolloutSettings,
) -> list[Episode]:
    """Play one episode per spec, all concurrently; episodes come back in the order of `specs`.
    With a pool, sessions spread over its replicas, and a lost replica costs only its episodes
    (see RolloutSettings.on_server_lost)."""
    instructions = ""
    if settings.instructions:
        instructions = (await client.describe(settings.env)).instructions
    sessions = await asyncio.gather(*(open_session(client, spec, settings) for spec in specs))
    running: list[_Running] = []
    try:
        for spec, session in zip(specs, sessions):
            episode = start_episode(chat, spec, session, settings, first_message(instructions, session))
            running.append(_Running(episode, session))
            if episode.finish:
                running[-1].done = True
        while active := [r for r in running if not r.done]:
            await _play_turn(client, policy, chat, active, settings)
            if isinstance(client, GymPool) and settings.on_server_lost == "reopen":
                await _reopen_lost(client, chat, active, settings, instructions)
    finally:
        policy.release()
        opened = {*sessions, *(r.session for r in running)}  # reopened ones too
        await asyncio.gather(*(s.close() for s in opened if s.id in s.client.sessions), return_exceptions=True)
    for r in running:
        r.episode.text = chat.tokenizer.decode(r.episode.tokens)
    return [r.episode for r in running]


async def _play_turn(
    client: GymClient, policy: PolicyBackend, chat: ChatFormat, active: list[_Running], settings: RolloutSettings
) -> None:
    budgets = [min(settings.turn_tokens, settings.episode_tokens - len(r.episode.tokens)) for r in active]
    generations = await asyncio.get_running_loop().run_in_executor(
        None,
        policy.generate,
        [r.episode.tokens for r in active],
        budgets,
        chat.stop_ids,
        settings.sampling,
    )
    actions = [chat.tokenizer.decode(g.token_ids, skip_special_tokens=True) for g in generations]
    # One frame per batch of steps and server (it runs them concurrently), not one per episode.
    steps = [(r.session, action) for r, action in zip(active, actions)]
    results = await step_sessions(steps, deadline_ms=step_deadline_ms(client, settings))
    if isinstance(client, GymClient):  # its one server is lost: nowhere to go on, the batch fails
        lost = next((result for result in results if isinstance(result, Disconnected)), None)
        if lost is not None:
            raise lost
    for r, generation, action, result in zip(active, generations, actions, results):
        r.done = record_turn(r.episode, chat, generation, action, result, settings)


async def _reopen_lost(
    pool: GymPool, chat: ChatFormat, active: list[_Running], settings: RolloutSettings, instructions: str
) -> None:
    """Start the episodes whose replica was lost over on other replicas; one that cannot reopen
    (or has used its REOPENS) stays an error episode."""
    lost = [r for r in active if r.episode.error_kind == SERVER_LOST and r.reopens < REOPENS]
    opened = await asyncio.gather(*(open_session(pool, r.episode.spec, settings) for r in lost), return_exceptions=True)
    for r, session in zip(lost, opened):
        if isinstance(session, BaseException):
            if not isinstance(session, (ProtocolError, Disconnected)):
                raise session
            continue
        r.session, r.reopens = session, r.reopens + 1
        r.episode = start_episode(chat, r.episode.spec, session, settings, first_message(instructions, session))
        r.done = bool(r.episode.finish)


def first_message(instructions: str, session: ClientSession) -> str:
    """The first user message: the environment's instructions (if any), then its first observation."""
    first = session.observation.text if session.observation else ""
    return f"{instructions}\n\n{first}" if instructions else first


def start_episode(
    chat: ChatFormat,
    spec: EpisodeSpec,
    session: ClientSession,
    settings: RolloutSettings,
    user_text: str,
    examples: Sequence[dict[str, str]] = (),
) -> Episode:
    """A token-level episode holding its prompt; already finished (TOKEN_BUDGET) if the prompt
    leaves no room to generate. `examples`: few-shot messages before the first user turn."""
    prompt = chat.prompt(user_text, examples)
    episode = Episode(
        env=settings.env,
        spec=spec,
        options=dict(settings.options),
        max_turns=session.max_turns,
        prompt_length=len(prompt),
        tokens=list(prompt),
        loss_mask=[0] * len(prompt),
        logprobs=[0.0] * len(prompt),
    )
    if len(prompt) >= settings.episode_tokens:
        episode.finish = TOKEN_BUDGET
    return episode


def record_turn(
    episode: Episode, chat: ChatFormat, generation: Generation, action: str, result: Any, settings: RolloutSettings
) -> bool:
    """Append one turn of a token-level episode: the generated tokens, then the environment's
    answer `result` (a StepResult, or the ProtocolError it raised, or Disconnected when its server
    was lost). Returns whether the episode ended."""
    start = len(episode.tokens)
    episode.tokens += generation.token_ids
    episode.loss_mask += [1] * len(generation.token_ids)
    episode.logprobs += generation.logprobs
    if isinstance(result, ProtocolError):
        episode.error, episode.error_kind, episode.finish = str(result), f"env.{result.code.name.lower()}", ERROR
        return True
    if isinstance(result, Disconnected):
        episode.error, episode.error_kind, episode.finish = str(result), SERVER_LOST, ERROR
        return True
    turn = Turn(action, result.observation.text, result.reward, start, len(episode.tokens) - 1)
    episode.turns.append(turn)
    if result.terminated or result.truncated:
        if result.metrics is not None:
            episode.success, episode.score = result.metrics.success, result.metrics.score
        episode.finish = TERMINATED if result.terminated else TRUNCATED
        return True
    feedback = chat.user_turn(result.observation.text, generation.token_ids, generation.stopped)
    # Room for the feedback and at least one generated token, or the episode stops here.
    if len(episode.tokens) + len(feedback) >= settings.episode_tokens:
        episode.score = episode.reward
        episode.finish = TOKEN_BUDGET
        return True
    episode.tokens += feedback
    episode.loss_mask += [0] * len(feedback)
    episode.logprobs += [0.0] * len(feedback)
    return False


def write_jsonl(episodes: Iterable[Episode], path: str | Path) -> Path:
    """One episode per line; a person can read the `turns` and `text` fields as they are."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for episode in episodes:
            out.write(json.dumps(episode.to_json(), ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[Episode]:
    with Path(path).open(encoding="utf-8") as lines:
        return [Episode.from_json(json.loads(line)) for line in lines if line.strip()]


class RolloutClient(SyncGymClient):
    """The blocking client of trainer code, which collects whole batches of episodes at once."""

    thread_name = "gymwire-rollout"

    def collect(
        self, policy: PolicyBackend, chat: ChatFormat, specs: Sequence[EpisodeSpec], settings: RolloutSettings
    ) -> list[Episode]:
        return self.run(collect_episodes(self.client, policy, chat, specs, settings))
