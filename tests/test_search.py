"""Fusion, the search service's input handling, and LanceDB's ANN index upkeep."""

from __future__ import annotations

import numpy as np
import pytest

from base.errors import QueryError
from knowledge import fusion
from knowledge.config import LanceDBConfig, SearchConfig
from knowledge.index.lancedb import LanceIndex, where_clause
from knowledge.models import AccessScope, ChunkRecord, DocKey, SearchFilters, chunk_id
from knowledge.search import KnowledgeSearch


def test_rrf_rewards_agreement_and_alpha_weights_the_sides():
    fused = fusion.reciprocal_rank(["a", "b", "c"], ["b", "d", "e"], alpha=0.5)
    assert [item for item, _ in fused][:2] == ["b", "a"]  # found by both beats first-by-one
    vector_only = fusion.reciprocal_rank(["a", "b"], ["z"], alpha=1.0)
    assert [item for item, _ in vector_only] == ["a", "b"]
    keyword_heavy = fusion.reciprocal_rank(["a"], ["z"], alpha=0.2)
    assert keyword_heavy[0][0] == "z"


def test_weighted_fusion_normalises_each_side():
    fused = dict(fusion.weighted([("a", 0.9), ("b", 0.5)], [("b", 40.0), ("c", 10.0)], alpha=0.5))
    assert fused["b"] == pytest.approx(0.5 * 0.0 + 0.5 * 1.0)
    assert fused["a"] == pytest.approx(0.5) and fused["c"] == pytest.approx(0.0)


def test_access_where_clause_escapes_names():
    clause = where_clause(
        SearchFilters(scope=AccessScope(principals=frozenset({"it's"}), include_private=True))
    )
    assert clause is not None and "'it''s'" in clause and "access = 'private'" in clause
    assert where_clause(SearchFilters()) is None
    assert where_clause(SearchFilters(sources=frozenset())) == "false"


@pytest.fixture
async def small_index(tmp_path, embedder):
    index = LanceIndex(tmp_path / "lance")
    await index.open(dim=embedder.dim, model=embedder.model_name)
    vec = embedder.embed_documents(["Visitor parking is on level -2."])[0].tolist()
    await index.replace_documents(
        {
            DocKey("s", "p.md"): [
                ChunkRecord(
                    chunk_id("s", "p.md", 0),
                    "s",
                    "p.md",
                    "Parking",
                    "file:///p.md",
                    "",
                    0,
                    "Visitor parking is on level -2.",
                    "h",
                    "ih",
                    1,
                    0.0,
                    "public",
                    [],
                    vec,
                )
            ]
        }
    )
    await index.optimize()
    yield index
    await index.close()


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
async def test_empty_queries_are_refused(small_index, embedder, bad):
    search = KnowledgeSearch(small_index, embedder, SearchConfig())
    with pytest.raises(QueryError, match="empty"):
        await search.search(bad)


async def test_huge_control_and_foreign_queries_still_answer(small_index, embedder):
    search = KnowledgeSearch(small_index, embedder, SearchConfig())
    assert (await search.search("parking " * 8000))[0].doc_id == "p.md"  # 64,000 characters
    assert (await search.search("where\x00 is\x07 visitor\x1b parking?"))[0].doc_id == "p.md"
    assert isinstance(await search.search("¿Dónde está el aparcamiento para visitas? 駐車場"), list)
    with pytest.raises(QueryError, match="unknown search mode"):
        await search.search("parking", mode="semantic")  # type: ignore[arg-type]


async def test_the_ann_index_is_built_when_large_enough_and_kept_current(tmp_path, embedder):
    index = LanceIndex(tmp_path / "ann", LanceDBConfig(ann_min_rows=300))
    await index.open(dim=embedder.dim, model=embedder.model_name)
    rng = np.random.default_rng(0)

    def batch(doc: str, n: int) -> dict[DocKey, list[ChunkRecord]]:
        vectors = rng.normal(size=(n, embedder.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        key = DocKey("s", doc)
        return {
            key: [
                ChunkRecord(
                    chunk_id("s", doc, i),
                    "s",
                    doc,
                    doc,
                    f"file:///{doc}",
                    "",
                    i,
                    f"chunk {i} of {doc}",
                    f"{doc}{i}",
                    doc,
                    n,
                    0.0,
                    "public",
                    [],
                    v.tolist(),
                )
                for i, v in enumerate(vectors)
            ]
        }

    await index.replace_documents(batch("small.md", 200))
    await index.optimize()
    assert not (await index.stats()).ann_index  # below the threshold: exact search

    await index.replace_documents(batch("big.md", 200))
    await index.optimize()
    assert (await index.stats()).ann_index
    target = batch("late.md", 50)
    await index.replace_documents(target)
    await index.optimize()
    table = index._require()
    vector_index = next(i for i in table.list_indices() if i.columns == ["vector"])
    assert table.index_stats(vector_index.name).num_unindexed_rows == 0
    probe = target[DocKey("s", "late.md")][7]
    from knowledge.models import SearchQuery

    hits = await index.search(SearchQuery(text="", vector=probe.vector, k=1, mode="vector"))
    assert hits[0].chunk_id == probe.chunk_id and hits[0].score == pytest.approx(1.0, abs=1e-3)
    # Scores stay cosine similarities through the ANN index (abstention compares them with a
    # threshold): a query part-way between two chunks scores its exact cosine to the best one.
    other = np.asarray(target[DocKey("s", "late.md")][8].vector)
    mixed = 0.6 * np.asarray(probe.vector) + 0.4 * other
    mixed /= np.linalg.norm(mixed)
    hits = await index.search(SearchQuery(text="", vector=mixed.tolist(), k=1, mode="vector"))
    exact = float(mixed @ np.asarray(probe.vector))
    assert hits[0].chunk_id == probe.chunk_id and hits[0].score == pytest.approx(exact, abs=0.01)
    await index.close()


async def test_a_long_running_reader_sees_writes_from_another_process(tmp_path, embedder):
    path = tmp_path / "shared"
    writer, reader = LanceIndex(path), LanceIndex(path, LanceDBConfig(read_consistency_s=0))
    for index in (writer, reader):
        await index.open(dim=embedder.dim, model=embedder.model_name)
    assert await reader.manifest() == {}
    vec = embedder.embed_documents(["Lockers are on the third floor."])[0].tolist()
    key = DocKey("s", "lockers.md")
    record = ChunkRecord(
        chunk_id("s", "lockers.md", 0),
        "s",
        "lockers.md",
        "Lockers",
        "file:///l.md",
        "",
        0,
        "Lockers are on the third floor.",
        "h",
        "ih",
        1,
        0.0,
        "public",
        [],
        vec,
    )
    await writer.replace_documents({key: [record]})
    assert key in await reader.manifest()
    await writer.delete_documents([key])
    assert await reader.manifest() == {}
