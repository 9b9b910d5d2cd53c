"""Measuring retrieval on a user's own questions: Recall@1, Recall@k and MRR of the gold document.

Input: JSON lines `{"question": ..., "doc": <document id> | [<document id>, ...]}`.
A question counts as found at rank r when the r-th hit comes from one of its gold documents.
Recall@k looks at the first k hits (what an answer would read); MRR looks at the first
max(k, 10) hits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.errors import InputFileError
from knowledge.models import SearchFilters
from knowledge.search import KnowledgeSearch, Mode


@dataclass(frozen=True, slots=True)
class RetrievalCase:
    line: int
    question: str
    docs: frozenset[str]


@dataclass(frozen=True, slots=True)
class RetrievalOutcome:
    case: RetrievalCase
    rank: int | None  # 1-based rank of the first gold hit, None when not in the first max(k, 10)
    top_docs: list[str]


@dataclass(frozen=True, slots=True)
class RetrievalMetrics:
    mode: str
    k: int
    questions: int
    recall_at_1: float
    recall_at_k: float
    mrr: float

    def as_json(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "k": self.k,
            "questions": self.questions,
            "recall@1": round(self.recall_at_1, 4),
            f"recall@{self.k}": round(self.recall_at_k, 4),
            "mrr": round(self.mrr, 4),
        }


def load_cases(path: Path) -> list[RetrievalCase]:
    cases: list[RetrievalCase] = []
    for number, item in read_jsonl(path, expected="an object with 'question' and 'doc'"):
        question, doc = item.get("question"), item.get("doc")
        if not isinstance(question, str) or not question.strip():
            raise InputFileError(f"{path}:{number}: 'question' must be a non-empty string")
        docs = [doc] if isinstance(doc, str) else doc
        if not isinstance(docs, list) or not docs or not all(isinstance(d, str) for d in docs):
            raise InputFileError(f"{path}:{number}: 'doc' must be a document id or a list of them")
        cases.append(RetrievalCase(number, question.strip(), frozenset(docs)))
    if not cases:
        raise InputFileError(f"{path} holds no questions")
    return cases


def read_jsonl(path: Path, *, expected: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; InputFileError names a bad line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputFileError(f"{path} is not UTF-8 text") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict):
            raise InputFileError(f"{path}:{number}: expected {expected}")
        yield number, item


async def evaluate_retrieval(
    search: KnowledgeSearch,
    cases: list[RetrievalCase],
    *,
    k: int = 5,
    mode: Mode = "hybrid",
    filters: SearchFilters | None = None,
) -> tuple[RetrievalMetrics, list[RetrievalOutcome]]:
    depth = max(k, 10)
    outcomes: list[RetrievalOutcome] = []
    for case in cases:
        hits = await search.search(case.question, k=depth, mode=mode, filters=filters)
        docs = [h.doc_id for h in hits]
        rank = next((i for i, d in enumerate(docs, start=1) if d in case.docs), None)
        outcomes.append(RetrievalOutcome(case, rank, docs[:k]))
    n = len(outcomes)
    metrics = RetrievalMetrics(
        mode=mode,
        k=k,
        questions=n,
        recall_at_1=sum(o.rank == 1 for o in outcomes) / n,
        recall_at_k=sum(o.rank is not None and o.rank <= k for o in outcomes) / n,
        mrr=sum(1.0 / o.rank for o in outcomes if o.rank) / n,
    )
    return metrics, outcomes
