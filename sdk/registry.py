"""Find environments and their configuration: the text `gymwire serve` is given -> an `EnvSpec`.

An environment is a built-in name (entry points `gymwire.envs`), a `module:Class` (the current
directory is importable, as with `python -m`) or a `path/to/file.py:Class`, optionally followed by
its configuration: `textcraft:recipes_dir=my/recipes`, `mypkg.games:Coin:sides=3`, several
`key=value` pairs separated by commas. A value that starts with `{` or `[` is JSON
(`webarena:tasks=t.json,sites={"SHOP": "http://127.0.0.1:7770"}`); others are strings, converted to
the constructor parameter's type. `name=` sets the served name. A package may also own a prefix
with a grammar of its own (entry points `gymwire.env_shorthands`: `agentgym:webshop=URL,...`).

A serve file (`gymwire serve --config gym.toml`, TOML or YAML) lists several environments:

    [[envs]]
    env = "textcraft"                       # any of the forms above
    name = "toycraft"                       # optional: the served name
    kwargs = { recipes_dir = "my/recipes" } # optional: the constructor's keyword arguments
"""

from __future__ import annotations

import json
import os
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping

from .env_spec import EnvSpec, EnvSpecError, load_env_class
from .environment import Environment

__all__ = ["builtin_envs", "env_shorthands", "resolve_env", "read_serve_file"]

# Splits `k=v,k=v`: a comma followed by `identifier=` starts the next pair, so a JSON value's
# commas (followed by a quote or a space) stay in the value.
_PAIR_SEPARATOR = re.compile(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*=)")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def builtin_envs() -> dict[str, str]:
    """name -> `module:Class` of every environment installed packages announce."""
    return {entry.name: entry.value for entry in metadata.entry_points(group="gymwire.envs")}


def env_shorthands() -> dict[str, metadata.EntryPoint]:
    """prefix -> parser of that prefix's own spec grammar (`agentgym:webshop=URL` -> EnvSpec)."""
    return {entry.name: entry for entry in metadata.entry_points(group="gymwire.env_shorthands")}


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


def parse_kwargs(text: str, where: str) -> dict[str, Any]:
    """`a=1,b={"x": 2}` -> {"a": "1", "b": {"x": 2}} (JSON for values that start with { or [)."""
    kwargs: dict[str, Any] = {}
    for pair in _PAIR_SEPARATOR.split(text):
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            raise EnvSpecError(f"{where}: expected KEY=VALUE[,KEY=VALUE...] after the environment, got {pair!r}")
        if key in kwargs:
            raise EnvSpecError(f"{where}: option {key!r} is given twice")
        if value.lstrip().startswith(("{", "[")):
            try:
                kwargs[key] = json.loads(value)
            except ValueError as exc:
                raise EnvSpecError(f"{where}: option {key} is not valid JSON ({exc})") from None
        else:
            kwargs[key] = value
    return kwargs


def _split_reference(text: str) -> tuple[str, str]:
    """(environment reference, configuration text): `textcraft:a=1` -> ("textcraft", "a=1");
    `pkg.mod:Class:a=1` -> ("pkg.mod:Class", "a=1"); `./f.py:Class` -> ("./f.py:Class", "")."""
    head, sep, rest = text.partition(":")
    if not sep:
        return text, ""
    if "=" in rest.partition(",")[0].partition(":")[0]:
        return head, rest  # NAME:key=value
    qualname, sep, config = rest.partition(":")
    return f"{head}:{qualname}", config


