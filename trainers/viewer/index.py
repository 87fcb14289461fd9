"""Runs found under the paths given to `gymwire view`, and an index of their JSONL files.

Each JSONL file is read once from start to end; later refreshes read only what was appended (a
file that shrank was rewritten and is read again). Per episode the index keeps a few summary fields
and where its line is, so a list of 100,000 episodes filters in memory and an episode's full record
is read from disk only when opened. A line that is not valid JSON is kept as a row with a problem,
never dropped: the page shows it.
"""

from __future__ import annotations

import bisect
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

__all__ = ["EpisodeRow", "JsonlFile", "Run", "Catalog", "ViewError", "find_runs"]

STEP_FILE = re.compile(r"step-(\d+)\.jsonl$")
EPISODE_KEYS = ("turns", "tokens", "finish")  # a JSONL line with one of these is an episode


class ViewError(Exception):
    """A path that cannot be shown; the message says what to pass instead."""


@dataclass(slots=True)
class EpisodeRow:
    """One line of an episode file: where it is and what the filters need."""

    run: int
    file: int  # position in Run.files
    line: int  # 1-based line number
    offset: int
    length: int
    step: int | None = None
    env: str = ""
    split: str | None = None
    task: int | None = None
    seed: int | None = None
    group: int | None = None
    success: bool | None = None
    finish: str = ""
    reward: float | None = None
    turns: int | None = None
    error: str | None = None  # the episode's own error (the server answered a step with one)
    problem: str | None = None  # why the line could not be read as an episode

    @property
    def key(self) -> str:
        return f"{self.run}.{self.file}.{self.line}"

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.key,
            "run": self.run,
            "step": self.step,
            "env": self.env,
            "split": self.split,
            "task": self.task,
            "seed": self.seed,
            "group": self.group,
            "success": self.success,
            "finish": self.finish,
            "reward": self.reward,
            "turns": self.turns,
            "error": self.error,
            "problem": self.problem,
        }


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _summarise(row: EpisodeRow, record: Any) -> None:
    if not isinstance(record, dict):
        row.problem = f"line {row.line}: a JSON {type(record).__name__}, not an episode object"
        return
    task = record.get("task") if isinstance(record.get("task"), dict) else {}
    row.env = str(record.get("env", ""))
    row.split = task.get("split") if isinstance(task.get("split"), str) else None
    row.task = _int(task.get("index"))
    row.seed = _int(task.get("seed"))
    row.group = _int(task.get("group"))
    row.success = record["success"] if isinstance(record.get("success"), bool) else None
    row.finish = str(record.get("finish") or "")
    row.reward = _number(record.get("reward"))
    turns = record.get("turns")
    row.turns = len(turns) if isinstance(turns, list) else None
    row.error = str(record["error"]) if record.get("error") else None
    if _int(record.get("step")) is not None:
        row.step = record["step"]


