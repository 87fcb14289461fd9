"""The one class an environment author writes.

Subclass `Environment`, fill in the metadata, implement `reset` and `step` (plain or `async def`),
and `gymwire serve mypkg.myenv:MyEnv` serves it. No protocol or networking code is needed: the
runtime creates one instance per session, calls `reset(task)` and `step(action)`, counts turns,
enforces the turn limit and reports episode metrics.

Configuration (a data directory, a pool size: what the server's operator chooses, never a client)
is the constructor's keyword arguments; an `EnvSpec` (env_spec.py) carries them to wherever an
instance is built, a child process included. Metadata that depends on them (splits read from a data
file) comes from the classmethods `info` and `check_requirements`, which receive the configuration
keywords they declare as parameters, e.g. `def info(cls, recipes_dir=None)`.
"""

from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, ClassVar, Iterable, Mapping, Union

from gymwire.protocol import EnvInfo, Image, Observation, TaskRef
from .errors import UserError

__all__ = ["Environment", "Task", "StepOutcome", "Observation", "Image", "TaskError", "ObservationLike", "MissingExtra"]

ObservationLike = Union[str, Observation]


class TaskError(ValueError):
    """Raise from `reset` when the task cannot be played (unknown split, index out of range)."""


@dataclass(frozen=True)
class Task:
    """What `reset` is asked to play. Either `split` and `index`, or `seed`, or neither."""

    split: str | None = None
    index: int | None = None
    seed: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_ref(cls, ref: TaskRef, options: dict[str, Any] | None = None) -> "Task":
        return cls(split=ref.split, index=ref.index, seed=ref.seed, options=dict(options or {}))


@dataclass
class StepOutcome:
    """What an environment's `step` returns; the server builds the wire message `step_result`
    (gymwire.protocol.StepResult) from it. `success`/`score` feed the episode metrics when the episode ends;
    left as None, success is `reward > 0` and score is the episode's total reward."""

    observation: ObservationLike
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    success: bool | None = None
    score: float | None = None


class MissingExtra(UserError, ImportError):
    """A module an optional feature needs is not installed; the message has the pip line to run."""


