"""Choosing the retrieval defaults: fusion, alpha, candidate depth and the per-document cap, on
the tune halves of every benchmark corpus; reported on the check halves.

For each question the vector and keyword candidates (200 chunks each) are fetched from the
corpus's index once and kept in --work/<corpus>/candidates.json; every setting is then fused
from them with knowledge.fusion (what the LanceDB backend runs) and its documents ranked as
`expertbot eval retrieval` ranks them (distinct documents).

The rule: among the settings that lose at most 0.02 distinct-document R@5 to the corpus's best
single retriever on every corpus's tune half, the best mean R@5 over corpora (then mean MRR).

    python bench/tune_retrieval.py [--only …] [--work .bench/corpora] [--sources privoxy=DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import ROOT, git_rev, machine

from base.database import make_engine, sqlite_url
from bench.corpora import CORPORA, dataset
from knowledge import fusion
from knowledge.config import FolderSource, KnowledgeConfig
from knowledge.evaluation import load_cases
from knowledge.runtime import Knowledge
from knowledge.search import first_per_key

DEPTH = 200
ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
CANDIDATES = (20, 50, 100, 200)
FUSIONS = ("rrf", "weighted")
CAPS = (1, 2, 3, 5)

Ranked = list[tuple[str, str, float]]  # (chunk id, document id, score), best first


@dataclass(frozen=True, slots=True)
class Case:
    question: str
    gold: frozenset[str]
    half: str
    vector: Ranked
    keyword: Ranked


async def candidates(name: str, work: Path, sources: Path | None) -> list[Case]:
    cache = work / name / "candidates.json"
    if cache.is_file():
        return [
            Case(c["question"], frozenset(c["gold"]), c["half"], c["vector"], c["keyword"])
            for c in json.loads(cache.read_text())
        ]
    corpus, answerable, _ = dataset(name, work, sources)
    data_dir = work / name / "index"
    engine = make_engine(sqlite_url(data_dir / "expertbot.db"))
    config = KnowledgeConfig(sources=[FolderSource(path=corpus, name=name)])
    knowledge = Knowledge.build(config, data_dir=data_dir, engine=engine)
    await knowledge.open()
    cases: list[Case] = []
    try:
        await knowledge.syncer.run()
        for i, case in enumerate(load_cases(answerable)):
            lists = []
            for mode in ("vector", "keyword"):
                hits = await knowledge.search.search(case.question, k=DEPTH, mode=mode)
                lists.append([(h.chunk_id, h.doc_id, h.score) for h in hits])
            half = "tune" if i % 2 == 0 else "check"
            cases.append(Case(case.question, case.docs, half, lists[0], lists[1]))
    finally:
        await knowledge.close()
        engine.dispose()
    cache.write_text(
        json.dumps(
            [
                {
                    "question": c.question,
                    "gold": sorted(c.gold),
                    "half": c.half,
                    "vector": c.vector,
                    "keyword": c.keyword,
                }
                for c in cases
            ]
        )
    )
    return cases


def fused(case: Case, how: str, alpha: float, depth: int) -> list[str]:
    """Chunk ids, best first, as the index's hybrid search fuses them."""
    vector, keyword = case.vector[:depth], case.keyword[:depth]
    if how == "vector":
        return [c for c, _, _ in vector]
    if how == "keyword":
        return [c for c, _, _ in keyword]
    if how == "weighted":
        pairs = fusion.weighted(
            [(c, s) for c, _, s in vector], [(c, s) for c, _, s in keyword], alpha=alpha
        )
    else:
        pairs = fusion.reciprocal_rank(
            [c for c, _, _ in vector], [c for c, _, _ in keyword], alpha=alpha
        )
    return [c for c, _ in pairs]


def documents(case: Case, chunks: Sequence[str]) -> list[str]:
    doc_of = {c: d for c, d, _ in (*case.vector, *case.keyword)}
    return list(dict.fromkeys(doc_of[c] for c in chunks))


def capped(case: Case, chunks: Sequence[str], cap: int, k: int) -> list[str]:
    """The first `k` chunks with at most `cap` from any one document (as serving caps them)."""
    doc_of = {c: d for c, d, _ in (*case.vector, *case.keyword)}
    return first_per_key(chunks, doc_of.__getitem__, cap, k)


def scores(cases: Sequence[Case], docs_of: Callable[[Case], list[str]]) -> dict[str, float]:
    ranks = []
    for case in cases:
        docs = docs_of(case)
        ranks.append(next((i for i, d in enumerate(docs, 1) if d in case.gold), None))
    n = len(ranks)
    return {
        "r@1": sum(r is not None and r <= 1 for r in ranks) / n,
        "r@5": sum(r is not None and r <= 5 for r in ranks) / n,
        "mrr": sum(1 / r for r in ranks if r is not None and r <= 10) / n,
    }


