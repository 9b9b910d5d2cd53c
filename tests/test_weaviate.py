"""WeaviateIndex against a live Weaviate server (scripts/weaviate.sh): what is Weaviate's own —
the collection it creates, batching and paging at small sizes, a write cut short, API-key auth
and errors that never show the key. What every backend shares is in test_index_contract.py."""

from __future__ import annotations

import math
from typing import Any

import pytest
import weaviate
from weaviate.classes.config import Configure, DataType, Property, Tokenization

import knowledge.index.weaviate as wv
from base.errors import ConfigError, IndexSchemaError, IndexStoreError
from knowledge.config import WeaviateConfig
from knowledge.index.base import KnowledgeIndex
from knowledge.index.weaviate import WeaviateIndex
from knowledge.models import ChunkRecord, DocKey, SearchQuery, chunk_id, sha256_hex
from tests.helpers import WeaviateServer, needs_weaviate, weaviate_config

MODEL = "test-model"
DIM = 4


def unit(*xs: float) -> list[float]:
    norm = math.sqrt(sum(x * x for x in xs))
    return [x / norm for x in xs]


def records(doc_id: str, n: int, *, version: str = "v1", source: str = "docs") -> list[ChunkRecord]:
    return [
        ChunkRecord(
            chunk_id=chunk_id(source, doc_id, i),
            source=source,
            doc_id=doc_id,
            title=f"Title of {doc_id}",
            uri=f"file:///{source}/{doc_id}",
            heading=f"Section {i}",
            ordinal=i,
            text=f"{doc_id} chunk {i} {version}",
            text_hash=sha256_hex(f"{doc_id} chunk {i} {version}"),
            index_hash=sha256_hex(f"{doc_id}:{version}"),
            n_chunks=n,
            modified=1_700_000_000.5,
            access="public",
            allowed=[],
            vector=unit(1.0, float(i + 1), 0.5, 0.25),
        )
        for i in range(n)
    ]


async def opened(config: WeaviateConfig | None = None) -> WeaviateIndex:
    index = WeaviateIndex(config or weaviate_config())
    await index.open(dim=DIM, model=MODEL)
    return index


async def raw_client(config: WeaviateConfig) -> Any:
    client = wv.make_client(config)
    await client.connect()
    return client


# --- without a server: configuration ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "grpc_url", "expected"),
    [
        ("http://localhost:8080", None, ("localhost", 8080, False, "localhost", 50051, False)),
        (
            "https://wv.example.com",
            None,
            ("wv.example.com", 443, True, "wv.example.com", 50051, True),
        ),
        (
            "https://wv.example.com:8443",
            "grpc.wv.example.com:443",
            ("wv.example.com", 8443, True, "grpc.wv.example.com", 443, True),
        ),
        (
            "weaviate:8080",
            "weaviate-grpc",
            ("weaviate", 8080, False, "weaviate-grpc", 50051, False),
        ),
    ],
)
def test_connection_settings_from_config(
    url: str, grpc_url: str | None, expected: tuple[Any, ...]
) -> None:
    cs = wv.connection_settings(WeaviateConfig(url=url, grpc_url=grpc_url))
    got = (cs.http_host, cs.http_port, cs.http_secure, cs.grpc_host, cs.grpc_port, cs.grpc_secure)
    assert got == expected


@pytest.mark.parametrize("url", [None, "ftp://weaviate:21", "http://:8080"])
def test_a_missing_or_bad_url_is_a_config_error_naming_the_key(url: str | None) -> None:
    with pytest.raises(ConfigError, match=r"knowledge\.weaviate\.url"):
        wv.connection_settings(WeaviateConfig(url=url))


def test_unknown_fusion_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown fusion"):
        wv.fusion_type("borda")


# --- live: the collection --------------------------------------------------------------------


