"""Find environment classes by built-in name (entry points `gymwire.envs`) or by `module:Class`."""

from __future__ import annotations

from importlib import metadata

from .environment import Environment
from .runners import load_env_class


def builtin_envs() -> dict[str, str]:
    """name -> `module:Class` of every environment installed packages announce."""
    return {entry.name: entry.value for entry in metadata.entry_points(group="gymwire.envs")}


def env_factories() -> dict[str, metadata.EntryPoint]:
    """prefix -> factory of environment classes built from a spec (`agentgym:webshop=URL`)."""
    return {entry.name: entry for entry in metadata.entry_points(group="gymwire.env_factories")}


def resolve_env(spec: str) -> type[Environment]:
    """A built-in name (`guess`), a factory spec (`agentgym:webshop=http://...`) or an import path
    (`mypkg.myenv:MyEnv`) -> the Environment class."""
    prefix, _, argument = spec.partition(":")
    factory = env_factories().get(prefix)
    if factory is not None:
        try:
            return factory.load()(argument)
        except ImportError as exc:
            raise ValueError(f"cannot load {prefix!r} environments: {exc}") from exc
    builtins = builtin_envs()
    path = builtins.get(spec, spec)
    if ":" not in path:
        raise ValueError(
            f"unknown environment {spec!r}: built-in ones are {sorted(builtins)}; "
            "for your own class give its import path, e.g. mypkg.myenv:MyEnv"
        )
    try:
        cls = load_env_class(path)
    except ImportError as exc:
        extra = f" (pip install 'gymwire[{spec}]')" if spec in builtins else ""
        raise ValueError(f"cannot import environment {spec!r} from {path}: {exc}{extra}") from exc
    except AttributeError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Environment)):
        raise ValueError(f"{path} is not a subclass of gymwire.sdk.Environment")
    return cls
