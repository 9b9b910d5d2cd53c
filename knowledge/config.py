"""Configuration of the knowledge pipeline (part of the one `Settings` object in bot/settings.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    Tag,
    field_validator,
    model_validator,
)

from base.errors import ConfigError, SourceError
from knowledge.models import Access

DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Source(_Strict):
    """What every source has: a unique name, who may see its documents, and when it syncs."""

    name: str | None = Field(
        default=None,
        description="Unique among the sources; named in reports, citations' filters and "
        "`expertbot sync --source`. Folders default to the folder's name, web sites to the host.",
    )
    access: Access = Access.PUBLIC
    allowed: list[str] = Field(
        default_factory=list, description="Channels / groups for 'restricted'."
    )
    schedule: str | None = Field(
        default=None,
        description="When this source re-syncs (cron); default: the global schedule.sync.",
    )

    @property
    def source_name(self) -> str:
        raise NotImplementedError

    def secret_references(self) -> list[SecretReference]:
        """The credentials this source is configured with (resolved by the entry point)."""
        return [value for value in self.__dict__.values() if isinstance(value, SecretReference)]

    @property
    def location(self) -> str:
        """Where the documents come from, as a report names it."""
        raise NotImplementedError


class FolderSource(_Source):
    """A folder of documents. Its `access` applies to every document in it unless the
    document's own front matter says otherwise."""

    type: Literal["folder"] = "folder"
    path: Path
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

    @property
    def location(self) -> str:
        return str(self.path)


class SecretReference(_Strict):
    """A credential given by reference, never inline: the name of an environment variable or
    a file holding it. The value is resolved by the entry point (`bot.settings`) or read from
    the file when needed, and is never logged or reported."""

    token_env: str | None = Field(
        default=None, description="Environment variable holding the token."
    )
    token_file: Path | None = Field(default=None, description="File holding the token.")
    _token_value: SecretStr | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_reference(self) -> SecretReference:
        if self.token_env and self.token_file:
            raise ValueError("give the token by token_env or token_file, not both")
        return self

    def bind_environment(self, environ: Mapping[str, str]) -> None:
        """Resolve `token_env` from the process environment (the entry point calls this)."""
        if self.token_env and environ.get(self.token_env):
            self._token_value = SecretStr(environ[self.token_env])

    def token(self) -> SecretStr | None:
        """The token, or None when the source needs none. SourceError names what is missing."""
        if self.token_file is not None:
            try:
                value = self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SourceError(
                    f"cannot read token_file {self.token_file}: {exc.strerror or exc}"
                ) from None
            if not value:
                raise SourceError(f"token_file {self.token_file} is empty")
            return SecretStr(value)
        if self.token_env:
            if self._token_value is None:
                raise SourceError(f"the environment variable {self.token_env} is not set")
            return self._token_value
        return None


class WebSource(_Source):
    """A web site (an intranet, a documentation site): crawled from `url` or read from a
    sitemap, within `prefix`, honouring robots.txt."""

    type: Literal["web"]
    url: str | None = Field(default=None, description="Where the crawl starts.")
    sitemap: str | None = Field(
        default=None, description="A sitemap.xml (or sitemap index) listing the pages."
    )
    prefix: str | None = Field(
        default=None,
        description="Only URLs under this prefix are read; default: the start URL's (or the "
        "sitemap's) folder.",
    )
    max_pages: int = Field(default=1_000, ge=1, le=1_000_000, description="The page budget.")
    max_depth: int = Field(default=20, ge=0, le=1_000, description="Links followed from the start.")
    concurrency: int = Field(default=4, ge=1, le=64, description="Requests in flight at once.")
    delay_s: float = Field(
        default=0.0,
        ge=0,
        description="Least pause between requests to the site (a longer robots.txt Crawl-delay wins).",
    )
    timeout_s: float = Field(default=30.0, gt=0)
    user_agent: str = "expertbot"
    follow_files: bool = Field(
        default=True, description="Also read linked Office and PDF files under the prefix."
    )
    auth: SecretReference | None = Field(
        default=None, description="A bearer token for an intranet: token_env or token_file."
    )

    @model_validator(mode="after")
    def _start(self) -> WebSource:
        if not (self.url or self.sitemap):
            raise ValueError("a web source needs `url` or `sitemap`")
        for value in (self.url, self.sitemap, self.prefix):
            if value and urlsplit(value).scheme not in ("http", "https"):
                raise ValueError(f"{value!r} is not an http(s) URL")
        return self

    @property
    def start(self) -> str:
        return self.url or self.sitemap or ""

    @property
    def scope(self) -> str:
        """The URL prefix every read page must have."""
        if self.prefix:
            return self.prefix
        start = urlsplit(self.start)
        folder = start.path.rsplit("/", 1)[0] + "/"
        return f"{start.scheme}://{start.netloc}{folder}"

    @property
    def source_name(self) -> str:
        return self.name or (urlsplit(self.start).hostname or "web")

    @property
    def location(self) -> str:
        return self.start


def _source_type(value: Any) -> str:
    """`{path = ...}` without a type is a folder, as sources were first written."""
    if isinstance(value, dict):
        return str(value.get("type", "folder"))
    return str(getattr(value, "type", "folder"))


SourceConfig = Annotated[
    Annotated[FolderSource, Tag("folder")] | Annotated[WebSource, Tag("web")],
    Discriminator(_source_type),
]
SOURCE_TYPES = ("folder", "web")


def name_clash(sources: Sequence[FolderSource | WebSource]) -> str | None:
    """What is wrong when two of `sources` share a name (configured, or folders given to
    `expertbot sync`), else None."""
    seen: dict[str, str] = {}
    for source in sources:
        name = source.source_name
        if name in seen:
            return (
                f"two sources are named {name!r} ({seen[name]} and {source.location}); "
                "give one a `name`"
            )
        seen[name] = source.location
    return None


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

    @field_validator("sources")
    @classmethod
    def _unique_names(
        cls, sources: list[FolderSource | WebSource]
    ) -> list[FolderSource | WebSource]:
        clash = name_clash(sources)
        if clash:
            raise ValueError(clash)
        return sources

    def source(self, name: str) -> FolderSource | WebSource:
        """The configured source called `name` (ConfigError listing the names if none is)."""
        for source in self.sources:
            if source.source_name == name:
                return source
        known = ", ".join(s.source_name for s in self.sources) or "none configured"
        raise ConfigError(f"no source named {name!r} (sources: {known})")
