"""OpenRLHF agents backed by gymwire environment sessions.

OpenRLHF (0.11.2) execs the file given to `--train.agent_func_path` in every vLLM Ray actor and
calls `AgentExecutor().execute(prompt, label, ...)` once per sample, on vLLM's event loop. Here
each sample is one gymwire session, opened from the sample's label (an `EnvTask` as JSON), with
the turn limit the horizon schedule gives for the training step the trainer published (steps.py).

Two executors:
- `GymwireAgentExecutor` (agent_func.py): gymwire's own episode loop (trainers/play.py, the one
  training and eval use) with vLLM's engine as the policy. Token-in/token-out: the model's tokens
  are kept as generated and only the environment's text is rendered, as the chat template's delta
  for a new user turn. `--rollout.max_new_tokens` caps each turn; `--data.max_len` caps the whole
  trajectory (a first prompt over it keeps its end, as OpenRLHF's own loop does).
- `GymwireAgentInstance` for OpenRLHF's own `MultiTurnAgentExecutor` (agent_func_multiturn.py):
  the built-in loop tokenizes text, gives every turn the whole remaining budget and appends the
  last feedback too; use it to compare with OpenRLHF's stock behaviour.

Settings come from environment variables, which the launcher sets on every Ray worker:
    GYMWIRE_URLS          comma-separated server URLs (this or GYMWIRE_FLEET)
    GYMWIRE_FLEET         name of a gym fleet in the trainer's Ray cluster: the pool follows its replicas
    GYMWIRE_TOKEN         bearer token, if the servers want one
    GYMWIRE_HORIZON       turn-limit schedule, e.g. "staged:6,13,20@100" (unset: each env's default)
    GYMWIRE_STEP_SOURCE   where the trainer publishes the step: ray:NAME (default), file:PATH, memory
    GYMWIRE_TURN_TOKENS   per-turn token cap overriding --rollout.max_new_tokens
    GYMWIRE_TOKENIZER     tokenizer path, for GymwireAgentInstance only (the built-in loop keeps it)
    GYMWIRE_STEP_TIMEOUT  seconds the server may take for an open or a step (default 60; "none": no limit)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import weakref
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from openrlhf.utils.agent import AgentExecutorBase, AgentInstanceBase

from gymwire.protocol import ErrorCode, ProtocolError, StepResult
from gymwire.sdk.client import ClientSession, Disconnected
from gymwire.trainers.chat import ChatFormat
from gymwire.trainers.episode import SERVER_LOST, TOKEN_BUDGET, EnvTask, Episode
from gymwire.trainers.play import (
    KEEP_TAIL,
    EpisodeRecorder,
    PlaySettings,
    TokenActor,
    first_message,
    open_session,
    play_episode,
)
from gymwire.trainers.policy import Generation, Sampling
from gymwire.trainers.train.horizon import Horizon, horizon_from_config

from .pool import pool_for_running_loop
from .steps import StepBoard, step_board_from_spec

__all__ = [
    "AgentSettings",
    "AgentConfigError",
    "GymwireAgentExecutor",
    "GymwireAgentInstance",
    "EXTRA_LOG_KEYS",
    "extra_logs",
]

log = logging.getLogger("gymwire.openrlhf")

# Every sample reports the same keys: OpenRLHF stacks them into one tensor per key.
EXTRA_LOG_KEYS = ("success", "score", "turns", "turn_limit", "step", "budget_cut", "env_crashed", "env_timeout", "env_lost")
DEFAULT_STEP_TIMEOUT = 60.0


class AgentConfigError(ValueError):
    """The agent's environment variables are missing or wrong."""


_boards: dict[str, StepBoard] = {}


