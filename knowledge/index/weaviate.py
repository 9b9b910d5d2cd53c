"""Weaviate, the server-backed index: one collection of chunks, vectors brought by us.

The collection (`WeaviateConfig.collection`) has no vectorizer: each chunk carries the vector
our embedding model made, stored as the self-provided named vector "default" in an HNSW index
with cosine distance. The embedding model and dimension are recorded in the collection's
description, so opening it with another model fails loudly instead of mixing vector spaces.

Writes are upserts: an object's UUID is the chunk's deterministic `chunk_id`, so writing a
document again replaces its chunks instead of duplicating them. A `replace_documents` first
upserts the new chunks and then deletes the chunks of those documents the new version no
longer has (ordinals past its end), so a search never sees a document vanish mid-write. A crash
between the two steps leaves chunks of mixed `index_hash`, which `manifest()` reports as a
mixed ("") hash so the next sync re-indexes the document.

Search maps onto Weaviate's own hybrid (BM25 + vector, fused server-side with rankedFusion —
reciprocal rank, like knowledge.fusion — or relativeScoreFusion), near_vector and bm25 queries,
with the access scope and sources as a Weaviate filter applied inside the search.

Every call fails fast when the server goes away (see `WeaviateIndex._run`): weaviate-client
alone would retry for about a minute. The pieces that only translate between our types and
weaviate-client's (collection config, properties, data objects, filters, query arguments, hits)
are module-level functions. The tests run against a live server (scripts/weaviate.sh).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx  # weaviate-client's own HTTP library
import structlog
import weaviate
from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances
from weaviate.classes.data import DataObject
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.classes.query import Filter, FilterReturn, HybridFusion, MetadataQuery, Sort
from weaviate.exceptions import WeaviateBaseError

from base.errors import ConfigError, IndexSchemaError, IndexStoreError
from knowledge.config import WeaviateConfig
from knowledge.models import (
    HIT_FIELDS,
    AccessScope,
    ChunkRecord,
    DocKey,
    DocState,
    Grant,
    Hit,
    IndexStats,
    SearchFilters,
    SearchQuery,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")

VECTOR_NAME = "default"
"""The one named vector of the collection (what Weaviate itself calls an unnamed vector)."""

DEFAULT_GRPC_PORT = 50051
DESCRIPTION_PREFIX = "expertbot knowledge chunks "
SCHEMA_VERSION = 1

QUERY_PROPERTIES = ["text", "title", "heading"]
"""The properties BM25 (alone or inside hybrid) searches."""
HIT_PROPERTIES = list(HIT_FIELDS)
MANIFEST_PROPERTIES = ["source", "doc_id", "index_hash", "n_chunks"]

WRITE_BATCH = 200
"""Objects per insert_many call: insert_many sends its whole list as one gRPC message."""
DOCS_PER_CALL = 50
"""Documents per filtered delete / fetch: keeps filters small, and keeps the ordinal ties of
one fetch page (at most one chunk per document per ordinal) well below FETCH_PAGE."""
FETCH_PAGE = 1000
ITERATOR_PAGE = 1000
PROBE_INTERVAL_S = 1.0
"""While a call is pending, how often the server's readiness is checked (see WeaviateIndex._run)."""
PROBE_TIMEOUT_S = 3.0
MAX_DELETE_ROUNDS = 10_000
"""Weaviate deletes at most QUERY_MAXIMUM_RESULTS (default 10 000) objects per delete_many;
a delete is repeated until it matches nothing. This only bounds a misbehaving server."""

_HTTP_ERRORS: tuple[type[BaseException], ...] = (httpx.HTTPError,)
try:
    import grpc

    _GRPC_ERRORS: tuple[type[BaseException], ...] = (grpc.RpcError,)
except ImportError:  # pragma: no cover - grpcio is a dependency of weaviate-client
    _GRPC_ERRORS = ()

