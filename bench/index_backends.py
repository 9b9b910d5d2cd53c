"""LanceDB and Weaviate side by side: the same corpus, the same questions, the same vectors.

Corpus: the example handbook and a sample of the Python documentation (Debian's python3.11-doc;
the sample keeps every page an FAQ answer cites, plus other pages as distractors), with the
handbook's and the FAQ's questions. The corpus is embedded once, by a sync into LanceDB;
Weaviate receives the same chunks with the same vectors, so the two stores differ only in how
they index and search.

Prints, per store:
- distinct-document Recall@1, Recall@5 and MRR for vector-only, keyword-only and hybrid search
  (each ranking folded into documents, a document counted at its first chunk);
- the index write rate (chunks/s, vectors given: embedding is the same for both and dominates a
  real first sync, see bench/retrieval.py) and the cost of re-syncing the unchanged corpus;
- search p50/p95 at 10k and 100k chunks (the real chunks replicated with perturbed vectors and
  tagged text), with an access filter, as serving searches.

    python bench/index_backends.py [--work .bench/backends] [--docs 200] [--sizes 10000 100000]

Weaviate comes from WEAVIATE_URL (and EXPERTBOT_KNOWLEDGE__WEAVIATE__GRPC_URL), else this
starts scripts/weaviate.sh's default server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, git_rev, machine, summary_ms
from pydantic import SecretStr

from base.database import make_engine, sqlite_url
from bench.pydocs_dataset import build as build_dataset
from knowledge.config import (
    FolderSource,
    KnowledgeConfig,
    LanceDBConfig,
    SourceConfig,
    WeaviateConfig,
)
from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.index.base import KnowledgeIndex
from knowledge.index.lancedb import LanceIndex
from knowledge.index.weaviate import WeaviateIndex
from knowledge.models import AccessScope, ChunkRecord, DocKey, SearchFilters, SearchQuery, chunk_id
from knowledge.runtime import Knowledge

MODES = ("vector", "keyword", "hybrid")
DEPTH = 50  # chunks fetched per question before folding into documents


def weaviate_config(collection: str) -> WeaviateConfig:
    if not os.environ.get("WEAVIATE_URL"):
        out = subprocess.run(
            [str(ROOT / "scripts" / "weaviate.sh"), "start"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        os.environ.update(dict(line.split("=", 1) for line in out.splitlines()))
    return WeaviateConfig(
        url=os.environ["WEAVIATE_URL"],
        grpc_url=os.environ.get("EXPERTBOT_KNOWLEDGE__WEAVIATE__GRPC_URL"),
        api_key=SecretStr(key) if (key := os.environ.get("WEAVIATE_API_KEY")) else None,
        collection=collection,
        timeout_s=120,
    )


def sample_corpus(dataset_dir: Path, docs: int, seed: int = 7) -> tuple[Path, list[dict[str, Any]]]:
    """Keep every gold page and random other pages, up to `docs` documents in all."""
    corpus = dataset_dir / "corpus"
    questions = [
        json.loads(line) for line in (dataset_dir / "questions.jsonl").read_text().splitlines()
    ]
    gold = {d for q in questions for d in q["doc"]}
    pages = sorted(str(p.relative_to(corpus)) for p in corpus.rglob("*.rst"))
    others = [p for p in pages if p not in gold]
    random.Random(seed).shuffle(others)
    keep = gold | set(others[: max(0, docs - len(gold))])
    for page in pages:
        if page not in keep:
            (corpus / page).unlink()
    return corpus, questions


def all_records(index: LanceIndex) -> list[ChunkRecord]:
    table = index._require().to_lance().to_table()
    fields = [f for f in ChunkRecord.__dataclass_fields__ if f != "vector"]
    rows = table.select([*fields, "vector"]).to_pylist()
    return [ChunkRecord(**{f: row[f] for f in fields}, vector=list(row["vector"])) for row in rows]


def by_doc(records: list[ChunkRecord]) -> dict[DocKey, list[ChunkRecord]]:
    out: dict[DocKey, list[ChunkRecord]] = {}
    for r in records:
        out.setdefault(r.key, []).append(r)
    return out


async def write_all(index: KnowledgeIndex, records: list[ChunkRecord], batch: int = 2000) -> float:
    docs = by_doc(records)
    keys = list(docs)
    t = time.perf_counter()
    group: dict[DocKey, list[ChunkRecord]] = {}
    size = 0
    for key in keys:
        group[key] = docs[key]
        size += len(docs[key])
        if size >= batch:
            await index.replace_documents(group)
            group, size = {}, 0
    if group:
        await index.replace_documents(group)
    await index.optimize()
    return time.perf_counter() - t


def fold(hits: list[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for h in hits:
        seen.setdefault(f"{h.source}:{h.doc_id}", None)
    return list(seen)


async def quality(
    index: KnowledgeIndex, cases: list[tuple[str, list[float], set[str]]]
) -> dict[str, dict[str, float]]:
    out = {}
    for mode in MODES:
        r1 = r5 = mrr = 0.0
        for text, vector, gold in cases:
            hits = await index.search(SearchQuery(text=text, vector=vector, k=DEPTH, mode=mode))
            ranked = fold(hits)
            rank = next((i for i, d in enumerate(ranked, start=1) if d in gold), None)
            r1 += rank == 1
            r5 += rank is not None and rank <= 5
            mrr += 1 / rank if rank else 0.0
        n = len(cases)
        out[mode] = {"R@1": round(r1 / n, 3), "R@5": round(r5 / n, 3), "MRR": round(mrr / n, 3)}
    return out


def replicas(real: list[ChunkRecord], size: int, seed: int) -> Iterator[ChunkRecord]:
    """`size` chunks: the real ones, then copies with perturbed vectors and tagged text."""
    rng = np.random.default_rng(seed)
    vectors = np.array([r.vector for r in real], dtype=np.float32)
    for n in range(size):
        copy, i = divmod(n, len(real))
        record = real[i]
        if copy == 0:
            yield record
            continue
        noisy = vectors[i] + rng.normal(0, 0.05, size=(vectors.shape[1],)).astype(np.float32)
        noisy /= np.linalg.norm(noisy)
        doc_id = f"{record.doc_id}#{copy}"
        yield replace(
            record,
            chunk_id=chunk_id(record.source, doc_id, record.ordinal),
            doc_id=doc_id,
            text=f"{record.text} (copy {copy})",
            vector=noisy.tolist(),
        )


async def latency(
    index: KnowledgeIndex,
    real: list[ChunkRecord],
    size: int,
    queries: list[tuple[str, list[float]]],
    runs: int,
) -> dict[str, Any]:
    records = list(replicas(real, size, seed=size))
    write_s = await write_all(index, records)
    del records
    filters = SearchFilters(scope=AccessScope(principals=frozenset({"C0FINANCE"})))
    out: dict[str, Any] = {"chunks": await index.count_chunks(), "write_s": round(write_s, 1)}
    for mode in MODES:
        timings = []
        for i in range(runs):
            text, vector = queries[i % len(queries)]
            query = SearchQuery(text=text, vector=vector, k=5, mode=mode, filters=filters)
            t = time.perf_counter()
            await index.search(query)
            timings.append(time.perf_counter() - t)
        out[mode] = summary_ms(timings[10:])  # the first few warm caches up
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work: Path = args.work
    shutil.rmtree(work, ignore_errors=True)
    dataset = build_dataset(work / "dataset")
    corpus, faq = sample_corpus(work / "dataset", args.docs)
    handbook = ROOT / "examples" / "knowledge"
    sources: list[SourceConfig] = [
        FolderSource(path=corpus, name="pydocs"),
        FolderSource(path=handbook, name="handbook"),
    ]
    hb_questions = [
        json.loads(line)
        for line in (ROOT / "examples" / "questions.jsonl").read_text().splitlines()
    ]
    embedder = SentenceTransformerEmbedder(KnowledgeConfig().embedding)
    engine = make_engine(sqlite_url(work / "expertbot.db"))
    results: dict[str, Any] = {
        "machine": machine(),
        "commit": git_rev(),
        "faq_questions": dataset.get("questions_kept"),
    }

    # One embedding pass: a real sync into LanceDB.
    lance_config = KnowledgeConfig(sources=sources)
    lance = Knowledge.build(lance_config, data_dir=work / "lance", engine=engine, embedder=embedder)
    await lance.open(index=False)
    t = time.perf_counter()
    first = await lance.syncer.run()
    results["first_sync"] = {
        "documents": first.added,
        "chunks": first.chunks_written,
        "seconds": round(time.perf_counter() - t, 1),
    }
    assert isinstance(lance.index, LanceIndex)
    records = all_records(lance.index)

    cases = []
    for q in faq:
        cases.append((q["question"], {f"pydocs:{d}" for d in q["doc"]}))
    for q in hb_questions:
        docs = q.get("docs") or [q["doc"]]
        cases.append((q["question"], {f"handbook:{d}" for d in docs}))
    embedded = [(text, embedder.embed_query(text).tolist(), gold) for text, gold in cases]
    results["questions"] = len(embedded)

    collection = f"Bench{uuid.uuid4().hex[:8]}"
    wv_config = KnowledgeConfig(
        store="weaviate", sources=sources, weaviate=weaviate_config(collection)
    )
    weaviate = Knowledge.build(
        wv_config, data_dir=work / "weaviate", engine=engine, embedder=embedder
    )
    await weaviate.index.open(dim=embedder.dim, model=embedder.model_name)
    write_s = await write_all(weaviate.index, records)
    lance_copy = LanceIndex(work / "lance-copy", LanceDBConfig())
    await lance_copy.open(dim=embedder.dim, model=embedder.model_name)
    lance_write_s = await write_all(lance_copy, records)
    await lance_copy.close()

    stores = {"lancedb": lance, "weaviate": weaviate}
    writes = {"lancedb": lance_write_s, "weaviate": write_s}
    for name, knowledge in stores.items():
        t = time.perf_counter()
        again = await knowledge.syncer.run()
        resync_s = time.perf_counter() - t
        results[name] = {
            "write_chunks_per_s": round(len(records) / writes[name], 1),
            "resync_unchanged_s": round(resync_s, 2),
            "resync_unchanged_embedded": again.chunks_embedded,
            "quality": await quality(knowledge.index, embedded),
        }

    queries = [(t_, v) for t_, v, _ in embedded]
    for name in stores:
        results[name]["latency"] = {}
        for size in args.sizes:
            if name == "lancedb":
                index: KnowledgeIndex = LanceIndex(work / f"latency-{size}", LanceDBConfig())
            else:
                index = WeaviateIndex(weaviate_config(f"Latency{size}{uuid.uuid4().hex[:6]}"))
            await index.open(dim=embedder.dim, model=embedder.model_name, recreate=True)
            results[name]["latency"][size] = await latency(index, records, size, queries, args.runs)
            if isinstance(index, WeaviateIndex):
                await index.drop()
            await index.close()
            print(f"  {name} {size}: {results[name]['latency'][size]}", flush=True)

    assert isinstance(weaviate.index, WeaviateIndex)
    await weaviate.index.drop()
    await weaviate.close()
    await lance.close()
    engine.dispose()
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"machine: {results['machine']}  commit {results['commit']}")
    fs = results["first_sync"]
    print(
        f"corpus: {fs['documents']} documents, {fs['chunks']} chunks (first sync, embedding "
        f"included: {fs['seconds']} s); {results['questions']} questions"
    )
    print("\ndistinct-document retrieval")
    print(f"{'store':<9} {'mode':<8} {'R@1':>6} {'R@5':>6} {'MRR':>6}")
    for store in ("lancedb", "weaviate"):
        for mode, m in results[store]["quality"].items():
            print(f"{store:<9} {mode:<8} {m['R@1']:>6} {m['R@5']:>6} {m['MRR']:>6}")
    print("\nwrites and re-sync")
    for store in ("lancedb", "weaviate"):
        r = results[store]
        print(
            f"{store:<9} write {r['write_chunks_per_s']:>8} chunks/s   unchanged re-sync "
            f"{r['resync_unchanged_s']} s ({r['resync_unchanged_embedded']} chunks embedded)"
        )
    print("\nsearch latency, k=5, access-filtered (p50 / p95 ms)")
    for store in ("lancedb", "weaviate"):
        for size, r in results[store]["latency"].items():
            cells = "   ".join(f"{m} {r[m]['p50_ms']:.1f} / {r[m]['p95_ms']:.1f}" for m in MODES)
            print(f"{store:<9} {size:>7} chunks (written in {r['write_s']} s)   {cells}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "backends")
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    out = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps(out, indent=2))
    else:
        report(out, arguments)
