"""Deep Search: answer a question by searching a corpus (and running Python), as AgentGym-RL's SearchQA.

Each turn the agent writes one of
- `<search>query</search>`: the top-k passages (k = 3, option `top_k`), as
  `<information>Doc 1(Title: ...) text\\nDoc 2(...) ...</information>`;
- `<answer>text</answer>`: right (exact match after the standard QA normalisation: lower case, no
  punctuation, no articles a/an/the, single spaces) against any gold answer ends the episode with
  reward 1; a wrong one is answered "incorrect" and the agent may go on, as in AgentGym-RL
  (option `end_on_wrong_answer: true` ends the episode with reward 0 instead);
- `<python>code</python>`: runs in a sandbox (see sandbox.py) and returns its output.
Text around the tag (a `<think>` block, say) is allowed; the first tag counts. Anything else is
answered with what is valid. `info` of every step carries the running episode figures: searches,
python runs, answers given and the best token F1 of an answer so far.

Data (the server operator's configuration, never a session option: a client must not make the
server read paths of its choosing): by default the built-in gazetteer task set (gazetteer.py). Else
a FlashRAG corpus and questions (corpus.py): `DeepSearchEnv(corpus=..., questions=...)`, served
with `gymwire serve deepsearch:corpus=PATH,questions=PATH`. `encoder=` names a local e5-style model
folder: dense retrieval then becomes the default and sessions may pick `retriever: "bm25"` or
`"dense"`. Indexes are cached under $GYMWIRE_DEEPSEARCH_CACHE (default ~/.cache/gymwire/deepsearch).
Each data set is loaded once per process and shared by all sessions.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

from gymwire.protocol import EnvInfo, Observation
from gymwire.sdk.environment import Environment, StepOutcome, Task, TaskError

from .corpus import Corpus, DataError, Question, builtin_questions_dir, load_questions
from .retrieval import BM25Index, DenseIndex, Retriever, passages_text
from .sandbox import SandboxAccount, SandboxLimits, run_python
from .scoring import exact_match, token_f1

__all__ = ["DeepSearchEnv", "DataSet"]

MAX_TOP_K = 20
INLINE_SEARCH_MAX_PASSAGES = 1_000_000

_ACTION_KINDS = ("search", "answer", "python")

INVALID_ACTION = (
    "Your previous action is invalid. To search, put the query between <search> and </search>. "
    "To give the final answer, put it between <answer> and </answer>. "
    "To run Python, put the code between <python> and </python>. Let me try again."
)


# -- data ---------------------------------------------------------------------------------------


@dataclass
class DataSet:
    """A corpus with its indexes and its question splits, shared by every session of a process."""

    corpus: Corpus
    splits: dict[str, list[Question]]
    bm25: BM25Index
    dense: DenseIndex | None

    def search_inline(self, retriever: Retriever) -> bool:
        """Whether a search is quick enough to run on the server's event loop: BM25 over a corpus of
        up to a million passages takes well under a millisecond, less than a hop to a worker thread
        costs under load; a larger index or a dense encoder runs in a thread."""
        return retriever is self.bm25 and self.bm25.passages <= INLINE_SEARCH_MAX_PASSAGES

    def retriever(self, name: str | None) -> Retriever:
        if name is None:
            return self.dense or self.bm25
        if name == "bm25":
            return self.bm25
        if name == "dense" and self.dense is not None:
            return self.dense
        available = ["bm25"] + (["dense"] if self.dense is not None else [])
        raise TaskError(f"retriever {name!r} is not available on this server; it has {available}")


@lru_cache(maxsize=8)
def load_data(corpus: str | None, questions: str | None, encoder: str | None) -> DataSet:
    """The data set of these paths (None: the built-in one / no dense retrieval), loaded once."""
    if (corpus is None) != (questions is None):
        raise DataError(
            "give deepsearch both a corpus and questions (deepsearch:corpus=PATH,questions=PATH), or neither for the built-in task set"
        )
    source = Corpus(corpus)
    splits = load_questions(questions if questions is not None else builtin_questions_dir())
    bm25 = BM25Index(source)
    dense = DenseIndex(source, encoder, store=bm25) if encoder else None
    return DataSet(source, splits, bm25, dense)


def _split_sizes(data: DataSet) -> dict[str, int]:
    return {name: len(questions) for name, questions in data.splits.items()}


def _path(value: str | os.PathLike[str] | None) -> str | None:
    return str(value) if value else None


def first_action(text: str) -> tuple[str, str] | None:
    """(kind, body) of the first `<kind>body</kind>` in the text, as the regex
    `<(search|answer|python)>(.*?)</\\1>` finds it, in linear time: that regex rescans the rest of
    the text from every unclosed tag (5000 `<search>` took 2 s)."""
    best: tuple[int, str, str] | None = None
    for kind in _ACTION_KINDS:
        start = text.find(f"<{kind}>")
        if start < 0 or (best is not None and start > best[0]):
            continue
        end = text.find(f"</{kind}>", start + len(kind) + 2)
        if end >= 0:
            best = (start, kind, text[start + len(kind) + 2 : end])
    return None if best is None else (best[1], best[2])


class DeepSearchEnv(Environment):
    name = "deepsearch"
    version = "1.0.0"
    description = "Answer questions by searching a document corpus (BM25 or dense retrieval) and running Python in a sandbox."
    instructions = (
        "Answer the question. You may search the corpus with <search>query</search>, which returns the top passages "
        "between <information> and </information>; run Python with <python>code</python>, which returns its output; "
        "and answer with <answer>text</answer>, a short answer without explanation. One action per turn; you may think "
        "first between <think> and </think>."
    )
    # AgentGym-RL's fixed baseline for Deep Search; its ScalingInter-RL schedule is 5, 8, 10 turns.
    default_max_turns = 5
    seedable = True
    requires: ClassVar[tuple[str, ...]] = ("tantivy",)
    extra: ClassVar[str] = "deepsearch"
    known_options: ClassVar[dict[str, str]] = {
        "top_k": f"passages per search, 1..{MAX_TOP_K} (default 3)",
        "end_on_wrong_answer": "end the episode at a wrong answer (default false: the agent may answer again)",
        "retriever": "bm25 or dense (default: dense when the server has an encoder)",
    }
    sandbox_limits: ClassVar[SandboxLimits] = SandboxLimits()

    @classmethod
    def info(
        cls, corpus: str | os.PathLike[str] | None = None, questions: str | os.PathLike[str] | None = None,
        encoder: str | os.PathLike[str] | None = None,
    ) -> EnvInfo:
        # Loads the data set (once per process; a bad file fails here, before a server starts).
        data = load_data(_path(corpus), _path(questions), _path(encoder))
        metadata = {
            "corpus": data.corpus.source,
            "retrievers": ["bm25"] + (["dense"] if data.dense else []),
            "options": cls.known_options,
        }
        return super().info().model_copy(update={"splits": _split_sizes(data), "metadata": metadata})

    def __init__(
        self, corpus: str | os.PathLike[str] | None = None, questions: str | os.PathLike[str] | None = None,
        encoder: str | os.PathLike[str] | None = None,
    ) -> None:
        """`corpus` (FlashRAG JSONL) and `questions` (a file or a folder of split files), both or
        neither (the built-in gazetteer set); `encoder`: a local e5-style model folder for dense retrieval."""
        self._data = load_data(_path(corpus), _path(questions), _path(encoder))
        self.splits = _split_sizes(self._data)
        self._sandbox_account = SandboxAccount()  # this session's place in the sandbox's fair queue

    # -- episode --------------------------------------------------------------------------------

    async def reset(self, task: Task) -> Observation:
        self.check_options(task.options)
        top_k = task.options.get("top_k", 3)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
            raise TaskError(f"option top_k must be an integer from 1 to {MAX_TOP_K}, got {top_k!r}")
        end_on_wrong = task.options.get("end_on_wrong_answer", False)
        if not isinstance(end_on_wrong, bool):
            raise TaskError(f"option end_on_wrong_answer must be true or false, got {end_on_wrong!r}")
        self._retriever = self._data.retriever(task.options.get("retriever"))
        self._top_k, self._end_on_wrong = top_k, end_on_wrong
        split, index = self._resolve(task)
        self.question = self._data.splits[split][index]
        self._counts = {"searches": 0, "python_runs": 0, "answers": 0, "f1": 0.0}
        return Observation(
            text=f"Question: {self.question.question}",
            data={"split": split, "index": index, "id": self.question.id},
        )

    async def step(self, action: str) -> StepOutcome:
        found = first_action(action)
        if found is None:
            return self._result(INVALID_ACTION)
        kind, body = found[0], found[1].strip()
        if kind == "search":
            self._counts["searches"] += 1
            if not body:
                return self._result("<information>The query is empty: put words to search for between <search> and </search>.</information>")
            if self._data.search_inline(self._retriever):
                passages = self._retriever.search(body, self._top_k)
            else:
                passages = await asyncio.to_thread(self._retriever.search, body, self._top_k)
            if not passages:
                return self._result("<information>No passage matches this query.</information>")
            return self._result(passages_text(passages))
        if kind == "python":
            self._counts["python_runs"] += 1
            result = await run_python(body, self.sandbox_limits, self._sandbox_account)
            return self._result(result.observation(self.sandbox_limits.shown_chars))
        self._counts["answers"] += 1
        self._counts["f1"] = max(self._counts["f1"], token_f1(body, self.question.golden_answers))
        if exact_match(body, self.question.golden_answers):
            return self._result("Your answer is correct.", solved=True)
        if self._end_on_wrong:
            return self._result("Your answer is incorrect.", ended=True)
        return self._result("Your answer is incorrect. You may search more and answer again.")

    # -- helpers --------------------------------------------------------------------------------

    def _resolve(self, task: Task) -> tuple[str, int]:
        sizes = self.splits
        if task.split is None:
            split = "train" if "train" in sizes else next(iter(sizes))
            return split, (task.seed or 0) % sizes[split]
        if task.split not in sizes:
            raise TaskError(f"unknown split {task.split!r}; deepsearch has splits {sorted(sizes)}")
        index = task.index or 0
        if not 0 <= index < sizes[task.split]:
            raise TaskError(f"index {index} out of range: split {task.split!r} has tasks 0..{sizes[task.split] - 1}")
        return task.split, index

    def _result(self, text: str, solved: bool = False, ended: bool = False) -> StepOutcome:
        info: dict[str, Any] = dict(self._counts)
        return StepOutcome(
            text, reward=1.0 if solved else 0.0, terminated=solved or ended, info=info, success=solved, score=1.0 if solved else 0.0
        )
