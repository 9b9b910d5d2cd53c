"""Scores of generated answers, shared by `expertbot eval answers` and the learning loop's gate."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

_TOKEN = re.compile(r"\w+", re.UNICODE)
_CITATION = re.compile(r"\[\d{1,3}(?:\s*[,;]\s*\d{1,3})*\]")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "and",
        "or",
        "is",
        "are",
        "be",
        "it",
        "this",
        "that",
        "with",
        "by",
        "as",
    ]
)


def answer_tokens(text: str) -> list[str]:
    """Lower-cased word tokens without citations and the most common English function words."""
    text = unicodedata.normalize("NFKC", _CITATION.sub(" ", text)).lower()
    return [t for t in _TOKEN.findall(text) if t not in _STOP]


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 between an answer and a reference answer, in [0, 1]."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


# An answer that says the passages don't answer the question (an abstention by the model: the
# answering core's second line of defence, after the retrieval threshold).
_DOES_NOT_KNOW = re.compile(
    r"\b(i (do not|don't|cannot|can't) (know|answer|find|tell)"
    r"|(the )?(passages?|context|documents?|knowledge base) (do(es)? not|don't|doesn't) "
    r"(contain|mention|say|cover|include|provide|answer)"
    r"|no (relevant )?information (about|on|regarding)"
    r"|(not|isn't|is not) (mentioned|covered|provided|stated) in the (passages?|context))",
    re.IGNORECASE,
)


def says_it_does_not_know(text: str) -> bool:
    return bool(_DOES_NOT_KNOW.search(text))