@dataclass(frozen=True)
class AgentSettings:
    urls: tuple[str, ...]
    token: str | None = None
    fleet: str | None = None  # a gym fleet's name: its replicas instead of `urls`
    horizon: Horizon | None = None
    step_board: StepBoard | None = None  # read only when a horizon is set
    turn_tokens: int | None = None
    tokenizer_path: str | None = None
    step_timeout: float | None = DEFAULT_STEP_TIMEOUT  # seconds; None: no deadline

    def __post_init__(self) -> None:
        if self.horizon is not None and self.step_board is None:
            raise AgentConfigError("a horizon schedule needs a step board to read the training step from")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "AgentSettings":
        urls = tuple(u.strip() for u in environ.get("GYMWIRE_URLS", "").split(",") if u.strip())
        fleet = environ.get("GYMWIRE_FLEET") or None
        if not urls and fleet is None:
            raise AgentConfigError(
                "neither GYMWIRE_URLS nor GYMWIRE_FLEET is set on this Ray worker; start training with "
                "`gymwire openrlhf launch`, or export GYMWIRE_URLS=ws://host:port[,ws://host2:port] before `ray start`"
            )
        horizon = horizon_from_config(environ["GYMWIRE_HORIZON"]) if environ.get("GYMWIRE_HORIZON") else None
        board = None
        if horizon is not None:
            spec = environ.get("GYMWIRE_STEP_SOURCE", "ray:gymwire-step")
            if spec not in _boards:  # one board per process: a Ray board holds an actor handle
                _boards[spec] = step_board_from_spec(spec)
            board = _boards[spec]
        turn_tokens = environ.get("GYMWIRE_TURN_TOKENS")
        if turn_tokens is not None and not (turn_tokens.isdigit() and int(turn_tokens) > 0):
            raise AgentConfigError(f"GYMWIRE_TURN_TOKENS must be a whole number > 0, got {turn_tokens!r}")
        return cls(
            step_timeout=_step_timeout(environ.get("GYMWIRE_STEP_TIMEOUT")),
            urls=urls,
            fleet=fleet,
            token=environ.get("GYMWIRE_TOKEN") or None,
            horizon=horizon,
            step_board=board,
            turn_tokens=int(turn_tokens) if turn_tokens else None,
            tokenizer_path=environ.get("GYMWIRE_TOKENIZER") or None,
        )


def _step_timeout(value: str | None) -> float | None:
    if value is None or not value.strip():
        return DEFAULT_STEP_TIMEOUT
    if value.strip().lower() == "none":
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise AgentConfigError(f"GYMWIRE_STEP_TIMEOUT must be a number of seconds > 0 or 'none', got {value!r}")
    return seconds


# Environment errors that end only their own episode (as does a lost server: the batch goes on);
# any other error reaches OpenRLHF.
_EPISODE_ERRORS = (ErrorCode.ENV_CRASHED, ErrorCode.TIMEOUT)


def _fatal(exc: Exception) -> bool:
    return isinstance(exc, ProtocolError) and exc.code not in _EPISODE_ERRORS


class _Sample:
    """What one sample's episode needs before its first turn: the session, opened at the turn
    limit of the published step, and how it is played."""

    def __init__(self, settings: AgentSettings, task: EnvTask, play: PlaySettings) -> None:
        self.settings = settings
        self.task = task
        self.play = play
        self.step = 0  # the training step the episode belongs to (0: no schedule)
        self.session: ClientSession | None = None
        self.instructions = ""

    async def open(self) -> ClientSession:
        max_turns = None
        if self.settings.horizon is not None and self.settings.step_board is not None:
            self.step = await self.settings.step_board.current_step()
            max_turns = self.settings.horizon.turns_at(self.step)
        self.play = dataclasses.replace(self.play, max_turns=max_turns)
        pool = pool_for_running_loop(self.settings)
        self.instructions = (await pool.describe(self.task.env)).instructions
        self.session = await open_session(pool, self.task, self.play)
        return self.session

    async def close(self) -> None:
        session = self.session
        if session is None or session.id not in session.client.sessions:
            return
        try:
            await session.close()
        except (ProtocolError, ConnectionError) as exc:  # the server reaps it anyway
            log.info("closing session %s: %s", session.id, exc)


def extra_logs(episode: Episode, step: int) -> dict[str, float]:
    """The sample's figures OpenRLHF logs (the keys of EXTRA_LOG_KEYS)."""
    if episode.error_kind in ("env.env_crashed", "env.timeout", SERVER_LOST):
        log.warning("%s ended the episode of %s: %s", episode.error_kind, episode.task.to_json(), episode.error)
    return {
        "success": float(episode.success),
        "score": float(episode.score),
        "turns": float(len(episode.turns)),
        "turn_limit": float(episode.max_turns),
        "step": float(step),
        "budget_cut": float(episode.finish == TOKEN_BUDGET),
        "env_crashed": float(episode.error_kind == "env.env_crashed"),
        "env_timeout": float(episode.error_kind == "env.timeout"),
        "env_lost": float(episode.error_kind == SERVER_LOST),
    }


