"""Reranking: a second look at the best fused candidates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Reranker(Protocol):
    @property
    def name(self) -> str: ...

    async def score(self, question: str, passages: Sequence[str]) -> list[float]: ...