_STORE_ERRORS: tuple[type[BaseException], ...] = (
    WeaviateBaseError,
    OSError,  # includes ConnectionError and (asyncio.)TimeoutError
    *_HTTP_ERRORS,
    *_GRPC_ERRORS,
)


# --- connection ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Where the HTTP and gRPC endpoints are, parsed from `WeaviateConfig`."""

    http_host: str
    http_port: int
    http_secure: bool
    grpc_host: str
    grpc_port: int
    grpc_secure: bool

    @property
    def url(self) -> str:
        scheme = "https" if self.http_secure else "http"
        return f"{scheme}://{self.http_host}:{self.http_port}"


def connection_settings(config: WeaviateConfig) -> ConnectionSettings:
    """Parse `url` (scheme, host, port) and `grpc_url` (`host:port`, optionally with a scheme;
    default: the HTTP host, port 50051, secure when HTTP is)."""
    url = config.url  # WEAVIATE_URL is mapped onto it by bot.settings
    if not url:
        raise ConfigError("knowledge.weaviate.url is not set (WEAVIATE_URL)")
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"knowledge.weaviate.url must be http(s)://host[:port], not {url!r}")
    secure = parts.scheme == "https"
    try:
        http_port = parts.port or (443 if secure else 80)
    except ValueError as exc:
        raise ConfigError(f"knowledge.weaviate.url has a bad port: {url!r}") from exc

    grpc_host, grpc_port, grpc_secure = parts.hostname, DEFAULT_GRPC_PORT, secure
    if config.grpc_url:
        raw = config.grpc_url
        g = urlsplit(raw if "://" in raw else f"//{raw}")
        if not g.hostname:
            raise ConfigError(f"knowledge.weaviate.grpc_url must be host[:port], not {raw!r}")
        grpc_host = g.hostname
        if g.scheme:
            grpc_secure = g.scheme in ("https", "grpcs")
        try:
            grpc_port = g.port or (443 if grpc_secure and g.scheme else DEFAULT_GRPC_PORT)
        except ValueError as exc:
            raise ConfigError(f"knowledge.weaviate.grpc_url has a bad port: {raw!r}") from exc
    return ConnectionSettings(
        http_host=parts.hostname,
        http_port=http_port,
        http_secure=secure,
        grpc_host=grpc_host,
        grpc_port=grpc_port,
        grpc_secure=grpc_secure,
    )


def make_client(config: WeaviateConfig) -> weaviate.WeaviateAsyncClient:
    """An unconnected async client for `config` (call `await client.connect()`)."""
    cs = connection_settings(config)
    api_key = config.api_key.get_secret_value() if config.api_key is not None else None
    timeout = config.timeout_s
    return weaviate.use_async_with_custom(
        http_host=cs.http_host,
        http_port=cs.http_port,
        http_secure=cs.http_secure,
        grpc_host=cs.grpc_host,
        grpc_port=cs.grpc_port,
        grpc_secure=cs.grpc_secure,
        auth_credentials=Auth.api_key(api_key) if api_key else None,
        additional_config=AdditionalConfig(
            timeout=Timeout(init=timeout, query=timeout, insert=timeout)
        ),
    )


# --- schema -------------------------------------------------------------------------------


def _text(
    name: str, tokenization: Tokenization, *, searchable: bool, filterable: bool = True
) -> Property:
    return Property(
        name=name,
        data_type=DataType.TEXT,
        tokenization=tokenization,
        index_searchable=searchable,
        index_filterable=filterable,
    )


