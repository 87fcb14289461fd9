"""The one episode loop: training rollouts, `gymwire eval`, the OpenRLHF agent and `gymwire collect`
all play through `play_episode`, and every decision about an episode is `EpisodeRecorder`'s.

    settings = PlaySettings(options, max_turns, turn_tokens, episode_tokens, sampling, step_timeout, prompt)
    episode = await play_episode(session, task, actor, settings, instructions=info.instructions)
    episode = await play_task(client, task, actor, settings, instructions)   # opens and closes too

An `Actor` writes the agent's replies; three kinds:
    TokenActor(generate, chat)   token ids in, token ids out: `generate(prompt, budget)` is a
                                 GenerationBatcher's or a Lockstep's (or any async callable giving
                                 a policy.Generation); `chat` renders the environment's turns.
    ChatActor(policy)            chat messages in, text out (OpenAI-compatible endpoints).
    ScriptedActor(act)           `act(recorder)` -> the action text (str, or an awaitable of it):
                                 expert solvers or any program; it sees `recorder.last` (the last
                                 StepResult, None before the first step) and `recorder.episode`.

`EpisodeRecorder` is where an episode's end is decided, for every player: the first prompt over
the token budget, each reply's budget (min of turn_tokens and what episode_tokens leaves), the
environment's answer (terminated, truncated at the server's turn limit, an error), and whether the
next turn still fits; and the terminal figures: success and score from the server's episode
metrics when the environment ended the episode, else no success and the reward so far.

Training plays a batch with `collect_episodes` (RolloutClient.collect from blocking code):
`Lockstep` gives every running episode's generation in one batched call, rows in the batch's
order, then all steps in step_batch frames, so a seeded run samples the same tokens every time.
Through a GymPool a lost replica costs only its own episodes: each starts over on another replica
(`on_server_lost: reopen`, at most REOPENS times) or ends as an error (`drop`).
Evaluation gives each episode its own pace: `GenerationBatcher` gathers whatever replies are
asked for within a short window into one call.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from gymwire.protocol import ProtocolError, StepResult
from gymwire.sdk.batching import step_sessions
from gymwire.sdk.client import ClientSession, Disconnected, GymClient
from gymwire.sdk.pool import GymPool
from gymwire.sdk.sync import SyncGymClient

from .chat import ChatFormat
from .episode import ERROR, SERVER_LOST, TERMINATED, TOKEN_BUDGET, TRUNCATED, EnvTask, Episode, Turn
from .policy import Generation, PolicyBackend, PolicyError, Reply, Sampling

__all__ = [
    "PromptConfig",
    "PlaySettings",
    "EpisodeRecorder",
    "Actor",
    "TokenActor",
    "ChatActor",
    "ScriptedActor",
    "GenerationBatcher",
    "Lockstep",
    "play_episode",
    "play_task",
    "open_session",
    "first_message",
    "collect_episodes",
    "RolloutClient",
]


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


# What to do with a first prompt that leaves no room to generate.
FINISH = "finish"  # the episode ends before its first reply (finish token_budget)
KEEP_TAIL = "keep_tail"  # keep its last episode_tokens - 1 tokens (OpenRLHF's own loop does so)
REOPENS = 2  # times one episode starts over on another replica of a pool before it is dropped


@dataclass(frozen=True)
class PlaySettings:
    """How episodes are played. `max_turns` goes to the server at open (None: the environment's
    default); `turn_tokens` caps one reply (None: only the episode's budget does) and
    `episode_tokens` the whole conversation (prompt, replies and the environment's turns: token
    players count them, chat endpoints report them); `step_timeout`: seconds the server may take
    for an open or a step (None: no limit)."""

    options: dict[str, Any] = field(default_factory=dict)
    max_turns: int | None = None
    turn_tokens: int | None = 64
    episode_tokens: int = 4096
    sampling: Sampling = Sampling()
    step_timeout: float | None = None
    prompt: PromptConfig = PromptConfig()
    long_first_prompt: str = FINISH  # or KEEP_TAIL
    # A batch played through a GymPool whose replica is lost: "reopen" plays the lost episodes again
    # from their start on another replica, "drop" ends them as errors; the batch goes on either way.
    on_server_lost: str = "reopen"

    def __post_init__(self) -> None:
        if (self.turn_tokens is not None and self.turn_tokens < 1) or self.episode_tokens < 2:
            raise ValueError(
                f"token budgets must allow generation: turn_tokens={self.turn_tokens} (>= 1), "
                f"episode_tokens={self.episode_tokens} (>= 2)"
            )
        if self.long_first_prompt not in (FINISH, KEEP_TAIL):
            raise ValueError(f"long_first_prompt is {FINISH!r} or {KEEP_TAIL!r}, got {self.long_first_prompt!r}")
        if self.on_server_lost not in ("reopen", "drop"):
            raise ValueError(f"on_server_lost must be 'reopen' or 'drop', got {self.on_server_lost!r}")

    def deadline_ms(self, client: Any = None) -> int | None:
        """The step timeout as the server's deadline. A client (or pool) that says it lacks
        `deadlines` gets none (a hung step there stalls: there is no safe way to give up on a step
        the server may still run)."""
        supports = getattr(client, "supports", None)
        if self.step_timeout is None or (supports is not None and not supports("deadlines")):
            return None
        return max(1, round(self.step_timeout * 1000))


def first_message(instructions: str, observation: str) -> str:
    """The first user message: the environment's instructions (if any), then its first observation."""
    return f"{instructions}\n\n{observation}" if instructions else observation


# ---------------------------------------------------------------------------------------- the recorder


class EpisodeRecorder:
    """Builds one Episode and decides where it ends. Token players (`chat` given) keep the tokens
    exactly as generated and render only the environment's turns; text players keep messages."""

    def __init__(
        self,
        task: EnvTask,
        settings: PlaySettings,
        chat: ChatFormat | None,
        max_turns: int,
        group: int | None = None,
        sampled: bool = True,
    ):
        self.settings = settings
        self.chat = chat
        budgets = sampled or chat is not None
        self.episode = Episode(
            task=task,
            group=group,
            options=dict(settings.options),
            max_turns=max_turns,
            turn_tokens=settings.turn_tokens if budgets else None,
            episode_tokens=settings.episode_tokens if budgets else None,
            sampling=settings.sampling if sampled else None,
            usage={"prompt_tokens": 0, "completion_tokens": 0, "requests": 0} if budgets else None,
        )
        self.last: StepResult | None = None  # the environment's latest answer
        self._reply: Generation | Reply | str | None = None
        self._started = time.perf_counter()

    @property
    def finished(self) -> bool:
        return bool(self.episode.finish)

    def begin(self, user_text: str) -> None:
        """The prompt: system message, few-shot examples, then `user_text`."""
        episode, prompt = self.episode, self.settings.prompt
        system = self.chat.system if self.chat is not None else prompt.system
        episode.messages = [{"role": "system", "content": system}] if system else []
        episode.messages += [dict(m) for m in prompt.examples] + [{"role": "user", "content": user_text}]
        episode.prompt_messages = len(episode.messages)
        if self.chat is None:
            return
        tokens = self.chat.prompt(user_text, prompt.examples)
        limit = self.settings.episode_tokens
        if len(tokens) >= limit:
            if self.settings.long_first_prompt == KEEP_TAIL:
                tokens = tokens[-(limit - 1):]
            else:
                self._end(TOKEN_BUDGET)
        episode.tokens, episode.loss_mask, episode.logprobs = list(tokens), [0] * len(tokens), [0.0] * len(tokens)
        episode.prompt_length = len(tokens)
        assert episode.usage is not None
        episode.usage["prompt_tokens"] = len(tokens)

    def budget(self) -> int | None:
        """Tokens the next reply may have: turn_tokens, and for token players no more than the
        episode's budget leaves (at least 1: `add_result` ends an episode that has no room)."""
        turn = self.settings.turn_tokens
        if self.chat is None:
            return turn
        room = self.settings.episode_tokens - len(self.episode.tokens)
        return room if turn is None else min(turn, room)

    def add_reply(self, reply: Generation | Reply | str) -> str:
        """The agent's reply: a Generation (token players), a Reply (chat endpoints) or the text
        (scripted players). Returns its text."""
        episode, usage = self.episode, self.episode.usage
        if isinstance(reply, Generation):
            assert self.chat is not None, "a token reply needs the chat format the episode is rendered with"
            episode.tokens += reply.token_ids
            episode.loss_mask += [1] * len(reply.token_ids)
            episode.logprobs += reply.logprobs
            text = reply.text if reply.text is not None else self.chat.tokenizer.decode(reply.token_ids, skip_special_tokens=True)
            if usage is not None:
                usage["completion_tokens"] += len(reply.token_ids)
        elif isinstance(reply, Reply):
            text = reply.text
            if usage is not None:
                usage["prompt_tokens"] += reply.prompt_tokens
                usage["completion_tokens"] += reply.completion_tokens
        else:
            text = reply
        if usage is not None:
            usage["requests"] += 1
        self._reply = reply
        episode.messages.append({"role": "assistant", "content": text})
        return text

    def add_result(
        self, action: str, result: StepResult | ProtocolError | Disconnected, policy_s: float = 0.0, env_s: float = 0.0
    ) -> None:
        """The environment's answer to `action` after the last reply: a StepResult, the error it
        raised, or Disconnected when its server was lost."""
        episode, reply = self.episode, self._reply
        if isinstance(result, ProtocolError):
            self.fail(f"env.{result.code.name.lower()}", str(result))
            return
        if isinstance(result, Disconnected):
            self.fail(SERVER_LOST, str(result))
            return
        self.last = result
        start = end = stopped = None
        if isinstance(reply, Generation):
            end = len(episode.tokens) - 1
            start, stopped = end + 1 - len(reply.token_ids), reply.stopped
        elif isinstance(reply, Reply):
            stopped = reply.stopped
        observation = result.observation.text
        episode.turns.append(Turn(action, observation, result.reward, start, end, stopped, policy_s, env_s))
        if result.terminated or result.truncated:
            metrics = result.metrics
            self._end(TERMINATED if result.terminated else TRUNCATED, metrics.success if metrics else False,
                      metrics.score if metrics else None)
            return
        # The episode goes on if the environment's turn and at least one more token fit.
        if isinstance(reply, Generation):
            assert self.chat is not None
            feedback = self.chat.user_turn(observation, reply.token_ids, reply.stopped)
            if len(episode.tokens) + len(feedback) >= self.settings.episode_tokens:
                self._end(TOKEN_BUDGET)
                return
            episode.tokens += feedback
            episode.loss_mask += [0] * len(feedback)
            episode.logprobs += [0.0] * len(feedback)
        elif isinstance(reply, Reply):
            # The endpoint's count of the conversation so far, plus room for the next reply.
            if reply.prompt_tokens + reply.completion_tokens + (self.settings.turn_tokens or 1) > self.settings.episode_tokens:
                self._end(TOKEN_BUDGET)
                return
        episode.messages.append({"role": "user", "content": observation})

    def fail(self, kind: str, message: str) -> None:
        """The policy or the environment failed: the episode ends as an error."""
        self.episode.error, self.episode.error_kind = message, kind
        self._end(ERROR)

    def _end(self, finish: str, success: bool = False, score: float | None = None) -> None:
        episode = self.episode
        episode.finish, episode.success = finish, success
        episode.score = episode.reward if score is None else score

    def close(self) -> Episode:
        """The finished record, with its text and time."""
        episode = self.episode
        episode.seconds = time.perf_counter() - self._started
        if self.chat is not None:
            episode.text = self.chat.tokenizer.decode(episode.tokens)
        else:
            episode.text = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in episode.messages)
        return episode


