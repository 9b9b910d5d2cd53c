"""Prompt assembly with the real Phi-3 tokenizer and chat template, and citation handling."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from training.config import PromptConfig
from training.serving.citations import CitationRewriter, cited_numbers
from training.serving.generation import Message
from training.serving.prompting import Passage, PromptBuilder, Turn


@pytest.fixture(scope="module")
def tokenizer(tiny_phi3: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_phi3)


def builder(tokenizer, *, window: int = 4096, max_new: int = 256, **config) -> PromptBuilder:
    return PromptBuilder(
        PromptConfig(**config),
        count_tokens=lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]),
        render=lambda messages: tokenizer.apply_chat_template(
            [m.as_dict() for m in messages], tokenize=False, add_generation_prompt=True
        ),
        context_window=window,
        max_new_tokens=max_new,
    )


def passage(n: int, words: int = 40) -> Passage:
    return Passage(
        title=f"Doc {n}", heading=f"Section {n}", uri=f"file:///doc{n}.md", text=f"fact{n} " * words
    )


def test_phi3_template_drops_system_so_instructions_go_into_the_user_turn(tokenizer) -> None:
    b = builder(tokenizer, system_prompt="Answer like a pirate.")
    assert b.system_role_supported is False
    prompt = b.build("How do I reset my password?", [passage(1)])
    rendered = b.render(prompt.messages)
    assert "Answer like a pirate." in rendered  # not silently lost
    assert rendered.startswith("<s><|user|>\n") and rendered.endswith("<|assistant|>\n")
    assert "[1] Doc 1 › Section 1" in rendered
    assert "How do I reset my password?" in rendered


def test_passages_are_numbered_in_order_and_kept_within_their_budget(tokenizer) -> None:
    b = builder(tokenizer, context_tokens=300)
    passages = [passage(n, words=50) for n in range(1, 8)]
    prompt = b.build("question?", passages)
    shown = prompt.passages
    assert 0 < len(shown) < len(passages)
    assert shown == tuple(passages[: len(shown)])  # best first, nothing reordered
    used = sum(b.count_tokens(f"[{i}] {p.label}\n{p.text}") for i, p in enumerate(shown, 1))
    assert used <= 300
    text = prompt.messages[-1].content
    for i, p in enumerate(shown, 1):
        assert f"[{i}] {p.label}" in text
    assert prompt.passages_dropped == len(passages) - len(shown)


def test_a_large_passage_is_skipped_for_a_smaller_one_that_fits(tokenizer) -> None:
    b = builder(tokenizer, context_tokens=200)
    prompt = b.build("q", [passage(1, words=10), passage(2, words=400), passage(3, words=10)])
    assert [p.title for p in prompt.passages] == ["Doc 1", "Doc 3"]


def test_history_keeps_the_latest_turns_within_budget_and_drops_old_citations(tokenizer) -> None:
    b = builder(tokenizer, history_tokens=60)
    history = [
        Turn("user", "first question " * 20),
        Turn("assistant", "first answer " * 20),
        Turn("user", "How many vacation days in Portugal?"),
        Turn("assistant", "You get 25 days [1]."),
    ]
    prompt = b.build("And in Canada?", [passage(1)], history)
    roles = [m.role for m in prompt.messages]
    assert roles == ["user", "assistant", "user"]  # the old, long turns are gone
    assert prompt.history_turns == 2
    assert prompt.messages[1].content == "You get 25 days."  # [1] meant another passage
    assert "And in Canada?" in prompt.messages[-1].content


def test_whole_prompt_leaves_room_for_the_answer_in_a_small_window(tokenizer) -> None:
    b = builder(tokenizer, window=400, max_new=200, context_tokens=2000)
    prompt = b.build("q", [passage(n, words=30) for n in range(1, 10)])
    assert prompt.tokens <= 400 - 200
    assert prompt.passages and prompt.passages_dropped > 0


def test_a_very_long_question_is_cut_to_its_budget(tokenizer) -> None:
    b = builder(tokenizer, question_tokens=50)
    prompt = b.build("why " * 500, [passage(1)])
    assert b.count_tokens(prompt.question) <= 52
    assert prompt.notes == ["question cut to its token budget"]


def test_a_training_example_appends_the_answer(tokenizer) -> None:
    b = builder(tokenizer)
    prompt = b.build("q", [passage(1)], answer="It is fact1 [1].")
    assert prompt.messages[-1] == Message("assistant", "It is fact1 [1].")


@pytest.mark.parametrize(
    ("text", "shown", "order", "invalid"),
    [
        (
            "Reset it in KeyDesk [3]. Call IT [1].",
            "Reset it in KeyDesk [1]. Call IT [2].",
            [3, 1],
            0,
        ),
        ("See [9].", "See.", [], 1),
        ("Both [2, 7] apply [2].", "Both [1] apply [1].", [2], 1),
        ("A list [x] and [ 1 ] stay; [1][2]", "A list [x] and [ 1 ] stay; [1][2]", [1, 2], 0),
        ("Cut off by the end [2", "Cut off by the end", [], 0),
        ("An array a[i] or [", "An array a[i] or [", [], 0),
    ],
)
def test_citations_are_renumbered_and_invalid_ones_removed(
    text: str, shown: str, order: list[int], invalid: int
) -> None:
    rewriter = CitationRewriter(passages=3)
    assert rewriter.rewrite(text) == shown
    assert rewriter.order == order
    assert rewriter.invalid == invalid


def test_streamed_citations_equal_the_whole_text_however_the_deltas_split() -> None:
    text = "Go to KeyDesk [2][9], then reset [1, 2]. Codes expire [3]; see [12] or [2]."
    whole = CitationRewriter(passages=3).rewrite(text)
    rng = random.Random(7)
    for _ in range(200):
        rewriter = CitationRewriter(passages=3)
        out, i = [], 0
        while i < len(text):
            j = i + rng.randint(1, 4)
            out.append(rewriter.feed(text[i:j]))
            i = j
        out.append(rewriter.finish())
        assert "".join(out) == whole
    assert "[9]" not in whole and "[12]" not in whole
    assert cited_numbers(whole) == [1, 2, 3]
