"""Answer scoring: exact match and token F1 after the standard QA normalisation (SQuAD's, which
FlashRAG and AgentGym-RL use): lower case, no punctuation, no articles a/an/the, single spaces."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

__all__ = ["normalize_answer", "exact_match", "token_f1", "mentions"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def exact_match(prediction: str, golden_answers: Sequence[str]) -> bool:
    predicted = normalize_answer(prediction)
    return any(predicted == normalize_answer(gold) for gold in golden_answers)


def token_f1(prediction: str, golden_answers: Sequence[str]) -> float:
    """The best token-overlap F1 against any gold answer."""
    predicted = normalize_answer(prediction).split()
    best = 0.0
    for gold in golden_answers:
        expected = normalize_answer(gold).split()
        common = sum((Counter(predicted) & Counter(expected)).values())
        if common:
            precision, recall = common / len(predicted), common / len(expected)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def mentions(text: str, answer: str) -> bool:
    """Whether `text` contains `answer` as whole words, once both are normalised ("/" and "_" split words)."""
    words = f" {normalize_answer(text.replace('/', ' ').replace('_', ' '))} "
    return f" {normalize_answer(answer)} " in words