# ---------------------------------------------------------------------------------------- actors


class Actor(ABC):
    """Writes the agent's replies. `chat`: token actors render the episode with it (None: text
    actors); `sampled`: its replies are sampled from a model with the settings' sampling."""

    chat: ChatFormat | None = None
    sampled: bool = True

    @abstractmethod
    async def reply(self, recorder: EpisodeRecorder) -> Generation | Reply | str:
        """The next reply of the episode `recorder` holds. Raise PolicyError when there is none."""

    def episode_ended(self, episode: Episode) -> None:
        """Called once per episode when it ends (free what was kept for it)."""


class TokenActor(Actor):
    """`forget(tokens)`, when given, is told each ended episode's tokens (PolicyBackend.forget: a
    backend frees the cache it kept to continue it, so memory follows the episodes still playing)."""

    def __init__(
        self,
        generate: Callable[[Sequence[int], int], Awaitable[Generation]],
        chat: ChatFormat,
        forget: Callable[[Sequence[int]], None] | None = None,
    ):
        self.generate = generate
        self.chat = chat
        self.forget = forget

    async def reply(self, recorder: EpisodeRecorder) -> Generation:
        budget = recorder.budget()
        assert budget is not None
        return await self.generate(recorder.episode.tokens, budget)

    def episode_ended(self, episode: Episode) -> None:
        if self.forget is not None:
            self.forget(episode.tokens)


