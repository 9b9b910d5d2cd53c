"""LanceDB, the embedded default index: a folder under the data dir, no server.

One table, `chunks`. Writes replace a batch of documents in a single commit
(`merge_insert` … `when_not_matched_by_source_delete`), so a kill -9 leaves every document
either in its old or its new state, never half-written. Hybrid search runs a vector query and
a full-text (BM25) query with the same pre-filter and fuses the two rankings (knowledge.fusion).
An IVF_HNSW_SQ vector index is built once the table holds `ann_min_rows` chunks; `optimize()`
after each sync compacts the table and folds new rows into the vector and full-text indices.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import structlog

from base.errors import IndexSchemaError, IndexStoreError
from knowledge import fusion
from knowledge.config import LanceDBConfig
from knowledge.models import (
    HIT_FIELDS,
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

TABLE = "chunks"
_META_KEY = b"expertbot"
_HIT_COLUMNS = list(HIT_FIELDS)


def _schema(dim: int, model: str) -> pa.Schema:
    return pa.schema(
        [
            ("chunk_id", pa.string()),
            ("source", pa.string()),
            ("doc_id", pa.string()),
            ("title", pa.string()),
            ("uri", pa.string()),
            ("heading", pa.string()),
            ("ordinal", pa.int32()),
            ("text", pa.string()),
            ("search_text", pa.string()),  # title, heading and text: what BM25 sees
            ("text_hash", pa.string()),
            ("index_hash", pa.string()),
            ("n_chunks", pa.int32()),
            ("modified", pa.float64()),
            ("access", pa.string()),
            ("allowed", pa.list_(pa.string())),
            ("vector", pa.list_(pa.float32(), dim)),
        ],
        metadata={_META_KEY: json.dumps({"model": model, "dim": dim}).encode()},
    )


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def grant_clause(grant: Grant) -> str:
    """One term of the access rule (AccessScope.grants) in SQL."""
    clause = f"access = {sql_literal(grant.access.value)}"
    if grant.allowed_any is None:
        return clause
    names = ", ".join(sql_literal(p) for p in sorted(grant.allowed_any))
    return f"({clause} AND array_has_any(allowed, [{names}]))"


def where_clause(filters: SearchFilters) -> str | None:
    """The SQL pre-filter for access scope and sources (None: no filter)."""
    parts: list[str] = []
    if filters.scope is not None:
        parts.append("(" + " OR ".join(grant_clause(g) for g in filters.scope.grants()) + ")")
    if filters.sources is not None:
        if not filters.sources:
            return "false"
        parts.append(
            "source IN (" + ", ".join(sql_literal(s) for s in sorted(filters.sources)) + ")"
        )
    return " AND ".join(parts) if parts else None


def docs_clause(keys: Sequence[DocKey]) -> str:
    by_source: dict[str, list[str]] = {}
    for key in keys:
        by_source.setdefault(key.source, []).append(key.doc_id)
    return " OR ".join(
        f"(source = {sql_literal(src)} AND doc_id IN ({', '.join(sql_literal(d) for d in ids)}))"
        for src, ids in sorted(by_source.items())
    )


def search_text(record: ChunkRecord) -> str:
    return "\n".join(part for part in (record.title, record.heading, record.text) if part)


class LanceIndex:
    """The `KnowledgeIndex` on an embedded LanceDB folder."""

    name = "lancedb"

    def __init__(self, path: Path, config: LanceDBConfig | None = None) -> None:
        self.path = Path(path)
        self.config = config or LanceDBConfig()
        self._db: Any = None
        self._table: Any = None
        self._dim = 0
        self._has_fts = False
        # LanceDB calls block; they run in worker threads, one write at a time per process.
        self._write_lock = threading.Lock()
        # The keyword side of a hybrid query runs beside the vector side (made in open()).
        self._pool: ThreadPoolExecutor | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def open(self, *, dim: int, model: str, recreate: bool = False) -> None:
        await asyncio.to_thread(self._open, dim, model, recreate)

    def _open(self, dim: int, model: str, recreate: bool) -> None:
        import lancedb

        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._db = lancedb.connect(
                str(self.path),
                read_consistency_interval=timedelta(seconds=self.config.read_consistency_s),
            )
            existing = self._table_names()
            if TABLE in existing and recreate:
                self._db.drop_table(TABLE)
                existing = [n for n in existing if n != TABLE]
            if TABLE in existing:
                table = self._db.open_table(TABLE)
                stored = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
                if stored.get("model") != model or stored.get("dim") != dim:
                    raise IndexSchemaError(
                        f"the index at {self.path} was built with embedding model "
                        f"{stored.get('model')!r} ({stored.get('dim')}-d), not {model!r} ({dim}-d); "
                        "rebuild it with `expertbot sync --rebuild`"
                    )
            else:
                table = self._db.create_table(TABLE, schema=_schema(dim, model), exist_ok=True)
        except IndexSchemaError:
            raise
        except Exception as exc:
            raise IndexStoreError(f"cannot open the LanceDB index at {self.path}: {exc}") from exc
        self._table = table
        self._dim = dim
        self._has_fts = self._fts_ready(table)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lancedb-search")

    def _table_names(self) -> list[str]:
        listing = self._db.list_tables()
        names = getattr(listing, "tables", listing)
        return list(names)

    @staticmethod
    def _fts_ready(table: Any) -> bool:
        return any(i.index_type == "FTS" for i in table.list_indices())

    async def close(self) -> None:
        self._table = None
        self._db = None
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _require(self) -> Any:
        if self._table is None:
            raise IndexStoreError("the index is not open")
        return self._table

    async def ping(self) -> None:
        table = self._require()
        await asyncio.to_thread(table.count_rows)

    # --- reads ---------------------------------------------------------------------------

    async def manifest(self) -> dict[DocKey, DocState]:
        return await asyncio.to_thread(self._manifest)

    def _manifest(self) -> dict[DocKey, DocState]:
        table = self._require()
        data = table.to_lance().to_table(columns=["source", "doc_id", "index_hash", "n_chunks"])
        if data.num_rows == 0:
            return {}
        grouped = data.group_by(["source", "doc_id"]).aggregate(
            [
                ("index_hash", "min"),
                ("index_hash", "max"),
                ("n_chunks", "max"),
                ("n_chunks", "min"),
                ("n_chunks", "count"),
            ]
        )
        out: dict[DocKey, DocState] = {}
        for row in grouped.to_pylist():
            consistent = (
                row["index_hash_min"] == row["index_hash_max"]
                and row["n_chunks_min"] == row["n_chunks_max"]
            )
            out[DocKey(row["source"], row["doc_id"])] = DocState(
                index_hash=row["index_hash_min"] if consistent else "",
                n_chunks=row["n_chunks_max"],
                stored_chunks=row["n_chunks_count"],
            )
        return out

    async def vectors_for(self, keys: Sequence[DocKey]) -> dict[str, list[float]]:
        if not keys:
            return {}
        return await asyncio.to_thread(self._vectors_for, list(keys))

    def _vectors_for(self, keys: list[DocKey]) -> dict[str, list[float]]:
        table = self._require()
        out: dict[str, list[float]] = {}
        for start in range(0, len(keys), 200):
            data = table.to_lance().to_table(
                columns=["text_hash", "vector"], filter=docs_clause(keys[start : start + 200])
            )
            for text_hash, vector in zip(
                data.column("text_hash").to_pylist(), data.column("vector").to_pylist(), strict=True
            ):
                out[text_hash] = vector
        return out

    async def count_chunks(self) -> int:
        return await asyncio.to_thread(lambda: self._require().count_rows())

    async def stats(self) -> IndexStats:
        def _stats() -> IndexStats:
            table = self._require()
            chunks = table.count_rows()
            docs = len(self._manifest()) if chunks else 0
            ann = any(tuple(i.columns) == ("vector",) for i in table.list_indices())
            return IndexStats(docs, chunks, self.name, str(self.path), ann_index=ann)

        return await asyncio.to_thread(_stats)

    # --- writes --------------------------------------------------------------------------

    async def replace_documents(self, records: Mapping[DocKey, Sequence[ChunkRecord]]) -> None:
        if records:
            await asyncio.to_thread(self._replace, records)

    def _replace(self, records: Mapping[DocKey, Sequence[ChunkRecord]]) -> None:
        table = self._require()
        rows = [self._row(r) for chunks in records.values() for r in chunks]
        scope = docs_clause(list(records))
        with self._write_lock:
            try:
                if rows:
                    (
                        table.merge_insert("chunk_id")
                        .when_matched_update_all()
                        .when_not_matched_insert_all()
                        .when_not_matched_by_source_delete(scope)
                        .execute(pa.Table.from_pylist(rows, schema=table.schema))
                    )
                else:
                    table.delete(scope)
            except Exception as exc:
                raise IndexStoreError(f"writing to the LanceDB index failed: {exc}") from exc

    def _row(self, record: ChunkRecord) -> dict[str, Any]:
        if len(record.vector) != self._dim:
            raise IndexStoreError(f"vector of {len(record.vector)} dims for a {self._dim}-d index")
        return {
            "chunk_id": record.chunk_id,
            "source": record.source,
            "doc_id": record.doc_id,
            "title": record.title,
            "uri": record.uri,
            "heading": record.heading,
            "ordinal": record.ordinal,
            "text": record.text,
            "search_text": search_text(record),
            "text_hash": record.text_hash,
            "index_hash": record.index_hash,
            "n_chunks": record.n_chunks,
            "modified": record.modified,
            "access": record.access,
            "allowed": list(record.allowed),
            "vector": list(record.vector),
        }

    async def delete_documents(self, keys: Sequence[DocKey]) -> None:
        if not keys:
            return

        def _delete() -> None:
            table = self._require()
            with self._write_lock:
                for start in range(0, len(keys), 200):
                    table.delete(docs_clause(list(keys[start : start + 200])))

        await asyncio.to_thread(_delete)

    async def optimize(self) -> None:
        await asyncio.to_thread(self._optimize)

    def _optimize(self) -> None:
        from lancedb.index import FTS, Bitmap, IvfHnswSq, LabelList

        table = self._require()
        with self._write_lock:
            indexed = {tuple(i.columns): i.index_type for i in table.list_indices()}
            rows = table.count_rows()
            if rows and ("search_text",) not in indexed:
                table.create_index("search_text", config=FTS(with_position=False))
                log.info("index.fts_created", rows=rows)
            # Scalar indices make the access / source pre-filter an index lookup, not a scan.
            for column, config in (
                ("access", Bitmap()),
                ("source", Bitmap()),
                ("allowed", LabelList()),
            ):
                if rows and (column,) not in indexed:
                    table.create_index(column, config=config)
            if rows >= self.config.ann_min_rows and ("vector",) not in indexed:
                # IVF partitions of ~50k rows each; HNSW does the work inside a partition.
                partitions = max(1, rows // 50_000)
                table.create_index(
                    "vector", config=IvfHnswSq(distance_type="cosine", num_partitions=partitions)
                )
                log.info("index.ann_created", rows=rows, partitions=partitions)
            table.optimize()
            self._has_fts = self._fts_ready(table)

    # --- search --------------------------------------------------------------------------

    async def search(self, query: SearchQuery) -> list[Hit]:
        return await asyncio.to_thread(self._search, query)

    def _search(self, query: SearchQuery) -> list[Hit]:
        table = self._require()
        where = where_clause(query.filters)
        depth = max(query.k, query.candidates)
        vector_rows: list[dict[str, Any]] = []
        keyword_rows: list[dict[str, Any]] = []
        use_vector = query.mode == "vector" or (query.mode == "hybrid" and query.alpha > 0)
        use_keyword = query.mode == "keyword" or (query.mode == "hybrid" and query.alpha < 1)
        pool = self._pool
        assert pool is not None  # made in _open() together with the table
        try:
            keyword = (
                pool.submit(self._keyword, table, query.text, where, depth) if use_keyword else None
            )
            if use_vector:
                vector_rows = self._vector(table, query.vector, where, depth)
            if keyword is not None:
                keyword_rows = keyword.result()
        except IndexStoreError:
            raise
        except Exception as exc:
            raise IndexStoreError(f"LanceDB search failed: {exc}") from exc

        if query.mode == "vector":
            return [_hit(r, r["_score"]) for r in vector_rows[: query.k]]
        if query.mode == "keyword":
            return [_hit(r, r["_score"]) for r in keyword_rows[: query.k]]
        return fusion.fuse(
            [_hit(r, r["_score"]) for r in vector_rows],
            [_hit(r, r["_score"]) for r in keyword_rows],
            fusion=query.fusion,
            alpha=query.alpha,
        )[: query.k]

    def _vector(
        self, table: Any, vector: list[float], where: str | None, depth: int
    ) -> list[dict[str, Any]]:
        # refine_factor(1): re-rank the ANN candidates with their full vectors. Without it the
        # IVF_HNSW_SQ index reports 2·(1 − cos) from quantised vectors instead of 1 − cos, and
        # scores would change scale once a table grows past ann_min_rows (abstention compares
        # them with a threshold). With exact search it changes nothing.
        q = (
            table.search(vector, vector_column_name="vector")
            .distance_type("cosine")
            .refine_factor(1)
        )
        if where:
            q = q.where(where, prefilter=True)
        rows: list[dict[str, Any]] = q.select([*_HIT_COLUMNS, "_distance"]).limit(depth).to_list()
        for r in rows:
            r["_score"] = 1.0 - float(r.pop("_distance"))
        return rows

    def _keyword(
        self, table: Any, text: str, where: str | None, depth: int
    ) -> list[dict[str, Any]]:
        from lancedb.query import MatchQuery

        text = " ".join(text.split())[:2000]
        if not text:
            return []
        if not self._has_fts:  # another process may have built it since we looked
            self._has_fts = self._fts_ready(table)
            if not self._has_fts:
                return []
        q = table.search(MatchQuery(text, "search_text"), query_type="fts")  # type: ignore[call-arg]
        if where:
            q = q.where(where, prefilter=True)
        rows: list[dict[str, Any]] = q.select([*_HIT_COLUMNS, "_score"]).limit(depth).to_list()
        for r in rows:
            r["_score"] = float(r["_score"])
        return rows


def _hit(row: dict[str, Any], score: float) -> Hit:
    return Hit(
        chunk_id=row["chunk_id"],
        source=row["source"],
        doc_id=row["doc_id"],
        title=row["title"],
        uri=row["uri"],
        heading=row["heading"],
        text=row["text"],
        score=float(score),
        access=row["access"],
        allowed=tuple(row.get("allowed") or ()),
    )
