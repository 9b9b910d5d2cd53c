"""Fusing ranked lists from vector and keyword search into one ranking.

- Reciprocal rank fusion (RRF): score = Σ w / (k + rank). Robust to the two retrievers'
  incomparable score scales; `alpha` weights the vector side, `1 - alpha` the keyword side.
- Weighted: each list's scores min-max normalised to [0, 1], then alpha·vector + (1-alpha)·keyword
  (what Weaviate calls relativeScoreFusion).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from knowledge.models import Hit

RRF_K = 60


def fuse(vector: Sequence[Hit], keyword: Sequence[Hit], *, fusion: str, alpha: float) -> list[Hit]:
    """One ranking of the hits of both retrievers (each best first), scored by `fusion`
    ("rrf" or "weighted") with `alpha` the vector side's weight."""
    hits = {h.chunk_id: h for h in (*keyword, *vector)}
    if fusion == "weighted":
        fused = weighted(
            [(h.chunk_id, h.score) for h in vector],
            [(h.chunk_id, h.score) for h in keyword],
            alpha=alpha,
        )
    else:
        fused = reciprocal_rank(
            [h.chunk_id for h in vector], [h.chunk_id for h in keyword], alpha=alpha
        )
    return [dataclasses.replace(hits[chunk], score=score) for chunk, score in fused]


def reciprocal_rank(
    vector_ids: Sequence[str], keyword_ids: Sequence[str], *, alpha: float, k: int = RRF_K
) -> list[tuple[str, float]]:
    scores: dict[str, float] = {}
    for weight, ids in ((alpha, vector_ids), (1.0 - alpha, keyword_ids)):
        if weight <= 0:
            continue
        for rank, item in enumerate(ids):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank + 1)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def _normalise(scored: Sequence[tuple[str, float]]) -> dict[str, float]:
    if not scored:
        return {}
    values = [s for _, s in scored]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        return {item: 1.0 for item, _ in scored}
    return {item: (s - lo) / (hi - lo) for item, s in scored}


def weighted(
    vector: Sequence[tuple[str, float]], keyword: Sequence[tuple[str, float]], *, alpha: float
) -> list[tuple[str, float]]:
    """Inputs are (id, higher-is-better score) pairs."""
    nv, nk = _normalise(vector), _normalise(keyword)
    scores = {
        item: alpha * nv.get(item, 0.0) + (1.0 - alpha) * nk.get(item, 0.0)
        for item in nv.keys() | nk.keys()
    }
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