@needs_weaviate
async def test_creates_a_collection_with_no_vectorizer_cosine_hnsw_and_the_model_recorded() -> None:
    config = weaviate_config()
    index = await opened(config)
    assert isinstance(index, KnowledgeIndex)
    client = await raw_client(config)
    try:
        created = await client.collections.get(config.collection).config.get()
    finally:
        await client.close()
        await index.drop()
        await index.close()
    assert wv.parse_collection_description(created.description) == (MODEL, DIM)
    vector = created.vector_config[wv.VECTOR_NAME]
    assert vector.vectorizer.vectorizer == "none"
    assert vector.vector_index_config.distance_metric.value == "cosine"
    props = {p.name: p for p in created.properties}
    assert set(props) == {p.name for p in wv.chunk_properties()}
    assert props["doc_id"].tokenization == Tokenization.FIELD
    assert props["doc_id"].index_searchable is False
    assert props["text"].tokenization == Tokenization.WORD and props["text"].index_searchable
    assert props["allowed"].data_type == DataType.TEXT_ARRAY


@needs_weaviate
async def test_reopening_keeps_the_data_and_another_dimension_is_refused_naming_both() -> None:
    config = weaviate_config()
    index = await opened(config)
    await index.replace_documents({DocKey("docs", "a.md"): records("a.md", 2)})
    again = WeaviateIndex(config)
    await again.open(dim=DIM, model=MODEL)
    assert (await again.stats()).chunks == 2
    other = WeaviateIndex(config)
    with pytest.raises(IndexSchemaError) as err:
        await other.open(dim=8, model=MODEL)
    assert f"{MODEL!r} ({DIM}-d)" in str(err.value) and "(8-d)" in str(err.value)
    assert "expertbot sync --rebuild" in str(err.value)
    for i in (index, again, other):
        await i.close()
    await index.drop()


@needs_weaviate
async def test_a_collection_expertbot_did_not_create_is_refused() -> None:
    config = weaviate_config()
    client = await raw_client(config)
    try:
        await client.collections.create(
            name=config.collection,
            properties=[Property(name="body", data_type=DataType.TEXT)],
            vector_config=Configure.Vectors.self_provided(),
        )
        index = WeaviateIndex(config)
        with pytest.raises(IndexSchemaError, match="not created by expertbot"):
            await index.open(dim=DIM, model=MODEL)
        await index.close()
        assert await client.collections.exists(config.collection)  # untouched
    finally:
        await client.collections.delete(config.collection)
        await client.close()


# --- live: writes and reads at small page sizes ------------------------------------------------


