"""Trajectories for learning from behaviour: gymwire's record, AgentGym's AgentTraj, training rows.

A `Trajectory` is one episode as `gymwire collect` writes it (one JSON object per line): the task,
what the environment said (its instructions and every observation), what the agent replied, the
action the reply sent, the reward and the environment's `info` of every turn, and, when a second
policy labelled the states the first one reached (DAgger), that policy's reply as the turn's
`label`. Learning reads the label where there is one and the reply otherwise.

AgentGym's AgentTraj is a JSON list of {"item_id": "babyai_12", "conversations": [{"from":
"human"|"gpt", "value": text, "loss": bool}]}: the instructions and the first observation as the
first human turn, then agent replies (loss true) and observations (loss false) alternating.
`to_agenttraj` / `from_agenttraj` convert both ways; a labelled turn is written with its label as
the agent's text (the observation after it is what the executed reply caused).

`conversation_messages` and `preference_rows` turn trajectories into the chat-message rows that
OpenRLHF's SFT and DPO trainers and TRL's DPOTrainer read (lists of {"role", "content"}
messages); tokens.py lays out the token rows gymwire's own SFT trains on.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

if TYPE_CHECKING:
    from gymwire.trainers.episode import Episode

__all__ = [
    "TrajectoryTurn",
    "Trajectory",
    "read_trajectories",
    "append_trajectory",
    "write_trajectories",
    "to_agenttraj",
    "from_agenttraj",
    "read_agenttraj",
    "write_agenttraj",
    "load_dataset",
    "conversation_messages",
    "preference_rows",
    "FormatError",
]


class FormatError(ValueError):
    """A file is not trajectories (or AgentTraj) as this module writes them; the message says where."""


@dataclass
class TrajectoryTurn:
    reply: str  # the agent's whole reply, as the model would write it
    action: str  # what was sent to the environment
    observation: str  # the environment's answer
    reward: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # a labelling policy's reply in the state before this turn (DAgger)

    @property
    def target(self) -> str:
        """The reply to learn for this turn: the label when there is one."""
        return self.label if self.label is not None else self.reply


@dataclass
class Trajectory:
    env: str
    split: str | None
    index: int | None
    instructions: str
    observation: str  # the first observation
    turns: list[TrajectoryTurn] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    success: bool = False
    score: float = 0.0
    finish: str = ""  # terminated, truncated, token_budget, error
    error: str | None = None
    policy: str = ""  # who played: "expert", a model's name
    labeller: str | None = None  # who labelled the turns, if anyone
    sample: int = 0  # which of several episodes played on the same task

    @property
    def reward(self) -> float:
        return sum(turn.reward for turn in self.turns)

    @property
    def item_id(self) -> str:
        return f"{self.env}_{self.index}" if self.split in (None, "train") else f"{self.env}_{self.split}_{self.index}"

    @property
    def key(self) -> tuple[str, str | None, int | None, int]:
        """What identifies an episode within a collection (resuming skips recorded keys)."""
        return (self.env, self.split, self.index, self.sample)

    def first_message(self) -> str:
        """The first user message, as the episode loop builds it (play.first_message)."""
        from gymwire.trainers.play import first_message

        return first_message(self.instructions, self.observation)

    def fill(self, episode: "Episode", infos: Sequence[dict[str, Any]], labels: Sequence[str | None]) -> None:
        """The turns and the end of an episode the episode loop played (trainers/play.py), with each
        step's `info` and label: the agent's reply to each turn is its message in the conversation."""
        replies = [m["content"] for m in episode.messages[episode.prompt_messages:] if m["role"] == "assistant"]
        self.turns = [
            TrajectoryTurn(reply=reply, action=turn.action, observation=turn.observation, reward=turn.reward, info=dict(info), label=label)
            for reply, turn, info, label in zip(replies, episode.turns, infos, labels)
        ]
        self.success, self.score, self.finish, self.error = episode.success, episode.score, episode.finish, episode.error

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["reward"] = self.reward
        data["item_id"] = self.item_id
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Trajectory":
        data = {k: v for k, v in data.items() if k not in ("reward", "item_id")}
        try:
            turns = [TrajectoryTurn(**turn) for turn in data.pop("turns")]
            return cls(turns=turns, **data)
        except (KeyError, TypeError) as exc:
            raise FormatError(f"not a gymwire trajectory: {exc}") from exc


# -- gymwire's own files: JSON lines ---------------------------------------------------------------


def read_trajectories(path: str | Path) -> list[Trajectory]:
    """Every trajectory of a JSONL file; a line cut short by an interrupted writer is skipped."""
    out: list[Trajectory] = []
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # the last line of a killed run
                continue
            raise FormatError(f"{path}:{number}: not JSON: {exc}") from exc
        out.append(Trajectory.from_json(data))
    return out


def append_trajectory(path: str | Path, trajectory: Trajectory) -> None:
    with Path(path).open("a", encoding="utf-8") as out:
        out.write(json.dumps(trajectory.to_json(), ensure_ascii=False) + "\n")


def write_trajectories(path: str | Path, trajectories: Iterable[Trajectory]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for trajectory in trajectories:
            out.write(json.dumps(trajectory.to_json(), ensure_ascii=False) + "\n")
    return path


# -- AgentGym's AgentTraj --------------------------------------------------------------------------


def to_agenttraj(trajectory: Trajectory) -> dict[str, Any]:
    conversations = [{"from": "human", "value": trajectory.first_message(), "loss": False}]
    for i, turn in enumerate(trajectory.turns):
        conversations.append({"from": "gpt", "value": turn.target, "loss": True})
        if i + 1 < len(trajectory.turns):  # the last observation answers no further reply
            conversations.append({"from": "human", "value": turn.observation, "loss": False})
    return {"item_id": trajectory.item_id, "conversations": conversations}


_ITEM_ID = re.compile(r"^(?P<env>.+?)_(?:(?P<split>[a-z]+)_)?(?P<index>\d+)$")


def from_agenttraj(item: dict[str, Any], instructions: str = "") -> Trajectory:
    """A Trajectory from one AgentTraj item. The first human turn becomes the first observation
    (`instructions`, when given and at its start, are split off); every gpt turn becomes a turn,
    the human turn after it its observation. Rewards are unknown (0); success is assumed
    (AgentTraj holds successful episodes)."""
    try:
        item_id = str(item["item_id"])
        conversations = item["conversations"]
    except (KeyError, TypeError) as exc:
        raise FormatError(f"an AgentTraj item has item_id and conversations; got {item!r:.200}") from exc
    match = _ITEM_ID.match(item_id)
    env, split, index = (match["env"], match["split"] or "train", int(match["index"])) if match else (item_id, None, None)
    if not conversations or conversations[0].get("from") != "human":
        raise FormatError(f"{item_id}: an AgentTraj conversation starts with a human turn")
    first = str(conversations[0]["value"])
    if instructions and first.startswith(instructions):
        first = first[len(instructions):].lstrip("\n")
    else:
        instructions = ""
    turns: list[TrajectoryTurn] = []
    for position, message in enumerate(conversations[1:], 1):
        speaker, value = message.get("from"), str(message.get("value", ""))
        if speaker == "gpt":
            turns.append(TrajectoryTurn(reply=value, action=value, observation=""))
        elif speaker == "human":
            if not turns:
                raise FormatError(f"{item_id}: two human turns in a row at position {position}")
            turns[-1].observation = value
        else:
            raise FormatError(f"{item_id}: turn {position} is from {speaker!r}, not human or gpt")
    return Trajectory(env=env, split=split, index=index, instructions=instructions, observation=first,
                      turns=turns, success=True, score=1.0, finish="terminated", policy="agenttraj")


def write_agenttraj(path: str | Path, trajectories: Iterable[Trajectory]) -> Path:
    """AgentGym's file: one JSON list."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([to_agenttraj(t) for t in trajectories], ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return path


