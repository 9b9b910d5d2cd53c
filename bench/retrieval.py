"""Retrieval quality and ingest cost on the Python documentation and its FAQ.

Corpus: the reST sources of the Python 3.11 docs (Debian's python3.11-doc), FAQ excluded.
Questions: the FAQ's own questions; gold documents: the library pages their answers cite
(bench/pydocs_dataset.py). Nobody on this team wrote either.

Prints: Recall@1, @5, @10, MRR and nDCG@10 of the gold documents (distinct documents, as
`expertbot eval retrieval` counts them) for hybrid, vector-only and keyword-only search; ingest
throughput; the cost of re-syncing the unchanged corpus; and what re-syncing after changing
1 % of the documents re-embeds.

    python bench/retrieval.py [--work .bench/pydocs] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import time
from pathlib import Path

from _common import ROOT, git_rev, machine

from base.database import make_engine, sqlite_url
from bench.pydocs_dataset import build as build_dataset
from knowledge.config import FolderSource, KnowledgeConfig
from knowledge.evaluation import evaluate_retrieval, load_cases
from knowledge.runtime import Knowledge


async def main(work: Path, as_json: bool) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    dataset = build_dataset(work / "dataset")
    corpus = work / "dataset" / "corpus"
    source = FolderSource(path=corpus, name="pydocs")
    config = KnowledgeConfig(sources=[source])
    engine = make_engine(sqlite_url(work / "expertbot.db"))
    knowledge = Knowledge.build(config, data_dir=work, engine=engine)
    await knowledge.open(index=False)
    results: dict = {"machine": machine(), "commit": git_rev(), "dataset": dataset}

    t = time.perf_counter()
    full = await knowledge.syncer.run()
    full_s = time.perf_counter() - t
    results["ingest"] = {
        "documents": full.added,
        "chunks": full.chunks_written,
        "seconds": round(full_s, 1),
        "chunks_per_s": round(full.chunks_written / full_s, 1),
        "skipped": full.skipped,
        "failed": full.failed,
    }

    t = time.perf_counter()
    again = await knowledge.syncer.run()
    again_s = time.perf_counter() - t
    results["resync_unchanged"] = {
        "seconds": round(again_s, 2),
        "fraction_of_full": round(again_s / full_s, 4),
        "unchanged": again.unchanged,
        "chunks_embedded": again.chunks_embedded,
    }

    docs = sorted(p for p in corpus.rglob("*.rst"))
    changed = random.Random(7).sample(docs, max(1, len(docs) // 100))
    for path in changed:
        with path.open("a", encoding="utf-8") as fh:
            fh.write("\n\nA paragraph added to measure incremental re-sync.\n")
    manifest = await knowledge.index.manifest()
    chunks_in_changed = sum(
        s.n_chunks for k, s in manifest.items() if (corpus / k.doc_id) in set(changed)
    )
    t = time.perf_counter()
    partial = await knowledge.syncer.run()
    partial_s = time.perf_counter() - t
    results["resync_1pct_changed"] = {
        "documents_changed": len(changed),
        "updated": partial.updated,
        "unchanged": partial.unchanged,
        "chunks_of_changed_docs": chunks_in_changed,
        "chunks_embedded": partial.chunks_embedded,
        "seconds": round(partial_s, 2),
    }

    cases = load_cases(work / "dataset" / "questions.jsonl")
    quality = {}
    for mode in ("hybrid", "vector", "keyword"):
        metrics, _ = await evaluate_retrieval(knowledge.search, cases, k=5, mode=mode)
        quality[mode] = metrics.as_json()
    results["quality"] = quality
    await knowledge.close()

    if as_json:
        print(json.dumps(results, indent=2))
    else:
        print(f"machine: {results['machine']}  commit {results['commit']}")
        ing = results["ingest"]
        print(
            f"corpus: {ing['documents']} documents, {ing['chunks']} chunks; {len(cases)} FAQ questions"
        )
        print(f"{'mode':<8} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'MRR':>6} {'nDCG@10':>7}")
        for mode, m in quality.items():
            print(
                f"{mode:<8} {m['recall@1']:>6.3f} {m['recall@5']:>6.3f} {m['recall@10']:>6.3f} "
                f"{m['mrr']:>6.3f} {m['ndcg@10']:>7.3f}"
            )
        print(f"ingest: {ing['chunks_per_s']} chunks/s ({ing['seconds']} s)")
        r = results["resync_unchanged"]
        print(
            f"re-sync unchanged: {r['seconds']} s = {100 * r['fraction_of_full']:.2f} % of a full ingest"
        )
        p = results["resync_1pct_changed"]
        print(
            f"1 % changed: {p['documents_changed']} docs changed -> {p['updated']} updated, "
            f"{p['chunks_embedded']} chunks embedded (of {p['chunks_of_changed_docs']} in those docs), "
            f"{p['seconds']} s"
        )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "pydocs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.work, args.json))
