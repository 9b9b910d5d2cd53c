"""Retrieval and abstention on every benchmark corpus: one table per measure, corpus × method.

The corpora (each built from a documentation package's own FAQ: real questions, gold documents
taken from what the answers link to; see each builder's docstring):

    handbook   examples/knowledge, examples/questions.jsonl, examples/unanswerable.jsonl
    pydocs     python3.11-doc      bench/pydocs_dataset.py   bench/pydocs_unanswerable.jsonl
    sqlite     sqlite3-doc         bench/sqlite_dataset.py   bench/sqlite_unanswerable.jsonl
    apache     apache2-doc         bench/apache_dataset.py   bench/apache_unanswerable.jsonl
    git        git-doc             bench/git_dataset.py      bench/git_unanswerable.jsonl
    privoxy    privoxy             bench/privoxy_dataset.py  bench/privoxy_unanswerable.jsonl

Retrieval (distinct documents, as `expertbot eval retrieval` counts them): R@1, R@5, R@10, MRR
and nDCG@10 for hybrid search (what the bot searches), vector, keyword, and the passages the
model is given. Abstention: with today's rule (the best chunk's cosine below
`answer.min_similarity`), the share of answerable questions answered and of unanswerable ones
abstained. Every question is also tagged tune/check (alternating), so a default chosen on the
tune half can be reported on the check half (`--half`).

    python bench/corpora.py [--only git privoxy] [--half all|tune|check] [--work .bench/corpora]
                            [--sources privoxy=DIR] [--json]

Each corpus's index is kept in --work/<name> and re-synced (unchanged documents are not
embedded again); a first build embeds every chunk (about 18 chunks/s on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import ROOT, git_rev, machine

from base.database import make_engine, sqlite_url
from bot.core.config import AnswerConfig
from knowledge.config import KnowledgeConfig, SourceConfig
from knowledge.evaluation import (
    RetrievalCase,
    evaluate_passages,
    evaluate_retrieval,
    load_cases,
    read_jsonl,
)
from knowledge.models import Hit
from knowledge.runtime import Knowledge

CORPORA = ("handbook", "pydocs", "sqlite", "apache", "git", "privoxy")
METHODS = ("hybrid", "vector", "keyword", "passages")


def dataset(name: str, work: Path, sources: Path | None = None) -> tuple[Path, Path, Path]:
    """(corpus folder, answerable questions, unanswerable questions) of `name`."""
    if name == "handbook":
        examples = ROOT / "examples"
        return examples / "knowledge", examples / "questions.jsonl", examples / "unanswerable.jsonl"
    out = work / name / "dataset"
    if not (out / "questions.jsonl").is_file():
        builder: Callable[[Path, Path | None], dict[str, Any]] = importlib.import_module(
            f"bench.{name}_dataset"
        ).build
        builder(out, sources)
    return out / "corpus", out / "questions.jsonl", ROOT / "bench" / f"{name}_unanswerable.jsonl"


def half_of(cases: list[RetrievalCase], half: str) -> list[RetrievalCase]:
    if half == "all":
        return cases
    keep = 0 if half == "tune" else 1
    return [c for i, c in enumerate(cases) if i % 2 == keep]


async def measure(name: str, work: Path, half: str, sources: Path | None) -> dict[str, Any]:
    corpus, answerable, unanswerable = dataset(name, work, sources)
    data_dir = work / name / "index"
    config = KnowledgeConfig(sources=[SourceConfig(path=corpus, name=name)])
    engine = make_engine(sqlite_url(data_dir / "expertbot.db"))
    knowledge = Knowledge.build(config, data_dir=data_dir, engine=engine)
    await knowledge.open()
    try:
        report = await knowledge.syncer.run()
        cases = half_of(load_cases(answerable), half)
        unanswered = [
            str(item["question"]) for _, item in read_jsonl(unanswerable, expected="a question")
        ]
        unanswered = unanswered if half == "all" else unanswered[(half == "check") :: 2]
        answer = AnswerConfig()
        search = knowledge.search

        async def passages(question: str) -> list[Hit]:
            return (await search.retrieve(question, k=answer.passages)).hits

        retrieval: dict[str, Any] = {}
        for method in METHODS:
            if method == "passages":
                metrics, _ = await evaluate_passages(cases, passages, k=5)
            else:
                metrics, _ = await evaluate_retrieval(search, cases, k=5, mode=method)  # type: ignore[arg-type]
            retrieval[method] = metrics.as_json()

        async def answers(question: str) -> bool:
            return (await search.retrieve(question, k=1)).similarity >= answer.min_similarity

        answered = [await answers(c.question) for c in cases]
        abstained = [not await answers(q) for q in unanswered]
        return {
            "corpus": name,
            "documents": report.added + report.updated + report.unchanged,
            "answerable": len(cases),
            "unanswerable": len(unanswered),
            "retrieval": retrieval,
            "abstention": {
                "min_similarity": answer.min_similarity,
                "answered": round(sum(answered) / len(answered), 3),
                "abstained": round(sum(abstained) / len(abstained), 3),
            },
        }
    finally:
        await knowledge.close()
        engine.dispose()


def print_tables(results: list[dict[str, Any]]) -> None:
    for metric in ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10"):
        print(f"\n{metric} (distinct documents)")
        print(f"{'corpus':<10} {'docs':>5} {'qs':>4} " + " ".join(f"{m:>9}" for m in METHODS))
        for r in results:
            row = " ".join(f"{r['retrieval'][m][metric]:>9.3f}" for m in METHODS)
            print(f"{r['corpus']:<10} {r['documents']:>5} {r['answerable']:>4} {row}")
    print("\nabstention (best chunk's cosine < answer.min_similarity)")
    print(
        f"{'corpus':<10} {'answerable':>10} {'answered':>9} {'unanswerable':>12} {'abstained':>9}"
    )
    for r in results:
        a = r["abstention"]
        print(
            f"{r['corpus']:<10} {r['answerable']:>10} {a['answered']:>9.3f} "
            f"{r['unanswerable']:>12} {a['abstained']:>9.3f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=CORPORA, default=list(CORPORA))
    parser.add_argument("--half", choices=("all", "tune", "check"), default="all")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "corpora")
    parser.add_argument(
        "--sources",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="where a corpus's package files are, when not installed (privoxy=/tmp/privoxy/usr/share/doc/privoxy)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sources = {k: Path(v) for k, _, v in (s.partition("=") for s in args.sources)}
    results = [await measure(n, args.work, args.half, sources.get(n)) for n in args.only]
    if args.json:
        print(json.dumps({"machine": machine(), "commit": git_rev(), "results": results}, indent=2))
        return
    print(f"machine: {machine()}  commit {git_rev()}  half: {args.half}")
    print_tables(results)


if __name__ == "__main__":
    asyncio.run(main())