def settings() -> list[tuple[str, float, int]]:
    singles = [("vector", 1.0, d) for d in CANDIDATES] + [("keyword", 0.0, d) for d in CANDIDATES]
    return singles + list(itertools.product(FUSIONS, ALPHAS, CANDIDATES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=CORPORA, default=list(CORPORA))
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "corpora")
    parser.add_argument("--sources", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sources = {k: Path(v) for k, _, v in (s.partition("=") for s in args.sources)}
    corpora = {n: asyncio.run(candidates(n, args.work, sources.get(n))) for n in args.only}

    def table(half: str) -> dict[tuple[str, float, int], dict[str, dict[str, float]]]:
        out: dict[tuple[str, float, int], dict[str, dict[str, float]]] = {}
        for setting in settings():

            def ranked(case: Case, setting: tuple[str, float, int] = setting) -> list[str]:
                return documents(case, fused(case, *setting))

            out[setting] = {
                name: scores([c for c in cases if c.half == half], ranked)
                for name, cases in corpora.items()
            }
        return out

    tune, check = table("tune"), table("check")

    def best_single(results: dict[Any, dict[str, dict[str, float]]], name: str) -> float:
        return max(results[s][name]["r@5"] for s in results if s[0] in ("vector", "keyword"))

    allowed = [
        s
        for s in tune
        if s[0] not in ("vector", "keyword")
        and all(tune[s][n]["r@5"] >= best_single(tune, n) - 0.02 for n in corpora)
    ]
    pool = allowed or [s for s in tune if s[0] not in ("vector", "keyword")]

    def rank_key(s: tuple[str, float, int]) -> tuple[float, float]:
        return (
            statistics.fmean(tune[s][n]["r@5"] for n in corpora),
            statistics.fmean(tune[s][n]["mrr"] for n in corpora),
        )

    chosen = max(pool, key=rank_key)
    # The per-document cap of the passages (k = 5 chunks), for the chosen fusion.
    k = 5

    def passages(cap: int) -> Callable[[Case], list[str]]:
        return lambda case: documents(case, capped(case, fused(case, *chosen), cap, k))

    caps = {
        half: {
            cap: {
                name: scores([c for c in cases if c.half == half], passages(cap))
                for name, cases in corpora.items()
            }
            for cap in CAPS
        }
        for half in ("tune", "check")
    }
    if args.json:
        print(
            json.dumps(
                {
                    "chosen": chosen,
                    "allowed": len(allowed),
                    "tune": {str(s): v for s, v in tune.items()},
                    "check": {str(s): v for s, v in check.items()},
                    "caps": caps,
                },
                indent=1,
            )
        )
        return
    print(f"machine: {machine()}  commit {git_rev()}")
    print(
        f"{len(allowed)} of {len(pool) if not allowed else len(tune) - 2 * len(CANDIDATES)} "
        "fused settings keep within 0.02 of the best single retriever on every tune half"
    )
    print(f"chosen on the tune halves: fusion={chosen[0]} alpha={chosen[1]} candidates={chosen[2]}")
    names = list(corpora)
    show = [
        ("vector", 1.0, 100),
        ("keyword", 0.0, 100),
        ("rrf", 0.5, 100),
        *sorted({chosen}, key=str),
        *sorted(sorted(allowed, key=rank_key, reverse=True)[1:4], key=str),
    ]
    for half, results in (("tune", tune), ("check", check)):
        for metric in ("r@5", "r@1", "mrr"):
            print(f"\n{half} half, distinct-document {metric}")
            print(f"{'setting':<22}" + "".join(f"{n:>9}" for n in names) + f"{'mean':>9}")
            for s in dict.fromkeys(show):
                row = [results[s][n][metric] for n in names]
                label = f"{s[0]} a={s[1]} c={s[2]}"
                print(
                    f"{label:<22}"
                    + "".join(f"{v:>9.3f}" for v in row)
                    + f"{statistics.fmean(row):>9.3f}"
                )
    for half in ("tune", "check"):
        print(f"\n{half} half, passages (k={k} chunks, at most `cap` per document): document R@5")
        print(f"{'cap':<22}" + "".join(f"{n:>9}" for n in names) + f"{'mean':>9}")
        for cap, per_corpus in caps[half].items():
            row = [per_corpus[n]["r@5"] for n in names]
            print(
                f"{cap:<22}" + "".join(f"{v:>9.3f}" for v in row) + f"{statistics.fmean(row):>9.3f}"
            )


if __name__ == "__main__":
    main()
