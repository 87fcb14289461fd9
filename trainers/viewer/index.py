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

import orjson

from gymwire.sdk.errors import UserError

__all__ = ["EpisodeRow", "JsonlFile", "Run", "Catalog", "ViewError", "find_runs"]

STEP_FILE = re.compile(r"step-(\d+)\.jsonl$")
EPISODE_KEYS = ("turns", "tokens", "finish")  # a JSONL line with one of these is an episode
# Episode.to_json writes the summary fields before "turns" and the long token arrays after it:
# parsing that head alone, and counting the turns' "action" keys, is several times faster than
# parsing the whole line. Lines of any other layout, or not whole, are parsed whole.
TURNS_AT = b', "turns": ['
HEAD_KEYS = {"env", "task", "success", "finish"}
LAST_KEY = b', "logprobs": ['


def loads(raw: bytes) -> Any:
    """orjson; the standard parser for what orjson refuses but Python's json writes (NaN, Infinity)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _episode_head(raw: bytes) -> tuple[dict[str, Any], int] | None:
    """The fields before "turns" and the number of turns, for a line laid out as Episode.to_json."""
    cut = raw.find(TURNS_AT)
    if cut == -1 or not (raw.startswith(b"]", cut + len(TURNS_AT)) or raw.startswith(b'{"action": ', cut + len(TURNS_AT))):
        return None
    # The line must be whole: it ends with the logprobs array, whose numbers contain no quote (a
    # key's quotes inside a string value are escaped, so this key is the real last one).
    last = raw.rfind(LAST_KEY)
    if last < cut or not raw.endswith(b"]}") or raw.find(b'"', last + len(LAST_KEY)) != -1:
        return None
    try:
        head = loads(raw[:cut] + b"}")
    except ValueError:
        return None
    if not isinstance(head, dict) or not HEAD_KEYS <= head.keys() or raw.find(b'"step": ', cut) != -1:
        return None
    end = raw.find(b'], "text": ', cut)
    return head, raw.count(b'{"action": ', cut, end if end != -1 else len(raw))


class ViewError(UserError):
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


def _typed(value: Any, kind: type) -> Any:
    """`value` if it is exactly of `kind` (so True is not an int), else None."""
    return value if type(value) is kind else None


def _summarise(row: EpisodeRow, record: Any) -> None:
    """The summary fields of a parsed episode; a field of the wrong type counts as absent."""
    if type(record) is not dict:
        row.problem = f"line {row.line}: a JSON {type(record).__name__}, not an episode object"
        return
    get = record.get
    task = get("task")
    if type(task) is dict:
        row.split = _typed(task.get("split"), str)
        row.task = _typed(task.get("index"), int)
        row.seed = _typed(task.get("seed"), int)
        row.group = _typed(task.get("group"), int)
    row.env = str(get("env", ""))
    row.success = _typed(get("success"), bool)
    row.finish = str(get("finish") or "")
    reward = get("reward")
    row.reward = float(reward) if type(reward) in (int, float) else None
    turns = get("turns")
    if type(turns) is list:
        row.turns = len(turns)
    error = get("error")
    row.error = str(error) if error else None
    if type(get("step")) is int:
        row.step = record["step"]


class JsonlFile:
    """A JSONL file read incrementally. `on_line(line_no, offset, raw, complete)` turns each line
    into whatever the owner keeps (`complete`: the line ends with a newline)."""

    def __init__(self, path: Path, on_line: Callable[[int, int, bytes, bool], Any], step: int | None = None):
        self.path = path
        self.step = step
        self.items: list[Any] = []
        self._on_line = on_line
        self._offset = 0  # end of the last line read as complete
        # The file's first bytes and those just before _offset: if either changed, it was rewritten
        # in place (metrics.jsonl after a resume, a replayed step's rollouts).
        self._head = self._anchor = b""
        self._lines = 0
        self._tail: Any = None  # the item made from a last line without newline, read again if it grows
        self._version: tuple[int, int] | None = None

    def refresh(self) -> bool:
        """Read what was appended; True when something changed."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        version = (stat.st_size, stat.st_mtime_ns)
        if version == self._version:
            return False
        self._version = version
        if self._tail is not None:
            self.items.pop()
            self._tail = None
        with self.path.open("rb") as f:
            head = f.read(len(self._head))
            f.seek(max(0, self._offset - len(self._anchor)))
            if head != self._head or f.read(len(self._anchor)) != self._anchor:  # rewritten: read it again
                self.items.clear()
                self._offset = self._lines = 0
                self._head = self._anchor = b""
            f.seek(self._offset)
            data = f.read()
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end == -1:  # a last line without newline: kept, and read again if the file grows
                if data[pos:].strip():
                    self._tail = self._on_line(self._lines + 1, self._offset + pos, data[pos:], False)
                    self.items.append(self._tail)
                break
            self._lines += 1
            if data[pos:end].strip():
                self.items.append(self._on_line(self._lines, self._offset + pos, data[pos:end], True))
            pos = end + 1
        consumed = data.rfind(b"\n") + 1
        if consumed:
            if not self._offset:
                self._head = data[: min(consumed, 64)]
            self._anchor = data[max(0, consumed - 32) : consumed]
            self._offset += consumed
        return True


