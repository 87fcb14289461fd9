"""Find environment classes by built-in name (entry points `gymwire.envs`), by `module:Class` (the
current directory is importable, as with `python -m`), or by `path/to/file.py:Class`."""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

from .environment import Environment
from .runners import load_env_class


def builtin_envs() -> dict[str, str]:
    """name -> `module:Class` of every environment installed packages announce."""
    return {entry.name: entry.value for entry in metadata.entry_points(group="gymwire.envs")}


def env_factories() -> dict[str, metadata.EntryPoint]:
    """prefix -> factory of environment classes built from a spec (`agentgym:webshop=URL`)."""
    return {entry.name: entry for entry in metadata.entry_points(group="gymwire.env_factories")}


def _importable_path(path: str) -> str:
    """`module:Class` for `file.py:Class` (its folder goes on sys.path); the current directory goes
    on sys.path for a plain `module:Class`, so a module next to the user imports."""
    module, _, qualname = path.partition(":")
    if not module.endswith(".py") and os.sep not in module and "/" not in module:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        return path
    file = Path(module).resolve()
    if file.suffix != ".py" or not file.is_file():
        raise ValueError(f"no Python file {module!r}; give path/to/file.py:Class or module:Class")
    if str(file.parent) not in sys.path:
        sys.path.insert(0, str(file.parent))
    return f"{file.stem}:{qualname}"


def resolve_env(spec: str) -> type[Environment]:
    """A built-in name (`guess`), a factory spec (`agentgym:webshop=http://...`), an import path
    (`mypkg.myenv:MyEnv`) or a file path (`./myenv.py:MyEnv`) -> the Environment class. Raises
    ValueError saying what is wrong."""
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
            "for your own class give its import path or file, e.g. mypkg.myenv:MyEnv or ./myenv.py:MyEnv"
        )
    import_path = _importable_path(path)
    try:
        cls = load_env_class(import_path)
    except ImportError as exc:
        extra = f" (pip install 'gymwire[{spec}]')" if spec in builtins else ""
        raise ValueError(f"cannot import environment {spec!r} from {path}: {exc}{extra}") from exc
    except AttributeError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    module = sys.modules[import_path.partition(":")[0]]
    if path != import_path and Path(module.__file__ or "").resolve() != Path(path.partition(":")[0]).resolve():
        raise ValueError(f"{path}: a module named {module.__name__!r} is already importable from {module.__file__}; rename the file")
    if not (isinstance(cls, type) and issubclass(cls, Environment)):
        raise ValueError(f"{path} is not a subclass of gymwire.sdk.Environment")
    cls.check_class()
    return cls