class JsonlFile:
    """A JSONL file read incrementally. `on_line(line_no, offset, raw, record_or_None, problem)`
    turns each line into whatever the owner keeps; a line that does not parse gets a problem."""

    def __init__(self, path: Path, on_line: Callable[..., Any], step: int | None = None):
        self.path = path
        self.step = step
        self.items: list[Any] = []
        self._on_line = on_line
        self._offset = 0  # end of the last line read as complete
        self._lines = 0
        self._tail: Any = None  # the item made from a last line without newline, read again if it grows
        self._version: tuple[int, int] | None = None

    def refresh(self) -> bool:
        """Read what was appended; True when something changed."""
        try:
            stat = self.path.stat()
            size, version = stat.st_size, (stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            size, version = 0, (0, 0)
        if version == self._version:
            return False
        if size < self._offset:  # rewritten (e.g. metrics.jsonl after a resume): read again
            self.items.clear()
            self._offset = self._lines = 0
            self._tail = None
        if self._tail is not None:
            self.items.pop()
            self._tail = None
        self._version = version
        if size == self._offset:
            return True
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read(size - self._offset)
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end == -1:  # a last line without newline: kept, and read again if the file grows
                if data[pos:].strip():
                    self._tail = self._parse(self._lines + 1, self._offset + pos, data[pos:], complete=False)
                    self.items.append(self._tail)
                break
            self._lines += 1
            if data[pos:end].strip():
                self.items.append(self._parse(self._lines, self._offset + pos, data[pos:end], complete=True))
            pos = end + 1
        self._offset += data.rfind(b"\n") + 1
        return True

    def _parse(self, line_no: int, offset: int, raw: bytes, complete: bool) -> Any:
        try:
            record = json.loads(raw)
        except ValueError as exc:
            where = "its last line has no newline: cut short, or still being written" if not complete else str(exc)
            return self._on_line(line_no, offset, raw, None, f"line {line_no}: not valid JSON ({where})")
        return self._on_line(line_no, offset, raw, record, None)


@dataclass
class Run:
    """A training run directory, an eval output, or a single JSONL file."""

    id: int
    name: str
    path: Path
    kind: str  # "train", "eval" or "episodes"
    metrics_path: Path | None = None
    episode_glob: tuple[Path, str] | None = None  # (folder, pattern) of episode files that may appear later
    episode_paths: list[Path] = field(default_factory=list)  # fixed episode files
    config: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)  # about the run as a whole (missing metrics, bad config)
    files: list[JsonlFile] = field(default_factory=list)
    metrics: JsonlFile | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # eval summary and such, shown as they are

    def refresh(self) -> bool:
        changed = False
        if self.metrics_path is not None:
            if self.metrics is None and self.metrics_path.exists():
                self.metrics = JsonlFile(self.metrics_path, _metric_line)
            if self.metrics is not None:
                changed |= self.metrics.refresh()
        known = {f.path for f in self.files}
        new_paths = [p for p in self._episode_paths() if p not in known]
        for path in new_paths:
            match = STEP_FILE.search(path.name)
            position = len(self.files)
            self.files.append(
                JsonlFile(path, _episode_line(self.id, position, int(match.group(1)) if match else None),
                          int(match.group(1)) if match else None)
            )
        for f in self.files:
            changed |= f.refresh()
        return changed or bool(new_paths)

    def _episode_paths(self) -> list[Path]:
        paths = list(self.episode_paths)
        if self.episode_glob is not None:
            folder, pattern = self.episode_glob
            if folder.is_dir():
                found = [p for p in folder.glob(pattern) if p.is_file()]
                paths += sorted(found, key=lambda p: (_step_of(p), p.name))
        return paths

    def metric_records(self) -> tuple[list[dict[str, Any]], list[str]]:
        if self.metrics is None:
            return [], []
        records = [item for item in self.metrics.items if isinstance(item, dict)]
        problems = [item for item in self.metrics.items if isinstance(item, str)]
        return records, problems

    def rows(self) -> Iterator[EpisodeRow]:
        for f in self.files:
            yield from f.items

    def info(self) -> dict[str, Any]:
        records, problems = self.metric_records()
        notes = list(self.notes)
        if self.kind == "train" and self.metrics is None:
            notes.append(f"no metrics file ({self.metrics_path.name if self.metrics_path else 'metrics.jsonl'} is missing)")
        bad_lines = sum(1 for row in self.rows() if row.problem)
        if bad_lines:
            notes.append(f"{bad_lines} episode line(s) could not be read (listed with a problem)")
        notes += problems
        return {
            "id": self.id,
            "name": self.name,
            "path": str(self.path),
            "kind": self.kind,
            "config": self.config,
            "episodes": sum(len(f.items) for f in self.files),
            "files": len(self.files),
            "steps": len(records),
            "last_step": records[-1].get("step") if records else None,
            "notes": notes,
            "extra": self.extra,
        }


def _step_of(path: Path) -> int:
    match = STEP_FILE.search(path.name)
    return int(match.group(1)) if match else -1


def _metric_line(line_no: int, offset: int, raw: bytes, record: Any, problem: str | None) -> Any:
    if problem is not None:
        return f"metrics {problem}"
    if not isinstance(record, dict):
        return f"metrics line {line_no}: not a JSON object"
    return record


def _episode_line(run: int, position: int, step: int | None) -> Callable[..., EpisodeRow]:
    def make(line_no: int, offset: int, raw: bytes, record: Any, problem: str | None) -> EpisodeRow:
        row = EpisodeRow(run, position, line_no, offset, len(raw), step=step)
        if problem is not None:
            row.problem = problem
        else:
            _summarise(row, record)
        return row

    return make


def _first_record(path: Path) -> Any:
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                try:
                    return json.loads(raw)
                except ValueError:
                    return None
    return None


def _load_config(run: Run, path: Path) -> None:
    try:
        run.config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        run.notes.append(f"{path.name} could not be read: {exc}")


