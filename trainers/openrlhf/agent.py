"""OpenRLHF agents backed by gymwire environment sessions.

OpenRLHF (0.11.2) execs the file given to `--train.agent_func_path` in every vLLM Ray actor and
calls `AgentExecutor().execute(prompt, label, ...)` once per sample, on vLLM's event loop. Here
each sample is one gymwire session, opened from the sample's label (see `TaskLabel`), with the
turn limit the horizon schedule gives for the training step the trainer published (steps.py).

Two executors:
- `GymwireAgentExecutor` (agent_func.py): its own loop over `AgentExecutorBase`. Token-in/token-out:
  the model's tokens are kept as generated and only the environment's text is rendered, as the
  chat template's delta for a new user turn. `--rollout.max_new_tokens` caps each turn;
  `--data.max_len` caps the whole trajectory.
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
import logging
import os
import weakref
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Mapping

from openrlhf.utils.agent import AgentExecutorBase, AgentInstanceBase

from gymwire.protocol import ErrorCode, ProtocolError
from gymwire.sdk.client import ClientSession, Disconnected
from gymwire.trainers.chat import ChatFormat
from gymwire.trainers.horizon import Horizon, horizon_from_config

from .labels import LabelError, TaskLabel, first_message
from .pool import pool_for_running_loop
from .steps import StepBoard, step_board_from_spec

__all__ = [
    "TaskLabel",
    "LabelError",
    "AgentSettings",
    "AgentConfigError",
    "GymEpisode",
    "GymwireAgentExecutor",
    "GymwireAgentInstance",
    "EXTRA_LOG_KEYS",
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

    @property
    def deadline_ms(self) -> int | None:
        return None if self.step_timeout is None else max(1, round(self.step_timeout * 1000))

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


class GymEpisode:
    """One sample's environment session: open, step, metrics, close."""

    def __init__(self, settings: AgentSettings, label: TaskLabel) -> None:
        self.settings = settings
        self.label = label
        self.session: ClientSession | None = None
        self.step: int = 0  # the training step the episode belongs to (0: no schedule)
        self.turn_limit: int = 0
        self.total_reward = 0.0
        self.success = False
        self.score: float | None = None
        self.budget_cut = False
        self.env_crashed = False
        self.env_timeout = False
        self.env_lost = False  # its server (a pool's replica) was lost mid-episode

    async def start(self) -> str:
        """Open the session; returns the first user message (instructions and first observation)."""
        max_turns = None
        if self.settings.horizon is not None and self.settings.step_board is not None:
            self.step = await self.settings.step_board.current_step()
            max_turns = self.settings.horizon.turns_at(self.step)
        pool = pool_for_running_loop(self.settings)
        info = await pool.describe(self.label.env)
        self.session = await pool.open(
            self.label.env,
            split=self.label.split,
            index=self.label.index,
            seed=self.label.seed,
            max_turns=max_turns,
            deadline_ms=self.settings.deadline_ms,
        )
        self.turn_limit = self.session.max_turns
        return first_message(info, self.session.observation.text if self.session.observation else "")

    @property
    def turns(self) -> int:
        return self.session.turns if self.session else 0

    async def act(self, action_text: str) -> tuple[str, float, bool]:
        """Send the model's action; returns (environment's reply, reward, episode over)."""
        assert self.session is not None, "start() first"
        try:
            result = await self.session.step(action_text, deadline_ms=self.settings.deadline_ms)
        except ProtocolError as exc:
            # One broken or hung environment ends its own episode, not the training run.
            if exc.code is ErrorCode.ENV_CRASHED:
                log.warning("environment crashed in %s: %s", self.label.to_json(), exc.message)
                self.env_crashed = True
            elif exc.code is ErrorCode.TIMEOUT:
                log.warning("environment step over GYMWIRE_STEP_TIMEOUT in %s: %s", self.label.to_json(), exc.message)
                self.env_timeout = True
            else:
                raise
            return "", 0.0, True
        except Disconnected as exc:  # its replica was lost: this episode ends, the batch goes on
            log.warning("environment server lost in %s: %s", self.label.to_json(), exc)
            self.env_lost = True
            return "", 0.0, True
        self.total_reward += result.reward
        if result.metrics is not None:
            self.success, self.score = result.metrics.success, result.metrics.score
        done = result.terminated or result.truncated or self.turns >= self.turn_limit
        return result.observation.text, result.reward, done

    def extra_logs(self) -> dict[str, float]:
        return {
            "success": float(self.success),
            "score": float(self.total_reward if self.score is None else self.score),
            "turns": float(self.turns),
            "turn_limit": float(self.turn_limit),
            "step": float(self.step),
            "budget_cut": float(self.budget_cut),
            "env_crashed": float(self.env_crashed),
            "env_timeout": float(self.env_timeout),
            "env_lost": float(self.env_lost),
        }

    async def close(self) -> None:
        if self.session is None or self.session.id not in self.session.client.sessions:
            return
        try:
            await self.session.close()
        except (ProtocolError, ConnectionError) as exc:  # the server reaps it anyway
            log.info("closing session %s: %s", self.session.id, exc)


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

    async def execute(self, prompt, label, sampling_params, max_length: int, hf_tokenizer, llm_engine, images=None):
        chat = self.chat_format(hf_tokenizer)
        episode = GymEpisode(self.settings, TaskLabel.parse(label))
        params = deepcopy(sampling_params)  # shared by the prompt's samples: never mutate it
        turn_cap = self.settings.turn_tokens or getattr(sampling_params, "max_tokens", None)
        want_logprobs = getattr(sampling_params, "logprobs", None) is not None
        tokens: list[int] = []
        ranges: list[tuple[int, int]] = []
        logprobs: list[float] | None = [] if want_logprobs else None
        truncated = False
        try:
            tokens = chat.prompt(await episode.start())
            if len(tokens) >= max_length:
                log.warning("first observation of %s takes %d tokens, over --data.max_len %d: keeping its end",
                            label, len(tokens), max_length)
                tokens = tokens[-(max_length - 1):]
            if logprobs is not None:
                logprobs.extend([0.0] * len(tokens))
            while True:
                budget = max_length - len(tokens)
                params.max_tokens = min(turn_cap, budget) if turn_cap else budget
                output = (await llm_engine.generate(tokens, deepcopy(params), multi_modal_data=None)).outputs[0]
                generated = list(output.token_ids)
                ranges.append((len(tokens), len(tokens) + len(generated)))
                tokens.extend(generated)
                if logprobs is not None:
                    logprobs.extend(step[token].logprob for step, token in zip(output.logprobs, generated))
                truncated = output.finish_reason == "length"
                feedback, _, done = await episode.act(output.text)
                if done:
                    break
                reply = chat.user_turn(feedback, generated, stopped=output.finish_reason == "stop")
                if len(tokens) + len(reply) >= max_length:  # no room left for another action
                    episode.budget_cut = True
                    break
                tokens.extend(reply)
                if logprobs is not None:
                    logprobs.extend([0.0] * len(reply))
        finally:
            await episode.close()
        logs = episode.extra_logs()
        return {
            "prompt": prompt,
            "label": label,
            "images": images,
            "mm_train_inputs": None,
            "reward": episode.total_reward,
            "scores": episode.total_reward,
            "observation_tokens": tokens,
            "action_ranges": ranges,
            "rollout_log_probs": logprobs,
            "truncated": truncated,
            "extra_logs": logs,
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
    is the chat template's text for the next user turn, which the built-in loop tokenizes."""

    settings: AgentSettings | None = None  # set by the agent file; None: from the environment

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._settings = type(self).settings or AgentSettings.from_env()
        self.episode: GymEpisode | None = None
        self._chat: ChatFormat | None = None

    async def reset(self, states: dict, **kwargs: Any) -> dict:
        # Loading a tokenizer reads files: once per process, off the event loop.
        self._chat = await asyncio.to_thread(_chat_for_path, self._settings.tokenizer_path)
        self.episode = GymEpisode(self._settings, TaskLabel.parse(states["label"]))
        await self.episode.start()
        # The built-in loop has no end hook: when it stops on the token budget, this instance is
        # dropped mid-episode, and the finalizer closes the session instead of leaving it to the reaper.
        weakref.finalize(self, _close_soon, asyncio.get_running_loop(), self.episode)
        return {"observation": states["observation"]}

    async def step(self, state_dict: dict, **kwargs: Any) -> dict:
        import torch

        assert self.episode is not None and self._chat is not None, "reset() first"
        feedback, reward, done = await self.episode.act(state_dict["action_text"])
        if done:
            await self.episode.close()
            feedback_text = ""
        else:
            # vLLM keeps the stop token in the token ids but not in the text, and a turn the budget
            # cut ends the loop anyway: so the model stopped on the template's turn close, and the
            # reply is the rest of that close plus the next user turn.
            stop = self._chat.turn_close_ids[:1]
            reply = self._chat.user_turn(feedback, stop, stopped=True)
            feedback_text = self._chat.tokenizer.decode(reply, skip_special_tokens=False)
        return {
            "rewards": torch.tensor(reward, dtype=torch.float32),
            "scores": self.episode.total_reward,
            "environment_feedback": feedback_text,
            "done": done,
            "extra_logs": self.episode.extra_logs(),
        }


def _close_soon(loop: asyncio.AbstractEventLoop, episode: GymEpisode) -> None:
    if episode.session is None or episode.session.id not in episode.session.client.sessions:
        return
    with contextlib.suppress(RuntimeError):  # the loop is closed: the server reaps the session
        loop.call_soon_threadsafe(lambda: loop.create_task(episode.close()))
