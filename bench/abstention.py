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
questions are about restricted or private documents. Behind an ANN index the reported
similarity is converted back to a cosine first (see `cosine()`).

    python bench/abstention.py [--work .bench/pydocs] [--json]

The Python-docs corpus and index live in --work, the same layout as bench/retrieval.py's (an
index that script left is synced, i.e. reused); without one it is built (≈ 15 min on 2 cores:
every chunk is embedded). The handbook's index lives in .bench/abstention.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path

from _common import ROOT, git_rev, machine

from base.database import make_engine, sqlite_url
from bench.pydocs_dataset import build as build_dataset
from bot.logging import configure_logging
from knowledge.config import FolderSource, KnowledgeConfig
from knowledge.embedding import Embedder, SentenceTransformerEmbedder
from knowledge.models import IndexStats, SearchFilters
from knowledge.runtime import Knowledge

THRESHOLDS = [round(i / 100, 2) for i in range(81)]
TARGET = 0.90
EXAMPLES = ROOT / "examples"
HANDBOOK_SETS = (("questions.jsonl", True), ("unanswerable.jsonl", False))


def read_questions(path: Path) -> list[dict]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            docs = item.get("doc")
            item["docs"] = [docs] if isinstance(docs, str) else list(docs or [])
            items.append(item)
    return items


async def open_corpus(
    work: Path, source: FolderSource, embedder: Embedder
) -> tuple[Knowledge, IndexStats]:
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
    return knowledge, await knowledge.index.stats()


async def score(
    knowledge: Knowledge, corpus: str, items: list[dict], answerable: bool, ann_scale: bool
) -> list:
    rows = []
    for item in items:
        retrieval = await knowledge.search.retrieve(item["question"], k=5, filters=SearchFilters())
        top = [h.doc_id for h in retrieval.hits]
        rows.append(
            {
                "corpus": corpus,
                "question": item["question"],
                "answerable": answerable,
                "similarity": round(cosine(retrieval.similarity, ann_scale), 4),
                "reported": round(retrieval.similarity, 4),
                "top_doc": top[0] if top else None,
                # for answerable questions: is a gold document among the 5 hits?
                "gold_in_top5": bool(set(item["docs"]) & set(top)) if answerable else None,
            }
        )
    return rows


def cosine(reported: float, ann_scale: bool) -> float:
    """The best chunk's cosine similarity from `Retrieval.similarity`.

    Through LanceDB's IVF_HNSW_SQ index (built from `ann_min_rows` chunks on) the `_distance`
    of a cosine search comes back as the squared L2 distance of the unit vectors, 2 (1 - cos),
    so the reported `1 - _distance` is 2 cos - 1, not cos (exact search, below that size,
    gives cos). `reported_scale` finds out which one an index reports."""
    return (1 + reported) / 2 if ann_scale else reported


async def reported_scale(knowledge: Knowledge, questions: list[str]) -> dict:
    """Whether the index reports 2 cos - 1 rather than cos: the best vector hit's score against
    the cosine of the question to that chunk as embedded (title > heading, then the text), for
    a few questions."""
    checks = []
    for text in questions:
        vector = await knowledge.search.embed(text)
        hits = await knowledge.search.search(text, k=1, mode="vector", filters=SearchFilters())
        if not hits:
            continue
        hit = hits[0]
        head = " > ".join([hit.title, hit.heading] if hit.heading else [hit.title])
        chunk = knowledge.embedder.embed_documents([f"{head}\n\n{hit.text}" if head else hit.text])
        checks.append((hit.score, float(chunk[0] @ vector)))
    as_cos = max(abs(score - cos) for score, cos in checks)
    as_ann = max(abs(score - (2 * cos - 1)) for score, cos in checks)
    return {
        "ann_scale": as_ann < as_cos,
        "checked": len(checks),
        "max_error": round(min(as_cos, as_ann), 4),
    }


def rates(rows: list[dict], t: float, key: str = "similarity") -> tuple[float, float]:
    """(answerable answered, unanswerable abstained) at threshold t, as fractions."""
    pos = [r[key] for r in rows if r["answerable"]]
    neg = [r[key] for r in rows if not r["answerable"]]
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


