"""WeaviateIndex at the weaviate-client boundary (no Weaviate server runs here).

`FakeWeaviate` stands in for `weaviate.WeaviateAsyncClient`, but only on the surface the adapter
uses, and it handles what it is given the way the real client does where that is cheap: a
`collections.create(**kwargs)` is validated into weaviate's own `_CollectionConfigCreate` and
kept as the REST schema the client would send; `insert_many` encodes the DataObjects into the
gRPC `BatchObject` messages the client would send; every filter is rendered by weaviate's own
REST and gRPC filter converters; results are weaviate's `QueryReturn` / `Object` /
`MetadataReturn`; `iterator()` is weaviate's own `_ObjectAIterator` over the fake
`fetch_objects`. Objects live in memory and filters are evaluated on them, so the tests can also
check what the index holds after a write, and who sees what after a filtered search.
"""

from __future__ import annotations

import copy
import math
import uuid as uuid_lib
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from weaviate.classes.config import DataType, Tokenization
from weaviate.classes.data import DataObject
from weaviate.classes.query import HybridFusion, MetadataQuery
from weaviate.collections.batch.grpc_batch import _BatchGRPC
from weaviate.collections.classes.aggregate import AggregateReturn
from weaviate.collections.classes.batch import (
    BatchObject,
    BatchObjectReturn,
    DeleteManyReturn,
    ErrorObject,
    _BatchObject,
)
from weaviate.collections.classes.config import _CollectionConfigCreate
from weaviate.collections.classes.config_methods import _collection_config_simple_from_json
from weaviate.collections.classes.filters import (
    _FilterAnd,
    _FilterNot,
    _FilterOr,
    _FilterValue,
    _Operator,
)
from weaviate.collections.classes.internal import MetadataReturn, Object, QueryReturn
from weaviate.collections.filters import _FilterToGRPC, _FilterToREST
from weaviate.collections.iterator import _IteratorInputs, _ObjectAIterator
from weaviate.exceptions import (
    UnexpectedStatusCodeError,
    WeaviateConnectionError,
    WeaviateQueryError,
)
from weaviate.util import _capitalize_first_letter, _ServerVersion

from knowledge import fusion
from knowledge.config import WeaviateConfig
from knowledge.errors import ConfigError, IndexSchemaError, IndexStoreError
from knowledge.index import weaviate as wv
from knowledge.index.base import KnowledgeIndex
from knowledge.index.weaviate import WeaviateIndex
from knowledge.models import (
    AccessScope,
    ChunkRecord,
    DocKey,
    DocState,
    SearchFilters,
    SearchQuery,
    chunk_id,
    sha256_hex,
)

API_KEY = "wv-SECRET-api-key-4f1c9e"
MODEL = "all-MiniLM-L6-v2"
DIM = 4
COLLECTION = "ExpertbotChunk"

# --- the fake client --------------------------------------------------------------------


@dataclass
class Call:
    method: str
    kwargs: dict[str, Any]


@dataclass
class StoredObject:
    uuid: str
    properties: dict[str, Any]
    vectors: dict[str, list[float]]


@dataclass
class FakeServer:
    """What a Weaviate server would hold: schemas (REST dicts) and objects per collection."""

    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[str, dict[str, StoredObject]] = field(default_factory=dict)
    query_maximum_results: int = 10_000  # QUERY_MAXIMUM_RESULTS: caps one delete_many


_HNSW_SERVER_DEFAULTS = {
    "cleanupIntervalSeconds": 300,
    "dynamicEfMin": 100,
    "dynamicEfMax": 500,
    "dynamicEfFactor": 8,
    "ef": -1,
    "efConstruction": 128,
    "flatSearchCutoff": 40000,
    "maxConnections": 32,
    "skip": False,
    "vectorCacheMaxObjects": 1_000_000_000_000,
    "distance": "cosine",
}


