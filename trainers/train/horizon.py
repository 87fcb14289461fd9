"""Turn-limit schedules over training steps (ScalingInter-RL).

A schedule maps the training step to the turn limit of the episodes collected for it. Steps are
1-based: the first policy update is step 1. Every schedule is a pure function of the step, so a
resumed run gets exactly the limits of an uninterrupted one as long as it restores the step
counter; there is no internal state to save. (AgentGym-RL keeps a stateful stage counter that
comes back one step off when a run resumes right at a stage boundary.)

Forms accepted by `horizon_from_config`:
    20                                              fixed limit of 20 turns
    "fixed:20"                                      the same
    "staged:6,13,20@100"                            6 turns for steps 1-100, 13 for 101-200, then 20
    "linear:5-20@300"                               5 at step 1, +15 spread over 300 steps, then 20
    {"kind": "fixed", "turns": 20}
    {"kind": "staged", "stages": [6, 13, 20], "stage_steps": 100}
    {"kind": "linear", "start": 5, "end": 20, "ramp_steps": 300}
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any, Mapping, Sequence, Union

from gymwire.sdk.errors import UserError

__all__ = [
    "Horizon",
    "FixedHorizon",
    "StagedHorizon",
    "LinearHorizon",
    "HorizonConfigError",
    "horizon_from_config",
]

VALID_FORMS = (
    'an int (e.g. 20), "fixed:20", "staged:6,13,20@100", "linear:5-20@300", '
    '{"kind": "fixed", "turns": 20}, {"kind": "staged", "stages": [6, 13, 20], "stage_steps": 100} '
    'or {"kind": "linear", "start": 5, "end": 20, "ramp_steps": 300}'
)


class HorizonConfigError(UserError, ValueError):
    """A horizon schedule was given in a form or with values that cannot be used."""


def _positive_int(value: Any, what: str) -> int:
    # bool is an int subclass; `True` turns is almost certainly a config mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HorizonConfigError(f"{what} must be a whole number >= 1, got {value!r}")
    return value


def _check_step(step: int) -> int:
    if isinstance(step, bool) or not isinstance(step, int):
        raise TypeError(f"step must be an int, got {type(step).__name__}")
    if step < 1:
        raise ValueError(f"training steps are 1-based (the first update is step 1), got step={step}")
    return step


class Horizon(ABC):
    """A turn limit as a function of the 1-based training step."""

    @abstractmethod
    def turns_at(self, step: int) -> int:
        """The turn limit for the episodes of training step `step` (>= 1)."""

    @property
    @abstractmethod
    def max_turns(self) -> int:
        """The largest limit the schedule ever gives; size token budgets with it."""

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """A JSON-ready dict that `horizon_from_config` turns back into an equal schedule."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Horizon) and self.to_config() == other.to_config()

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class FixedHorizon(Horizon):
    def __init__(self, turns: int):
        self.turns = _positive_int(turns, "turns")

    def turns_at(self, step: int) -> int:
        _check_step(step)
        return self.turns

    @property
    def max_turns(self) -> int:
        return self.turns

    def to_config(self) -> dict[str, Any]:
        return {"kind": "fixed", "turns": self.turns}

    def __str__(self) -> str:
        return f"fixed:{self.turns}"


