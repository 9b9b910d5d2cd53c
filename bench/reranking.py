"""Reranking the fused candidates on the example handbook: quality and latency per reranker.

For each question of examples/questions.jsonl, hybrid search fetches the top `depth` chunks
(what a reranker would be given); each reranker reorders them. Prints, per reranker and depth,
R@1, R@5 and MRR of the gold document (distinct documents, as `expertbot eval retrieval`
counts them; `knowledge.evaluation.evaluate_passages`) before and after reranking, and the
reranker's time per question (p50 / p95; at the smaller depths on the first --timed questions).

Rerankers: the generator judge on the offline demo model (SmolLM2-135M-Instruct), with each
scoring (yes-no, query-likelihood); a cross-encoder with --cross-encoder NAME_OR_FOLDER.

    python bench/reranking.py [--limit 12] [--depth 10 20] [--timed 8] [--cross-encoder DIR]
                              [--device cpu] [--work .bench/reranking] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from _common import ROOT, git_rev, machine, summary_ms

from base.database import make_engine, sqlite_url
from bench.corpora import dataset
from bot.logging import configure_logging
from knowledge.config import FolderSource, KnowledgeConfig, RerankConfig
from knowledge.evaluation import RetrievalCase, evaluate_passages, load_cases
from knowledge.models import Hit
from knowledge.reranking import CrossEncoderReranker, Reranker, rerank
from knowledge.runtime import Knowledge
from training.config import DEMO_MODEL, ModelConfig
from training.serving.judge import SCORINGS, GeneratorJudge
from training.serving.local import TransformersGenerator


async def candidates(
    work: Path, cases: list[RetrievalCase], depth: int
) -> tuple[dict[str, list[Hit]], int]:
    """The top `depth` hybrid hits of each question, and how many documents the index holds."""
    corpus, _, _ = dataset("handbook", work)
    data_dir = work / "index"
    config = KnowledgeConfig(sources=[FolderSource(path=corpus, name="handbook")])
    engine = make_engine(sqlite_url(data_dir / "expertbot.db"))
    knowledge = Knowledge.build(config, data_dir=data_dir, engine=engine)
    await knowledge.open()
    try:
        report = await knowledge.syncer.run()
        hits = {c.question: await knowledge.search.search(c.question, k=depth) for c in cases}
        return hits, report.added + report.updated + report.unchanged
    finally:
        await knowledge.close()
        engine.dispose()


async def measure(
    reranker: Reranker | None,
    cases: list[RetrievalCase],
    hits: dict[str, list[Hit]],
    depths: list[int],
    timed: int,
) -> list[dict[str, Any]]:
    """Quality of the top `depth` hits as fused (reranker None) or reranked, and the time the
    reranker took per question. Every question is scored once at the largest depth; a smaller
    depth reorders its hits by those scores (a passage's score does not depend on the others
    in its batch) and is timed on the first `timed` questions."""
    deepest = max(depths)
    scores: dict[tuple[str, str], float] = {}
    seconds: dict[int, list[float]] = {depth: [] for depth in depths}
    if reranker is not None:
        for n, case in enumerate(cases):
            for depth in sorted(depths, reverse=True):
                if depth != deepest and n >= timed:
                    continue
                top = hits[case.question][:depth]
                started = time.perf_counter()
                ranked = await rerank(reranker, case.question, top)
                seconds[depth].append(time.perf_counter() - started)
                if depth == deepest:
                    scores |= {(case.question, hit.chunk_id): score for hit, score in ranked}

    rows = []
    for depth in depths:

        async def passages(question: str, depth: int = depth) -> list[Hit]:
            top = hits[question][:depth]
            if reranker is None:
                return top
            return sorted(top, key=lambda hit: -scores[(question, hit.chunk_id)])

        metrics, _ = await evaluate_passages(cases, passages, k=5)
        row: dict[str, Any] = {
            "reranker": reranker.name if reranker else "none (hybrid fusion)",
            "depth": depth,
            "recall@1": round(metrics.recall[1], 3),
            "recall@5": round(metrics.recall[5], 3),
            "mrr": round(metrics.mrr, 3),
        }
        if seconds[depth]:
            row |= summary_ms(seconds[depth]) | {"timed": len(seconds[depth])}
        rows.append(row)
    return rows


async def main(args: argparse.Namespace) -> dict[str, Any]:
    _, questions, _ = dataset("handbook", args.work)
    cases = load_cases(questions)[: args.limit]
    hits, documents = await candidates(args.work, cases, max(args.depth))

    rerankers: list[Reranker | None] = [None]
    generator = TransformersGenerator(
        ModelConfig(base=DEMO_MODEL, device=args.device), data_dir=args.data_dir
    )
    await generator.start()
    rerankers += [GeneratorJudge(generator, scoring=scoring) for scoring in SCORINGS]
    if args.cross_encoder:
        rerankers.append(
            CrossEncoderReranker(RerankConfig(kind="cross-encoder", model=args.cross_encoder))
        )
    try:
        rows = []
        for reranker in rerankers:
            if reranker is not None:  # the first call pays for lazy initialisation
                await reranker.score(cases[0].question, [hits[cases[0].question][0].text])
            rows += await measure(reranker, cases, hits, args.depth, args.timed)
    finally:
        await generator.close()
    return {
        "machine": machine(),
        "commit": git_rev(),
        "documents": documents,
        "questions": len(cases),
        "rows": rows,
    }


def show(results: dict[str, Any]) -> None:
    print(f"machine: {results['machine']}  commit {results['commit']}")
    print(
        f"handbook: {results['documents']} documents, {results['questions']} questions; "
        "the reranker reorders the top `depth` hybrid chunks; distinct documents"
    )
    print(
        f"{'reranker':<58} {'depth':>5} {'R@1':>6} {'R@5':>6} {'MRR':>6} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'timed':>5}"
    )
    for r in results["rows"]:
        timing = (
            f"{r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f} {r['timed']:>5}"
            if "p50_ms" in r
            else f"{'-':>8} {'-':>8} {'-':>5}"
        )
        print(
            f"{r['reranker']:<58} {r['depth']:>5} {r['recall@1']:>6.3f} {r['recall@5']:>6.3f} "
            f"{r['mrr']:>6.3f} {timing}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=None, help="the first N questions only")
    parser.add_argument("--depth", type=int, nargs="+", default=[10, 20])
    parser.add_argument(
        "--timed",
        type=int,
        default=8,
        help="questions timed at the smaller depths (every question is timed at the largest)",
    )
    parser.add_argument("--cross-encoder", default=None, help="a cross-encoder name or folder")
    parser.add_argument("--device", default="cpu", help="for the demo model: cpu, cuda, auto")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "reranking")
    parser.add_argument(
        "--data-dir", type=Path, default=ROOT / ".bench" / "data", help="the demo model's home"
    )
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    configure_logging("warning")
    results = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps(results, indent=2))
    else:
        show(results)