def require_modules(modules: Iterable[str], extra: str | None, needed_by: str) -> None:
    """Raise MissingExtra unless every module can be imported (looked up, not imported: cheap)."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package is missing, or a broken __spec__
            found = False
        if not found:
            missing.append(module)
    if missing:
        install = f"pip install 'gymwire[{extra}]'" if extra else f"pip install {' '.join(missing)}"
        raise MissingExtra(f"{needed_by} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: {install}")


def call_with_config(method: Callable[..., Any], config: Mapping[str, Any]) -> Any:
    """Call `method` with the configuration keywords it declares (all of them if it takes **kwargs)."""
    parameters = inspect.signature(method).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return method(**config)
    declared = {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return method(**{key: value for key, value in config.items() if key in declared})


def as_observation(value: ObservationLike) -> Observation:
    if isinstance(value, Observation):
        return value
    if isinstance(value, str):
        return Observation(text=value)  # (validating one field costs less than pydantic's model_construct)
    raise TypeError(f"an environment must return str or Observation, got {type(value).__name__}")


class Environment:
    """Base class of every gymwire environment. One instance plays one session.

    Class attributes describe the environment to clients (`gymwire envs URL` shows them):
    `name`, `version`, `description`, `instructions` (how an LLM should write actions),
    `splits` (split name -> number of tasks), `default_max_turns`, `seedable`, `images`.
    An environment whose splits depend on its configuration overrides `info` (taking the
    configuration keywords it needs) and sets `self.splits` in its constructor.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.1.0"
    description: ClassVar[str] = ""
    instructions: ClassVar[str] = ""
    action_format: ClassVar[str] = "text"
    splits: dict[str, int] = {}  # an instance may set its own, from its configuration
    default_max_turns: ClassVar[int] = 20
    observation_fields: ClassVar[list[str]] = ["text"]
    seedable: ClassVar[bool] = True
    images: ClassVar[bool] = False
    # Sync environments run in a thread pool so they never block the server. One whose steps take
    # microseconds may set `inline = True` to run on the event loop: a thread hop would cost more.
    # (Such an environment is also constructed on the loop, so its constructor must be quick too.)
    inline: ClassVar[bool] = False
    # Importable modules the environment needs beyond gymwire's own dependencies, and the gymwire
    # extra that installs them: a server refuses to start without them, naming the pip line.
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    # The session options the environment understands (name -> what it does). A server refuses an
    # open with any other option (INVALID_TASK, naming these): a typo must not be silently ignored.
    # None: not declared, every option reaches `reset` (environments written before this existed).
    known_options: ClassVar[dict[str, str] | None] = None

    def reset(self, task: Task) -> ObservationLike | Awaitable[ObservationLike]:
        """Start an episode of `task`; return the first observation."""
        raise NotImplementedError

    def step(self, action: str) -> StepOutcome | Awaitable[StepOutcome]:
        """Apply one action (the agent's raw text); return what happened."""
        raise NotImplementedError

    def close(self) -> None | Awaitable[None]:
        """Release what the episode holds. Called once, when the session closes or is reaped."""

    # -- helpers for subclasses and the runtime --------------------------------------------------

    @classmethod
    def info(cls) -> EnvInfo:
        if not cls.name:
            raise TypeError(f"{cls.__qualname__} must set the class attribute `name`")
        return EnvInfo(
            name=cls.name,
            version=cls.version,
            description=cls.description,
            action_format=cls.action_format,
            instructions=cls.instructions,
            splits=dict(cls.splits),
            default_max_turns=cls.default_max_turns,
            observation_fields=list(cls.observation_fields),
            seedable=cls.seedable,
            images=cls.images,
        )

    @classmethod
    def check_requirements(cls) -> None:
        """Raise MissingExtra when a module of `requires` is not installed. An override may take
        configuration keywords (a module needed only without a data directory of one's own)."""
        require_modules(cls.requires, cls.extra, f"environment {cls.name or cls.__qualname__!r}")

    @classmethod
    def check_class(cls, **config: Any) -> None:
        """Raise ValueError when the class cannot be served (no `name`), MissingExtra when a module
        it requires, configured with `config`, is missing. A server calls this for every
        environment before it starts."""
        if not cls.name:
            raise ValueError(f"{cls.__module__}.{cls.__qualname__} must set the class attribute `name` (e.g. name = \"mygame\")")
        call_with_config(cls.check_requirements, config)

    @classmethod
    def configuration_keywords(cls) -> set[str]:
        """The constructor's keyword arguments: what an operator configures when serving."""
        parameters = inspect.signature(cls.__init__).parameters.values()
        return {p.name for p in parameters if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Raise TaskError when `options` holds one that `known_options` does not list."""
        if cls.known_options is None:
            return
        unknown = sorted(set(options) - set(cls.known_options))
        configuration = [name for name in unknown if name in cls.configuration_keywords()]
        if configuration:
            # A session must not choose what the operator configured (a corpus, a recipe folder, a URL).
            raise TaskError(
                f"{', '.join(map(repr, configuration))} is the server operator's configuration of {cls.name}, not a session "
                f"option (gymwire serve {cls.name}:{configuration[0]}=...)"
            )
        if unknown:
            takes = ", ".join(f"{name} ({what})" for name, what in sorted(cls.known_options.items())) or "no options"
            raise TaskError(f"unknown option(s) {', '.join(map(repr, unknown))}; {cls.name} takes {takes}")

    @classmethod
    def is_async(cls) -> bool:
        """True when reset and step are coroutines: they then run on the event loop itself. A class
        mixing `def` and `async def` methods runs its sync ones in the thread pool, its coroutines
        on the loop."""
        return inspect.iscoroutinefunction(cls.step) and inspect.iscoroutinefunction(cls.reset)

    def task_index(self, task: Task, default_split: str | None = None) -> tuple[str, int]:
        """Resolve a task to (split, index) against this environment's `splits`, raising TaskError
        with what is valid.

        A seed picks an index of `default_split` (or the first split) deterministically."""
        splits = self.splits
        if not splits:
            raise TaskError(f"{self.name} has no task splits; open it with a seed")
        if task.split is None:
            split = default_split or next(iter(splits))
            seed = task.seed or 0
            return split, seed % splits[split]
        if task.split not in splits:
            raise TaskError(f"unknown split {task.split!r}; {self.name} has splits {sorted(splits)}")
        size = splits[task.split]
        if not 0 <= (task.index or 0) < size:
            raise TaskError(f"index {task.index} out of range: split {task.split!r} has tasks 0..{size - 1}")
        return task.split, int(task.index or 0)