def chunk_properties() -> list[Property]:
    """The explicit schema of a chunk object (auto-schema never guesses a type for us).

    Identifiers and enums use FIELD tokenization (the whole value is one token, so `equal` and
    `contains_any` match exact values) and no BM25 index; prose uses WORD tokenization and is
    searchable by BM25.
    """
    field, word = Tokenization.FIELD, Tokenization.WORD
    return [
        _text("chunk_id", field, searchable=False),
        _text("source", field, searchable=False),
        _text("doc_id", field, searchable=False),
        _text("title", word, searchable=True),
        _text("uri", field, searchable=False, filterable=False),
        _text("heading", word, searchable=True),
        Property(name="ordinal", data_type=DataType.INT, index_filterable=True),
        _text("text", word, searchable=True, filterable=False),
        _text("text_hash", field, searchable=False),
        _text("index_hash", field, searchable=False),
        Property(name="n_chunks", data_type=DataType.INT, index_filterable=True),
        Property(name="modified", data_type=DataType.NUMBER, index_filterable=True),
        _text("access", field, searchable=False),
        Property(
            name="allowed",
            data_type=DataType.TEXT_ARRAY,
            tokenization=field,
            index_searchable=False,
            index_filterable=True,
        ),
    ]


def collection_description(model: str, dim: int) -> str:
    meta = {"embedding_model": model, "dim": dim, "schema": SCHEMA_VERSION}
    return DESCRIPTION_PREFIX + json.dumps(meta, sort_keys=True)


def parse_collection_description(description: str | None) -> tuple[str, int] | None:
    """(model, dim) recorded by `collection_description`, or None if there is none."""
    if not description or not description.startswith(DESCRIPTION_PREFIX):
        return None
    try:
        meta = json.loads(description[len(DESCRIPTION_PREFIX) :])
        model, dim = meta["embedding_model"], meta["dim"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(model, str) or not isinstance(dim, int):
        return None
    return model, dim


def collection_create_kwargs(name: str, *, model: str, dim: int) -> dict[str, Any]:
    """Keyword arguments of `client.collections.create(**kwargs)`."""
    return {
        "name": name,
        "description": collection_description(model, dim),
        "properties": chunk_properties(),
        "vector_config": Configure.Vectors.self_provided(
            name=VECTOR_NAME,
            vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE),
        ),
    }


def check_collection_config(name: str, config: Any, *, model: str, dim: int) -> None:
    """Raise IndexSchemaError unless an existing collection is ours and built for model/dim.

    `config` is what `collection.config.get(simple=True)` returns.
    """
    hint = "rebuild it with `expertbot sync --rebuild` (this deletes the collection)"
    recorded = parse_collection_description(getattr(config, "description", None))
    if recorded is None:
        raise IndexSchemaError(
            f"the Weaviate collection {name!r} records no embedding model (it was not created "
            f"by expertbot); use another collection name or {hint}"
        )
    stored_model, stored_dim = recorded
    if (stored_model, stored_dim) != (model, dim):
        raise IndexSchemaError(
            f"the Weaviate collection {name!r} was built with embedding model {stored_model!r} "
            f"({stored_dim}-d), not {model!r} ({dim}-d); {hint}"
        )
    vectors = getattr(config, "vector_config", None) or {}
    if VECTOR_NAME not in vectors:
        raise IndexSchemaError(
            f"the Weaviate collection {name!r} has no named vector {VECTOR_NAME!r}; {hint}"
        )
    present = {p.name for p in getattr(config, "properties", None) or []}
    missing = [p.name for p in chunk_properties() if p.name not in present]
    if missing:
        raise IndexSchemaError(
            f"the Weaviate collection {name!r} lacks the properties {', '.join(missing)}; {hint}"
        )


# --- writes -------------------------------------------------------------------------------


def record_properties(record: ChunkRecord) -> dict[str, Any]:
    return {
        "chunk_id": record.chunk_id,
        "source": record.source,
        "doc_id": record.doc_id,
        "title": record.title,
        "uri": record.uri,
        "heading": record.heading,
        "ordinal": int(record.ordinal),
        "text": record.text,
        "text_hash": record.text_hash,
        "index_hash": record.index_hash,
        "n_chunks": int(record.n_chunks),
        "modified": float(record.modified),
        "access": str(record.access),
        "allowed": [str(a) for a in record.allowed],
    }