def _parse_line(line_no: int, raw: bytes, complete: bool) -> tuple[Any, str | None]:
    """(record, None), or (None, what is wrong with the line)."""
    try:
        return loads(raw), None
    except ValueError as exc:
        where = str(exc) if complete else "its last line has no newline: cut short, or still being written"
        return None, f"line {line_no}: not valid JSON ({where})"


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
    results_path: Path | None = None  # an eval output's results.json, rewritten at the end of each eval
    results: Any = None
    _results_version: Any = field(default=None, repr=False)

    def refresh(self, lock: threading.Lock, changed: Callable[[], None]) -> None:
        """Read what is new on disk, one file at a time under `lock` (readers see whole files),
        calling `changed` after each file that changed."""
        found = self._episode_paths()
        with lock:
            if self.metrics_path is not None and self.metrics is None and self.metrics_path.exists():
                self.metrics = JsonlFile(self.metrics_path, _metric_line)
            known = {f.path for f in self.files}
            for path in found:
                if path not in known:
                    step = _step_of(path)
                    self.files.append(JsonlFile(path, _episode_line(self.id, len(self.files), step), step))
        for f in ([self.metrics] if self.metrics is not None else []) + self.files:
            with lock:
                if f.refresh():
                    changed()
        if self.results_path is not None:
            self._read_results(changed)

    def _read_results(self, changed: Callable[[], None]) -> None:
        try:
            stat = self.results_path.stat()
        except FileNotFoundError:
            return
        if (stat.st_size, stat.st_mtime_ns) == self._results_version:
            return
        self._results_version = (stat.st_size, stat.st_mtime_ns)
        try:
            self.results = json.loads(self.results_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # half-written: read again when it changes
            self.results = {"problem": f"results.json could not be read: {exc}"}
        changed()

    def _episode_paths(self) -> list[Path]:
        paths = list(self.episode_paths)
        if self.episode_glob is not None:
            folder, pattern = self.episode_glob
            if folder.is_dir():
                found = [p for p in folder.glob(pattern) if p.is_file()]
                paths += sorted(found, key=lambda p: (_step_of(p) or -1, p.name))
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

    def live_summary(self) -> dict[str, dict[str, Any]]:
        """Per environment, from the episodes written so far (results.json appears only at the end).
        A task played twice (an eval resumed after errors) counts by its last line."""
        last: dict[tuple, EpisodeRow] = {}
        for row in self.rows():
            if row.problem is None:
                task = (row.split, row.task, row.seed) if row.task is not None or row.seed is not None else row.key
                last[(row.env, task)] = row
        summary: dict[str, dict[str, Any]] = {}
        for row in last.values():
            env = summary.setdefault(row.env, {"episodes": 0, "successes": 0, "turns": 0, "errors": 0, "finish": {}})
            env["episodes"] += 1
            env["successes"] += bool(row.success)
            env["turns"] += row.turns or 0
            env["errors"] += row.finish == "error"
            env["finish"][row.finish] = env["finish"].get(row.finish, 0) + 1
        return {
            name: {"episodes": e["episodes"], "success": e["successes"] / e["episodes"], "turns": e["turns"] / e["episodes"],
                   "errors": e["errors"] / e["episodes"], "finish": e["finish"]}
            for name, e in summary.items()
        }

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
            "results": self.results,
            "live": self.live_summary() if self.kind == "eval" else None,
        }


def _step_of(path: Path) -> int | None:
    match = STEP_FILE.search(path.name)
    return int(match.group(1)) if match else None


