"""Searching the knowledge: embed the query, ask the index, return ranked hits."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np

from base.errors import QueryError
from knowledge import fusion
from knowledge.answerability import Candidate, Signals, compute_signals, content_terms
from knowledge.config import SearchConfig
from knowledge.embedding import Embedder
from knowledge.index.base import KnowledgeIndex
from knowledge.models import Hit, SearchFilters, SearchQuery
from knowledge.reranking import Reranker, passage_text
from knowledge.vocabulary import Frequencies, Vocabulary

Mode = Literal["hybrid", "vector", "keyword"]
T = TypeVar("T")
MODES: tuple[Mode, ...] = ("hybrid", "vector", "keyword")
MAX_QUERY_CHARS = 4000


NEAREST = 10  # vector hits read for the answerability signals
POOL_PER_PASSAGE = 4  # hybrid candidates fetched per passage wanted (room for the cap)


@dataclass(frozen=True, slots=True)
class Retrieval:
    """What a question retrieves: the passages' chunks, every candidate in order, and what
    the retrieval says about whether an answer is there.

    `hits`: the chunks the answer is written from, best first, at most `search.per_document`
    from any one document. `ranked`: every candidate, best first (fused, then reranked), which
    `eval retrieval` scores. `similarity` is the cosine similarity of the query to the best
    chunk by vector search (in [-1, 1], the same scale on every backend); `signals` are the
    answerability classifier's inputs."""

    hits: list[Hit]
    similarity: float
    signals: Signals
    ranked: list[Hit]
    rerank_s: float = 0.0
    # Documents the vocabulary counts in this scope: 0 where the index was built before the
    # vocabulary was kept (the next sync fills it), and the signals that read it are void.
    vocabulary_documents: int = 0


class KnowledgeSearch:
    def __init__(
        self,
        index: KnowledgeIndex,
        embedder: Embedder,
        config: SearchConfig,
        vocabulary: Vocabulary | None = None,
        reranker: Reranker | None = None,
        rerank_depth: int = 20,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.config = config
        self.vocabulary = vocabulary
        self.reranker = reranker
        self.rerank_depth = rerank_depth

    async def search(
        self,
        text: str,
        *,
        k: int | None = None,
        filters: SearchFilters | None = None,
        mode: Mode = "hybrid",
        alpha: float | None = None,
    ) -> list[Hit]:
        """The best `k` chunks for `text`, best first, within `filters`. Hybrid fuses the
        vector and keyword candidates as `retrieve` does (no reranking, no cap)."""
        query = _normalise(text)
        vector = await asyncio.to_thread(self.embedder.embed_query, query)
        if mode != "hybrid":
            return await self.index.search(self._query(query, vector, k, filters, mode, alpha))
        k = k or self.config.k
        if k < 1:
            raise QueryError("k must be at least 1")
        nearest, keyword = await self._candidates(query, vector, k, filters)
        weight = self.config.alpha if alpha is None else alpha
        return fusion.fuse(nearest, keyword, fusion=self.config.fusion, alpha=weight)[:k]

    async def _candidates(
        self, query: str, vector: np.ndarray, k: int, filters: SearchFilters | None
    ) -> tuple[list[Hit], list[Hit]]:
        """Vector and keyword search's best chunks (`search.candidates` of each, or `k`)."""
        depth = max(k, self.config.candidates)
        nearest, keyword = await asyncio.gather(
            self.index.search(self._query(query, vector, depth, filters, "vector", None)),
            self.index.search(self._query(query, vector, depth, filters, "keyword", None)),
        )
        return nearest, keyword

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
        pool: int | None = None,
    ) -> Retrieval:
        """The passages for `text` as serving uses them: hybrid candidates, reranked when a
        reranker is configured, at most `per_document` chunks of one document; with the
        answerability signals. The query is embedded once (or not at all when `vector` is
        given); both searches and the vocabulary lookup run together. `pool`: how many candidates to rank
        (default: enough for the cap and the reranker)."""
        query = _normalise(text)
        k = k or self.config.k
        if vector is None:
            vector = await asyncio.to_thread(self.embedder.embed_query, query)
        pool = max(
            pool or 0, k * POOL_PER_PASSAGE, self.rerank_depth if self.reranker else 0, NEAREST
        )
        # The two retrievers' candidates, fused here (as the LanceDB backend fuses them): their
        # own lists also give the answerability signals, without searching twice.
        (nearest, keyword), frequencies = await asyncio.gather(
            self._candidates(query, vector, pool, filters),
            self._frequencies(query, filters or SearchFilters()),
        )
        ranked = fusion.fuse(nearest, keyword, fusion=self.config.fusion, alpha=self.config.alpha)[
            :pool
        ]
        rerank_score: float | None = None
        rerank_s = 0.0
        if self.reranker is not None and ranked:
            started = time.perf_counter()
            head = ranked[: self.rerank_depth]
            scores = await self.reranker.score(query, [passage_text(h) for h in head])
            order = sorted(range(len(head)), key=lambda i: -scores[i])
            ranked = [head[i] for i in order] + ranked[len(head) :]
            rerank_score = scores[order[0]]
            rerank_s = time.perf_counter() - started
        hits = cap_per_document(ranked, self.config.per_document, k)
        signals = compute_signals(
            query,
            nearest=[Candidate(h.doc_id, h.text, h.score) for h in nearest[:NEAREST]],
            keyword=[Candidate(h.doc_id, h.text, h.score) for h in keyword[:NEAREST]],
            passages=[Candidate(h.doc_id, passage_text(h), h.score) for h in hits],
            frequencies=frequencies,
            rerank=rerank_score,
        )
        return Retrieval(
            hits=hits,
            similarity=nearest[0].score if nearest else -1.0,
            signals=signals,
            ranked=ranked,
            rerank_s=rerank_s,
            vocabulary_documents=frequencies.documents,
        )

    def vocabulary_size(self) -> int:
        """How many documents the vocabulary counts (all of them, whoever may see them)."""
        return self.vocabulary.frequencies((), None).documents if self.vocabulary else 0

    async def _frequencies(self, query: str, filters: SearchFilters) -> Frequencies:
        if self.vocabulary is None:
            return Frequencies(0, {})
        return await asyncio.to_thread(
            self.vocabulary.frequencies, content_terms(query), filters.scope
        )

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


def cap_per_document(hits: Sequence[Hit], cap: int, k: int) -> list[Hit]:
    """The first `k` hits, taking at most `cap` from any one document (so that the passages
    cover more than the best document when others rank close behind)."""
    return first_per_key(hits, lambda hit: (hit.source, hit.doc_id), cap, k)


def first_per_key(items: Sequence[T], key: Callable[[T], Hashable], cap: int, k: int) -> list[T]:
    """The first `k` of `items`, taking at most `cap` of those that share a key."""
    taken: Counter[Hashable] = Counter()
    out: list[T] = []
    for item in items:
        group = key(item)
        if taken[group] < cap:
            taken[group] += 1
            out.append(item)
            if len(out) == k:
                break
    return out


def _normalise(text: str) -> str:
    """Whitespace collapsed; very long queries cut to MAX_QUERY_CHARS characters (the embedding
    model reads only its first few hundred tokens anyway)."""
    query = " ".join(text.split())[:MAX_QUERY_CHARS]
    if not query:
        raise QueryError("the query is empty")
    return query