def data_object(record: ChunkRecord, *, dim: int | None = None) -> DataObject[dict[str, Any], None]:
    """The batch object for one chunk: UUID = chunk_id, vector under VECTOR_NAME."""
    if dim is not None and len(record.vector) != dim:
        raise IndexSchemaError(
            f"chunk {record.chunk_id} of {record.key} has a {len(record.vector)}-d vector "
            f"for a {dim}-d index"
        )
    return DataObject(
        properties=record_properties(record),
        uuid=record.chunk_id,
        vector={VECTOR_NAME: [float(x) for x in record.vector]},
    )


def doc_filter(key: DocKey) -> FilterReturn:
    return Filter.by_property("source").equal(key.source) & Filter.by_property("doc_id").equal(
        key.doc_id
    )


def docs_filter(keys: Iterable[DocKey]) -> FilterReturn:
    """Chunks of any of `keys`: per source, `source == s AND doc_id (== d | contains_any ds)`."""
    by_source: dict[str, set[str]] = {}
    for key in keys:
        by_source.setdefault(key.source, set()).add(key.doc_id)
    if not by_source:
        raise ValueError("docs_filter needs at least one document")
    parts: list[FilterReturn] = []
    for source, ids in sorted(by_source.items()):
        doc_ids = sorted(ids)
        on_id = (
            Filter.by_property("doc_id").equal(doc_ids[0])
            if len(doc_ids) == 1
            else Filter.by_property("doc_id").contains_any(doc_ids)
        )
        parts.append(Filter.by_property("source").equal(source) & on_id)
    return Filter.any_of(parts)


def stale_chunks_filter(key: DocKey, ordinals: Iterable[int]) -> FilterReturn:
    """Chunks of `key` that are not among the new `ordinals`: those at or past the new end
    (`ordinal >= max + 1`, i.e. >= n_chunks for a complete document) and any gap below it."""
    kept = set(ordinals)
    end = max(kept) + 1 if kept else 0
    beyond: FilterReturn = Filter.by_property("ordinal").greater_or_equal(end)
    gaps = sorted(set(range(end)) - kept)
    if gaps:  # a record set with holes: drop the stored chunks in them too
        beyond = Filter.any_of([beyond, *(Filter.by_property("ordinal").equal(g) for g in gaps)])
    return doc_filter(key) & beyond


# --- search -------------------------------------------------------------------------------


def grant_filter(grant: Grant) -> FilterReturn:
    """One term of the access rule (AccessScope.grants) as a Weaviate filter."""
    on_access = Filter.by_property("access").equal(grant.access.value)
    if grant.allowed_any is None:
        return on_access
    return on_access & Filter.by_property("allowed").contains_any(sorted(grant.allowed_any))


def access_filter(scope: AccessScope | None) -> FilterReturn | None:
    """What `scope` may see (any of its grants); None (no scope) means no access filtering."""
    if scope is None:
        return None
    return Filter.any_of([grant_filter(g) for g in scope.grants()])


def search_filter(filters: SearchFilters) -> FilterReturn | None:
    """The Weaviate filter for access scope and sources (None: no filter). An empty `sources`
    set matches nothing; `search()` answers it without a query (see `matches_nothing`)."""
    parts: list[FilterReturn] = []
    scoped = access_filter(filters.scope)
    if scoped is not None:
        parts.append(scoped)
    if filters.sources:
        parts.append(Filter.by_property("source").contains_any(sorted(filters.sources)))
    if not parts:
        return None
    return Filter.all_of(parts)


def matches_nothing(filters: SearchFilters) -> bool:
    return filters.sources is not None and not filters.sources


def fusion_type(fusion: str) -> HybridFusion:
    if fusion == "rrf":
        return HybridFusion.RANKED
    if fusion == "weighted":
        return HybridFusion.RELATIVE_SCORE
    raise ValueError(f"unknown fusion {fusion!r} (expected 'rrf' or 'weighted')")


