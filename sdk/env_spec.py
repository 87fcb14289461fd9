"""What names a configured environment: `EnvSpec`, an import path plus keyword arguments.

As Gymnasium's `EnvSpec`, it is data: the environment class's import path (`module:Class`), the
keyword arguments its constructor is called with (a recipe directory, a corpus, a JVM pool size,
a bridge's URL...) and the name it is served under. `gymwire serve`, the server, every runner (the
process runner pickles it into its child, which rebuilds the environment from it), eval and
training pass it around; nothing else carries configuration.

Making a spec validates it: the class is imported and must be an `Environment`, every keyword must
be a parameter of its constructor (else `EnvSpecError` names the key and the accepted ones), values
are checked against the parameter's annotation and converted ("4" -> 4 for an `int`, which is what
a command line gives), and required parameters must be present.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

import pydantic

from .environment import Environment, call_with_config

__all__ = ["EnvSpec", "EnvSpecError", "load_env_class"]


class EnvSpecError(ValueError):
    """A spec that cannot be served: an unknown keyword, a value of the wrong type, a missing one."""


def load_env_class(path: str) -> Any:
    """The object at `module:qualname` (ImportError, AttributeError when there is none)."""
    module_name, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class EnvSpec:
    """An environment class (`entry_point`, "module:Class"), its constructor's keyword arguments
    (`kwargs`) and the name clients open it by (`name`, default the class's `name`).

    `EnvSpec.of(TextCraftEnv, recipes_dir="my/recipes", name="toycraft")` builds one from a class;
    `make()` builds the environment, `info()` describes it as configured."""

    entry_point: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""
    # The class, when the spec was made from one (it may not be importable by path, e.g. a class
    # defined in a function); never pickled: a child process imports `entry_point`.
    _env_class: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.entry_point, str) or ":" not in self.entry_point:
            raise EnvSpecError(f"entry_point must be 'module:Class', got {self.entry_point!r}")
        if not isinstance(self.kwargs, Mapping) or not all(isinstance(key, str) for key in self.kwargs):
            raise EnvSpecError(f"{self.entry_point}: kwargs must map option names to values, got {self.kwargs!r}")
        cls = self.env_class
        object.__setattr__(self, "_env_class", cls)
        object.__setattr__(self, "kwargs", _validated_kwargs(cls, dict(self.kwargs), self.name or cls.name or self.entry_point))
        object.__setattr__(self, "name", self.name or cls.name)

    @classmethod
    def of(cls, env_class: type[Environment], /, *, name: str | None = None, **kwargs: Any) -> "EnvSpec":
        """The spec of `env_class` configured with `kwargs`, served as `name` (default its `name`)."""
        if not (isinstance(env_class, type) and issubclass(env_class, Environment)):
            raise EnvSpecError(f"{env_class!r} is not a subclass of gymwire.sdk.Environment")
        return cls(f"{env_class.__module__}:{env_class.__qualname__}", kwargs, name or "", _env_class=env_class)

    @classmethod
    def coerce(cls, env: "EnvSpec | type[Environment]") -> "EnvSpec":
        """A spec as it is; an Environment class as the spec of its defaults."""
        return env if isinstance(env, EnvSpec) else cls.of(env)

    def renamed(self, name: str) -> "EnvSpec":
        """This spec served under another name."""
        return EnvSpec(self.entry_point, self.kwargs, name, _env_class=self._env_class)

    @property
    def env_class(self) -> type[Environment]:
        if self._env_class is not None:
            return self._env_class
        try:
            cls = load_env_class(self.entry_point)
        except AttributeError as exc:
            raise EnvSpecError(f"{self.entry_point}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Environment)):
            raise EnvSpecError(f"{self.entry_point} is not a subclass of gymwire.sdk.Environment")
        object.__setattr__(self, "_env_class", cls)
        return cls

    def check(self) -> None:
        """Raise ValueError when the class cannot be served (no `name`), MissingExtra when a module
        it requires, as configured, is missing. A server checks every spec before it starts."""
        self.env_class.check_class(**self.kwargs)

    def make(self) -> Environment:
        """A new environment, configured as this spec says."""
        return self.env_class(**self.kwargs)

    def info(self) -> Any:
        """The environment's description as configured (its `info` gets the keywords it declares),
        under the served name."""
        info = call_with_config(self.env_class.info, self.kwargs)
        return info if info.name == self.name else info.model_copy(update={"name": self.name})

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_env_class"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)  # frozen: set the fields directly, without validating again


def _parameters(cls: type) -> tuple[dict[str, inspect.Parameter], bool]:
    """The constructor's keyword parameters, and whether it also takes **kwargs."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return {}, True
    keywords = {
        name: p for name, p in signature.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return keywords, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__, include_extras=True)
    except Exception:  # an annotation that does not resolve: take the values as given
        return {}


def _validated_kwargs(cls: type, kwargs: dict[str, Any], label: str) -> dict[str, Any]:
    parameters, open_ended = _parameters(cls)
    accepted = ", ".join(parameters) if parameters else None
    unknown = [key for key in kwargs if key not in parameters]
    if unknown and not open_ended:
        takes = f"its options are {accepted}" if accepted else "it takes no options"
        raise EnvSpecError(f"{label} has no option {unknown[0]!r}; {takes}")
    missing = [name for name, p in parameters.items() if p.default is inspect.Parameter.empty and name not in kwargs]
    if missing:
        raise EnvSpecError(f"{label} needs the option{'s' if len(missing) > 1 else ''} {', '.join(missing)} (its options are {accepted})")
    hints = _type_hints(cls)
    validated = {}
    for key, value in kwargs.items():
        hint = hints.get(key)
        if hint is None:
            validated[key] = value
            continue
        try:
            validated[key] = pydantic.TypeAdapter(hint).validate_python(value)
        except pydantic.PydanticSchemaGenerationError:
            validated[key] = value  # a type pydantic cannot check: the constructor will
        except pydantic.ValidationError as exc:
            problem = exc.errors()[0]["msg"]
            raise EnvSpecError(f"{label} option {key}={value!r}: {problem}") from None
    return validated
