"""Reranking: a model reads the question with each fused candidate and scores how likely the
passage answers it.

Two implementations behind `Reranker`: `CrossEncoderReranker` (any sentence-transformers
CrossEncoder, here) and the serving generator as a judge (`training/serving/judge.py`: knowledge
cannot import training, so the caller builds it and hands it to `make_reranker`).

Scores are comparable across questions (log-odds, mean log-probabilities), not normalised per
call: an answerability classifier reads them as a feature, and records the reranker's `name` so
that it is only used with the scores it was calibrated on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import structlog

from base.errors import ConfigError
from knowledge.config import RerankConfig
from knowledge.embedding import pick_device
from knowledge.models import Hit

log = structlog.get_logger(__name__)


@runtime_checkable
class Reranker(Protocol):
    @property
    def name(self) -> str:
        """What produces the scores, e.g. "cross-encoder:<model>" or "generator:<model>…": an
        answerability model records it and is only used with the same reranker."""
        ...

    async def score(self, question: str, passages: Sequence[str]) -> list[float]:
        """One score per passage, higher = more likely to answer the question; comparable
        across questions (a log-odds or a mean log-probability, not normalised per call)."""
        ...


def passage_text(hit: Hit) -> str:
    """What a reranker reads of a hit: where it is (title › heading), then its text, as the
    answering prompt shows it."""
    label = f"{hit.title} › {hit.heading}" if hit.heading else hit.title
    return f"{label}\n{hit.text.strip()}" if label else hit.text.strip()


async def rerank(reranker: Reranker, question: str, hits: Sequence[Hit]) -> list[tuple[Hit, float]]:
    """`hits` with their scores, best first (ties keep the fused order)."""
    scores = await reranker.score(question, [passage_text(hit) for hit in hits])
    scored = list(zip(hits, scores, strict=True))
    return sorted(scored, key=lambda pair: -pair[1])


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder, by name or folder: the question and each passage
    read together, in batches, in a thread. The score is the model's raw logit: the log-odds
    of relevance for one-label models (those trained with BCE, as the MS MARCO ones), or
    relevant minus not relevant for two-label ones. Passages beyond the model's length are cut
    by the CrossEncoder."""

    def __init__(self, config: RerankConfig) -> None:
        if not config.model:
            raise ConfigError("knowledge.rerank.model is not set: name a cross-encoder")
        import torch
        from sentence_transformers import CrossEncoder

        self._model_name = config.model
        self._batch_size = config.batch_size
        self._identity = torch.nn.Identity()
        try:
            self._model = CrossEncoder(
                config.model, device=pick_device(config.device), activation_fn=self._identity
            )
        except Exception as exc:
            raise ConfigError(_load_failure(config.model, exc)) from exc
        labels = self._model.num_labels
        if labels not in (1, 2):
            raise ConfigError(
                f"knowledge.rerank.model {config.model!r} has {labels} output labels; a reranker "
                "needs one relevance score (1 label) or not relevant / relevant (2)"
            )
        self._labels = labels
        self._cap_length()
        log.debug(
            "rerank.loaded",
            model=config.model,
            device=str(self._model.device),
            max_tokens=self._model.max_seq_length,
        )

    @property
    def name(self) -> str:
        return f"cross-encoder:{self._model_name}"

    async def score(self, question: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        pairs = [(question, passage) for passage in passages]
        return await asyncio.to_thread(self._predict, pairs)

    def _predict(self, pairs: list[tuple[str, str]]) -> list[float]:
        import numpy as np

        scores = np.asarray(
            self._model.predict(
                pairs,
                batch_size=self._batch_size,
                activation_fn=self._identity,
                convert_to_numpy=True,
                show_progress_bar=False,
            ),
            dtype=np.float64,
        )
        if self._labels == 2:
            scores = scores[:, 1] - scores[:, 0]
        return [float(s) for s in scores.reshape(-1)]

    def _cap_length(self) -> None:
        """Cut inputs at what the model's position embeddings hold, when the tokenizer does not
        say (a model saved without `model_max_length` would otherwise fail on a long passage)."""
        model: Any = self._model.model
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        limit = self._model.max_seq_length
        if isinstance(positions, int) and positions > 0 and (not limit or limit > positions):
            self._model.max_seq_length = positions


def make_reranker(config: RerankConfig, *, judge: Reranker | None = None) -> Reranker | None:
    """The configured reranker: None when off. For kind "generator" the caller passes the judge
    it built from the serving generator (training/serving/judge.py `GeneratorJudge`)."""
    if config.kind == "off":
        return None
    if config.kind == "cross-encoder":
        return CrossEncoderReranker(config)
    if judge is None:
        raise ConfigError(
            "knowledge.rerank.kind = generator needs the serving generator as its judge, and "
            "none was given; use rerank.kind = cross-encoder or off"
        )
    return judge


def _load_failure(model: str, exc: Exception) -> str:
    detail = str(exc).splitlines()[0][:200] if str(exc) else ""
    reason = f"{exc.__class__.__name__}: {detail}" if detail else exc.__class__.__name__
    if Path(model).exists():
        return (
            f"cannot load the cross-encoder from {model} (knowledge.rerank.model): {reason}; "
            "it must be a folder saved by sentence-transformers or transformers"
        )
    return (
        f"cannot load the cross-encoder {model!r} (knowledge.rerank.model): it is not a local "
        f"folder and could not be had from the Hugging Face hub ({reason}); download it where the "
        "hub is reachable and point knowledge.rerank.model at the folder"
    )