def hybrid_kwargs(query: SearchQuery, filters: FilterReturn | None) -> dict[str, Any]:
    """Arguments of `collection.query.hybrid(**kwargs)`; alpha is the vector side's weight in
    Weaviate as in knowledge.fusion, and rankedFusion is RRF with k = 60 like ours."""
    return {
        "query": query.text,
        "vector": [float(x) for x in query.vector],
        "target_vector": VECTOR_NAME,
        "alpha": float(query.alpha),
        "fusion_type": fusion_type(query.fusion),
        "query_properties": list(QUERY_PROPERTIES),
        "limit": query.k,
        "filters": filters,
        "return_metadata": MetadataQuery(score=True),
        "return_properties": list(HIT_PROPERTIES),
    }


def near_vector_kwargs(query: SearchQuery, filters: FilterReturn | None) -> dict[str, Any]:
    return {
        "near_vector": [float(x) for x in query.vector],
        "target_vector": VECTOR_NAME,
        "limit": query.k,
        "filters": filters,
        "return_metadata": MetadataQuery(distance=True),
        "return_properties": list(HIT_PROPERTIES),
    }


def bm25_kwargs(query: SearchQuery, filters: FilterReturn | None) -> dict[str, Any]:
    return {
        "query": query.text,
        "query_properties": list(QUERY_PROPERTIES),
        "limit": query.k,
        "filters": filters,
        "return_metadata": MetadataQuery(score=True),
        "return_properties": list(HIT_PROPERTIES),
    }


def hit_from_object(obj: Any, *, distance_based: bool) -> Hit:
    """A Hit from a weaviate `Object`: score is Weaviate's (hybrid / BM25) score, or
    1 - cosine distance (the cosine similarity) for a vector search."""
    props = obj.properties
    meta = obj.metadata
    if distance_based:
        distance = getattr(meta, "distance", None)
        score = 1.0 - float(distance) if distance is not None else 0.0
    else:
        raw = getattr(meta, "score", None)
        score = float(raw) if raw is not None else 0.0
    return Hit(
        chunk_id=str(props.get("chunk_id") or obj.uuid),
        source=str(props.get("source") or ""),
        doc_id=str(props.get("doc_id") or ""),
        title=str(props.get("title") or ""),
        uri=str(props.get("uri") or ""),
        heading=str(props.get("heading") or ""),
        text=str(props.get("text") or ""),
        score=score,
        access=str(props.get("access") or ""),
        allowed=tuple(str(a) for a in props.get("allowed") or ()),
    )


# --- reads --------------------------------------------------------------------------------


class _DocTally:
    __slots__ = ("count", "hashes", "n_chunks")

    def __init__(self) -> None:
        self.hashes: set[str] = set()
        self.n_chunks: set[int] = set()
        self.count = 0


def manifest_from_properties(rows: Iterable[Mapping[str, Any]]) -> dict[DocKey, DocState]:
    """Fold chunk properties into per-document states. Chunks that disagree on index_hash or
    n_chunks (a write cut short) make the document's hash "" so a sync re-indexes it."""
    tallies: dict[DocKey, _DocTally] = {}
    for row in rows:
        key = DocKey(str(row["source"]), str(row["doc_id"]))
        tally = tallies.get(key)
        if tally is None:
            tally = tallies[key] = _DocTally()
        tally.hashes.add(str(row.get("index_hash") or ""))
        tally.n_chunks.add(int(row.get("n_chunks") or 0))
        tally.count += 1
    out: dict[DocKey, DocState] = {}
    for key, t in tallies.items():
        consistent = len(t.hashes) == 1 and len(t.n_chunks) == 1
        out[key] = DocState(
            index_hash=next(iter(t.hashes)) if consistent else "",
            n_chunks=max(t.n_chunks),
            stored_chunks=t.count,
        )
    return out


