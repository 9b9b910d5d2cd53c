"""Searching the knowledge: embed the query, ask the index, return ranked hits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import numpy as np

from base.errors import QueryError
from knowledge.config import SearchConfig
from knowledge.embedding import Embedder
from knowledge.index.base import KnowledgeIndex
from knowledge.models import Hit, SearchFilters, SearchQuery

Mode = Literal["hybrid", "vector", "keyword"]
MODES: tuple[Mode, ...] = ("hybrid", "vector", "keyword")
MAX_QUERY_CHARS = 4000


@dataclass(frozen=True, slots=True)
class Retrieval:
    """Hits for a question, plus how close the closest chunk is by meaning.

    `similarity` is the cosine similarity of the query to the best chunk by vector search (in
    [-1, 1], the same scale on every backend); fused hybrid scores are rank-based and say
    nothing about whether anything relevant was found at all, so abstention looks at this."""

    hits: list[Hit]
    similarity: float


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
        """The best `k` chunks for `text`, best first, within `filters`."""
        query = _normalise(text)
        vector = await asyncio.to_thread(self.embedder.embed_query, query)
        return await self.index.search(self._query(query, vector, k, filters, mode, alpha))

    async def embed(self, text: str) -> np.ndarray:
        """The query embedding of `text` (as `search` would compute it)."""
        return await asyncio.to_thread(self.embedder.embed_query, _normalise(text))

    async def retrieve(
        self,
        text: str,
        *,
        vector: np.ndarray | None = None,
        k: int | None = None,
        filters: SearchFilters | None = None,
    ) -> Retrieval:
        """Hybrid hits for `text` and the best chunk's cosine similarity, in one pass (the
        query is embedded once, or not at all when `vector` is given)."""
        query = _normalise(text)
        if vector is None:
            vector = await asyncio.to_thread(self.embedder.embed_query, query)
        hybrid = self._query(query, vector, k, filters, "hybrid", None)
        nearest = self._query(query, vector, 1, filters, "vector", None)
        hits, best = await asyncio.gather(self.index.search(hybrid), self.index.search(nearest))
        return Retrieval(hits=hits, similarity=best[0].score if best else -1.0)

    def _query(
        self,
        text: str,
        vector: np.ndarray,
        k: int | None,
        filters: SearchFilters | None,
        mode: Mode,
        alpha: float | None,
    ) -> SearchQuery:
        if mode not in MODES:
            raise QueryError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        k = k or self.config.k
        if k < 1:
            raise QueryError("k must be at least 1")
        return SearchQuery(
            text=text,
            vector=vector.tolist(),
            k=k,
            mode=mode,
            alpha=self.config.alpha if alpha is None else alpha,
            fusion=self.config.fusion,
            candidates=max(self.config.candidates, k),
            filters=filters or SearchFilters(),
        )


def _normalise(text: str) -> str:
    """Whitespace collapsed; very long queries cut to MAX_QUERY_CHARS characters (the embedding
    model reads only its first few hundred tokens anyway)."""
    query = " ".join(text.split())[:MAX_QUERY_CHARS]
    if not query:
        raise QueryError("the query is empty")
    return query