def _is_train_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("config.json", "metrics.jsonl", "rollouts"))


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Runs under the given paths: a run directory, a folder of runs, an eval output or a JSONL file."""
    runs: list[Run] = []

    def add(kind: str, path: Path, **kwargs: Any) -> Run:
        run = Run(len(runs), _name(path), path, kind, **kwargs)
        runs.append(run)
        return run

    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise ViewError(f"{given} does not exist; pass a training run directory, an eval output or a JSONL file")
        if path.is_file():
            first = _first_record(path)
            if isinstance(first, dict) and "step" in first and not any(k in first for k in EPISODE_KEYS):
                add("train", path, metrics_path=path)
            else:
                add("episodes", path, episode_paths=[path])
        elif _is_train_run(path):
            run = add("train", path, metrics_path=path / "metrics.jsonl", episode_glob=(path / "rollouts", "*.jsonl"))
            if (path / "config.json").exists():
                _load_config(run, path / "config.json")
        else:
            children = sorted(p for p in path.iterdir() if p.is_dir() and _is_train_run(p))
            for child in children:
                run = add("train", child, metrics_path=child / "metrics.jsonl", episode_glob=(child / "rollouts", "*.jsonl"))
                if (child / "config.json").exists():
                    _load_config(run, child / "config.json")
            if not children:
                files = sorted(path.glob("*.jsonl"))
                if not files:
                    raise ViewError(
                        f"{given}: no run here (no config.json, metrics.jsonl, rollouts/ or *.jsonl); "
                        "pass a training run directory, a folder of runs, an eval output or a JSONL file"
                    )
                add("episodes", path, episode_paths=files)
    names = [run.name for run in runs]
    for run in runs:  # same folder name twice (runs/a/x, runs/b/x): show more of the path
        if names.count(run.name) > 1:
            run.name = f"{run.path.parent.name}/{run.name}"
    return runs


def _name(path: Path) -> str:
    return path.stem if path.is_file() else path.resolve().name


class Catalog:
    """All runs, their index, and a generation number that grows whenever something new is read."""

    def __init__(self, runs: list[Run]):
        self.runs = runs
        self.generation = 0
        self.indexed = False
        self._lock = threading.Lock()
        self._rows: list[EpisodeRow] = []
        self._rows_generation = -1

    def refresh(self) -> bool:
        """Read what changed on disk (run in a worker thread; the lock keeps readers consistent)."""
        changed = False
        for run in self.runs:
            with self._lock:
                if run.refresh():
                    changed = True
                    self.generation += 1
        self.indexed = True
        return changed

    def rows(self) -> list[EpisodeRow]:
        with self._lock:
            if self._rows_generation != self.generation:
                self._rows = [row for run in self.runs for row in run.rows()]
                self._rows_generation = self.generation
            return self._rows

    def row(self, key: str) -> EpisodeRow:
        try:
            run_id, position, line = (int(part) for part in key.split("."))
            rows = self.runs[run_id].files[position].items
        except (ValueError, IndexError):
            raise KeyError(key) from None
        # Rows of a file are in line order; lines that were blank have no row.
        found = bisect.bisect_left(rows, line, key=lambda row: row.line)
        if found == len(rows) or rows[found].line != line:
            raise KeyError(key)
        return rows[found]

    def read_record(self, row: EpisodeRow) -> tuple[Any, bytes]:
        """The episode's line as parsed JSON (None when it does not parse) and its raw bytes."""
        path = self.runs[row.run].files[row.file].path
        with path.open("rb") as f:
            f.seek(row.offset)
            raw = f.read(row.length)
        try:
            return json.loads(raw), raw
        except ValueError:
            return None, raw

    def search(self, rows: list[EpisodeRow], text: str, matches: Callable[[Any, str], bool]) -> list[EpisodeRow]:
        """Rows whose episode text contains `text` (case-insensitive). The raw bytes of each file are
        scanned for the JSON-escaped needle first; only lines with a hit are parsed and checked."""
        needle_forms = {json.dumps(text.lower(), ensure_ascii=False)[1:-1].encode(),
                        json.dumps(text.lower())[1:-1].encode()}
        by_file: dict[tuple[int, int], list[EpisodeRow]] = {}
        for row in rows:
            by_file.setdefault((row.run, row.file), []).append(row)
        found: set[int] = set()
        for (run_id, position), file_rows in by_file.items():
            path = self.runs[run_id].files[position].path
            try:
                data = path.read_bytes().lower()
            except OSError:
                continue
            starts = [row.offset for row in file_rows]
            for needle in needle_forms:
                at = data.find(needle)
                while at != -1:
                    i = bisect.bisect_right(starts, at) - 1
                    if i >= 0 and at < starts[i] + file_rows[i].length:
                        row = file_rows[i]
                        if id(row) not in found:
                            record, _ = self.read_record(row)
                            if matches(record, text.lower()):
                                found.add(id(row))
                        at = data.find(needle, starts[i] + file_rows[i].length)
                    else:
                        at = data.find(needle, at + 1)
        return [row for row in rows if id(row) in found]