def _sampling(params: Any) -> Sampling:
    return Sampling(getattr(params, "temperature", 1.0), getattr(params, "top_p", 1.0))


class _EngineGenerator:
    """vLLM's engine as the episode's `generate(prompt, budget)`; remembers how the last reply ended."""

    def __init__(self, engine: Any, sampling_params: Any) -> None:
        self.engine = engine
        self.params = deepcopy(sampling_params)  # shared by the prompt's samples: never mutate it
        self.logprobs = getattr(sampling_params, "logprobs", None) is not None
        self.finish_reason: str | None = None

    async def __call__(self, prompt: Sequence[int], budget: int) -> Generation:
        self.params.max_tokens = budget
        output = (await self.engine.generate(list(prompt), deepcopy(self.params), multi_modal_data=None)).outputs[0]
        ids = list(output.token_ids)
        self.finish_reason = output.finish_reason
        logprobs = [step[token].logprob for step, token in zip(output.logprobs, ids)] if self.logprobs else [0.0] * len(ids)
        return Generation(ids, logprobs, stopped=output.finish_reason == "stop", text=output.text)


def _action_ranges(loss_mask: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of generated tokens."""
    ranges: list[tuple[int, int]] = []
    for position, flag in enumerate(loss_mask):
        if flag and (not ranges or ranges[-1][1] != position):
            ranges.append((position, position + 1))
        elif flag:
            ranges[-1] = (ranges[-1][0], position + 1)
    return ranges


class GymwireAgentExecutor(AgentExecutorBase):
    """The token-in/token-out executor. Constructible with no arguments (OpenRLHF's rule): the
    settings then come from the environment variables listed in this module's docstring."""

    def __init__(self, settings: AgentSettings | None = None) -> None:
        self.settings = settings or AgentSettings.from_env()
        self._formats: dict[tuple[Any, ...], ChatFormat] = {}

    def chat_format(self, tokenizer: Any) -> ChatFormat:
        # Ray unpickles a new tokenizer object for every prompt it sends: key by what the
        # tokenizer is, not by the object, so the cache holds one entry per model.
        key = (getattr(tokenizer, "name_or_path", None), tokenizer.chat_template, len(tokenizer))
        if key not in self._formats:
            self._formats[key] = ChatFormat(tokenizer)
        return self._formats[key]

    async def play(self, label: Any, sampling_params: Any, max_length: int, hf_tokenizer: Any, llm_engine: Any
                   ) -> tuple[Episode, int, _EngineGenerator]:
        """One sample's episode record, the training step it belongs to, and the engine's adapter."""
        settings = PlaySettings(
            turn_tokens=self.settings.turn_tokens or getattr(sampling_params, "max_tokens", None),
            episode_tokens=max_length,
            sampling=_sampling(sampling_params),
            step_timeout=self.settings.step_timeout,
            long_first_prompt=KEEP_TAIL,
        )
        sample = _Sample(self.settings, EnvTask.parse(label), settings)
        generate = _EngineGenerator(llm_engine, sampling_params)
        try:
            session = await sample.open()
            episode = await play_episode(
                session, sample.task, TokenActor(generate, self.chat_format(hf_tokenizer)), sample.play,
                instructions=sample.instructions, fatal=_fatal,
            )
        finally:
            await sample.close()
        return episode, sample.step, generate

    async def execute(self, prompt, label, sampling_params, max_length: int, hf_tokenizer, llm_engine, images=None):
        episode, step, generate = await self.play(label, sampling_params, max_length, hf_tokenizer, llm_engine)
        if episode.prompt_length == max_length - 1 and episode.finish != TOKEN_BUDGET:
            log.warning("the first prompt of %s reached --data.max_len %d: its end was kept", label, max_length)
        return {
            "prompt": prompt,
            "label": label,
            "images": images,
            "mm_train_inputs": None,
            "reward": episode.reward,
            "scores": episode.reward,
            "observation_tokens": episode.tokens,
            "action_ranges": _action_ranges(episode.loss_mask),
            "rollout_log_probs": episode.logprobs if generate.logprobs else None,
            "truncated": generate.finish_reason == "length",
            "extra_logs": extra_logs(episode, step),
        }


_tokenizers: dict[str, Any] = {}


def _chat_for_path(path: str | None) -> ChatFormat:
    if not path:
        raise AgentConfigError(
            "GymwireAgentInstance renders the environment's replies with the model's chat template: "
            "set GYMWIRE_TOKENIZER to the model (or tokenizer) path"
        )
    if path not in _tokenizers:
        from transformers import AutoTokenizer

        _tokenizers[path] = ChatFormat(AutoTokenizer.from_pretrained(path))
    return _tokenizers[path]


class GymwireAgentInstance(AgentInstanceBase):
    """One episode under OpenRLHF's `MultiTurnAgentExecutor`. The dataset prompt is used as is
    (write it with `gymwire openrlhf prepare` and pass `--data.apply_chat_template`); each reply
    is the chat template's text for the next user turn, which the built-in loop tokenizes. The
    loop is OpenRLHF's; the record and its decisions are gymwire's (an EpisodeRecorder's)."""

    settings: AgentSettings | None = None  # set by the agent file; None: from the environment

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._settings = type(self).settings or AgentSettings.from_env()
        self.sample: _Sample | None = None
        self.recorder: EpisodeRecorder | None = None
        self._chat: ChatFormat | None = None

    async def reset(self, states: dict, **kwargs: Any) -> dict:
        # Loading a tokenizer reads files: once per process, off the event loop.
        self._chat = await asyncio.to_thread(_chat_for_path, self._settings.tokenizer_path)
        play = PlaySettings(turn_tokens=None, sampling=_sampling(kwargs.get("sampling_params")),
                            step_timeout=self._settings.step_timeout)
        self.sample = _Sample(self._settings, EnvTask.parse(states["label"]), play)
        session = await self.sample.open()
        # The loop's own budget applies: this record keeps no tokens.
        self.recorder = EpisodeRecorder(self.sample.task, self.sample.play, None, session.max_turns)
        observation = session.observation.text if session.observation else ""
        self.recorder.begin(first_message(self.sample.instructions, observation))
        # The built-in loop has no end hook: when it stops on the token budget, this instance is
        # dropped mid-episode, and the finalizer closes the session instead of leaving it to the reaper.
        weakref.finalize(self, _close_soon, asyncio.get_running_loop(), self.sample)
        return {"observation": states["observation"]}

    async def step(self, state_dict: dict, **kwargs: Any) -> dict:
        import torch

        sample, recorder = self.sample, self.recorder
        assert sample is not None and sample.session is not None and recorder is not None and self._chat is not None, "reset() first"
        action = recorder.add_reply(state_dict["action_text"])
        try:
            result: Any = await sample.session.step(action, deadline_ms=sample.play.deadline_ms(sample.session.client))
        except (ProtocolError, Disconnected) as exc:
            if _fatal(exc):
                raise
            result = exc
        recorder.add_result(action, result)
        reward = result.reward if isinstance(result, StepResult) else 0.0
        if recorder.finished:
            await sample.close()
            feedback_text = ""
        else:
            # vLLM keeps the stop token in the token ids but not in the text, and a turn the budget
            # cut ends the loop anyway: so the model stopped on the template's turn close, and the
            # reply is the rest of that close plus the next user turn.
            stop = self._chat.turn_close_ids[:1]
            reply = self._chat.user_turn(result.observation.text, stop, stopped=True)
            feedback_text = self._chat.tokenizer.decode(reply, skip_special_tokens=False)
        episode = recorder.episode
        return {
            "rewards": torch.tensor(reward, dtype=torch.float32),
            "scores": episode.reward,
            "environment_feedback": feedback_text,
            "done": recorder.finished,
            "extra_logs": extra_logs(episode, sample.step),
        }


def _close_soon(loop: asyncio.AbstractEventLoop, sample: _Sample) -> None:
    if sample.session is None or sample.session.id not in sample.session.client.sessions:
        return
    with contextlib.suppress(RuntimeError):  # the loop is closed: the server reaps the session
        loop.call_soon_threadsafe(lambda: loop.create_task(sample.close()))
