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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import ROOT, git_rev, machine, summary_ms

from base.database import make_engine, sqlite_url
from bot.core.config import AnswerConfig
from knowledge.answerability import DEFAULT_MODEL, FEATURES, AnswerabilityModel, Row
from knowledge.config import FolderSource, KnowledgeConfig
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
    config = KnowledgeConfig(sources=[FolderSource(path=corpus, name=name)])
    engine = make_engine(sqlite_url(data_dir / "expertbot.db"))
    knowledge = Knowledge.build(config, data_dir=data_dir, engine=engine)
    await knowledge.open()
    try:
        report = await knowledge.syncer.run()
        every = load_cases(answerable)
        cases = half_of(every, half)
        unanswered = [
            str(item["question"]) for _, item in read_jsonl(unanswerable, expected="a question")
        ]
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

        # Every question's signals, as serving computes them (tune / check alternate).
        rows: list[dict[str, Any]] = []
        seconds: list[float] = []
        for label, group in ((1, [c.question for c in every]), (0, unanswered)):
            for i, question in enumerate(group):
                started = time.perf_counter()
                found = await search.retrieve(question, k=answer.passages)
                seconds.append(time.perf_counter() - started)
                rows.append(
                    {
                        "label": label,
                        "half": "tune" if i % 2 == 0 else "check",
                        "similarity": found.similarity,
                        "signals": found.signals,
                    }
                )
        return {
            "corpus": name,
            "documents": report.added + report.updated + report.unchanged,
            "answerable": len(cases),
            "unanswerable": len(half_of_list(unanswered, half)),
            "retrieval": retrieval,
            "rows": rows,
            "retrieve": summary_ms(seconds),
            "embedder": knowledge.embedder.model_name,
        }
    finally:
        await knowledge.close()
        engine.dispose()


def half_of_list(items: list[str], half: str) -> list[str]:
    return items if half == "all" else items[(half == "check") :: 2]


def abstention(results: list[dict[str, Any]], half: str, model: AnswerabilityModel | None) -> None:
    """Per corpus: the share of answerable questions answered and of unanswerable ones
    abstained, by today's similarity rule and by the answerability model."""
    min_similarity = AnswerConfig().min_similarity
    for r in results:
        rows = [row for row in r["rows"] if half == "all" or row["half"] == half]
        rules = {"similarity": lambda row: row["similarity"] >= min_similarity}
        if model is not None:
            rules["classifier"] = lambda row: model.answerable(row["signals"])
        r["abstention"] = {}
        for rule, answers in rules.items():
            yes = [answers(row) for row in rows if row["label"] == 1]
            no = [not answers(row) for row in rows if row["label"] == 0]
            r["abstention"][rule] = {
                "answered": round(sum(yes) / len(yes), 3),
                "abstained": round(sum(no) / len(no), 3),
                "answerable": len(yes),
                "unanswerable": len(no),
            }


def train(results: list[dict[str, Any]]) -> AnswerabilityModel:
    """The answerability model, fitted on the tune halves of every corpus measured."""
    embedders = {r["embedder"] for r in results}
    if len(embedders) != 1:
        raise SystemExit(f"corpora measured with different embedders: {sorted(embedders)}")
    rows = [
        Row(
            tuple(row["signals"].vector(FEATURES)),
            row["label"],
            f"bench:{r['corpus']}:{row['half']}",
        )
        for r in results
        for row in r["rows"]
        if row["half"] == "tune"
    ]
    return AnswerabilityModel.fit(
        rows,
        embedder=embedders.pop(),
        reranker=None,
        features=FEATURES,
        summary={
            "trained_on": "tune halves of bench/corpora.py: "
            + ", ".join(r["corpus"] for r in results),
            "commit": git_rev(),
        },
    )


def print_tables(results: list[dict[str, Any]]) -> None:
    for metric in ("recall@1", "recall@5", "recall@10", "mrr", "ndcg@10"):
        print(f"\n{metric} (distinct documents)")
        print(f"{'corpus':<10} {'docs':>5} {'qs':>4} " + " ".join(f"{m:>9}" for m in METHODS))
        for r in results:
            row = " ".join(f"{r['retrieval'][m][metric]:>9.3f}" for m in METHODS)
            print(f"{r['corpus']:<10} {r['documents']:>5} {r['answerable']:>4} {row}")
    rules = list(results[0]["abstention"]) if results else []
    print("\nabstention: answerable questions answered / unanswerable ones abstained")
    print(
        f"{'corpus':<10} {'answerable':>10} {'unanswerable':>12} "
        + " ".join(f"{rule + ' ans/abs':>22}" for rule in rules)
    )
    pooled: dict[str, list[float]] = {rule: [0, 0, 0, 0] for rule in rules}
    for r in results:
        cells = []
        for rule in rules:
            a = r["abstention"][rule]
            cells.append(f"{a['answered']:>11.3f} {a['abstained']:>10.3f}")
            p = pooled[rule]
            p[0] += a["answered"] * a["answerable"]
            p[1] += a["answerable"]
            p[2] += a["abstained"] * a["unanswerable"]
            p[3] += a["unanswerable"]
        first = r["abstention"][rules[0]]
        print(
            f"{r['corpus']:<10} {first['answerable']:>10} {first['unanswerable']:>12} "
            + " ".join(cells)
        )
    if results:
        cells = [f"{p[0] / p[1]:>11.3f} {p[2] / p[3]:>10.3f}" for p in pooled.values()]
        print(f"{'pooled':<10} {'':>10} {'':>12} " + " ".join(cells))
    print("\nretrieval + answerability signals per question (ms)")
    for r in results:
        t = r["retrieve"]
        print(f"{r['corpus']:<10} p50 {t['p50_ms']:>7.1f}  p95 {t['p95_ms']:>7.1f}")


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
    parser.add_argument(
        "--train",
        type=Path,
        metavar="PATH",
        help="fit the answerability model on the tune halves of the corpora measured and save "
        "it to PATH (the shipped one: knowledge/answerability.json); it is then reported",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sources = {k: Path(v) for k, _, v in (s.partition("=") for s in args.sources)}
    results = [await measure(n, args.work, args.half, sources.get(n)) for n in args.only]
    model: AnswerabilityModel | None
    if args.train:
        model = train(results)
        model.save(args.train)
    else:
        model = AnswerabilityModel.load(DEFAULT_MODEL) if DEFAULT_MODEL.is_file() else None
    abstention(results, args.half, model)
    if args.json:
        for r in results:
            r["rows"] = [{**row, "signals": row["signals"].as_json()} for row in r["rows"]]
        print(json.dumps({"machine": machine(), "commit": git_rev(), "results": results}, indent=2))
        return
    print(f"machine: {machine()}  commit {git_rev()}  half: {args.half}")
    if model is not None:
        print(model.describe())
    print_tables(results)


if __name__ == "__main__":
    asyncio.run(main())
