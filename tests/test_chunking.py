"""Chunks follow the document's structure and stay within the embedding model's budget."""

from __future__ import annotations

import itertools
import re

from knowledge.chunking import Chunker
from knowledge.config import ChunkingConfig
from knowledge.models import Section


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def test_chunks_never_exceed_the_budget_and_lose_no_words(embedder):
    chunker = Chunker(embedder.count_tokens, ChunkingConfig(max_tokens=60, overlap_tokens=15))
    paragraphs = [
        " ".join(
            f"Sentence {p}.{s} explains the expense rule number {p * 10 + s}."
            for s in range(1 + p % 5)
        )
        for p in range(20)
    ]
    section = Section(("Policy", "Expenses"), "\n\n".join(paragraphs))
    chunks = chunker.chunk([section])
    assert len(chunks) > 3
    assert all(
        c.token_count <= 60 and embedder.count_tokens(c.text) == c.token_count for c in chunks
    )
    covered = set()
    for c in chunks:
        covered |= set(words(c.text))
    assert set(words(section.text)) <= covered
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_consecutive_chunks_overlap(embedder):
    chunker = Chunker(embedder.count_tokens, ChunkingConfig(max_tokens=40, overlap_tokens=20))
    text = "\n\n".join(f"Fact {i}: the code for room {i} is {1000 + i}." for i in range(12))
    chunks = chunker.chunk([Section(("Rooms",), text)])
    for before, after in itertools.pairwise(chunks):
        last_para = before.text.split("\n\n")[-1]
        assert after.text.startswith(last_para), (before.text, after.text)


def test_sections_are_never_mixed_and_keep_their_heading_path(embedder):
    chunker = Chunker(embedder.count_tokens, ChunkingConfig(max_tokens=200, overlap_tokens=20))
    chunks = chunker.chunk(
        [
            Section(("Guide", "Install"), "Install NetGate."),
            Section(("Guide", "Connect"), "Connect to vpn."),
        ]
    )
    assert [(c.heading_path, c.text) for c in chunks] == [
        (("Guide", "Install"), "Install NetGate."),
        (("Guide", "Connect"), "Connect to vpn."),
    ]
    assert chunks[1].heading == "Guide > Connect"


def test_a_sentence_longer_than_the_budget_is_split_at_words(embedder):
    chunker = Chunker(embedder.count_tokens, ChunkingConfig(max_tokens=32, overlap_tokens=0))
    run_on = " ".join(f"item{i}" for i in range(200))  # no sentence ends at all
    chunks = chunker.chunk([Section((), run_on)])
    assert len(chunks) > 5 and all(c.token_count <= 32 for c in chunks)
    assert " ".join(c.text for c in chunks).split() == run_on.split()


def test_sentences_of_a_split_paragraph_rejoin_with_spaces(embedder):
    chunker = Chunker(embedder.count_tokens, ChunkingConfig(max_tokens=30, overlap_tokens=0))
    para = " ".join(f"Rule {i} says keep receipts for {i} years." for i in range(8))
    chunks = chunker.chunk([Section((), para)])
    assert len(chunks) > 1 and all("\n" not in c.text for c in chunks)