class ChatActor(Actor):
    def __init__(self, policy: PolicyBackend):
        self.policy = policy

    async def reply(self, recorder: EpisodeRecorder) -> Reply:
        settings = recorder.settings
        return await self.policy.chat(recorder.episode.messages, settings.turn_tokens or settings.episode_tokens, settings.sampling)


class ScriptedActor(Actor):
    sampled = False

    def __init__(self, act: Callable[[EpisodeRecorder], str | Awaitable[str]]):
        self.act = act

    async def reply(self, recorder: EpisodeRecorder) -> str:
        action = self.act(recorder)
        return await action if inspect.isawaitable(action) else action


# ---------------------------------------------------------------------------------------- the loop


def _lost_server_raises(exc: Exception) -> bool:
    return isinstance(exc, Disconnected)


async def open_session(opener: GymClient | GymPool, task: EnvTask, settings: PlaySettings) -> ClientSession:
    """Open `task`'s session on a GymClient or GymPool with the settings' options, turn limit and
    step timeout."""
    return await opener.open(
        task.env,
        split=task.split,
        index=task.index,
        seed=task.seed,
        options=settings.options,
        max_turns=settings.max_turns,
        deadline_ms=settings.deadline_ms(opener),
    )


async def play_episode(
    session: ClientSession,
    task: EnvTask,
    actor: Actor,
    settings: PlaySettings,
    *,
    instructions: str = "",
    group: int | None = None,
    step: Callable[[str], Awaitable[StepResult]] | None = None,
    fatal: Callable[[Exception], bool] = _lost_server_raises,
) -> Episode:
    """Play the open `session` to the end. `step` sends an action (default: the session's step
    with the settings' deadline). Errors of the policy (PolicyError) and of the environment
    (ProtocolError; Disconnected: its server was lost) end the episode as an error, except those
    `fatal` says to raise (default: a lost server). The session is left open."""
    if step is None:
        deadline = settings.deadline_ms(session.client)

        async def step(action: str) -> StepResult:
            return await session.step(action, deadline_ms=deadline)

    recorder = EpisodeRecorder(task, settings, actor.chat, session.max_turns, group, actor.sampled)
    observation = session.observation.text if session.observation else ""
    recorder.begin(first_message(instructions if settings.prompt.instructions else "", observation))
    try:
        while not recorder.finished:
            asked = time.perf_counter()
            try:
                reply = await actor.reply(recorder)
            except PolicyError as exc:
                recorder.fail(exc.kind, str(exc))
                break
            action = settings.prompt.action(recorder.add_reply(reply))
            sent = time.perf_counter()
            try:
                result: StepResult | ProtocolError | Disconnected = await step(action)
            except (ProtocolError, Disconnected) as exc:
                if fatal(exc):
                    raise
                result = exc
            recorder.add_result(action, result, sent - asked, time.perf_counter() - sent)
    finally:
        actor.episode_ended(recorder.episode)
    return recorder.close()


