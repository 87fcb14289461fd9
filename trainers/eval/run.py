"""What a `gymwire eval` run records about itself (its run.json), in one place.

A row of the table must be reproducible from its run.json alone: the command line, gymwire's and
the libraries' versions, the model (its file's sha256 where it is a file; for an endpoint, what
the server says it serves), every sampling parameter exactly as sent to the backend, the token
budgets, the task selection and, per environment, its server, options, turn limit and prompt.
`gymwire eval --rerun DIR` plays a recorded run again from it.

An output folder holds one run: re-running the same command resumes it, but a command with other
settings is refused (their episodes would mix in one row) unless `--overwrite` starts it over.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from gymwire.sdk.errors import UsageError

__all__ = ["FORMAT", "run_record", "task_choice_text", "describe_versions", "file_digest", "check_output", "recorded_command"]

FORMAT = "gymwire.eval/1"
# Keys of run.json that may differ between the parts of one resumed run.
_FREE = {"started", "envs", "command", "concurrency", "versions", "tasks", "format"}


def describe_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("gymwire", "torch", "transformers", "openai", "llama_cpp_python", "vllm"):
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return versions


def file_digest(path: Path) -> str:
    """sha256 of a model file; a checkpoint folder: of its weight files, in name order."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    for file in files:
        with file.open("rb") as data:
            for block in iter(lambda: data.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def task_choice_text(tasks: int | range | None) -> str | int:
    """How run.json records a task choice: 'all', N, or 'A-B'."""
    if isinstance(tasks, range):
        return f"{tasks.start}-{tasks.stop - 1}"
    return "all" if tasks is None else tasks


def run_record(settings: Any) -> dict[str, Any]:
    """run.json's fields for EvalSettings `settings` (environments are added as they start)."""
    return {
        "format": FORMAT,
        "model": settings.model,
        **settings.run_info,
        "split": settings.split,
        "tasks": task_choice_text(settings.tasks),
        "concurrency": settings.concurrency,
        "sampling": settings.sampling.parameters(),
        "turn_tokens": settings.turn_tokens,
        "episode_tokens": settings.episode_tokens,
        "seed": settings.seed,
        "envs": {},
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def check_output(output: Path, new: dict[str, Any], env_options: dict[str, dict[str, Any]], overwrite: bool) -> None:
    """Refuse to add episodes to a folder holding a run with other settings (or delete it when
    `overwrite`). `new` is this run's record without its environments; `env_options` maps each
    environment to the options it will be played with."""
    path = output / "run.json"
    if not path.exists():
        return
    if overwrite:
        shutil.rmtree(output)
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        old = {}
    changed = sorted(key for key in {**old, **new} if key not in _FREE and old.get(key) != new.get(key))
    for env, options in env_options.items():
        recorded = old.get("envs", {}).get(env)
        if recorded is not None and recorded.get("options", {}) != options:
            changed.append(f"envs.{env}.options")
    if changed:
        shown = "; ".join(f"{key}: {_get(old, key)!r} there, {_get(new, key, env_options)!r} now" for key in changed[:3])
        raise UsageError(
            f"{output} holds an eval run with other settings ({shown}); its episodes must not mix with these: "
            "give another --output, or --overwrite to start it over"
        )


def _get(record: dict[str, Any], key: str, env_options: dict[str, Any] | None = None) -> Any:
    if key.startswith("envs."):
        env = key.split(".")[1]
        if env_options is not None:
            return env_options.get(env)
        return record.get("envs", {}).get(env, {}).get("options")
    return record.get(key)


def recorded_command(folder: str | Path) -> list[str]:
    """The arguments of `gymwire eval` a run was started with (its run.json's `command`)."""
    path = Path(folder) / "run.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"no run.json in {folder}: give a `gymwire eval` output folder") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not JSON ({exc}); give a `gymwire eval` output folder") from None
    command = record.get("command")
    if not isinstance(command, list) or not command:
        raise UsageError(f"{path} records no command (written by an older gymwire); run the eval again by hand")
    words = [str(word) for word in command]
    return words[1:] if words[0] == "eval" else words


def command_line(argv: Sequence[str]) -> list[str]:
    """The arguments as recorded: without --rerun/--overwrite/--output (a rerun chooses its own)."""
    kept: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        if word in ("--overwrite", "--no-progress"):
            continue
        if word in ("--output", "--rerun"):
            skip = True
            continue
        if word.startswith(("--output=", "--rerun=")):
            continue
        kept.append(word)
    return kept
