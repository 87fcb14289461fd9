"""The record of one episode, as training, `gymwire eval`, the OpenRLHF agent and `gymwire collect`
write it: one schema (docs/eval-format.md), read by `gymwire view`.

    EnvTask(env, split=None, index=None, seed=None)
        Which task: the one task reference of the client side. `EnvTask.parse(label)` reads the
        JSON form (`to_json()`), which is also the OpenRLHF dataset's label.
    Turn(action, observation, reward, start, end, stopped, policy_s, env_s)
        One step: what the environment was sent, what it answered, and where the reply's tokens
        are in `Episode.tokens` (None for text-only players).
    Episode(task, group, ...)
        The whole episode: `tokens` / `loss_mask` / `logprobs` (token players: prompt, replies as
        generated with loss mask 1, the environment's turns as the chat template renders them),
        `messages` (the conversation as chat messages, for every player), `turns`, how it ended
        (`finish`, `success`, `score`, `error`, `error_kind`), the limits and sampling it was
        played with, `usage` and `seconds`.
        `episode.conversation()` -> [{"role", "content", "loss"}]: the messages, `loss` true on the
        agent's own replies (what behaviour cloning, SFT and DPO learn from).
    write_jsonl(episodes, path) / append_jsonl(episode, path) / read_jsonl(path)

How an episode is played, and every decision about where it ends, is in trainers/play.py.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .policy import Sampling

__all__ = [
    "EnvTask",
    "EnvTaskError",
    "Turn",
    "Episode",
    "TERMINATED",
    "TRUNCATED",
    "TOKEN_BUDGET",
    "ERROR",
    "SERVER_LOST",
    "write_jsonl",
    "append_jsonl",
    "read_jsonl",
]

# Why an episode ended (Episode.finish).
TERMINATED = "terminated"  # the environment ended it (goal reached or failed)
TRUNCATED = "truncated"  # the server's turn limit
TOKEN_BUDGET = "token_budget"  # the next turn would not fit the per-episode token budget
ERROR = "error"  # the policy or the environment failed (error, error_kind say how)
SERVER_LOST = "env.server_lost"  # error_kind of an episode whose server (a pool's replica) was lost


class EnvTaskError(ValueError):
    """A task reference (or a label holding one) does not name a gymwire task."""


@dataclass(frozen=True)
class EnvTask:
    """Which task an episode plays: environment `env`, then a split and an index in it, or a seed,
    or neither (the environment's choice)."""

    env: str
    split: str | None = None
    index: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.env, str) or not self.env:
            raise EnvTaskError(f"a task names its environment: env must be a non-empty string, got {self.env!r}")
        if (self.split is None) != (self.index is None):
            raise EnvTaskError(f"{self.to_json()} gives split or index alone; give both (or a seed)")

    def fields(self) -> dict[str, Any]:
        """split, index and seed, those that are set (the record's "task" object)."""
        return {k: v for k, v in (("split", self.split), ("index", self.index), ("seed", self.seed)) if v is not None}

    def to_json(self) -> str:
        """Compact JSON, e.g. {"env":"guess","split":"test","index":3}: a string survives every
        dataset loader unchanged (OpenRLHF passes it to the agent as the sample's label)."""
        return json.dumps({"env": self.env, **self.fields()}, separators=(",", ":"))

    @classmethod
    def parse(cls, label: Any) -> "EnvTask":
        """From `to_json()`'s string or its mapping; EnvTaskError says what a task reference is."""
        if isinstance(label, str):
            try:
                label = json.loads(label)
            except json.JSONDecodeError:
                raise EnvTaskError(
                    f"label {label[:80]!r} is not JSON; write the dataset with `gymwire openrlhf prepare`"
                ) from None
        if not isinstance(label, Mapping) or not isinstance(label.get("env"), str):
            raise EnvTaskError(
                f'a task is {{"env": NAME, "split": S, "index": I}} or {{"env": NAME, "seed": N}}, got {label!r}'
            )
        unknown = set(label) - {"env", "split", "index", "seed"}
        if unknown:
            raise EnvTaskError(f"unknown task field(s) {sorted(unknown)}; a task has env, split, index, seed")
        return cls(env=label["env"], split=label.get("split"), index=label.get("index"), seed=label.get("seed"))


@dataclass
class Turn:
    action: str  # what was sent to the environment
    observation: str  # what it answered
    reward: float
    start: int | None = None  # index in `tokens` of the turn's first generated token (None: no tokens)
    end: int | None = None  # index in `tokens` of its last generated token
    stopped: bool | None = None  # the reply ended on a stop token (False: a token budget cut it; None: not a model)
    # Wall seconds waiting for the reply and for the environment's answer. Times are not compared:
    # two records are equal when the same things happened.
    policy_s: float = field(default=0.0, compare=False)
    env_s: float = field(default=0.0, compare=False)


