"""Search engines over a FlashRAG corpus: BM25 (tantivy) always, dense (an e5-style encoder) on request.

BM25 is tantivy's (Lucene's BM25, English stemming). Measured against bm25s on the built-in corpus
(34,258 passages; bench/env_deepsearch.py): tantivy builds faster (2.0 s against 2.5-7.8 s), its
index is smaller although it also stores the passages (6.8 MB against 8.8 MB), and a query takes
tens of microseconds instead of close to a millisecond; its wheel (17 MB) needs nothing else, and
its on-disk index opens without loading the corpus into memory, which matters for wiki-18's 21
million passages. Pyserini needs a Java runtime.

Indexes are built once and kept under the cache folder, named by the corpus's content hash (and, for
dense ones, the encoder's), so a changed corpus gets a new index and an unchanged one is reused by
every later process. A build writes to a temporary folder and renames it, so concurrent builders
never see half an index.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Iterable, Protocol

from .corpus import Corpus, Passage, default_cache_dir

__all__ = ["Retriever", "BM25Index", "DenseIndex", "passages_text"]

log = logging.getLogger(__name__)

_QUERY_JUNK = re.compile(r"[^\w\s]+")
_OPERATORS = {"AND", "OR", "NOT", "IN"}
TITLE_BOOST = 2.0
MAX_QUERY_WORDS = 256  # a search query, not a document: the rest is ignored


class Retriever(Protocol):
    def search(self, query: str, k: int) -> list[Passage]: ...


def _build_atomically(target: Path, build) -> Path:
    """Run `build(folder)` into a fresh temporary folder next to `target`, then move it into place."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".partial", dir=target.parent))
    try:
        build(scratch)
        try:
            scratch.rename(target)
        except OSError:
            if not target.exists():  # not a lost race with another builder
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


class BM25Index:
    """A tantivy BM25 index over a corpus; it also stores the passages, so a search needs nothing else."""

    def __init__(self, corpus: Corpus, cache_dir: Path | None = None) -> None:
        try:
            import tantivy
        except ImportError as exc:
            raise ImportError("deepsearch needs tantivy for BM25: pip install 'gymwire[deepsearch]'") from exc

        self._tantivy = tantivy
        # The index format may change between tantivy releases: the version is part of the name.
        folder = (cache_dir or default_cache_dir()) / f"bm25-tantivy{metadata.version('tantivy')}-{corpus.digest[:24]}"
        self.path = _build_atomically(folder, lambda scratch: self._build(scratch, corpus))
        self._index = tantivy.Index(self._schema(), path=str(self.path))
        self._searcher = self._index.searcher()
        self.passages = self._searcher.num_docs

    def _schema(self):
        builder = self._tantivy.SchemaBuilder()
        builder.add_text_field("id", stored=True, index_option="basic", tokenizer_name="raw")
        builder.add_text_field("title", stored=True, tokenizer_name="en_stem")
        builder.add_text_field("text", stored=True, tokenizer_name="en_stem")
        return builder.build()

    def _build(self, folder: Path, corpus: Corpus) -> None:
        log.info("building the BM25 index of %s in %s", corpus.source, folder)
        index = self._tantivy.Index(self._schema(), path=str(folder))
        writer = index.writer(heap_size=256_000_000, num_threads=1)
        for count, passage in enumerate(corpus.passages(), 1):
            writer.add_document(self._tantivy.Document(id=passage.id, title=passage.title, text=passage.text))
            if count % 500_000 == 0:
                log.info("indexed %d passages", count)
        writer.commit()
        writer.wait_merging_threads()

    def passage(self, passage_id: str) -> Passage:
        term = self._tantivy.Query.term_query(self._index.schema, "id", passage_id)
        ((_score, address),) = self._searcher.search(term, 1).hits
        return self._passage(address)

    def _passage(self, address) -> Passage:
        doc = self._searcher.doc(address)
        return Passage(id=doc["id"][0], title=doc["title"][0], text=doc["text"][0])

    def search(self, query: str, k: int) -> list[Passage]:
        # Punctuation would be query syntax (fields, phrases, ranges), and upper-case AND/OR/NOT/IN
        # operators: the agent's query is plain words. Other words go as they are, for the index's own
        # tokenizer to lower-case ("İ" must become what it became in the passages).
        words = [word.lower() if word in _OPERATORS else word for word in _QUERY_JUNK.sub(" ", query).split()][:MAX_QUERY_WORDS]
        if not words:
            return []
        # A match in the title counts double: a query naming the subject of a passage finds it even
        # when thousands of other passages mention the name too (every city passage names its country).
        parsed = self._index.parse_query(" ".join(words), ["title", "text"], field_boosts={"title": TITLE_BOOST})
        return [self._passage(address) for _score, address in self._searcher.search(parsed, k).hits]


