"""A scripted Deep Search player that searches for a question's gold evidence: the reference for
"every test question is answerable through the server".

For each evidence passage, in order, it searches for the passage's title; when the title is not among
the results it searches again with the title and the question's own words. Once it has seen every
passage it answers with the first gold answer. It needs the `evidence` the built-in questions carry
(`metadata.evidence`: passage ids and titles).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from .corpus import Question

__all__ = ["solve", "SolveFailed"]


class SolveFailed(RuntimeError):
    """An evidence passage did not come up in the search results."""


async def solve(step: Callable[[str], Awaitable[Any]], question: Question) -> Any:
    """Play `question` through `step` (a session's step: action -> result); returns the last result."""
    evidence = question.metadata.get("evidence")
    if not evidence:
        raise SolveFailed(f"question {question.id} has no evidence to search for")
    for passage in evidence:
        title = passage["title"]
        for query in (title, f"{title} {question.question}"):
            result = await step(f"<search>{query}</search>")
            if f"(Title: {title})" in result.observation.text:
                break
        else:
            raise SolveFailed(f"question {question.id}: no search found the passage {title!r}")
    return await step(f"<answer>{question.golden_answers[0]}</answer>")