@dataclass
class Episode:
    task: EnvTask
    group: int | None = None  # training: episodes of one group play the same task (GRPO, RLOO); None: no group
    options: dict[str, Any] = field(default_factory=dict)
    max_turns: int = 0
    turn_tokens: int | None = None  # the per-reply token cap it was played with (None: none)
    episode_tokens: int | None = None  # the whole conversation's token budget (None: none)
    sampling: Sampling | None = None  # None: not sampled from a model (a scripted player)
    prompt_length: int = 0
    tokens: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # sampling log-prob of generated tokens, 0.0 elsewhere
    # The conversation as chat messages: system, few-shot examples and the first user message (the
    # first `prompt_messages`), then the agent's replies and the environment's answers, up to the
    # last reply (the final answer is the last turn's observation).
    messages: list[dict[str, str]] = field(default_factory=list)
    prompt_messages: int = 0
    turns: list[Turn] = field(default_factory=list)
    finish: str = ""
    success: bool = False
    score: float = 0.0
    error: str | None = None
    error_kind: str | None = None  # short class of `error`, e.g. "policy.timeout", "env.env_crashed"
    # {"prompt_tokens", "completion_tokens", "requests"} summed over the episode: a chat endpoint's
    # own counts, or counted here for token players (prompt_tokens: the first prompt's length).
    usage: dict[str, int] | None = None
    seconds: float = field(default=0.0, compare=False)  # wall seconds from the start of play to the end
    text: str = ""  # token players: the decoded tokens; others: the messages as "[role]\ncontent" blocks

    @property
    def env(self) -> str:
        return self.task.env

    @property
    def reward(self) -> float:
        return sum(turn.reward for turn in self.turns)

    @property
    def generated_tokens(self) -> int:
        if not self.tokens:
            return self.usage["completion_tokens"] if self.usage is not None else 0
        return sum(self.loss_mask)

    def conversation(self) -> list[dict[str, Any]]:
        """The messages with `loss`: true on the agent's own replies, false on everything else
        (system, few-shot examples, the environment's turns)."""
        return [
            {**message, "loss": at >= self.prompt_messages and message["role"] == "assistant"}
            for at, message in enumerate(self.messages)
        ]

    def to_json(self) -> dict[str, Any]:
        """Readable fields first: what happened, then the conversation, then the token arrays."""
        return {
            "env": self.task.env,
            "task": {**self.task.fields(), **({"group": self.group} if self.group is not None else {})},
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
            "prompt_messages": self.prompt_messages,
            "turn_tokens": self.turn_tokens,
            "episode_tokens": self.episode_tokens,
            "sampling": asdict(self.sampling) if self.sampling is not None else None,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Episode":
        """Also reads files written before the fields after `error_kind` existed."""
        task = dict(data["task"])
        group = task.pop("group", None)
        sampling = data.get("sampling")
        return cls(
            task=EnvTask(data["env"], **task),
            group=group,
            options=data["options"],
            max_turns=data["max_turns"],
            turn_tokens=data.get("turn_tokens"),
            episode_tokens=data.get("episode_tokens"),
            sampling=Sampling(**sampling) if sampling is not None else None,
            prompt_length=data["prompt_length"],
            tokens=data["tokens"],
            loss_mask=data["loss_mask"],
            logprobs=data["logprobs"],
            messages=data.get("messages") or [],
            prompt_messages=data.get("prompt_messages", 0),
            turns=[Turn(**turn) for turn in data["turns"]],
            finish=data["finish"],
            success=data["success"],
            score=data["score"],
            error=data["error"],
            error_kind=data.get("error_kind"),
            usage=data.get("usage"),
            seconds=data.get("seconds", 0.0),
            text=data["text"],
        )


def _line(episode: Episode) -> str:
    return json.dumps(episode.to_json(), ensure_ascii=False) + "\n"


def write_jsonl(episodes: Iterable[Episode], path: str | Path) -> Path:
    """One episode per line; a person can read the `turns` and `text` fields as they are."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for episode in episodes:
            out.write(_line(episode))
    return path


def append_jsonl(episode: Episode, path: str | Path) -> None:
    """Add one line: an interruption loses only episodes not yet appended."""
    with Path(path).open("a", encoding="utf-8") as out:
        out.write(_line(episode))


def read_jsonl(path: str | Path) -> list[Episode]:
    with Path(path).open(encoding="utf-8") as lines:
        return [Episode.from_json(json.loads(line)) for line in lines if line.strip()]