async def play_task(
    client: GymClient, task: EnvTask, actor: Actor, settings: PlaySettings, instructions: str = "", group: int | None = None
) -> Episode:
    """Open `task`, play it, close it. An open the server refuses is an episode that ended as an
    error before its first turn, returned like any other."""
    try:
        session = await open_session(client, task, settings)
    except ProtocolError as exc:
        recorder = EpisodeRecorder(task, settings, None, settings.max_turns or 0, group, actor.sampled)
        recorder.fail(f"env.{exc.code.name.lower()}", str(exc))
        return recorder.close()
    try:
        return await play_episode(session, task, actor, settings, instructions=instructions, group=group)
    finally:
        await _close(session)


async def _close(session: ClientSession) -> None:
    if session.id in session.client.sessions:
        try:
            await session.close()
        except (ProtocolError, OSError):
            pass  # the episode is recorded; the server reaps what it could not close


# ---------------------------------------------------------------------------------------- batching


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


class Lockstep:
    """Episodes 0..size-1 of a batch, turn by turn together: a generation runs when every episode
    still running has asked for one (rows in episode order), and steps go out in step_batch frames
    when every running episode has sent one. What is batched depends only on the episodes."""

    def __init__(self, policy: PolicyBackend, stop_ids: Sequence[int], sampling: Sampling, size: int, deadline_ms: int | None):
        self.policy = policy
        self.stop_ids = list(stop_ids)
        self.sampling = sampling
        self.deadline_ms = deadline_ms
        self.running = set(range(size))
        self._prompts: dict[int, tuple[Sequence[int], int, asyncio.Future[Any]]] = {}
        self._steps: dict[int, tuple[ClientSession, str, asyncio.Future[Any]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def generator(self, position: int) -> Callable[[Sequence[int], int], Awaitable[Generation]]:
        async def generate(prompt: Sequence[int], budget: int) -> Generation:
            return await self._wait(self._prompts, position, (prompt, budget))

        return generate

    def stepper(self, position: int, session: ClientSession) -> Callable[[str], Awaitable[StepResult]]:
        async def step(action: str) -> StepResult:
            result = await self._wait(self._steps, position, (session, action))
            if isinstance(result, ProtocolError):
                raise result
            return result

        return step

    def finished(self, position: int) -> None:
        self.running.discard(position)
        self._release()

    async def _wait(self, pending: dict[int, Any], position: int, request: tuple[Any, ...]) -> Any:
        future = asyncio.get_running_loop().create_future()
        pending[position] = (*request, future)
        self._release()
        return await future

    def _release(self) -> None:
        for pending, run in ((self._prompts, self._generate), (self._steps, self._step)):
            if pending and set(pending) >= self.running:
                batch = [pending.pop(position) for position in sorted(pending)]
                task = asyncio.get_running_loop().create_task(self._settle(run, batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _settle(self, run: Callable[[list[Any]], Awaitable[list[Any]]], batch: list[tuple[Any, ...]]) -> None:
        futures = [request[-1] for request in batch]
        try:
            results = await run([request[:-1] for request in batch])
        except BaseException as exc:  # everyone waiting on the batch hears why
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for future, result in zip(futures, results):
            if not future.done():
                future.set_result(result)

    async def _generate(self, requests: list[tuple[Sequence[int], int]]) -> list[Generation]:
        prompts, budgets = zip(*requests)
        return await asyncio.get_running_loop().run_in_executor(
            None, self.policy.generate, list(prompts), list(budgets), self.stop_ids, self.sampling
        )

    async def _step(self, requests: list[tuple[ClientSession, str]]) -> list[StepResult | ProtocolError | Disconnected]:
        # One frame per batch of steps and server (it runs them concurrently), not one per episode.
        return await step_sessions(requests, deadline_ms=self.deadline_ms)


async def collect_episodes(
    client: GymClient | GymPool,
    policy: PolicyBackend,
    chat: ChatFormat,
    tasks: Sequence[EnvTask],
    settings: PlaySettings,
    groups: Sequence[int] | None = None,
) -> list[Episode]:
    """Play one episode per task in lockstep; episodes come back in the order of `tasks`, the i-th
    in group `groups[i]` (default: none). An open the server refuses raises; so does a lost
    server, unless `client` is a pool (then settings.on_server_lost applies)."""
    group_of = list(groups) if groups is not None else [None] * len(tasks)
    instructions: dict[str, str] = {}
    for env in dict.fromkeys(task.env for task in tasks):
        instructions[env] = (await client.describe(env)).instructions if settings.prompt.instructions else ""
    opened = list(await asyncio.gather(*(open_session(client, task, settings) for task in tasks)))
    lockstep = Lockstep(policy, chat.stop_ids, settings.sampling, len(tasks), settings.deadline_ms(client))
    pooled = isinstance(client, GymPool)

    async def play(position: int) -> Episode:
        task, session = tasks[position], opened[position]
        reopens = 0
        try:
            while True:
                episode = await play_episode(
                    session, task, TokenActor(lockstep.generator(position), chat), settings,
                    instructions=instructions[task.env], group=group_of[position], step=lockstep.stepper(position, session),
                    fatal=(lambda exc: False) if pooled else _lost_server_raises,
                )
                if episode.error_kind != SERVER_LOST or settings.on_server_lost != "reopen" or reopens == REOPENS:
                    return episode
                try:  # from its start, on another replica
                    session = await open_session(client, task, settings)
                except (ProtocolError, Disconnected):
                    return episode
                opened.append(session)
                reopens += 1
        finally:
            lockstep.finished(position)

    try:
        return list(await asyncio.gather(*(play(i) for i in range(len(tasks)))))
    finally:
        policy.release()
        await asyncio.gather(*(s.close() for s in opened if s.id in s.client.sessions), return_exceptions=True)


class RolloutClient(SyncGymClient):
    """The blocking client of trainer code, which collects whole batches of episodes at once."""

    thread_name = "gymwire-rollout"

    def collect(
        self,
        policy: PolicyBackend,
        chat: ChatFormat,
        tasks: Sequence[EnvTask],
        settings: PlaySettings,
        groups: Sequence[int] | None = None,
    ) -> list[Episode]:
        return self.run(collect_episodes(self.client, policy, chat, tasks, settings, groups))
