"""Assembling the knowledge services from configuration (used by the CLI, and later the server)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from base.errors import ConfigError
from base.migrations import migrate_all
from knowledge.config import KnowledgeConfig
from knowledge.embedding import Embedder, SentenceTransformerEmbedder
from knowledge.index.base import KnowledgeIndex
from knowledge.models import IndexStats
from knowledge.reports import SyncReport, SyncRunStore
from knowledge.reranking import make_reranker
from knowledge.search import KnowledgeSearch
from knowledge.sync import DocumentFeed, Syncer
from knowledge.vocabulary import Vocabulary


def make_index(config: KnowledgeConfig, data_dir: Path) -> KnowledgeIndex:
    if config.store == "weaviate":
        if not config.weaviate.url:
            raise ConfigError("knowledge.store is 'weaviate' but no URL is set (WEAVIATE_URL)")
        from knowledge.index.weaviate import WeaviateIndex

        return WeaviateIndex(config.weaviate)
    from knowledge.index.lancedb import LanceIndex

    return LanceIndex(data_dir / "lancedb", config.lancedb)


@dataclass
class Knowledge:
    """The knowledge services, built once per process."""

    config: KnowledgeConfig
    engine: Engine
    index: KnowledgeIndex
    embedder: Embedder
    search: KnowledgeSearch
    syncer: Syncer

    @classmethod
    def build(
        cls,
        config: KnowledgeConfig,
        *,
        data_dir: Path,
        engine: Engine,
        index: KnowledgeIndex | None = None,
        embedder: Embedder | None = None,
        feeds: Sequence[DocumentFeed] = (),
    ) -> Knowledge:
        """`feeds`: documents that are not files, synced with the folders (`DocumentFeed`)."""
        index = index or make_index(config, data_dir)
        embedder = embedder or SentenceTransformerEmbedder(config.embedding)
        search = KnowledgeSearch(
            index,
            embedder,
            config.search,
            Vocabulary(engine),
            # The generator judge needs the serving model: bot.core.runtime hands it over.
            reranker=make_reranker(config.rerank)
            if config.rerank.kind == "cross-encoder"
            else None,
            rerank_depth=config.rerank.depth,
        )
        return cls(
            config=config,
            engine=engine,
            index=index,
            embedder=embedder,
            search=search,
            syncer=Syncer(
                index=index, embedder=embedder, engine=engine, config=config, feeds=feeds
            ),
        )

    async def open(self, *, index: bool = True) -> None:
        """Bring the SQL store's schema up to date (every namespace: the one place the server
        and every command migrate) and open (or create) the index. Fails fast and clearly.

        `index=False` leaves opening to the syncer (which may rebuild it)."""
        migrate_all(self.engine)
        if index:
            await self.index.open(dim=self.embedder.dim, model=self.embedder.model_name)

    async def close(self) -> None:
        await self.index.close()

    async def status(self) -> tuple[IndexStats, SyncReport | None]:
        stats = await self.index.stats()
        return stats, SyncRunStore(self.engine).last()
