"""Retrieval scores count documents: what a reader of `expertbot eval retrieval` relies on."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from knowledge.evaluation import (
    RetrievalCase,
    RetrievalMetrics,
    RetrievalOutcome,
    evaluate_passages,
)
from knowledge.models import Hit
from tests.helpers import HANDBOOK, run_cli


def hit(doc: str, n: int) -> Hit:
    return Hit(
        chunk_id=f"{doc}#{n}",
        source="docs",
        doc_id=doc,
        title=doc,
        uri=f"file:///{doc}",
        heading="",
        text="…",
        score=1.0 / (n + 1),
        access="public",
    )


def case(question: str, *docs: str) -> RetrievalCase:
    return RetrievalCase(line=1, question=question, docs=frozenset(docs))


async def scored(
    ranking: Mapping[str, Sequence[Hit]], cases: list[RetrievalCase], k: int = 5
) -> tuple[RetrievalMetrics, list[RetrievalOutcome]]:
    async def passages(question: str) -> Sequence[Hit]:
        return ranking[question]

    return await evaluate_passages(cases, passages, k=k)


async def test_four_chunks_of_one_document_are_one_rank_not_four() -> None:
    # The gold page comes after four chunks of one other page: it is the 2nd document.
    chunks = [hit("faq.md", i) for i in range(4)] + [hit("gold.md", 0)]
    metrics, [outcome] = await scored({"q": chunks}, [case("q", "gold.md")])
    assert outcome.top_docs == ["faq.md", "gold.md"]
    assert outcome.rank == 2
    assert (metrics.recall[1], metrics.recall[5], metrics.mrr) == (0.0, 1.0, 0.5)


async def test_recall_at_1_5_10_and_k_and_mrr_over_several_questions() -> None:
    ranking = {
        "first": [hit("a", 0), hit("b", 0)],
        "sixth": [hit(f"d{i}", 0) for i in range(5)] + [hit("a", 0)],
        "missing": [hit(f"d{i}", 0) for i in range(12)],
    }
    cases = [case("first", "a"), case("sixth", "a"), case("missing", "a")]
    metrics, outcomes = await scored(ranking, cases, k=3)
    assert [o.rank for o in outcomes] == [1, 6, None]
    assert metrics.recall == {1: 1 / 3, 3: 1 / 3, 5: 1 / 3, 10: 2 / 3}
    assert metrics.mrr == pytest.approx((1 + 1 / 6) / 3)
    assert set(metrics.as_json()) >= {"mode", "k", "questions", "recall@3", "mrr", "ndcg@10"}


async def test_ndcg_counts_every_gold_document_by_its_rank() -> None:
    both_first = [hit("a", 0), hit("b", 0), hit("c", 0)]
    one_late = [hit("a", 0), hit("c", 0), hit("d", 0), hit("b", 0)]
    _, [top] = await scored({"q": both_first}, [case("q", "a", "b")])
    _, [late] = await scored({"q": one_late}, [case("q", "a", "b")])
    assert top.ndcg() == pytest.approx(1.0)
    ideal = 1 + 1 / math.log2(3)
    assert late.ndcg() == pytest.approx((1 + 1 / math.log2(5)) / ideal)
    assert late.rank == top.rank == 1  # the same first hit: only nDCG tells them apart


def test_eval_retrieval_modes_documents_and_passages(synced_handbook: Path) -> None:
    questions = HANDBOOK.parent / "questions.jsonl"
    result = run_cli(
        "--data-dir", str(synced_handbook), "eval", "retrieval", str(questions), "--json",
        "--mode", "all", "-k", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {row["mode"]: row for row in json.loads(result.stdout)}
    assert list(rows) == ["hybrid", "vector", "keyword", "passages"]
    for row in rows.values():
        assert {"recall@1", "recall@3", "recall@5", "recall@10", "mrr", "ndcg@10"} <= set(row)
        for r in row["results"]:
            assert len(r["top"]) == len(set(r["top"])), "one entry per document"
            assert r["rank"] is None or r["top"][r["rank"] - 1] in r["gold"]
    # Searches rank at least 10 documents (the handbook has 18); the model gets its passages.
    assert all(len(r["top"]) >= 10 for r in rows["hybrid"]["results"])
    assert all(1 <= len(r["top"]) <= 5 for r in rows["passages"]["results"])
    assert rows["hybrid"]["recall@10"] >= rows["hybrid"]["recall@5"] >= rows["hybrid"]["recall@1"]

    text = run_cli("--data-dir", str(synced_handbook), "eval", "retrieval", str(questions))
    assert "R@10" in text.stdout and "nDCG@10" in text.stdout
    bad = run_cli("--data-dir", str(synced_handbook), "eval", "retrieval", str(questions),
                  "--mode", "semantic")  # fmt: skip
    assert bad.exit_code != 0 and "--mode must be one of" in bad.output
