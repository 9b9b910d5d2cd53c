"""Hybrid search latency at 10k and 100k chunks on LanceDB (the embedded default).

Chunks are the real ones from bench/retrieval.py's Python-docs index (run it first); to reach
100k they are replicated with their vectors perturbed (Gaussian noise, re-normalised) and their
text tagged, so the full-text index grows too. Queries are the FAQ questions, embedded up front:
the figures are index time (vector + BM25 + fusion, pre-filtered by access), then end to end
with the query embedding. Also reports the recall@10 of the ANN index against exact search.

    python bench/search_latency.py [--work .bench] [--sizes 10000 100000] [--runs 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from _common import ROOT, git_rev, machine, summary_ms

from knowledge.config import EmbeddingConfig, LanceDBConfig, SearchConfig
from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.index.lancedb import LanceIndex, where_clause
from knowledge.models import AccessScope, SearchFilters, SearchQuery
from knowledge.search import KnowledgeSearch


def load_real_chunks(work: Path) -> pa.Table:
    import lancedb

    path = work / "pydocs" / "lancedb"
    if not path.exists():
        raise SystemExit(f"no index at {path}: run `python bench/retrieval.py` first")
    return lancedb.connect(str(path)).open_table("chunks").to_lance().to_table()


def replicate(real: pa.Table, size: int, rng: np.random.Generator) -> pa.Table:
    n = real.num_rows
    parts = []
    vectors = np.stack(real.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    for copy in range((size + n - 1) // n):
        take = min(n, size - copy * n)
        part = real.slice(0, take)
        if copy:
            noisy = vectors[:take] + rng.normal(0, 0.05, size=(take, vectors.shape[1])).astype(
                np.float32
            )
            noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
            tag = f" (copy {copy})"
            cols = {name: part.column(name) for name in part.column_names}
            cols["chunk_id"] = pa.array(
                [f"{c}-{copy}" for c in part.column("chunk_id").to_pylist()]
            )
            cols["doc_id"] = pa.array([f"{d}#{copy}" for d in part.column("doc_id").to_pylist()])
            cols["search_text"] = pa.array(
                [t + tag for t in part.column("search_text").to_pylist()]
            )
            cols["vector"] = pa.FixedSizeListArray.from_arrays(
                pa.array(noisy.ravel()), vectors.shape[1]
            )
            part = pa.table(cols, schema=real.schema)
        parts.append(part)
    return pa.concat_tables(parts)


async def bench_size(
    work: Path, real: pa.Table, size: int, questions: list[str], vectors, runs: int, embedder
):
    rng = np.random.default_rng(size)
    index = LanceIndex(work / f"latency-{size}", LanceDBConfig())
    await index.open(
        dim=real.schema.field("vector").type.list_size, model=embedder.model_name, recreate=True
    )
    table = index._require()
    data = replicate(real, size, rng)
    t = time.perf_counter()
    for start in range(0, data.num_rows, 20_000):
        table.add(data.slice(start, 20_000))
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    await index.optimize()
    optimize_s = time.perf_counter() - t
    stats = await index.stats()

    filters = SearchFilters(scope=AccessScope(principals=frozenset({"C0FINANCE"})))
    out: dict[str, Any] = {
        "chunks": stats.chunks,
        "ann_index": stats.ann_index,
        "load_s": round(load_s, 1),
        "index_build_s": round(optimize_s, 1),
    }

    async def timed(mode: str, depth: int) -> dict[str, float]:
        timings = []
        for i in range(runs):
            q = SearchQuery(
                text=questions[i % len(questions)],
                vector=vectors[i % len(questions)],
                k=5,
                mode=mode,
                candidates=depth,
                filters=filters,
            )
            t = time.perf_counter()
            await index.search(q)
            timings.append(time.perf_counter() - t)
        return summary_ms(timings[10:])  # the first few warm caches up

    default_depth = SearchConfig().candidates
    for mode in ("hybrid", "vector", "keyword"):
        out[mode] = await timed(mode, default_depth)
    # The trade-off: fewer candidates per retriever is faster, and (bench/retrieval.py) a little
    # less accurate.
    for depth in (20, 50):
        out[f"hybrid_candidates_{depth}"] = await timed("hybrid", depth)

    search = KnowledgeSearch(index, embedder, SearchConfig())
    timings = []
    for i in range(min(runs, 150)):
        t = time.perf_counter()
        await search.search(questions[i % len(questions)] + f" #{i}", k=5, filters=filters)
        timings.append(time.perf_counter() - t)
    out["hybrid_with_query_embedding"] = summary_ms(timings[5:])

    if stats.ann_index:
        where = where_clause(filters)
        agree = []
        for vec in vectors[:60]:

            def top(exact: bool, vec=vec):
                q = table.search(vec).distance_type("cosine").where(where, prefilter=True).limit(10)
                if exact:
                    q = q.bypass_vector_index()
                return {r["chunk_id"] for r in q.select(["chunk_id", "_distance"]).to_list()}

            agree.append(len(top(True) & top(False)) / 10)
        out["ann_recall@10_vs_exact"] = round(float(np.mean(agree)), 3)
    await index.close()
    return out


async def main(work: Path, sizes: list[int], runs: int, as_json: bool) -> None:
    real = load_real_chunks(work)
    questions = [
        json.loads(line)["question"]
        for line in (work / "pydocs" / "dataset" / "questions.jsonl").read_text().splitlines()
    ]
    embedder = SentenceTransformerEmbedder(EmbeddingConfig())
    vectors = [embedder.embed_query(q).tolist() for q in questions]
    results = {"machine": machine(), "commit": git_rev(), "real_chunks": real.num_rows, "sizes": {}}
    for size in sizes:
        results["sizes"][size] = await bench_size(
            work, real, size, questions, vectors, runs, embedder
        )
        if not as_json:
            r = results["sizes"][size]
            print(
                f"{size:>7} chunks (ANN index: {r['ann_index']}, built in {r['index_build_s']} s):"
            )
            modes = ("hybrid", "vector", "keyword", "hybrid_candidates_50", "hybrid_candidates_20")
            for mode in (*modes, "hybrid_with_query_embedding"):
                print(
                    f"   {mode:<28} p50 {r[mode]['p50_ms']:>7.2f} ms   p95 {r[mode]['p95_ms']:>7.2f} ms"
                )
            if "ann_recall@10_vs_exact" in r:
                print(f"   ANN recall@10 vs exact search: {r['ann_recall@10_vs_exact']}")
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        print(
            f"machine: {results['machine']}  commit {results['commit']}; {real.num_rows} real chunks replicated"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=ROOT / ".bench")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.work, args.sizes, args.runs, args.json))
