"""Calibrating the abstention threshold (`answer.min_similarity`) on data.

The answerer abstains, without calling the model, when the best chunk's cosine similarity to
the question (`KnowledgeSearch.retrieve(...).similarity`) is below `answer.min_similarity`.
This script scores questions that the knowledge answers and questions it does not, on two
corpora, and sweeps the threshold:

- handbook: examples/knowledge with examples/questions.jsonl (answerable) and
  examples/unanswerable.jsonl (not covered by the handbook, off-topic, non-English);
- pydocs: the Python 3.11 docs (bench/pydocs_dataset.py) with its FAQ questions (answerable)
  and bench/pydocs_unanswerable.jsonl (third-party libraries, other languages, HR, off-topic).

For each corpus and both pooled it prints, per threshold t: answerable answered % (similarity
>= t) and unanswerable abstained % (similarity < t); the t that maximises balanced accuracy
on the pooled questions (the middle of the best plateau); and the range of t where both are
at least 90 %. No model is needed: only the embedding model and the index.

Retrieval sees every document (no access filter, as an operator would): some handbook
questions are about restricted or private documents.

    python bench/abstention.py [--work .bench/pydocs] [--json]

The Python-docs index is built in --work the first time (≈ 16 min on 2 cores: every chunk is
embedded) and reused afterwards, also by bench/retrieval.py's layout; the handbook's in
.bench/abstention.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from _common import ROOT, git_rev, machine

from bench.pydocs_dataset import build as build_dataset
from knowledge.config import KnowledgeConfig, SourceConfig
from knowledge.database import make_engine, sqlite_url
from knowledge.embedding import Embedder, SentenceTransformerEmbedder
from knowledge.models import SearchFilters
from knowledge.runtime import Knowledge

THRESHOLDS = [round(i / 100, 2) for i in range(81)]
TARGET = 0.90
EXAMPLES = ROOT / "examples"


def read_questions(path: Path) -> list[dict]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            docs = item.get("doc")
            item["docs"] = [docs] if isinstance(docs, str) else list(docs or [])
            items.append(item)
    return items


async def open_corpus(work: Path, source: SourceConfig, embedder: Embedder) -> Knowledge:
    """The index of `source` in `work`, synced (only changed documents are embedded)."""
    work.mkdir(parents=True, exist_ok=True)
    knowledge = Knowledge.build(
        KnowledgeConfig(sources=[source]),
        data_dir=work,
        engine=make_engine(sqlite_url(work / "expertbot.db")),
        embedder=embedder,
    )
    await knowledge.open(index=False)
    await knowledge.syncer.run()
    return knowledge


async def score(knowledge: Knowledge, corpus: str, items: list[dict], answerable: bool) -> list:
    rows = []
    for item in items:
        retrieval = await knowledge.search.retrieve(item["question"], k=5, filters=SearchFilters())
        top = [h.doc_id for h in retrieval.hits]
        rows.append(
            {
                "corpus": corpus,
                "question": item["question"],
                "answerable": answerable,
                "similarity": round(retrieval.similarity, 4),
                "top_doc": top[0] if top else None,
                # for answerable questions: is a gold document among the 5 hits?
                "gold_in_top5": bool(set(item["docs"]) & set(top)) if answerable else None,
            }
        )
    return rows


def rates(rows: list[dict], t: float) -> tuple[float, float]:
    """(answerable answered, unanswerable abstained) at threshold t, as fractions."""
    pos = [r["similarity"] for r in rows if r["answerable"]]
    neg = [r["similarity"] for r in rows if not r["answerable"]]
    answered = sum(s >= t for s in pos) / len(pos)
    abstained = sum(s < t for s in neg) / len(neg)
    return answered, abstained


def sweep(rows: list[dict]) -> list[dict]:
    out = []
    for t in THRESHOLDS:
        answered, abstained = rates(rows, t)
        out.append(
            {
                "threshold": t,
                "answered": round(answered, 4),
                "abstained": round(abstained, 4),
                "balanced": round((answered + abstained) / 2, 4),
            }
        )
    return out


def best_threshold(table: list[dict]) -> tuple[float, list[float]]:
    """The middle of the widest run of thresholds with the best balanced accuracy."""
    best = max(r["balanced"] for r in table)
    runs: list[list[float]] = []
    for r in table:
        if r["balanced"] == best:
            if runs and round(runs[-1][-1] + 0.01, 2) == r["threshold"]:
                runs[-1].append(r["threshold"])
            else:
                runs.append([r["threshold"]])
    run = max(runs, key=len)
    return run[len(run) // 2], [t for r in runs for t in r]


def target_range(table: list[dict]) -> list[float] | None:
    ok = [r["threshold"] for r in table if r["answered"] >= TARGET and r["abstained"] >= TARGET]
    return [min(ok), max(ok)] if ok else None


def describe(rows: list[dict]) -> dict:
    pos = [r["similarity"] for r in rows if r["answerable"]]
    neg = [r["similarity"] for r in rows if not r["answerable"]]
    return {
        "answerable": len(pos),
        "unanswerable": len(neg),
        "answerable_similarity": {
            "min": min(pos),
            "median": round(statistics.median(pos), 4),
            "max": max(pos),
        },
        "unanswerable_similarity": {
            "min": min(neg),
            "median": round(statistics.median(neg), 4),
            "max": max(neg),
        },
    }


async def main(work: Path, handbook_work: Path, as_json: bool) -> dict:
    started = time.perf_counter()
    if not (work / "dataset" / "questions.jsonl").is_file():
        build_dataset(work / "dataset")
    embedder = SentenceTransformerEmbedder(KnowledgeConfig().embedding)

    rows: list[dict] = []
    handbook = await open_corpus(
        handbook_work, SourceConfig(path=EXAMPLES / "knowledge", name="handbook"), embedder
    )
    rows += await score(handbook, "handbook", read_questions(EXAMPLES / "questions.jsonl"), True)
    rows += await score(
        handbook, "handbook", read_questions(EXAMPLES / "unanswerable.jsonl"), False
    )
    await handbook.close()

    pydocs = await open_corpus(
        work, SourceConfig(path=work / "dataset" / "corpus", name="pydocs"), embedder
    )
    rows += await score(
        pydocs, "pydocs", read_questions(work / "dataset" / "questions.jsonl"), True
    )
    rows += await score(
        pydocs, "pydocs", read_questions(ROOT / "bench" / "pydocs_unanswerable.jsonl"), False
    )
    stats = await pydocs.index.stats()
    await pydocs.close()

    groups = {
        "handbook": [r for r in rows if r["corpus"] == "handbook"],
        "pydocs": [r for r in rows if r["corpus"] == "pydocs"],
        "pooled": rows,
    }
    tables = {name: sweep(group) for name, group in groups.items()}
    chosen, plateau = best_threshold(tables["pooled"])
    results: dict = {
        "machine": machine(),
        "commit": git_rev(),
        "embedding_model": embedder.model_name,
        "pydocs_chunks": getattr(stats, "chunks", None),
        "scope": "all documents (no access filter)",
        "seconds": round(time.perf_counter() - started, 1),
        "chosen_threshold": chosen,
        "best_balanced_thresholds": plateau,
        "groups": {},
        "questions": rows,
    }
    for name, group in groups.items():
        at = next(r for r in tables[name] if r["threshold"] == chosen)
        own, _ = best_threshold(tables[name])
        results["groups"][name] = {
            **describe(group),
            "at_chosen": at,
            "best_own_threshold": own,
            "target_range": target_range(tables[name]),
            "sweep": tables[name],
        }

    if as_json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return results

    print(f"machine: {results['machine']}  commit {results['commit']}")
    print(
        f"embedding {results['embedding_model']}; similarity = cosine of the question to the "
        "best chunk (vector search, every document visible)"
    )
    for name, g in results["groups"].items():
        a, u = g["answerable_similarity"], g["unanswerable_similarity"]
        print(
            f"{name:<8} {g['answerable']:>3} answerable   similarity min/median/max "
            f"{a['min']:.3f} / {a['median']:.3f} / {a['max']:.3f}"
        )
        print(
            f"{'':<8} {g['unanswerable']:>3} unanswerable similarity min/median/max "
            f"{u['min']:.3f} / {u['median']:.3f} / {u['max']:.3f}"
        )
    print()
    print("answered % of answerable / abstained % of unanswerable, by threshold")
    print(f"{'t':>5} | {'handbook':>13} | {'pydocs':>13} | {'pooled':>13} | pooled bal.")
    for i, t in enumerate(THRESHOLDS):
        if i % 5 and t != chosen:
            continue
        cells = []
        for name in groups:
            r = tables[name][i]
            cells.append(f"{100 * r['answered']:>5.1f} / {100 * r['abstained']:>5.1f}")
        mark = "  <- chosen" if t == chosen else ""
        print(
            f"{t:>5.2f} | "
            + " | ".join(cells)
            + f" | {100 * tables['pooled'][i]['balanced']:.1f}{mark}"
        )
    print()
    print(
        f"best pooled balanced accuracy at t = {chosen:.2f} "
        f"(the middle of {plateau[0]:.2f}–{plateau[-1]:.2f}, {len(plateau)} thresholds tie)"
    )
    for name, g in results["groups"].items():
        rng = g["target_range"]
        at = g["at_chosen"]
        span = f"{rng[0]:.2f}–{rng[1]:.2f}" if rng else "none"
        print(
            f"{name:<8} at {chosen:.2f}: answered {100 * at['answered']:.1f} %, abstained "
            f"{100 * at['abstained']:.1f} %; own best t {g['best_own_threshold']:.2f}; "
            f"both >= 90 % for t in {span}"
        )
    print()
    print(f"misjudged at t = {chosen:.2f}:")
    for r in sorted(rows, key=lambda r: (r["corpus"], r["answerable"], -r["similarity"])):
        wrong = r["similarity"] < chosen if r["answerable"] else r["similarity"] >= chosen
        if wrong:
            kind = "answerable, abstains " if r["answerable"] else "unanswerable, answers"
            print(f"  {r['corpus']:<8} {kind} {r['similarity']:.3f}  {r['question'][:70]}")
    gold = [r for r in rows if r["answerable"] and r["gold_in_top5"] is not None]
    for name in ("handbook", "pydocs"):
        g = [r for r in gold if r["corpus"] == name]
        print(
            f"{name}: a gold document is among the 5 hits for {sum(r['gold_in_top5'] for r in g)}"
            f" of {len(g)} answerable questions"
        )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "pydocs")
    parser.add_argument("--handbook-work", type=Path, default=ROOT / ".bench" / "abstention")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.work, args.handbook_work, args.json))