def _metric_line(line_no: int, offset: int, raw: bytes, complete: bool) -> Any:
    record, problem = _parse_line(line_no, raw, complete)
    if problem is not None:
        return f"metrics {problem}"
    if not isinstance(record, dict):
        return f"metrics line {line_no}: not a JSON object"
    return record


def _episode_line(run: int, position: int, step: int | None) -> Callable[..., EpisodeRow]:
    def make(line_no: int, offset: int, raw: bytes, complete: bool) -> EpisodeRow:
        row = EpisodeRow(run, position, line_no, offset, len(raw), step=step)
        head = _episode_head(raw) if complete else None
        if head is not None:
            _summarise(row, head[0])
            row.turns = head[1]
            return row
        record, row.problem = _parse_line(line_no, raw, complete)
        if row.problem is None:
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


def _is_eval_output(folder: Path) -> bool:
    """`gymwire eval --output DIR` (format gymwire.eval/1): run.json, episodes/<env>.jsonl, results.json."""
    return (folder / "run.json").exists() or ((folder / "episodes").is_dir() and (folder / "results.json").exists())


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Runs under the given paths: a run directory, an eval output, a folder of those, or a JSONL file."""
    runs: list[Run] = []

    def add(kind: str, path: Path, **kwargs: Any) -> Run | None:
        if any(run.path == path for run in runs):
            return None  # given twice (itself, and inside a folder given)
        run = Run(len(runs), _name(path), path, kind, **kwargs)
        runs.append(run)
        return run

    def add_folder(folder: Path) -> bool:
        if _is_eval_output(folder):
            run = add("eval", folder, episode_glob=(folder / "episodes", "*.jsonl"), results_path=folder / "results.json")
            if run is not None and (folder / "run.json").exists():
                _load_config(run, folder / "run.json")
                if isinstance(run.config, dict) and isinstance(run.config.get("model"), str):
                    run.name = run.config["model"]
        elif _is_train_run(folder):
            run = add("train", folder, metrics_path=folder / "metrics.jsonl", episode_glob=(folder / "rollouts", "*.jsonl"))
            if run is not None and (folder / "config.json").exists():
                _load_config(run, folder / "config.json")
        else:
            return False
        return True

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
        elif not add_folder(path):
            if not _add_below(path, add_folder, SEARCH_DEPTH):
                files = sorted(path.glob("*.jsonl"))
                if not files:
                    raise ViewError(
                        f"{given}: no run here (no config.json, metrics.jsonl, rollouts/, run.json or *.jsonl); "
                        "pass a training run directory, an eval output, a folder of those or a JSONL file"
                    )
                add("episodes", path, episode_paths=files)
    names = [run.name for run in runs]
    for run in runs:  # the same name twice (runs/a/x, runs/b/x): show more of the path
        if names.count(run.name) > 1:
            run.name = f"{run.path.parent.name}/{run.path.name}" if run.name == run.path.name else f"{run.name} ({run.path.name})"
    return runs


# How deep `gymwire view runs/` looks for runs: eval writes runs/eval/<model>, one level below a run.
SEARCH_DEPTH = 3


def _add_below(folder: Path, add_folder: Callable[[Path], bool], depth: int) -> bool:
    """Add the runs in the folders below `folder` (to `depth` levels); True when any was found."""
    found = False
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        if add_folder(child) or (depth > 1 and _add_below(child, add_folder, depth - 1)):
            found = True
    return found


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

    def refresh(self) -> None:
        """Read what changed on disk (in a worker thread: pages are answered meanwhile)."""
        for run in self.runs:
            run.refresh(self._lock, self._changed)
        self.indexed = True

    def _changed(self) -> None:
        self.generation += 1

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
        return _loads_or_none(raw), raw

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
                data = path.read_bytes()
            except OSError:
                continue
            lower = data.lower()
            starts = [row.offset for row in file_rows]
            for needle in needle_forms:
                at = lower.find(needle)
                while at != -1:
                    i = bisect.bisect_right(starts, at) - 1
                    if i >= 0 and at < starts[i] + file_rows[i].length:
                        row = file_rows[i]
                        if id(row) not in found and matches(_loads_or_none(data[row.offset : row.offset + row.length]), text.lower()):
                            found.add(id(row))
                        at = lower.find(needle, row.offset + row.length)
                    else:
                        at = lower.find(needle, at + 1)
        return [row for row in rows if id(row) in found]



def _loads_or_none(raw: bytes) -> Any:
    try:
        return loads(raw)
    except ValueError:
        return None