class DenseIndex:
    """Cosine search over passage embeddings of an e5-style encoder (a local model folder).

    Passages are embedded as "passage: <title> <text>" and queries as "query: <text>", mean-pooled
    and normalised, as e5 was trained; embeddings are cached as a float32 .npy file per corpus and
    encoder. Passage texts come from the BM25 index's store, which every corpus has.
    """

    def __init__(self, corpus: Corpus, encoder_dir: str | os.PathLike[str], store: BM25Index, cache_dir: Path | None = None,
                 batch_size: int = 64) -> None:
        import numpy as np
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._np, self._torch = np, torch
        self._tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
        self._model = AutoModel.from_pretrained(encoder_dir).eval()
        self._ids: list[str] = []
        self._store = store
        encoder_digest = _folder_digest(Path(encoder_dir))
        target = (cache_dir or default_cache_dir()) / f"dense-{corpus.digest[:24]}-{encoder_digest[:16]}"

        def build(folder: Path) -> None:
            log.info("embedding %s with %s", corpus.source, encoder_dir)
            chunks, ids = [], []
            batch: list[Passage] = []
            for passage in corpus.passages():
                batch.append(passage)
                if len(batch) == batch_size:
                    chunks.append(self._embed([f"passage: {p.title} {p.text}" for p in batch]))
                    ids.extend(p.id for p in batch)
                    batch = []
                    if len(chunks) % 1000 == 0:
                        log.info("embedded %d passages", len(ids))
            if batch:
                chunks.append(self._embed([f"passage: {p.title} {p.text}" for p in batch]))
                ids.extend(p.id for p in batch)
            np.save(folder / "embeddings.npy", np.concatenate(chunks) if chunks else np.zeros((0, 1), np.float32))
            (folder / "ids.txt").write_text("\n".join(ids), encoding="utf-8")

        self.path = _build_atomically(target, build)
        self._embeddings = np.load(self.path / "embeddings.npy", mmap_mode="r")
        self._ids = (self.path / "ids.txt").read_text(encoding="utf-8").split("\n")

    def _embed(self, texts: list[str]):
        torch = self._torch
        with torch.inference_mode():
            batch = self._tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = self._model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            return torch.nn.functional.normalize(pooled, dim=-1).float().numpy()

    def search(self, query: str, k: int) -> list[Passage]:
        np = self._np
        scores = self._embeddings @ self._embed([f"query: {query}"])[0]
        k = min(k, len(scores))
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [self._store.passage(self._ids[row]) for row in top]


def _folder_digest(folder: Path) -> str:
    """A hash of a model folder's files (names, sizes and bytes of the small ones, sizes of weights)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        size = path.stat().st_size
        digest.update(str(size).encode())
        if size <= 1 << 20:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def passages_text(passages: Iterable[Passage]) -> str:
    """AgentGym-RL's observation of search results."""
    body = "".join(f"Doc {rank}(Title: {p.title}) {p.text}\n" for rank, p in enumerate(passages, 1))
    return f"<information>{body}</information>"