def _as_server_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Fill in what the server adds to a created class (defaults), as GET /schema returns it."""
    schema = copy.deepcopy(schema)
    for prop in schema.get("properties", []):
        prop.pop("skip_vectorization", None)
        prop.pop("vectorize_property_name", None)
        is_text = prop["dataType"][0] in ("text", "text[]")
        prop.setdefault("indexFilterable", True)
        prop.setdefault("indexSearchable", is_text)
        if is_text:
            prop.setdefault("tokenization", "word")
    for vector in schema.get("vectorConfig", {}).values():
        vector.setdefault("vectorIndexType", "hnsw")
        vector["vectorIndexConfig"] = {
            **_HNSW_SERVER_DEFAULTS,
            **vector.get("vectorIndexConfig", {}),
        }
    return schema


def _value(target: Any, obj: StoredObject) -> Any:
    assert isinstance(target, str), "the adapter filters on plain properties only"
    return obj.uuid if target == "_id" else obj.properties.get(target)


def matches(flt: Any, obj: StoredObject) -> bool:
    """Evaluate a weaviate filter on a stored object (FIELD tokenization: exact values)."""
    if flt is None:
        return True
    if isinstance(flt, _FilterAnd):
        return all(matches(f, obj) for f in flt.filters)
    if isinstance(flt, _FilterOr):
        return any(matches(f, obj) for f in flt.filters)
    if isinstance(flt, _FilterNot):
        return not matches(flt.filters[0], obj)
    assert isinstance(flt, _FilterValue)
    have, want = _value(flt.target, obj), flt.value
    if flt.operator == _Operator.EQUAL:
        return have == want
    if flt.operator == _Operator.CONTAINS_ANY:
        values = have if isinstance(have, list) else [have]
        return any(v in want for v in values)
    if flt.operator == _Operator.GREATER_THAN_EQUAL:
        return have is not None and have >= want
    raise AssertionError(f"the fake does not evaluate {flt.operator}")


def _cosine_distance(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return 1.0 - dot / norm


def _bm25ish(query: str, obj: StoredObject, props: list[str]) -> float:
    terms = query.lower().split()
    words = " ".join(str(obj.properties.get(p, "")) for p in props).lower().split()
    return float(sum(words.count(t) for t in terms))


class FakeWeaviate:
    """The async client surface WeaviateIndex uses, recording every call."""

    def __init__(self, server: FakeServer | None = None) -> None:
        self.server = server or FakeServer()
        self.calls: list[Call] = []
        self.fail: dict[str, BaseException] = {}  # method name -> exception to raise
        self.reject: dict[str, str] = {}  # uuid -> per-object batch error message
        self.ready = True
        self.closed = False
        self.wire_objects: list[Any] = []  # batch_pb2.BatchObject messages insert_many would send
        self.collections = _Collections(self)

    def record(self, method: str, **kwargs: Any) -> None:
        self.calls.append(Call(method, kwargs))
        if method in self.fail:
            raise self.fail[method]

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def is_ready(self) -> bool:
        self.record("is_ready")
        return self.ready

    async def close(self) -> None:
        self.record("close")
        self.closed = True


class _Collections:
    def __init__(self, client: FakeWeaviate) -> None:
        self.client = client

    async def exists(self, name: str) -> bool:
        self.client.record("collections.exists", name=name)
        return _capitalize_first_letter(name) in self.client.server.schemas

    async def create(self, name: str, **kwargs: Any) -> _Collection:
        # what the real client does before sending: validate and render the REST body
        config = _CollectionConfigCreate(name=name, **kwargs)
        body = config._to_dict()
        self.client.record("collections.create", name=name, body=body, **kwargs)
        if config.name in self.client.server.schemas:
            raise UnexpectedStatusCodeError(
                "Collection may not have been created properly.",
                httpx.Response(422, json={"error": [{"message": "class already exists"}]}),
            )
        self.client.server.schemas[config.name] = _as_server_schema(body)
        self.client.server.objects[config.name] = {}
        return _Collection(self.client, config.name)

    def get(self, name: str) -> _Collection:
        self.client.record("collections.get", name=name)
        return _Collection(self.client, _capitalize_first_letter(name))

    async def delete(self, name: str) -> None:
        self.client.record("collections.delete", name=name)
        name = _capitalize_first_letter(name)
        self.client.server.schemas.pop(name, None)
        self.client.server.objects.pop(name, None)


class _Collection:
    def __init__(self, client: FakeWeaviate, name: str) -> None:
        self.client = client
        self.name = name
        self.data = _Data(self)
        self.query = _Query(self)
        self.aggregate = _Aggregate(self)
        self.config = _Config(self)

    @property
    def store(self) -> dict[str, StoredObject]:
        return self.client.server.objects[self.name]

    def iterator(
        self,
        include_vector: bool = False,
        return_metadata: Any = None,
        *,
        return_properties: Any = None,
        return_references: Any = None,
        after: Any = None,
        cache_size: int | None = None,
    ) -> _ObjectAIterator:
        self.client.record(
            "iterator",
            include_vector=include_vector,
            return_properties=return_properties,
            cache_size=cache_size,
        )
        inputs = _IteratorInputs(
            include_vector=include_vector,
            return_metadata=return_metadata,
            return_properties=return_properties,
            return_references=return_references,
            after=after,
        )
        return _ObjectAIterator(self.query, inputs, cache_size=cache_size)  # weaviate's own

    def to_object(
        self, obj: StoredObject, props: list[str] | None, vectors: bool, meta: MetadataReturn
    ) -> Object:
        shown = obj.properties if props is None else {p: obj.properties[p] for p in props}
        return Object(
            uuid=uuid_lib.UUID(obj.uuid),
            metadata=meta,
            properties=copy.deepcopy(shown),
            references=None,
            vector=copy.deepcopy(obj.vectors) if vectors else {},
            collection=self.name,
        )


class _Config:
    def __init__(self, coll: _Collection) -> None:
        self.coll = coll

    async def get(self, simple: bool = False) -> Any:
        self.coll.client.record("config.get", simple=simple)
        schema = copy.deepcopy(self.coll.client.server.schemas[self.coll.name])
        return _collection_config_simple_from_json(schema)


_PY_TYPES = {
    "text": (str,),
    "int": (int,),
    "number": (float, int),
    "text[]": (list,),
}


class _Data:
    def __init__(self, coll: _Collection) -> None:
        self.coll = coll

    async def insert_many(self, objects: list[DataObject]) -> BatchObjectReturn:
        client = self.coll.client
        client.record("insert_many", objects=list(objects))
        schema = client.server.schemas[self.coll.name]
        types = {p["name"]: p["dataType"][0] for p in schema["properties"]}
        internal = [
            _BatchObject(
                collection=self.coll.name,
                vector=o.vector,
                uuid=str(o.uuid),
                properties=o.properties,
                tenant=None,
                references=None,
                index=i,
            )
            for i, o in enumerate(objects)
        ]
        # what goes over the wire (fails on anything gRPC cannot encode)
        client.wire_objects.extend(
            _BatchGRPC(_ServerVersion(1, 32, 0), None, None).grpc_objects(internal)
        )
        errors: dict[int, ErrorObject] = {}
        uuids: dict[int, uuid_lib.UUID] = {}
        for i, (obj, raw) in enumerate(zip(objects, internal, strict=True)):
            problem = client.reject.get(raw.uuid)
            for key, value in (obj.properties or {}).items():
                if key not in types:  # auto-schema is off in this fake: no guessing types
                    problem = f"no such prop with name '{key}' found in class"
                elif not isinstance(value, _PY_TYPES[types[key]]) or isinstance(value, bool):
                    problem = f"invalid {types[key]} property '{key}'"
            if not isinstance(obj.vector, dict) or set(obj.vector) != set(schema["vectorConfig"]):
                problem = "vectors must name the collection's named vectors"
            if problem:
                errors[i] = ErrorObject(problem, BatchObject._from_internal(raw), raw.uuid)
                continue
            self.coll.store[raw.uuid] = StoredObject(
                raw.uuid, copy.deepcopy(obj.properties), copy.deepcopy(obj.vector)
            )
            uuids[i] = uuid_lib.UUID(raw.uuid)
        return BatchObjectReturn(errors=errors, uuids=uuids)

    async def delete_many(self, where: Any, *, verbose: bool = False, dry_run: bool = False):
        client = self.coll.client
        client.record("delete_many", where=where, rest=_FilterToREST.convert(where))
        hits = [u for u, o in self.coll.store.items() if matches(where, o)]
        hits = hits[: client.server.query_maximum_results]
        for u in hits:
            del self.coll.store[u]
        return DeleteManyReturn(failed=0, matches=len(hits), objects=None, successful=len(hits))


class _Query:
    def __init__(self, coll: _Collection) -> None:
        self.coll = coll

    def _filtered(self, filters: Any) -> list[StoredObject]:
        if filters is not None:
            _FilterToGRPC.convert(filters)  # must be encodable for a gRPC query
        return [o for o in self.coll.store.values() if matches(filters, o)]

    async def fetch_objects(
        self,
        *,
        limit: int | None = None,
        offset: int | None = None,
        after: Any = None,
        filters: Any = None,
        sort: Any = None,
        include_vector: bool = False,
        return_metadata: Any = None,
        return_properties: Any = None,
        return_references: Any = None,
    ) -> QueryReturn:
        self.coll.client.record(
            "fetch_objects",
            limit=limit,
            offset=offset,
            after=after,
            filters=filters,
            rest=_FilterToREST.convert(filters) if filters is not None else None,
            sort=sort,
            include_vector=include_vector,
            return_properties=return_properties,
        )
        assert not (after is not None and filters is not None), "Weaviate: cursor with a filter"
        objs = sorted(self._filtered(filters), key=lambda o: o.uuid)
        if after is not None:
            objs = [o for o in objs if o.uuid > str(after)]
        for s in reversed(sort.sorts if sort is not None else []):
            objs.sort(key=lambda o, p=s.prop: o.properties[p], reverse=not s.ascending)
        objs = objs[(offset or 0) :][: limit or 25]
        meta = MetadataReturn()
        return QueryReturn(
            objects=[self.coll.to_object(o, return_properties, include_vector, meta) for o in objs]
        )

    def _vector_ranked(self, vector: list[float], target: str, filters: Any) -> list[tuple]:
        return sorted(
            ((_cosine_distance(vector, o.vectors[target]), o) for o in self._filtered(filters)),
            key=lambda t: (t[0], t[1].uuid),
        )

    def _keyword_ranked(self, text: str, props: list[str], filters: Any) -> list[tuple]:
        scored = [(_bm25ish(text, o, props), o) for o in self._filtered(filters)]
        return sorted(((s, o) for s, o in scored if s > 0), key=lambda t: (-t[0], t[1].uuid))

    async def near_vector(self, near_vector: list[float], **kw: Any) -> QueryReturn:
        self.coll.client.record("near_vector", near_vector=near_vector, **kw)
        ranked = self._vector_ranked(near_vector, kw["target_vector"], kw.get("filters"))
        return QueryReturn(
            objects=[
                self.coll.to_object(
                    o, kw.get("return_properties"), False, MetadataReturn(distance=d)
                )
                for d, o in ranked[: kw["limit"]]
            ]
        )

    async def bm25(self, query: str, **kw: Any) -> QueryReturn:
        self.coll.client.record("bm25", query=query, **kw)
        ranked = self._keyword_ranked(query, kw["query_properties"], kw.get("filters"))
        return QueryReturn(
            objects=[
                self.coll.to_object(o, kw.get("return_properties"), False, MetadataReturn(score=s))
                for s, o in ranked[: kw["limit"]]
            ]
        )

    async def hybrid(self, query: str, **kw: Any) -> QueryReturn:
        self.coll.client.record("hybrid", query=query, **kw)
        flt = kw.get("filters")
        vec = self._vector_ranked(kw["vector"], kw["target_vector"], flt)
        key = self._keyword_ranked(query, kw["query_properties"], flt)
        by_id = {o.uuid: o for _, o in [*vec, *key]}
        if kw["fusion_type"] == HybridFusion.RANKED:
            fused = fusion.reciprocal_rank(
                [o.uuid for _, o in vec], [o.uuid for _, o in key], alpha=kw["alpha"]
            )
        else:
            fused = fusion.weighted(
                [(o.uuid, 1 - d) for d, o in vec], [(o.uuid, s) for s, o in key], alpha=kw["alpha"]
            )
        return QueryReturn(
            objects=[
                self.coll.to_object(
                    by_id[u], kw.get("return_properties"), False, MetadataReturn(score=s)
                )
                for u, s in fused[: kw["limit"]]
            ]
        )


class _Aggregate:
    def __init__(self, coll: _Collection) -> None:
        self.coll = coll

    async def over_all(self, *, total_count: bool = True, **kw: Any) -> AggregateReturn:
        self.coll.client.record("aggregate.over_all", total_count=total_count, **kw)
        return AggregateReturn(properties={}, total_count=len(self.coll.store))


# --- helpers ------------------------------------------------------------------------------


def config(**overrides: Any) -> WeaviateConfig:
    values: dict[str, Any] = {
        "url": "http://weaviate.internal:8080",
        "api_key": SecretStr(API_KEY),
        "collection": COLLECTION,
    }
    values.update(overrides)
    return WeaviateConfig(**values)


def unit(*xs: float) -> list[float]:
    norm = math.sqrt(sum(x * x for x in xs))
    return [x / norm for x in xs]


def records(
    source: str,
    doc_id: str,
    n: int,
    *,
    version: str = "v1",
    access: str = "public",
    allowed: tuple[str, ...] = (),
    texts: list[str] | None = None,
    vectors: list[list[float]] | None = None,
) -> list[ChunkRecord]:
    out = []
    for i in range(n):
        text = texts[i] if texts else f"{doc_id} chunk {i} {version}"
        out.append(
            ChunkRecord(
                chunk_id=chunk_id(source, doc_id, i),
                source=source,
                doc_id=doc_id,
                title=f"Title of {doc_id}",
                uri=f"file:///{source}/{doc_id}",
                heading=f"Section {i}",
                ordinal=i,
                text=text,
                text_hash=sha256_hex(text),
                index_hash=sha256_hex(f"{doc_id}:{version}"),
                n_chunks=n,
                modified=1_700_000_000.5,
                access=access,
                allowed=list(allowed),
                vector=vectors[i] if vectors else unit(1.0, float(i + 1), 0.5, 0.25),
            )
        )
    return out


def by_key(*chunk_lists: list[ChunkRecord]) -> dict[DocKey, list[ChunkRecord]]:
    return {chunks[0].key: chunks for chunks in chunk_lists}


async def opened(client: FakeWeaviate | None = None, **cfg: Any) -> tuple[WeaviateIndex, Any]:
    client = client or FakeWeaviate()
    index = WeaviateIndex(config(**cfg), client=client)
    await index.open(dim=DIM, model=MODEL)
    return index, client


def stored(client: FakeWeaviate) -> dict[str, StoredObject]:
    return client.server.objects[COLLECTION]


def rest(flt: Any) -> Any:
    return None if flt is None else _FilterToREST.convert(flt)


def eq(prop: str, value: Any) -> dict[str, Any]:
    key = "valueText" if isinstance(value, str) else "valueInt"
    return {"operator": "Equal", "path": [prop], key: value}


def any_text(prop: str, values: list[str]) -> dict[str, Any]:
    return {"operator": "ContainsAny", "path": [prop], "valueTextArray": values}


def op(name: str, *operands: dict[str, Any]) -> dict[str, Any]:
    return {"operator": name, "operands": list(operands)}


# --- opening: the collection schema -------------------------------------------------------


async def test_implements_the_protocol() -> None:
    assert isinstance(WeaviateIndex(config(), client=FakeWeaviate()), KnowledgeIndex)
    assert WeaviateIndex.name == "weaviate"


async def test_creates_collection_with_no_vectorizer_cosine_hnsw_and_recorded_model() -> None:
    _, client = await opened()

    (create,) = client.called("collections.create")
    body = create.kwargs["body"]  # the REST body weaviate-client renders for POST /schema
    assert body["class"] == COLLECTION
    assert body["vectorConfig"] == {
        "default": {
            "vectorizer": {"none": {}},
            "vectorIndexType": "hnsw",
            "vectorIndexConfig": {"distance": "cosine"},
        }
    }
    assert "vectorizer" not in body and "moduleConfig" not in body
    assert wv.parse_collection_description(body["description"]) == (MODEL, DIM)


async def test_properties_have_exact_names_types_and_tokenization() -> None:
    _, client = await opened()
    props = client.called("collections.create")[0].kwargs["body"]["properties"]
    got = {
        p["name"]: (
            p["dataType"],
            p.get("tokenization"),
            p.get("indexSearchable"),
            p.get("indexFilterable"),
        )
        for p in props
    }
    text, field, word = ["text"], "field", "word"
    assert got == {
        "chunk_id": (text, field, False, True),
        "source": (text, field, False, True),
        "doc_id": (text, field, False, True),
        "title": (text, word, True, True),
        "uri": (text, field, False, False),
        "heading": (text, word, True, True),
        "ordinal": (["int"], None, None, True),
        "text": (text, word, True, False),
        "text_hash": (text, field, False, True),
        "index_hash": (text, field, False, True),
        "n_chunks": (["int"], None, None, True),
        "modified": (["number"], None, None, True),
        "access": (text, field, False, True),
        "allowed": (["text[]"], field, False, True),
    }
    # and as weaviate's own enums, in the order the adapter declares them
    declared = [(p.name, p.dataType, p.tokenization) for p in wv.chunk_properties()]
    assert declared[0] == ("chunk_id", DataType.TEXT, Tokenization.FIELD)
    assert declared[-1] == ("allowed", DataType.TEXT_ARRAY, Tokenization.FIELD)


async def test_reopening_with_the_same_model_keeps_the_collection() -> None:
    server = FakeServer()
    index, _ = await opened(FakeWeaviate(server))
    await index.replace_documents(by_key(records("docs", "a.md", 2)))

    client2 = FakeWeaviate(server)
    await opened(client2)
    assert client2.called("collections.create") == []
    assert client2.called("collections.delete") == []
    assert len(server.objects[COLLECTION]) == 2


@pytest.mark.parametrize(("model", "dim"), [("bge-small-en-v1.5", DIM), (MODEL, 768)])
async def test_other_model_or_dim_raises_schema_error_naming_both(model: str, dim: int) -> None:
    server = FakeServer()
    await opened(FakeWeaviate(server))

    client2 = FakeWeaviate(server)
    index = WeaviateIndex(config(), client=client2)
    with pytest.raises(IndexSchemaError) as err:
        await index.open(dim=dim, model=model)
    message = str(err.value)
    assert MODEL in message and model in message
    assert f"{DIM}-d" in message and f"{dim}-d" in message
    assert client2.called("collections.delete") == []
    assert COLLECTION in server.schemas


async def test_recreate_drops_and_rebuilds_the_collection() -> None:
    server = FakeServer()
    index, _ = await opened(FakeWeaviate(server))
    await index.replace_documents(by_key(records("docs", "a.md", 2)))

    client2 = FakeWeaviate(server)
    index2 = WeaviateIndex(config(), client=client2)
    await index2.open(dim=8, model="other-model", recreate=True)

    assert [c.method for c in client2.calls[:3]] == [
        "collections.exists",
        "collections.delete",
        "collections.create",
    ]
    assert server.objects[COLLECTION] == {}
    description = server.schemas[COLLECTION]["description"]
    assert wv.parse_collection_description(description) == ("other-model", 8)


async def test_foreign_collection_without_recorded_model_is_refused() -> None:
    server = FakeServer()
    server.schemas[COLLECTION] = _as_server_schema(
        _CollectionConfigCreate(name=COLLECTION, description="someone else's")._to_dict()
    )
    with pytest.raises(IndexSchemaError, match="records no embedding model"):
        await opened(FakeWeaviate(server))


# --- writes -------------------------------------------------------------------------------


async def test_batch_objects_carry_deterministic_uuid_vector_and_all_properties() -> None:
    index, client = await opened()
    chunks = records("docs", "guide/a.md", 3, access="restricted", allowed=("C123", "eng"))
    await index.replace_documents(by_key(chunks))

    (insert,) = client.called("insert_many")
    objs = insert.kwargs["objects"]
    assert all(isinstance(o, DataObject) for o in objs)
    for obj, rec in zip(objs, chunks, strict=True):
        assert str(obj.uuid) == rec.chunk_id == chunk_id("docs", "guide/a.md", rec.ordinal)
        assert obj.vector == {"default": rec.vector}
        assert obj.properties == {
            "chunk_id": rec.chunk_id,
            "source": "docs",
            "doc_id": "guide/a.md",
            "title": "Title of guide/a.md",
            "uri": "file:///docs/guide/a.md",
            "heading": f"Section {rec.ordinal}",
            "ordinal": rec.ordinal,
            "text": rec.text,
            "text_hash": rec.text_hash,
            "index_hash": rec.index_hash,
            "n_chunks": 3,
            "modified": 1_700_000_000.5,
            "access": "restricted",
            "allowed": ["C123", "eng"],
        }
    # the gRPC messages: named vector "default", the chunk id as object id
    wire = client.wire_objects
    assert [w.uuid for w in wire] == [r.chunk_id for r in chunks]
    assert all([v.name for v in w.vectors] == ["default"] for w in wire)
    assert all(not w.vector_bytes for w in wire)


async def test_rewriting_a_document_replaces_instead_of_duplicating() -> None:
    index, client = await opened()
    await index.replace_documents(by_key(records("docs", "a.md", 3)))
    await index.replace_documents(by_key(records("docs", "a.md", 3, version="v2")))

    assert len(stored(client)) == 3
    manifest = await index.manifest()
    assert manifest == {
        DocKey("docs", "a.md"): DocState(sha256_hex("a.md:v2"), n_chunks=3, stored_chunks=3)
    }


async def test_large_writes_are_split_into_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wv, "WRITE_BATCH", 2)
    index, client = await opened()
    await index.replace_documents(by_key(records("docs", "a.md", 5)))
    assert [len(c.kwargs["objects"]) for c in client.called("insert_many")] == [2, 2, 1]
    assert len(stored(client)) == 5


async def test_shorter_new_version_deletes_ordinals_past_its_end() -> None:
    index, client = await opened()
    await index.replace_documents(by_key(records("docs", "a.md", 5), records("docs", "b.md", 2)))
    client.calls.clear()

    await index.replace_documents(by_key(records("docs", "a.md", 3, version="v2")))

    # upsert first, then delete the stale tail: the document never disappears in between
    assert [c.method for c in client.calls] == ["insert_many", "delete_many", "delete_many"]
    assert client.called("delete_many")[0].kwargs["rest"] == op(
        "And",
        op("And", eq("source", "docs"), eq("doc_id", "a.md")),
        {"operator": "GreaterThanEqual", "path": ["ordinal"], "valueInt": 3},
    )
    a_chunks = sorted(
        o.properties["ordinal"] for o in stored(client).values() if o.properties["doc_id"] == "a.md"
    )
    assert a_chunks == [0, 1, 2]
    manifest = await index.manifest()
    assert manifest[DocKey("docs", "a.md")] == DocState(sha256_hex("a.md:v2"), 3, 3)
    assert manifest[DocKey("docs", "b.md")].stored_chunks == 2  # untouched


async def test_empty_chunk_list_deletes_the_document() -> None:
    index, client = await opened()
    await index.replace_documents(by_key(records("docs", "a.md", 2), records("docs", "b.md", 1)))
    await index.replace_documents({DocKey("docs", "a.md"): []})
    assert set(await index.manifest()) == {DocKey("docs", "b.md")}
    assert client.called("delete_many")[-2].kwargs["rest"] == op(
        "And",
        op("And", eq("source", "docs"), eq("doc_id", "a.md")),
        {"operator": "GreaterThanEqual", "path": ["ordinal"], "valueInt": 0},
    )


async def test_per_object_batch_errors_raise_index_store_error() -> None:
    index, client = await opened()
    chunks = records("docs", "a.md", 3)
    client.reject[chunks[1].chunk_id] = "vector lengths don't match: 4 vs 5"
    with pytest.raises(IndexStoreError, match=r"rejected 1 of 3 chunks.*vector lengths"):
        await index.replace_documents(by_key(chunks))


async def test_vector_of_wrong_dimension_is_refused_before_sending() -> None:
    index, client = await opened()
    bad = records("docs", "a.md", 1, vectors=[[1.0, 0.0]])
    with pytest.raises(IndexSchemaError, match="2-d vector for a 4-d index"):
        await index.replace_documents(by_key(bad))
    assert client.called("insert_many") == []


async def test_delete_documents_groups_by_source_and_repeats_until_nothing_matches() -> None:
    index, client = await opened()
    await index.replace_documents(
        by_key(
            records("docs", "a.md", 3),
            records("docs", "b.md", 2),
            records("wiki", "a.md", 2),
            records("wiki", "keep.md", 1),
        )
    )
    client.server.query_maximum_results = 2  # the server deletes at most 2 per call
    client.calls.clear()

    await index.delete_documents(
        [DocKey("docs", "a.md"), DocKey("wiki", "a.md"), DocKey("docs", "b.md")]
    )

    deletes = client.called("delete_many")
    assert deletes[0].kwargs["rest"] == op(
        "Or",
        op("And", eq("source", "docs"), any_text("doc_id", ["a.md", "b.md"])),
        op("And", eq("source", "wiki"), eq("doc_id", "a.md")),
    )
    assert len(deletes) == 5  # 7 chunks at 2 per call, then one that matches nothing
    assert [o.properties["doc_id"] for o in stored(client).values()] == ["keep.md"]


# --- reads --------------------------------------------------------------------------------


async def test_manifest_reads_only_bookkeeping_properties_and_flags_mixed_hashes() -> None:
    index, client = await opened()
    await index.replace_documents(by_key(records("docs", "a.md", 3)))
    # a write cut short: chunk 0 of b.md already carries the new version, chunk 1 the old one
    b_mixed = [records("docs", "b.md", 2, version="v2")[0], records("docs", "b.md", 2)[1]]
    await index.replace_documents({DocKey("docs", "b.md"): b_mixed})
    client.calls.clear()

    manifest = await index.manifest()

    assert manifest == {
        DocKey("docs", "a.md"): DocState(sha256_hex("a.md:v1"), 3, 3),
        DocKey("docs", "b.md"): DocState("", 2, 2),
    }
    (it,) = client.called("iterator")
    assert it.kwargs["include_vector"] is False
    assert sorted(it.kwargs["return_properties"]) == ["doc_id", "index_hash", "n_chunks", "source"]
    assert all(not c.kwargs["include_vector"] for c in client.called("fetch_objects"))


async def test_manifest_pages_through_a_large_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wv, "ITERATOR_PAGE", 3)
    index, client = await opened()
    await index.replace_documents(by_key(*(records("docs", f"d{i}.md", 2) for i in range(5))))
    manifest = await index.manifest()
    assert len(manifest) == 5 and all(s.complete for s in manifest.values())
    assert len(client.called("fetch_objects")) == 5  # 10 objects, 3 per page, then an empty one


async def test_vectors_for_returns_stored_vectors_by_text_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wv, "FETCH_PAGE", 2)  # force paging by ordinal
    index, client = await opened()
    a = records("docs", "a.md", 5)
    other = records("docs", "other.md", 2, texts=["x", "y"], vectors=[unit(0, 0, 0, 1)] * 2)
    await index.replace_documents(by_key(a, other))
    client.calls.clear()

    vectors = await index.vectors_for([DocKey("docs", "a.md")])

    assert vectors == {r.text_hash: pytest.approx(r.vector) for r in a}
    fetches = client.called("fetch_objects")
    assert all(c.kwargs["include_vector"] for c in fetches)
    assert len(fetches) >= 3
    assert fetches[0].kwargs["rest"] == op("And", eq("source", "docs"), eq("doc_id", "a.md"))


async def test_stats_counts_chunks_and_documents() -> None:
    index, client = await opened()
    await index.replace_documents(by_key(records("docs", "a.md", 3), records("wiki", "a.md", 1)))
    stats = await index.stats()
    assert (stats.documents, stats.chunks, stats.store) == (2, 4, "weaviate")
    assert stats.location == "http://weaviate.internal:8080"
    assert client.called("aggregate.over_all")[0].kwargs["total_count"] is True


# --- search -------------------------------------------------------------------------------

PUBLIC = eq("access", "public")


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (SearchFilters(), None),
        (SearchFilters(scope=AccessScope.public_only()), PUBLIC),
        (
            SearchFilters(scope=AccessScope(principals=frozenset({"C42", "eng"}))),
            op(
                "Or",
                PUBLIC,
                op("And", eq("access", "restricted"), any_text("allowed", ["C42", "eng"])),
            ),
        ),
        (
            SearchFilters(scope=AccessScope(include_private=True)),
            op("Or", PUBLIC, eq("access", "private")),
        ),
        (
            SearchFilters(
                scope=AccessScope(principals=frozenset({"C42"}), include_private=True),
                sources=frozenset({"wiki", "docs"}),
            ),
            op(
                "And",
                op(
                    "Or",
                    PUBLIC,
                    op("And", eq("access", "restricted"), any_text("allowed", ["C42"])),
                    eq("access", "private"),
                ),
                any_text("source", ["docs", "wiki"]),
            ),
        ),
        (SearchFilters(sources=frozenset({"wiki"})), any_text("source", ["wiki"])),
    ],
    ids=["no-scope", "public-only", "channel", "include-private", "all", "sources"],
)
async def test_hybrid_sends_alpha_limit_fusion_and_filter(
    filters: SearchFilters, expected: Any
) -> None:
    index, client = await opened()
    query = SearchQuery(
        text="how do I deploy", vector=unit(1, 2, 3, 4), k=7, alpha=0.3, filters=filters
    )
    await index.search(query)

    (call,) = client.called("hybrid")
    kw = call.kwargs
    assert kw["query"] == "how do I deploy"
    assert kw["vector"] == pytest.approx(unit(1, 2, 3, 4))
    assert kw["target_vector"] == "default"
    assert kw["alpha"] == 0.3
    assert kw["limit"] == 7
    assert kw["fusion_type"] is HybridFusion.RANKED
    assert kw["query_properties"] == ["text", "title", "heading"]
    assert kw["return_metadata"] == MetadataQuery(score=True)
    assert rest(kw["filters"]) == expected


async def test_weighted_fusion_maps_to_relative_score() -> None:
    index, client = await opened()
    await index.search(SearchQuery(text="x", vector=unit(1, 1, 1, 1), fusion="weighted"))
    assert client.called("hybrid")[0].kwargs["fusion_type"] is HybridFusion.RELATIVE_SCORE


async def _access_corpus() -> tuple[WeaviateIndex, FakeWeaviate]:
    index, client = await opened()
    await index.replace_documents(
        by_key(
            records("docs", "public.md", 1, texts=["deploy guide"]),
            records("docs", "eng.md", 1, access="restricted", allowed=("C42",), texts=["deploy"]),
            records("docs", "ops.md", 1, access="restricted", allowed=("C99",), texts=["deploy"]),
            records("hr", "salary.md", 1, access="private", texts=["deploy salary"]),
        )
    )
    return index, client


@pytest.mark.parametrize("mode", ["hybrid", "vector", "keyword"])
@pytest.mark.parametrize(
    ("scope", "visible"),
    [
        (None, {"public.md", "eng.md", "ops.md", "salary.md"}),
        (AccessScope.public_only(), {"public.md"}),
        (AccessScope(principals=frozenset({"C42"})), {"public.md", "eng.md"}),
        (AccessScope(include_private=True), {"public.md", "salary.md"}),
    ],
)
async def test_every_mode_only_returns_what_the_scope_may_see(
    mode: str, scope: AccessScope | None, visible: set[str]
) -> None:
    index, _ = await _access_corpus()
    hits = await index.search(
        SearchQuery(
            text="deploy", vector=unit(1, 1, 1, 1), k=10, mode=mode, filters=SearchFilters(scope)
        )
    )
    assert {h.doc_id for h in hits} == visible


async def test_vector_search_maps_objects_to_hits_with_cosine_similarity() -> None:
    index, client = await opened()
    near, far = unit(1, 0, 0, 0), unit(0, 1, 0, 0)
    await index.replace_documents(
        by_key(
            records("docs", "near.md", 1, vectors=[near], access="restricted", allowed=("C1",)),
            records("docs", "far.md", 1, vectors=[far]),
        )
    )
    query_vec = unit(1, 0.2, 0, 0)
    hits = await index.search(SearchQuery(text="", vector=query_vec, k=5, mode="vector"))

    (call,) = client.called("near_vector")
    assert call.kwargs["return_metadata"] == MetadataQuery(distance=True)
    assert call.kwargs["filters"] is None and call.kwargs["limit"] == 5
    assert [h.doc_id for h in hits] == ["near.md", "far.md"]
    top = hits[0]
    assert top.chunk_id == chunk_id("docs", "near.md", 0)
    assert (top.source, top.title, top.uri, top.heading) == (
        "docs",
        "Title of near.md",
        "file:///docs/near.md",
        "Section 0",
    )
    assert (top.text, top.access) == ("near.md chunk 0 v1", "restricted")
    cos = sum(a * b for a, b in zip(query_vec, near, strict=True))
    assert top.score == pytest.approx(cos)  # 1 - cosine distance
    assert hits[0].score > hits[1].score


async def test_keyword_search_uses_bm25_score() -> None:
    index, client = await opened()
    await index.replace_documents(
        by_key(
            records("docs", "a.md", 1, texts=["kubernetes kubernetes deploy"]),
            records("docs", "b.md", 1, texts=["kubernetes"]),
            records("docs", "c.md", 1, texts=["unrelated"]),
        )
    )
    hits = await index.search(
        SearchQuery(text="kubernetes", vector=unit(1, 1, 1, 1), k=3, mode="keyword")
    )
    (call,) = client.called("bm25")
    assert call.kwargs["query_properties"] == ["text", "title", "heading"]
    assert call.kwargs["return_metadata"] == MetadataQuery(score=True)
    assert [(h.doc_id, h.score) for h in hits] == [("a.md", 2.0), ("b.md", 1.0)]


async def test_hybrid_hits_carry_weaviate_score_best_first() -> None:
    index, _ = await opened()
    await index.replace_documents(
        by_key(
            records("docs", "both.md", 1, texts=["deploy"], vectors=[unit(1, 0, 0, 0)]),
            records("docs", "vec.md", 1, texts=["other"], vectors=[unit(1, 0.5, 0, 0)]),
        )
    )
    hits = await index.search(SearchQuery(text="deploy", vector=unit(1, 0, 0, 0), k=2))
    assert [h.doc_id for h in hits] == ["both.md", "vec.md"]
    expected = fusion.reciprocal_rank(
        [chunk_id("docs", "both.md", 0), chunk_id("docs", "vec.md", 0)],
        [chunk_id("docs", "both.md", 0)],
        alpha=0.5,
    )
    assert [h.score for h in hits] == pytest.approx([s for _, s in expected])


async def test_empty_sources_match_nothing_without_a_query() -> None:
    index, client = await opened()
    hits = await index.search(
        SearchQuery(text="x", vector=unit(1, 1, 1, 1), filters=SearchFilters(sources=frozenset()))
    )
    assert hits == []
    assert client.called("hybrid") == []


async def test_unknown_mode_is_rejected() -> None:
    index, _ = await opened()
    with pytest.raises(ValueError, match="unknown search mode"):
        await index.search(SearchQuery(text="x", vector=unit(1, 1, 1, 1), mode="semantic"))


# --- errors, lifecycle, connection --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "error"),
    [
        ("collections.exists", WeaviateConnectionError(f"cannot reach, auth {API_KEY}")),
        (
            "hybrid",
            WeaviateQueryError(f"rpc error: bearer {API_KEY} rejected", "GRPC"),
        ),
        (
            "insert_many",
            UnexpectedStatusCodeError(
                "batch failed",
                httpx.Response(401, json={"error": [{"message": f"bad key {API_KEY}"}]}),
            ),
        ),
        ("delete_many", httpx.ConnectError(f"connection refused (key={API_KEY})")),
        ("iterator", TimeoutError("deadline exceeded")),
    ],
    ids=["connect", "query", "status", "transport", "timeout"],
)
async def test_client_errors_become_index_store_error_without_the_api_key(
    method: str, error: BaseException
) -> None:
    client = FakeWeaviate()
    index = WeaviateIndex(config(), client=client)
    if method != "collections.exists":
        await index.open(dim=DIM, model=MODEL)
        await index.replace_documents(by_key(records("docs", "a.md", 2)))
    client.fail[method] = error

    with pytest.raises(IndexStoreError) as err:
        if method == "collections.exists":
            await index.open(dim=DIM, model=MODEL)
        elif method == "hybrid":
            await index.search(SearchQuery(text="x", vector=unit(1, 1, 1, 1)))
        elif method == "insert_many":
            await index.replace_documents(by_key(records("docs", "b.md", 1)))
        elif method == "delete_many":
            await index.delete_documents([DocKey("docs", "a.md")])
        else:
            await index.manifest()

    assert "weaviate.internal" in str(err.value)
    assert API_KEY not in str(err.value)
    assert type(error).__name__ in str(err.value)
    cause = err.value.__cause__
    assert cause is None or API_KEY not in str(cause)


async def test_ping_reports_a_server_that_is_not_ready() -> None:
    index, client = await opened()
    await index.ping()
    client.ready = False
    with pytest.raises(IndexStoreError, match="not ready"):
        await index.ping()


async def test_close_leaves_a_borrowed_client_open() -> None:
    index, client = await opened()
    await index.close()
    assert client.closed is False
    with pytest.raises(IndexStoreError, match="not open"):
        await index.manifest()


async def test_optimize_is_a_no_op_that_touches_nothing() -> None:
    index, client = await opened()
    client.calls.clear()
    await index.optimize()
    assert client.calls == []


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
    cs = wv.connection_settings(config(url=url, grpc_url=grpc_url))
    got = (cs.http_host, cs.http_port, cs.http_secure, cs.grpc_host, cs.grpc_port, cs.grpc_secure)
    assert got == expected


def test_missing_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"knowledge\.weaviate\.url"):
        wv.connection_settings(config(url=None))


async def test_make_client_builds_an_unconnected_async_client() -> None:
    import weaviate

    client = wv.make_client(config(url="http://localhost:8080", timeout_s=12.5))
    assert isinstance(client, weaviate.WeaviateAsyncClient)
    assert client.is_connected() is False
