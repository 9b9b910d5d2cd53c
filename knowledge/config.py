"""Configuration of the knowledge pipeline (part of the one `Settings` object in bot/settings.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from knowledge.models import Access

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    """A folder of documents. Its `access` applies to every document in it unless the
    document's own front matter says otherwise."""

    path: Path
    name: str | None = Field(default=None, description="Defaults to the folder's name.")
    access: Access = Access.PUBLIC
    allowed: list[str] = Field(
        default_factory=list, description="Channels / groups for 'restricted'."
    )
    base_url: str | None = Field(
        default=None,
        description="Cite documents as base_url + their id (e.g. the wiki they come from); "
        "default: their file:// path.",
    )
    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(default_factory=list)

    @property
    def source_name(self) -> str:
        return self.name or self.path.resolve().name


class EmbeddingConfig(_Strict):
    model: str = Field(
        default=DEFAULT_EMBEDDING_MODEL,
        description="A sentence-transformers name or a local path. The default ships offline.",
    )
    batch_size: int = Field(default=32, ge=1, le=4096)
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:0, mps …")


class ChunkingConfig(_Strict):
    max_tokens: int = Field(default=200, ge=16, le=8192)
    overlap_tokens: int = Field(default=32, ge=0)

    @model_validator(mode="after")
    def _overlap_below_budget(self) -> ChunkingConfig:
        if self.overlap_tokens >= self.max_tokens:
            raise ValueError("overlap_tokens must be smaller than max_tokens")
        return self


class SearchConfig(_Strict):
    k: int = Field(default=5, ge=1, le=100)
    fusion: Literal["rrf", "weighted"] = "rrf"
    alpha: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description="Weight of vector search (0 = keyword only, 1 = vector only). 0.7, with "
        "rrf and 100 candidates, won on the tune halves of six corpora "
        "(bench/tune_retrieval.py, docs/benchmarks.md).",
    )
    candidates: int = Field(
        default=100, ge=1, le=1000, description="Hits per retriever before fusion."
    )
    per_document: int = Field(
        default=1,
        ge=1,
        le=100,
        description="At most this many of the passages an answer is written from come from "
        "one document (1 covered the most gold documents on every benchmark corpus).",
    )


class RerankConfig(_Strict):
    """A second look at the fused candidates: a model reads each with the question and scores
    how likely it holds the answer."""

    kind: Literal["off", "cross-encoder", "generator"] = Field(
        default="off",
        description="off; cross-encoder (a sentence-transformers CrossEncoder, see model); "
        "generator (the serving model judges, in-process backend only).",
    )
    model: str | None = Field(
        default=None,
        description="The cross-encoder: a sentence-transformers name or a local folder.",
    )
    depth: int = Field(
        default=20, ge=2, le=200, description="How many fused candidates are scored."
    )
    scoring: Literal["query-likelihood", "yes-no"] = Field(
        default="query-likelihood",
        description="How the generator judge scores a passage: the mean log-probability of the "
        "question given it (ranked better with the demo model), or the log-odds of its "
        "answering yes to 'does the passage contain the answer?' (what answer.abstention = "
        "generator reads).",
    )
    batch_size: int = Field(default=16, ge=1, le=1024, description="Cross-encoder batch size.")
    device: str = Field(
        default="auto", description="Cross-encoder device: auto, cpu, cuda, cuda:0, mps …"
    )

    @model_validator(mode="after")
    def _model_for_cross_encoder(self) -> RerankConfig:
        if self.kind == "cross-encoder" and not (self.model or "").strip():
            raise ValueError(
                "rerank.model is required when rerank.kind is cross-encoder: the name or folder "
                "of a sentence-transformers cross-encoder"
            )
        return self


class LanceDBConfig(_Strict):
    read_consistency_s: float = Field(
        default=5.0,
        ge=0,
        description="How often a long-running process checks for writes made by others "
        "(a sync from the CLI or another replica); 0 checks on every read.",
    )
    ann_min_rows: int = Field(
        default=2_048,
        ge=256,
        description="Build the IVF_HNSW_SQ vector index once the table holds this many chunks "
        "(LanceDB's exact search reads every vector per query: ~40 ms at 10k chunks here).",
    )


class WeaviateConfig(_Strict):
    url: str | None = Field(
        default=None, description="e.g. http://localhost:8080 (or WEAVIATE_URL)."
    )
    grpc_url: str | None = Field(
        default=None,
        description="host:port of the gRPC endpoint; default: the HTTP host, port 50051.",
    )
    api_key: SecretStr | None = None
    collection: str = "ExpertbotChunk"
    timeout_s: float = Field(default=30.0, gt=0)


class KnowledgeConfig(_Strict):
    store: Literal["lancedb", "weaviate"] = "lancedb"
    sources: list[SourceConfig] = Field(default_factory=list)
    max_file_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    lancedb: LanceDBConfig = Field(default_factory=LanceDBConfig)
    weaviate: WeaviateConfig = Field(default_factory=WeaviateConfig)
