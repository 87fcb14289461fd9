"""What a dataset row says about its task, and the first message an episode shows the model.

Light on purpose: `gymwire openrlhf prepare` uses it without openrlhf or torch installed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from gymwire.protocol import EnvInfo

__all__ = ["TaskLabel", "LabelError", "first_message"]


class LabelError(ValueError):
    """A sample's label does not name a gymwire task."""


@dataclass(frozen=True)
class TaskLabel:
    """The environment and the task to play. `prepare` writes it as a JSON string: OpenRLHF passes
    labels to the agent untouched, and a string survives every dataset loader unchanged."""

    env: str
    split: str | None = None
    index: int | None = None
    seed: int | None = None

    def to_json(self) -> str:
        fields = {"env": self.env, "split": self.split, "index": self.index, "seed": self.seed}
        return json.dumps({k: v for k, v in fields.items() if v is not None}, separators=(",", ":"))

    @classmethod
    def parse(cls, label: Any) -> "TaskLabel":
        if isinstance(label, str):
            try:
                label = json.loads(label)
            except json.JSONDecodeError:
                raise LabelError(
                    f"label {label[:80]!r} is not JSON; write the dataset with `gymwire openrlhf prepare`"
                ) from None
        if not isinstance(label, Mapping) or not isinstance(label.get("env"), str):
            raise LabelError(
                f'a label is {{"env": NAME, "split": S, "index": I}} or {{"env": NAME, "seed": N}}, got {label!r}'
            )
        unknown = set(label) - {"env", "split", "index", "seed"}
        if unknown:
            raise LabelError(f"unknown label field(s) {sorted(unknown)}; a label has env, split, index, seed")
        if (label.get("split") is None) != (label.get("index") is None):
            raise LabelError(f"label {dict(label)} gives split or index alone; give both (or a seed)")
        return cls(env=label["env"], split=label.get("split"), index=label.get("index"), seed=label.get("seed"))


def first_message(info: EnvInfo, observation: str) -> str:
    """The episode's first user message: how to act, then what the environment shows."""
    return f"{info.instructions}\n\n{observation}" if info.instructions else observation