def _batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- the index ----------------------------------------------------------------------------


class WeaviateIndex:
    """The `KnowledgeIndex` on a Weaviate server (weaviate-client v4, async API)."""

    name = "weaviate"

    def __init__(self, config: WeaviateConfig, *, client: Any = None) -> None:
        self.config = config
        self._client: Any = client
        self._owns_client = client is None
        self._collection: Any = None
        self._dim: int | None = None
        self.location = config.url or "(weaviate url not set)"
        self._probe: httpx.AsyncClient | None = None

    @property
    def _ready_url(self) -> str:
        return f"{connection_settings(self.config).url}/v1/.well-known/ready"

    # --- errors --------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        key = self.config.api_key.get_secret_value() if self.config.api_key is not None else ""
        return text.replace(key, "***") if key else text

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn weaviate-client and transport errors into IndexStoreError (never the API key)."""
        try:
            yield
        except IndexStoreError:
            raise
        except _STORE_ERRORS as exc:
            raw = " ".join(f"{type(exc).__name__}: {exc}".split())  # one line
            message = f"Weaviate {action} failed at {self.location}: {self._scrub(raw)}"
            if self._scrub(raw) != raw:
                # the original error quotes the key: do not chain it into tracebacks/logs
                raise IndexStoreError(message) from None
            raise IndexStoreError(message) from exc

    async def _run(self, action: str, work: Awaitable[T]) -> T:
        """Await `work` with errors translated, failing fast when the server goes away.

        weaviate-client retries a gRPC call to an unavailable server with exponential backoff
        for about a minute (1 + 2 + … + 32 s) before it gives up, so a question or a readiness
        probe would hang that long. While a call is pending, the server's HTTP readiness is
        checked every PROBE_INTERVAL_S; when it no longer answers, the call is cancelled.
        """
        task = asyncio.ensure_future(work)
        try:
            with self._errors(action):
                while True:
                    done, _ = await asyncio.wait({task}, timeout=PROBE_INTERVAL_S)
                    if done:
                        return task.result()
                    if not await self._answers():
                        raise IndexStoreError(
                            f"Weaviate {action} failed at {self.location}: the server stopped "
                            "answering (is it running?)"
                        )
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=PROBE_TIMEOUT_S)

    async def _answers(self) -> bool:
        """Whether the server answers its readiness endpoint now (a short, separate request;
        not weaviate-client's `is_ready`, which prints its errors to stdout)."""
        if self._probe is None:
            timeout = min(PROBE_TIMEOUT_S, self.config.timeout_s)
            self._probe = httpx.AsyncClient(timeout=timeout)
        try:
            response = await self._probe.get(self._ready_url)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _require(self) -> Any:
        if self._collection is None:
            raise IndexStoreError("the Weaviate index is not open")
        return self._collection

    # --- lifecycle -----------------------------------------------------------------------

    async def open(self, *, dim: int, model: str, recreate: bool = False) -> None:
        name = self.config.collection
        client = await self._connected()
        self._collection = await self._run(
            f"opening collection {name!r}", self._open(client, name, dim, model, recreate)
        )
        self._dim = dim

    async def _open(self, client: Any, name: str, dim: int, model: str, recreate: bool) -> Any:
        exists = await client.collections.exists(name)
        if exists and recreate:
            log.info("index.weaviate.recreate", collection=name)
            await client.collections.delete(name)
            exists = False
        if exists:
            collection = client.collections.get(name)
            config = await collection.config.get(simple=True)
            check_collection_config(name, config, model=model, dim=dim)
            return collection
        collection = await client.collections.create(
            **collection_create_kwargs(name, model=model, dim=dim)
        )
        log.info("index.weaviate.created", collection=name, model=model, dim=dim)
        return collection

    async def close(self) -> None:
        if self._probe is not None:
            await self._probe.aclose()
            self._probe = None
        client, self._collection = self._client, None
        if client is not None and self._owns_client:
            self._client = None
            with self._errors("closing the client"):
                await client.close()

    async def _connected(self) -> Any:
        """The client, connecting one of our own first when none was given or made yet."""
        if self._client is None:
            client = make_client(self.config)
            try:
                with self._errors("connecting"):
                    await client.connect()
            except IndexStoreError:
                with suppress(*_STORE_ERRORS):
                    await client.close()
                raise
            self._client, self._owns_client = client, True
        return self._client

    async def drop(self) -> None:
        """Delete the whole collection (tests and `--rebuild` clean-up); connects if needed."""
        client = await self._connected()
        await self._run(
            f"deleting collection {self.config.collection!r}",
            client.collections.delete(self.config.collection),
        )
        self._collection = None

    async def ping(self) -> None:
        if not await self._answers():
            raise IndexStoreError(f"Weaviate at {self.location} is not ready or not reachable")

    async def optimize(self) -> None:
        """Nothing to do: Weaviate updates its HNSW and inverted (BM25) indices on every write
        and compacts its LSM segments in the background; there is no index to (re)build."""
        self._require()

    # --- writes --------------------------------------------------------------------------

    async def replace_documents(self, records: Mapping[DocKey, Sequence[ChunkRecord]]) -> None:
        if not records:
            return
        collection = self._require()
        for key, chunks in records.items():
            for r in chunks:
                if r.key != key:
                    raise ValueError(f"chunk {r.chunk_id} belongs to {r.key}, not {key}")
        objects = [data_object(r, dim=self._dim) for chunks in records.values() for r in chunks]
        await self._run("writing chunks", self._replace(collection, records, objects))

    async def _replace(
        self,
        collection: Any,
        records: Mapping[DocKey, Sequence[ChunkRecord]],
        objects: list[DataObject[dict[str, Any], None]],
    ) -> None:
        for batch in _batched(objects, WRITE_BATCH):
            result = await collection.data.insert_many(list(batch))
            if result.has_errors or result.errors:
                self._raise_batch_errors(result.errors, len(batch))
        stale = [
            stale_chunks_filter(key, [r.ordinal for r in chunks])
            for key, chunks in sorted(records.items())
        ]
        for group in _batched(stale, DOCS_PER_CALL):
            await self._delete_where(collection, Filter.any_of(list(group)))

    def _raise_batch_errors(self, errors: Mapping[int, Any], size: int) -> None:
        first = sorted(errors.items())[:3]
        detail = "; ".join(
            f"{getattr(err, 'original_uuid', None) or idx}: {getattr(err, 'message', err)}"
            for idx, err in first
        )
        raise IndexStoreError(
            self._scrub(
                f"Weaviate rejected {len(errors)} of {size} chunks at {self.location}: {detail}"
            )
        )

    async def _delete_where(self, collection: Any, where: FilterReturn) -> int:
        """delete_many until nothing matches (one call deletes at most QUERY_MAXIMUM_RESULTS)."""
        deleted = 0
        for _ in range(MAX_DELETE_ROUNDS):
            result = await collection.data.delete_many(where=where)
            if result.failed:
                raise IndexStoreError(
                    f"Weaviate failed to delete {result.failed} of {result.matches} chunks "
                    f"at {self.location}"
                )
            deleted += int(result.successful)
            if not result.matches or not result.successful:
                return deleted
        raise IndexStoreError(f"Weaviate kept matching chunks to delete at {self.location}")

    async def delete_documents(self, keys: Sequence[DocKey]) -> None:
        if not keys:
            return
        collection = self._require()
        await self._run("deleting documents", self._delete_docs(collection, sorted(set(keys))))

    async def _delete_docs(self, collection: Any, keys: list[DocKey]) -> None:
        for group in _batched(keys, DOCS_PER_CALL):
            await self._delete_where(collection, docs_filter(group))

    # --- reads ---------------------------------------------------------------------------

    async def manifest(self) -> dict[DocKey, DocState]:
        collection = self._require()
        return manifest_from_properties(
            await self._run("reading the manifest", self._manifest_rows(collection))
        )

    async def _manifest_rows(self, collection: Any) -> list[Mapping[str, Any]]:
        iterator = collection.iterator(
            include_vector=False,
            return_properties=list(MANIFEST_PROPERTIES),
            cache_size=ITERATOR_PAGE,
        )
        return [obj.properties async for obj in iterator]

    async def _doc_chunks(
        self, keys: Sequence[DocKey], *, properties: list[str], include_vector: bool
    ) -> list[Any]:
        """All chunks of `keys`, a few documents per query, paged by ordinal (a keyset, so no
        offset ever reaches QUERY_MAXIMUM_RESULTS)."""
        collection = self._require()
        out: list[Any] = []
        unique = sorted(set(keys))
        for group in _batched(unique, DOCS_PER_CALL):
            base = docs_filter(group)
            low: int | None = None
            seen: set[str] = set()
            while True:
                where = (
                    base
                    if low is None
                    else base & Filter.by_property("ordinal").greater_or_equal(low)
                )
                res = await collection.query.fetch_objects(
                    filters=where,
                    sort=Sort.by_property("ordinal"),
                    limit=FETCH_PAGE,
                    include_vector=include_vector,
                    return_properties=properties,
                )
                fresh = [o for o in res.objects if str(o.uuid) not in seen]
                seen.update(str(o.uuid) for o in fresh)
                out.extend(fresh)
                if len(res.objects) < FETCH_PAGE:
                    break
                if not fresh:
                    raise IndexStoreError("Weaviate returned the same page twice while paging")
                low = max(int(o.properties["ordinal"]) for o in res.objects)
        return out

    async def vectors_for(self, keys: Sequence[DocKey]) -> dict[str, list[float]]:
        if not keys:
            return {}
        objects = await self._run(
            "reading vectors",
            self._doc_chunks(keys, properties=["text_hash", "ordinal"], include_vector=True),
        )
        out: dict[str, list[float]] = {}
        for obj in objects:
            vectors = obj.vector or {}
            vector = vectors.get(VECTOR_NAME) if isinstance(vectors, Mapping) else vectors
            if vector:
                out[str(obj.properties["text_hash"])] = [float(x) for x in vector]
        return out

    async def count_chunks(self) -> int:
        collection = self._require()
        agg = await self._run("counting chunks", collection.aggregate.over_all(total_count=True))
        return int(agg.total_count or 0)

    async def stats(self) -> IndexStats:
        chunks = await self.count_chunks()
        documents = len(await self.manifest()) if chunks else 0
        return IndexStats(documents, chunks, self.name, self.location, ann_index=True)

    # --- search --------------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> list[Hit]:
        collection = self._require()
        if query.k <= 0 or matches_nothing(query.filters):
            return []
        if self._dim is not None and query.mode != "keyword" and len(query.vector) != self._dim:
            raise IndexSchemaError(
                f"query vector has {len(query.vector)} dims for a {self._dim}-d index"
            )
        where = search_filter(query.filters)
        mode = query.mode
        if mode == "hybrid" and not query.text.strip():
            mode = "vector"  # nothing for BM25 to match
        if mode == "hybrid":
            call, distance_based = collection.query.hybrid(**hybrid_kwargs(query, where)), False
        elif mode == "vector":
            call = collection.query.near_vector(**near_vector_kwargs(query, where))
            distance_based = True
        elif mode == "keyword":
            if not query.text.strip():
                return []
            call, distance_based = collection.query.bm25(**bm25_kwargs(query, where)), False
        else:
            raise ValueError(f"unknown search mode {query.mode!r}")
        res = await self._run(f"{mode} search", call)
        hits = [hit_from_object(o, distance_based=distance_based) for o in res.objects]
        return hits[: query.k]