@needs_weaviate
async def test_batched_writes_paged_reads_and_repeated_deletes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tiny batch and page sizes, so every loop in the adapter takes several turns."""
    monkeypatch.setattr(wv, "WRITE_BATCH", 3)
    monkeypatch.setattr(wv, "DOCS_PER_CALL", 2)
    monkeypatch.setattr(wv, "FETCH_PAGE", 4)
    monkeypatch.setattr(wv, "ITERATOR_PAGE", 5)
    index = await opened()
    try:
        docs = {DocKey("docs", f"d{n}.md"): records(f"d{n}.md", 9) for n in range(5)}
        await index.replace_documents(docs)
        manifest = await index.manifest()
        assert set(manifest) == set(docs)
        assert all(
            s.complete and (s.n_chunks, s.stored_chunks) == (9, 9) for s in manifest.values()
        )
        vectors = await index.vectors_for(list(docs))
        assert set(vectors) == {r.text_hash for chunks in docs.values() for r in chunks}

        shorter = {key: records(key.doc_id, 2, version="v2") for key in list(docs)[:3]}
        await index.replace_documents(shorter)
        manifest = await index.manifest()
        assert [manifest[k].stored_chunks for k in docs] == [2, 2, 2, 9, 9]
        assert (await index.stats()).chunks == 3 * 2 + 2 * 9

        await index.delete_documents(list(docs))
        assert await index.manifest() == {}
        assert (await index.stats()).chunks == 0
    finally:
        await index.drop()
        await index.close()


@needs_weaviate
async def test_a_write_cut_short_shows_as_incomplete_and_the_next_write_repairs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index = await opened()
    key = DocKey("docs", "a.md")
    try:
        await index.replace_documents({key: records("a.md", 4)})

        async def crash(*_: Any, **__: Any) -> int:
            raise OSError("connection reset")

        monkeypatch.setattr(index, "_delete_where", crash)
        with pytest.raises(IndexStoreError, match="connection reset"):
            await index.replace_documents({key: records("a.md", 2, version="v2")})
        state = (await index.manifest())[key]
        # two chunks of v2, two left over from v1: a mixed hash, so a sync re-indexes it
        assert (state.index_hash, state.stored_chunks) == ("", 4)

        monkeypatch.undo()
        await index.replace_documents({key: records("a.md", 2, version="v2")})
        state = (await index.manifest())[key]
        assert (state.index_hash, state.stored_chunks) == (sha256_hex("a.md:v2"), 2)
        assert state.complete
    finally:
        await index.drop()
        await index.close()


@needs_weaviate
async def test_a_vector_of_the_wrong_dimension_is_refused_before_anything_is_written() -> None:
    index = await opened()
    try:
        bad = records("a.md", 1)
        bad[0].vector = [1.0, 0.0]
        with pytest.raises(IndexSchemaError, match="2-d vector for a 4-d index"):
            await index.replace_documents({DocKey("docs", "a.md"): bad})
        assert (await index.stats()).chunks == 0
        with pytest.raises(IndexSchemaError, match="dims"):
            await index.search(SearchQuery(text="x", vector=[1.0, 0.0]))
    finally:
        await index.drop()
        await index.close()


# --- live: API keys and errors --------------------------------------------------------------


API_KEY = "s3cret-test-key-0123456789"


async def test_with_api_key_auth_the_configured_key_is_used(
    weaviate_server: WeaviateServer,
) -> None:
    weaviate_server.api_key = API_KEY
    weaviate_server.start()
    index = WeaviateIndex(weaviate_server.config("Keyed"))
    await index.open(dim=DIM, model=MODEL)
    await index.replace_documents({DocKey("docs", "a.md"): records("a.md", 2)})
    hits = await index.search(SearchQuery(text="a.md chunk", vector=unit(1, 1, 0.5, 0.25), k=5))
    assert {h.doc_id for h in hits} == {"a.md"}
    await index.ping()
    await index.close()


@pytest.mark.parametrize("key", ["wrong-key-that-is-long-enough", None])
async def test_a_wrong_or_missing_api_key_is_a_clear_error_that_never_shows_the_key(
    weaviate_server: WeaviateServer, key: str | None
) -> None:
    weaviate_server.api_key = API_KEY
    weaviate_server.start()
    index = WeaviateIndex(weaviate_server.config("Keyed", api_key=key))
    with pytest.raises(IndexStoreError) as err:
        await index.open(dim=DIM, model=MODEL)
    message = str(err.value)
    assert message.startswith("Weaviate ") and weaviate_server.url in message
    assert "401" in message or "nauthori" in message or "nauthenticated" in message, message
    for secret in (API_KEY, key or API_KEY):
        assert secret not in message
        assert err.value.__cause__ is None or secret not in str(err.value.__cause__)
    await index.close()


async def test_a_server_that_is_down_is_an_index_store_error_naming_it(
    weaviate_server: WeaviateServer,
) -> None:
    weaviate_server.start()
    index = WeaviateIndex(weaviate_server.config())
    await index.open(dim=DIM, model=MODEL)
    await index.ping()
    weaviate_server.kill()
    with pytest.raises(IndexStoreError) as err:
        await index.ping()
    assert weaviate_server.url in str(err.value)
    with pytest.raises(IndexStoreError, match="search failed"):
        await index.search(SearchQuery(text="x", vector=unit(1, 1, 1, 1)))
    await index.close()

    fresh = WeaviateIndex(weaviate_server.config())
    with pytest.raises(IndexStoreError, match=r"connecting failed|opening"):
        await fresh.open(dim=DIM, model=MODEL)
    await fresh.close()


async def test_make_client_is_unconnected_until_asked() -> None:
    client = wv.make_client(WeaviateConfig(url="http://localhost:8080", timeout_s=12.5))
    assert isinstance(client, weaviate.WeaviateAsyncClient)
    assert client.is_connected() is False
