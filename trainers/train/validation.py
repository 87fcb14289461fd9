"""Configuration checked whole, before anything loads: pydantic models of the training config and
of `gymwire eval --env-config`, and one way to report what is wrong with them — every problem at
once, each with its key, on one line."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gymwire.sdk.errors import UsageError

__all__ = ["Strict", "validated", "EnvConfig", "env_configs"]

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Unknown keys are errors (a typo must not fall back to a default), values are not coerced
    between kinds (no "3" for 3), but YAML's `1e-5` (a string in YAML 1.1) is a number."""

    model_config = ConfigDict(extra="forbid", strict=False, validate_assignment=True)


def validated(model: type[M], data: Any, where: str, error: type[Exception] = UsageError) -> M:
    """`model` from `data`, or `error` listing every problem as `where key: what` in one line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{where}: " + "; ".join(_problem(model, e) for e in exc.errors())) from None


def yaml_problem(exc: Exception) -> str:
    """A YAML error on one line: where and what."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def _valid_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the section at `loc` takes."""
    for part in loc:
        field = model.model_fields.get(str(part))
        inner = getattr(field, "annotation", None) if field else None
        candidates = [inner, *getattr(inner, "__args__", ())]
        found = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not found:
            return []
        model = found[0]
    return sorted(model.model_fields)


def _problem(model: type[BaseModel], error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        valid = _valid_keys(model, tuple(error["loc"][:-1]))
        message = "unknown key" + (f"; use one of {', '.join(valid)}" if valid else "")
    given = error.get("input")
    shown = "" if error["type"] in ("extra_forbidden", "missing") or isinstance(given, dict) else f" (got {given!r})"
    return f"{key}: {message}{shown}"


class EnvConfig(Strict):
    """One environment's entry in `gymwire eval --env-config`."""

    system: str | None = None
    examples: list[Any] = Field(default_factory=list)
    action_pattern: str | None = None
    instructions: bool = True
    options: dict[str, Any] = Field(default_factory=dict)
    max_turns: int | None = Field(default=None, ge=1)


def env_configs(data: Any, where: str) -> dict[str, EnvConfig]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a mapping ENV -> {{{', '.join(EnvConfig.model_fields)}}}, got {type(data).__name__}")
    problems: list[str] = []
    configs: dict[str, EnvConfig] = {}
    for name, entry in data.items():
        try:
            configs[str(name)] = validated(EnvConfig, entry, str(name))
        except UsageError as exc:
            problems.append(str(exc))
    if problems:
        raise UsageError(f"{where}: " + "; ".join(problems))
    return configs
