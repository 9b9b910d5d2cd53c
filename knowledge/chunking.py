"""Splitting a parsed document into chunks by its structure, within a token budget.

Sections (heading paths) are never mixed in one chunk, so every chunk can cite its section.
Inside a section, paragraphs are packed greedily up to `max_tokens` (measured with the
embedding model's own tokenizer); an over-long paragraph is split at sentence ends, and an
over-long sentence at word boundaries. Consecutive chunks of one section overlap by up to
`overlap_tokens` of trailing text, so a fact cut at a boundary is whole in one of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from knowledge.config import ChunkingConfig
from knowledge.models import Chunk, Section

_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+(?=\S)")
_PARAGRAPH = re.compile(r"\n\s*\n")


class Chunker:
    def __init__(self, count_tokens: Callable[[str], int], config: ChunkingConfig) -> None:
        self._count = count_tokens
        self._max = config.max_tokens
        self._overlap = config.overlap_tokens

    def chunk(self, sections: Iterable[Section]) -> list[Chunk]:
        chunks: list[Chunk] = []
        for section in sections:
            for text, tokens in self._pack(self._units(section.text)):
                chunks.append(Chunk(len(chunks), section.heading_path, text, tokens))
        return chunks

    def _units(self, text: str) -> list[tuple[str, int]]:
        """Paragraphs, or pieces of them, each within the budget, with their token counts.

        A piece that continues the paragraph before it starts with a space; `_join` uses that
        to glue sentences back with a space and paragraphs with a blank line."""
        units: list[tuple[str, int]] = []
        for para in _PARAGRAPH.split(text):
            para = para.strip()
            if not para:
                continue
            n = self._count(para)
            if n <= self._max:
                units.append((para, n))
                continue
            pieces: list[tuple[str, int]] = []
            for sentence in _SENTENCE_END.split(para):
                m = self._count(sentence)
                if m <= self._max:
                    pieces.append((sentence, m))
                else:
                    pieces.extend(self._split_words(sentence))
            units.append(pieces[0])
            units.extend((" " + piece, m) for piece, m in pieces[1:])
        return units

    def _split_words(self, text: str) -> list[tuple[str, int]]:
        words = text.split()
        pieces: list[tuple[str, int]] = []
        start = 0
        while start < len(words):
            # Binary search for the longest run of words that fits.
            lo, hi = start + 1, len(words)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self._count(" ".join(words[start:mid])) <= self._max:
                    lo = mid
                else:
                    hi = mid - 1
            piece = " ".join(words[start:lo])
            pieces.append((piece, self._count(piece)))
            start = lo
        return pieces

    def _pack(self, units: list[tuple[str, int]]) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        current: list[tuple[str, int]] = []
        size = 0
        fresh = 0  # units in `current` that are not overlap carried from the previous chunk
        for unit in units:
            if current and size + unit[1] > self._max:
                if fresh:
                    out.append(self._join(current))
                current = self._tail(current)
                size = sum(n for _, n in current)
                fresh = 0
                while current and size + unit[1] > self._max:
                    size -= current.pop(0)[1]
            current.append(unit)
            size += unit[1]
            fresh += 1
        if current and fresh:
            out.append(self._join(current))
        return out

    def _tail(self, units: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The trailing units that fit in the overlap budget."""
        if self._overlap <= 0:
            return []
        tail: list[tuple[str, int]] = []
        size = 0
        for text, n in reversed(units):
            if size + n > self._overlap:
                break
            tail.insert(0, (text, n))
            size += n
        return tail

    def _join(self, units: list[tuple[str, int]]) -> tuple[str, int]:
        text = "".join(t if t.startswith(" ") else "\n\n" + t for t, _ in units).strip()
        return text, self._count(text)
