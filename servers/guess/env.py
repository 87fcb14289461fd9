"""Guess the hidden number. The complete example of a gymwire environment.

Options (per session, in `open`'s options): `low` and `high` bound the number (default 1..100;
whole numbers of at most 12 digits); `show_range: true` adds what is still possible to every hint
("Go higher: it is from 51 to 100"). Any other option, or a value of the wrong kind, is INVALID_TASK.
Reward 1 on the correct guess; the turn limit comes from the session (default 7 = log2(100)).
"""

from __future__ import annotations

import random
import re

from gymwire.sdk.environment import Environment, StepOutcome, Task, TaskError

_NUMBER = re.compile(r"-?\d+")
_MAX_DIGITS = 12  # int() of a longer string is pointless here (and Python refuses past 4300 digits)


_BOUND = 10**_MAX_DIGITS - 1  # a guess has at most _MAX_DIGITS digits


def _options(options: dict[str, object]) -> tuple[int, int, bool]:
    """low, high and show_range, or TaskError (INVALID_TASK) saying what is wrong."""
    GuessEnv.check_options(options)
    low, high, show_range = options.get("low", 1), options.get("high", 100), options.get("show_range", False)
    for name, value in (("low", low), ("high", high)):
        if type(value) is not int or not -_BOUND <= value <= _BOUND:
            raise TaskError(f"option {name} must be a whole number from {-_BOUND} to {_BOUND}, got {str(value)[:40]!r}")
    if low >= high:  # type: ignore[operator]
        raise TaskError(f"option low={low} must be below high={high}")
    if type(show_range) is not bool:
        raise TaskError(f"option show_range must be true or false, got {str(show_range)[:40]!r}")
    return low, high, show_range  # type: ignore[return-value]


class GuessEnv(Environment):
    name = "guess"
    version = "1.0.0"
    description = "Guess a hidden whole number; after each guess you hear 'higher' or 'lower'."
    instructions = "Answer with one whole number, e.g. `Action: 42`. Only the last number you write counts."
    splits = {"train": 10_000, "test": 100}
    default_max_turns = 7
    inline = True  # a step is a comparison: cheaper than a thread hop
    known_options = {"low": "smallest number, default 1", "high": "largest number, default 100",
                     "show_range": "hints say what is still possible, default false"}

    def reset(self, task: Task) -> str:
        self.low, self.high, self.show_range = _options(task.options)
        if task.split is not None:
            split, index = self.task_index(task)
            rng = random.Random(f"guess:{split}:{index}")
        else:
            rng = random.Random(task.seed)
        self.target = rng.randint(self.low, self.high)
        self.possible = (self.low, self.high)
        return f"I am thinking of a whole number from {self.low} to {self.high}. Guess it."

    def step(self, action: str) -> StepOutcome:
        numbers = _NUMBER.findall(action.rsplit("Action:", 1)[-1])
        if not numbers:
            return StepOutcome(f"I did not see a number. Answer with one whole number from {self.low} to {self.high}.")
        if len(numbers[-1].lstrip("-")) > _MAX_DIGITS:
            return StepOutcome(f"That number is far outside {self.low} to {self.high}. Guess again.")
        guess = int(numbers[-1])
        if guess == self.target:
            return StepOutcome(f"Correct! The number was {guess}.", reward=1.0, terminated=True)
        lowest, highest = self.possible
        if guess < self.target:
            hint, self.possible = "higher", (max(lowest, guess + 1), highest)
        else:
            hint, self.possible = "lower", (lowest, min(highest, guess - 1))
        if self.show_range:
            return StepOutcome(f"{guess} is wrong. Go {hint}: it is from {self.possible[0]} to {self.possible[1]}.")
        return StepOutcome(f"{guess} is wrong. Go {hint}.")