def bootstrap(rows: list[dict], rounds: int = 1000, seed: int = 7) -> dict:
    """How much the pooled optimum moves when the questions are resampled (with replacement,
    within each corpus and label): the 5th–95th percentile of the chosen threshold and of the
    figures on the full data at each resample's choice."""
    rng = random.Random(seed)
    strata: dict[tuple[str, bool], list[dict]] = {}
    for r in rows:
        strata.setdefault((r["corpus"], r["answerable"]), []).append(r)
    chosen = []
    for _ in range(rounds):
        sample = [rng.choice(group) for group in strata.values() for _ in group]
        chosen.append(best_threshold(sweep(sample))[0])
    chosen.sort()

    def pct(p: float) -> float:
        return chosen[min(len(chosen) - 1, round(p / 100 * (len(chosen) - 1)))]

    return {
        "rounds": rounds,
        "threshold_p5": pct(5),
        "threshold_p50": pct(50),
        "threshold_p95": pct(95),
    }


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
    configure_logging("warning")
    started = time.perf_counter()
    if not (work / "dataset" / "questions.jsonl").is_file():
        build_dataset(work / "dataset")
    embedder = SentenceTransformerEmbedder(KnowledgeConfig().embedding)

    rows: list[dict] = []
    handbook, hb_stats = await open_corpus(
        handbook_work, FolderSource(path=EXAMPLES / "knowledge", name="handbook"), embedder
    )
    sets = [(read_questions(EXAMPLES / p), a) for p, a in HANDBOOK_SETS]
    scales = {"handbook": await reported_scale(handbook, [i["question"] for i in sets[0][0][:5]])}
    for items, answerable in sets:
        rows += await score(
            handbook, "handbook", items, answerable, scales["handbook"]["ann_scale"]
        )
    await handbook.close()

    pydocs, stats = await open_corpus(
        work, FolderSource(path=work / "dataset" / "corpus", name="pydocs"), embedder
    )
    sets = [
        (read_questions(work / "dataset" / "questions.jsonl"), True),
        (read_questions(ROOT / "bench" / "pydocs_unanswerable.jsonl"), False),
    ]
    scales["pydocs"] = await reported_scale(pydocs, [i["question"] for i in sets[0][0][:5]])
    for items, answerable in sets:
        rows += await score(pydocs, "pydocs", items, answerable, scales["pydocs"]["ann_scale"])
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
        "chunks": {"handbook": hb_stats.chunks, "pydocs": stats.chunks},
        "ann_index": {"handbook": hb_stats.ann_index, "pydocs": stats.ann_index},
        "reported_scale": scales,
        "scope": "all documents (no access filter)",
        "seconds": round(time.perf_counter() - started, 1),
        "chosen_threshold": chosen,
        "best_balanced_thresholds": plateau,
        "bootstrap": bootstrap(rows),
        "groups": {},
        "questions": rows,
    }
    for name, group in groups.items():
        at = next(r for r in tables[name] if r["threshold"] == chosen)
        own, _ = best_threshold(tables[name])
        answered, abstained = rates(group, chosen, "reported")
        results["groups"][name] = {
            **describe(group),
            "at_chosen": at,
            "at_chosen_with_reported_similarity": {
                "answered": round(answered, 4),
                "abstained": round(abstained, 4),
            },
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
    for name, scale in scales.items():
        ann = "an ANN index" if results["ann_index"][name] else "no ANN index"
        says = "2 cos - 1: converted back to cos" if scale["ann_scale"] else "cos"
        print(
            f"{name}: {results['chunks'][name]} chunks, {ann}; retrieve() reports {says} "
            f"(checked on {scale['checked']} questions, within {scale['max_error']:.4f})"
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
        f"(best of {len(plateau)} threshold(s) tying, {plateau[0]:.2f}–{plateau[-1]:.2f})"
    )
    b = results["bootstrap"]
    print(
        f"resampling the questions ({b['rounds']}x): the pooled optimum lies in "
        f"{b['threshold_p5']:.2f}–{b['threshold_p95']:.2f} (5th–95th percentile), median "
        f"{b['threshold_p50']:.2f}"
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
    for name, g in results["groups"].items():
        if scales.get(name, {}).get("ann_scale"):
            raw = g["at_chosen_with_reported_similarity"]
            print(
                f"{name:<8} at {chosen:.2f} with the similarity as retrieve() reports it today: "
                f"answered {100 * raw['answered']:.1f} %, abstained {100 * raw['abstained']:.1f} %"
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