class StagedHorizon(Horizon):
    """Stage k (0-based) covers steps k*stage_steps+1 ... (k+1)*stage_steps; the last stage holds."""

    def __init__(self, stages: Sequence[int] = (6, 13, 20), stage_steps: int = 100):
        if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or len(stages) == 0:
            raise HorizonConfigError(f"stages must be a non-empty list of turn limits, got {stages!r}")
        self.stages = tuple(_positive_int(turns, f"stages[{i}]") for i, turns in enumerate(stages))
        self.stage_steps = _positive_int(stage_steps, "stage_steps")

    def stage_at(self, step: int) -> int:
        """The 0-based stage index in force at `step`."""
        return min((_check_step(step) - 1) // self.stage_steps, len(self.stages) - 1)

    def turns_at(self, step: int) -> int:
        return self.stages[self.stage_at(step)]

    @property
    def max_turns(self) -> int:
        return max(self.stages)

    def to_config(self) -> dict[str, Any]:
        return {"kind": "staged", "stages": list(self.stages), "stage_steps": self.stage_steps}

    def __str__(self) -> str:
        return f"staged:{','.join(map(str, self.stages))}@{self.stage_steps}"


class LinearHorizon(Horizon):
    """`start` at step 1, moving evenly to `end` over `ramp_steps` steps (reached at step
    ramp_steps+1 and held). Intermediate limits are rounded down, computed in integers so
    they are the same on every machine."""

    def __init__(self, start: int, end: int, ramp_steps: int):
        self.start = _positive_int(start, "start")
        self.end = _positive_int(end, "end")
        self.ramp_steps = _positive_int(ramp_steps, "ramp_steps")

    def turns_at(self, step: int) -> int:
        done = min(_check_step(step) - 1, self.ramp_steps)
        return self.start + ((self.end - self.start) * done) // self.ramp_steps

    @property
    def max_turns(self) -> int:
        return max(self.start, self.end)

    def to_config(self) -> dict[str, Any]:
        return {"kind": "linear", "start": self.start, "end": self.end, "ramp_steps": self.ramp_steps}

    def __str__(self) -> str:
        return f"linear:{self.start}-{self.end}@{self.ramp_steps}"


_FIXED = re.compile(r"(?:fixed:)?(\d+)")
_STAGED = re.compile(r"staged:(\d+(?:,\d+)*)@(\d+)")
_LINEAR = re.compile(r"linear:(\d+)-(\d+)@(\d+)")

_DICT_FIELDS = {
    "fixed": (FixedHorizon, {"turns"}),
    "staged": (StagedHorizon, {"stages", "stage_steps"}),
    "linear": (LinearHorizon, {"start", "end", "ramp_steps"}),
}

HorizonLike = Union[Horizon, int, str, Mapping[str, Any]]


def _from_string(text: str) -> Horizon:
    compact = text.replace(" ", "").lower()
    if match := _FIXED.fullmatch(compact):
        return FixedHorizon(int(match[1]))
    if match := _STAGED.fullmatch(compact):
        return StagedHorizon([int(t) for t in match[1].split(",")], int(match[2]))
    if match := _LINEAR.fullmatch(compact):
        return LinearHorizon(int(match[1]), int(match[2]), int(match[3]))
    raise HorizonConfigError(f"cannot read horizon {text!r}; use {VALID_FORMS}")


def _from_mapping(config: Mapping[str, Any]) -> Horizon:
    kind = config.get("kind")
    if kind not in _DICT_FIELDS:
        raise HorizonConfigError(
            f"horizon kind {kind!r} is not one of {sorted(_DICT_FIELDS)}; use {VALID_FORMS}"
        )
    cls, fields = _DICT_FIELDS[kind]
    unknown = set(config) - fields - {"kind"}
    if unknown:
        raise HorizonConfigError(
            f"unknown field(s) {sorted(unknown)} for a {kind} horizon; it takes {sorted(fields)}"
        )
    try:
        return cls(**{name: config[name] for name in fields if name in config})
    except TypeError as exc:  # a required field is missing
        raise HorizonConfigError(f"{kind} horizon needs {sorted(fields)}: {exc}") from None


def horizon_from_config(config: HorizonLike) -> Horizon:
    """Build a schedule from any of the forms listed in this module's docstring."""
    if isinstance(config, Horizon):
        return config
    if isinstance(config, bool):
        raise HorizonConfigError(f"a horizon cannot be a bool; use {VALID_FORMS}")
    if isinstance(config, int):
        return FixedHorizon(config)
    if isinstance(config, str):
        return _from_string(config)
    if isinstance(config, Mapping):
        return _from_mapping(config)
    raise HorizonConfigError(f"cannot build a horizon from {type(config).__name__}; use {VALID_FORMS}")