def _load(reference: str) -> type[Environment]:
    builtins = builtin_envs()
    path = builtins.get(reference, reference)
    if ":" not in path:
        raise ValueError(
            f"unknown environment {reference!r}: built-in ones are {sorted(builtins)}; "
            "for your own class give its import path or file, e.g. mypkg.myenv:MyEnv or ./myenv.py:MyEnv"
        )
    import_path = _importable_path(path)
    try:
        cls = load_env_class(import_path)
    except ImportError as exc:
        remedy = f"pip install 'gymwire[{reference}]'" if reference in builtins else (
            "check the import path (module:Class, or path/to/file.py:Class) and that the module is installed"
        )
        raise ValueError(f"cannot import environment {reference!r} from {path}: {exc}; {remedy}") from exc
    except AttributeError as exc:
        raise ValueError(f"{path}: {exc}; check the class name after the colon") from exc
    module = sys.modules[import_path.partition(":")[0]]
    if path != import_path and Path(module.__file__ or "").resolve() != Path(path.partition(":")[0]).resolve():
        raise ValueError(f"{path}: a module named {module.__name__!r} is already importable from {module.__file__}; rename the file")
    if not (isinstance(cls, type) and issubclass(cls, Environment)):
        raise ValueError(f"{path} is not a subclass of gymwire.sdk.Environment")
    return cls


Defaults = Callable[[type[Environment]], Mapping[str, Any]]


def resolve_env(text: str, kwargs: Mapping[str, Any] | None = None, name: str | None = None, defaults: Defaults | None = None) -> EnvSpec:
    """The spec of an environment reference with its configuration (the module doc's forms), plus
    `kwargs` and `name` given apart (a serve file's); `defaults(cls)` fills in keywords given
    neither way. Checked: its class is servable and every module it needs is installed. Raises
    ValueError (EnvSpecError) or MissingExtra (an ImportError) saying what is wrong, in one line."""
    prefix, _, rest = text.partition(":")
    shorthand = env_shorthands().get(prefix)
    if shorthand is not None:
        try:
            parsed: EnvSpec = shorthand.load()(rest)
        except ImportError as exc:
            raise ValueError(f"cannot load {prefix!r} environments: {exc}") from exc
        cls, given, name = parsed.env_class, {**parsed.kwargs, **(kwargs or {})}, name or parsed.name
    else:
        reference, config = _split_reference(text)
        given = parse_kwargs(config, text) if config else {}
        inline_name = given.pop("name", None)
        cls, given, name = _load(reference), {**given, **(kwargs or {})}, name or inline_name
    spec = EnvSpec.of(cls, name=name, **{**(defaults(cls) if defaults else {}), **given})
    spec.check()
    return spec


def read_serve_file(path: str | os.PathLike[str], defaults: Defaults | None = None) -> list[EnvSpec]:
    """The environments a serve file lists (TOML, or YAML by its .yaml/.yml suffix)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read serve file {file}: {exc.strerror or exc}") from None
    data = _parse_serve_file(file, text)
    if not isinstance(data, dict) or not isinstance(data.get("envs"), list) or not data["envs"]:
        raise ValueError(f"{file}: a serve file lists its environments under `envs`, e.g. [[envs]] env = \"guess\"")
    unknown = sorted(set(data) - {"envs"})
    if unknown:
        raise ValueError(f"{file}: unknown key {unknown[0]!r}; a serve file has only `envs`")
    specs = []
    for number, entry in enumerate(data["envs"], 1):
        where = f"{file}: envs entry {number}"
        if isinstance(entry, str):
            entry = {"env": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("env"), str):
            raise ValueError(f"{where}: give `env` (a built-in name, module:Class or file.py:Class)")
        extra = sorted(set(entry) - {"env", "name", "kwargs"})
        if extra:
            raise ValueError(f"{where}: unknown key {extra[0]!r}; an entry has env, name and kwargs")
        kwargs = entry.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"{where}: kwargs must be a table of constructor arguments")
        try:
            specs.append(resolve_env(entry["env"], kwargs, entry.get("name"), defaults))
        except ValueError as exc:
            raise type(exc)(f"{where}: {exc}") from None
    return specs


def _parse_serve_file(file: Path, text: str) -> Any:
    if file.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{file}: reading YAML needs pyyaml (pip install pyyaml), or write the serve file as TOML") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{file}: not valid YAML: {' '.join(str(exc).split())}") from None
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{file}: not valid TOML ({exc}); a serve file is TOML, or YAML named .yaml") from None
