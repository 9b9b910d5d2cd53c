"""Measuring retrieval on a user's own questions, by document: Recall@1, @5, @10 and @k, MRR and
nDCG@10 of the gold document(s).

Input: JSON lines `{"question": ..., "doc": <document id> | [<document id>, ...]}`.
Hits are ranked as documents: a document takes the rank of its best chunk, and the chunks after
it add nothing (four chunks of one page are one document, not four chances). A question is found
at rank r when the r-th document is one of its gold documents. Recall@n: found within the first
n documents; MRR: 1/r within the first max(k, 10); nDCG@10: every gold document counts, discounted
by its rank (1 when all of them lead the list).

`evaluate_passages` scores the same way the passages an answer is written from (what serving
hands the model), so a change in how they are chosen shows in the same numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.errors import InputFileError
from knowledge.models import Hit, SearchFilters
from knowledge.search import KnowledgeSearch, Mode


@dataclass(frozen=True, slots=True)
class RetrievalCase:
    line: int
    question: str
    docs: frozenset[str]


@dataclass(frozen=True, slots=True)
class RetrievalOutcome:
    case: RetrievalCase
    rank: int | None  # 1-based rank of the first gold document; None when not in `top_docs`
    top_docs: list[str]  # distinct documents, best first (max(k, 10) of them when there are)

    def found_within(self, n: int) -> bool:
        return self.rank is not None and self.rank <= n

    def ndcg(self, n: int = 10) -> float:
        gains = sum(
            1.0 / math.log2(i + 1)
            for i, doc in enumerate(self.top_docs[:n], start=1)
            if doc in self.case.docs
        )
        ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(self.case.docs), n) + 1))
        return gains / ideal


@dataclass(frozen=True, slots=True)
class RetrievalMetrics:
    mode: str
    k: int
    questions: int
    recall: dict[int, float]  # Recall@n for n in 1, 5, 10 and k
    mrr: float
    ndcg_at_10: float

    @property
    def recall_at_1(self) -> float:
        return self.recall[1]

    @property
    def recall_at_k(self) -> float:
        return self.recall[self.k]

    def as_json(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "k": self.k,
            "questions": self.questions,
            **{f"recall@{n}": round(value, 4) for n, value in sorted(self.recall.items())},
            "mrr": round(self.mrr, 4),
            "ndcg@10": round(self.ndcg_at_10, 4),
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
    """Search every case as `mode` does and score the distinct documents it ranks."""
    wanted = max(k, 10)

    async def documents(question: str) -> list[str]:
        # Enough chunks for `wanted` distinct documents in all but the most repetitive corpora.
        depth = min(wanted * 5, 200)
        if mode == "hybrid":  # what serving ranks: fused, then reranked when configured
            retrieval = await search.retrieve(question, k=k, filters=filters, pool=depth)
            hits = retrieval.ranked
        else:
            hits = await search.search(question, k=depth, mode=mode, filters=filters)
        return distinct_documents(hits)[:wanted]

    return await _score(cases, documents, mode=mode, k=k)


async def evaluate_passages(
    cases: list[RetrievalCase],
    passages: Callable[[str], Awaitable[Sequence[Hit]]],
    *,
    k: int = 5,
    label: str = "passages",
) -> tuple[RetrievalMetrics, list[RetrievalOutcome]]:
    """Score the passages `passages(question)` hands the model, as documents, like
    `evaluate_retrieval` (there are usually fewer than 10: Recall@10 counts what is there)."""

    async def documents(question: str) -> list[str]:
        return distinct_documents(await passages(question))

    return await _score(cases, documents, mode=label, k=k)


def distinct_documents(hits: Sequence[Hit]) -> list[str]:
    """Document ids in the order of their best hit."""
    return list(dict.fromkeys(h.doc_id for h in hits))


async def _score(
    cases: list[RetrievalCase],
    documents: Callable[[str], Awaitable[list[str]]],
    *,
    mode: str,
    k: int,
) -> tuple[RetrievalMetrics, list[RetrievalOutcome]]:
    outcomes: list[RetrievalOutcome] = []
    for case in cases:
        docs = await documents(case.question)
        rank = next((i for i, d in enumerate(docs, start=1) if d in case.docs), None)
        outcomes.append(RetrievalOutcome(case, rank, docs))
    n = len(outcomes)
    metrics = RetrievalMetrics(
        mode=mode,
        k=k,
        questions=n,
        recall={c: sum(o.found_within(c) for o in outcomes) / n for c in sorted({1, 5, 10, k})},
        mrr=sum(1.0 / o.rank for o in outcomes if o.rank) / n,
        ndcg_at_10=sum(o.ndcg(10) for o in outcomes) / n,
    )
    return metrics, outcomes