def read_agenttraj(path: str | Path, instructions: str = "") -> list[Trajectory]:
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(items, list):
        raise FormatError(f"{path}: AgentTraj is a JSON list of items")
    return [from_agenttraj(item, instructions) for item in items]


def load_dataset(path: str | Path, split: str = "train") -> Any:
    """A `datasets.Dataset` of a trajectory file: gymwire JSONL or an AgentTraj JSON list (both
    load through datasets' json builder)."""
    try:
        import datasets
    except ImportError as exc:
        raise ImportError("loading trajectories with datasets needs: pip install 'gymwire[learn]'") from exc
    return datasets.load_dataset("json", data_files=str(path), split=split)


# -- rows for trainers -----------------------------------------------------------------------------


def _context(trajectory: Trajectory, upto: int, history: int | None, executed: bool = True) -> list[dict[str, str]]:
    """Messages before turn `upto`'s reply: the first message, then the last `history` turns
    (None: all). The replies in it are those executed (what the environment's answers follow)."""
    messages = [{"role": "user", "content": trajectory.first_message()}]
    start = 0 if history is None else max(0, upto - history)
    for turn in trajectory.turns[start:upto]:
        messages.append({"role": "assistant", "content": turn.reply if executed else turn.target})
        messages.append({"role": "user", "content": turn.observation})
    return messages


def conversation_messages(trajectory: Trajectory) -> list[dict[str, str]]:
    """The episode as chat messages, the form OpenRLHF's multiturn SFT reads (the loss on every
    assistant message): labels in place of executed replies where there are labels."""
    messages = [{"role": "user", "content": trajectory.first_message()}]
    for i, turn in enumerate(trajectory.turns):
        messages.append({"role": "assistant", "content": turn.target})
        if i + 1 < len(trajectory.turns):
            messages.append({"role": "user", "content": turn.observation})
    return messages


def preference_rows(trajectories: Sequence[Trajectory], history: int | None = None, limit_per_task: int = 4) -> Iterator[dict[str, Any]]:
    """DPO pairs from episodes of one task: a rewarded episode and an unrewarded one, compared at
    the first turn where their replies differ (the shared turns before it are the prompt, so the
    pair differs by the agent's choice alone). {"prompt", "chosen", "rejected", "item_id", "turn"};
    at most `limit_per_task` pairs per task."""
    by_task: dict[tuple[str, str | None, int | None], list[Trajectory]] = {}
    for trajectory in trajectories:
        by_task.setdefault((trajectory.env, trajectory.split, trajectory.index), []).append(trajectory)
    for episodes in by_task.values():
        good = [t for t in episodes if t.success]
        bad = [t for t in episodes if not t.success and t.finish != "error"]
        made = 0
        for winner in good:
            for loser in bad:
                if made >= limit_per_task:
                    break
                turn = _first_difference(winner, loser)
                if turn is None:
                    continue
                yield {
                    "prompt": _context(winner, turn, history),
                    "chosen": [{"role": "assistant", "content": winner.turns[turn].reply}],
                    "rejected": [{"role": "assistant", "content": loser.turns[turn].reply}],
                    "item_id": winner.item_id,
                    "turn": turn,
                }
                made += 1


def _first_difference(a: Trajectory, b: Trajectory) -> int | None:
    if a.first_message() != b.first_message():
        return None  # not the same task as shown: no shared prompt
    for i, (x, y) in enumerate(zip(a.turns, b.turns)):
        if x.reply != y.reply:
            return i
        if x.observation != y.observation:
            return None  # the same reply led elsewhere (a random environment): not comparable
    return None
