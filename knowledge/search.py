"""Searching the knowledge: embed the query, ask the index, return ranked hits."""

from __future__ import annotations

import asyncio
from typing import Literal

from knowledge.config import SearchConfig
from knowledge.embedding import Embedder
from knowledge.errors import QueryError
from knowledge.index.base import KnowledgeIndex
from knowledge.models import Hit, SearchFilters, SearchQuery

Mode = Literal["hybrid", "vector", "keyword"]
MODES: tuple[Mode, ...] = ("hybrid", "vector", "keyword")
MAX_QUERY_CHARS = 4000


class KnowledgeSearch:
    def __init__(self, index: KnowledgeIndex, embedder: Embedder, config: SearchConfig) -> None:
        self.index = index
        self.embedder = embedder
        self.config = config

    async def search(
        self,
        text: str,
        *,
        k: int | None = None,
        filters: SearchFilters | None = None,
        mode: Mode = "hybrid",
        alpha: float | None = None,
    ) -> list[Hit]:
        """The best `k` chunks for `text`, best first, within `filters`.

        Very long queries are cut to their first MAX_QUERY_CHARS characters (the embedding
        model reads only its first few hundred tokens anyway).
        """
        if mode not in MODES:
            raise QueryError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        query = " ".join(text.split())[:MAX_QUERY_CHARS]
        if not query:
            raise QueryError("the query is empty")
        k = k or self.config.k
        if k < 1:
            raise QueryError("k must be at least 1")
        vector = await asyncio.to_thread(self.embedder.embed_query, query)
        return await self.index.search(
            SearchQuery(
                text=query,
                vector=vector.tolist(),
                k=k,
                mode=mode,
                alpha=self.config.alpha if alpha is None else alpha,
                fusion=self.config.fusion,
                candidates=max(self.config.candidates, k),
                filters=filters or SearchFilters(),
            )
        )
