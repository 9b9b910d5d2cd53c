"""How answers look in Slack: mrkdwn conversion, splitting long answers, sources, feedback."""

from __future__ import annotations

import re
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from bot.core.question import Answer, Source, Timings
from bot.slack.ids import FEEDBACK_ACTION, FEEDBACK_BLOCK
from bot.slack.render import (
    MAX_BLOCKS,
    MESSAGE_TEXT_LIMIT,
    SECTION_LIMIT,
    answer_messages,
    curated_block,
    feedback_vote,
    footer_blocks,
    progress_text,
    source_link,
    sources_block,
    split_text,
    to_mrkdwn,
)

HANDBOOK = Source(1, "Handbook", "https://wiki.example.com/handbook?a=1&b=2", "Passwords")
LOCAL = Source(2, "Policies <draft>", "file:///srv/docs/policies.md", "")


def make_answer(text: str = "Reset it in the portal [1].", **changes: Any) -> Answer:
    fields: dict[str, Any] = {
        "id": "ans-42",
        "question": "How do I reset my password?",
        "text": text,
        "sources": (HANDBOOK,),
        "abstained": False,
        "curated": False,
        "model": "tiny",
        "adapter": None,
        "timings": Timings(),
    }
    fields.update(changes)
    return Answer(**fields)


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


# --- Markdown -> mrkdwn ---------------------------------------------------------------------


def test_emphasis_becomes_slack_emphasis() -> None:
    assert to_mrkdwn("**bold** and __also__") == "*bold* and *also*"
    assert to_mrkdwn("*italic* and _too_") == "_italic_ and _too_"
    assert to_mrkdwn("~~gone~~ but 2 * 3 * 4 stays") == "~gone~ but 2 * 3 * 4 stays"
    assert to_mrkdwn("**Note:** use *this*") == "*Note:* use _this_"


def test_links_become_slack_links() -> None:
    assert to_mrkdwn("See [the portal](https://it.example.com/reset).") == (
        "See <https://it.example.com/reset|the portal>."
    )
    assert to_mrkdwn("<https://example.com>") == "<https://example.com>"
    assert to_mrkdwn("[q](https://x.com/?a=1&b=2)") == "<https://x.com/?a=1&amp;b=2|q>"


def test_headings_become_bold_lines() -> None:
    assert to_mrkdwn("# Setup\n## Step **two**\n###### Tiny ##") == "*Setup*\n*Step two*\n*Tiny*"
    assert to_mrkdwn("#hashtag") == "#hashtag"


def test_bullets_become_dots_and_numbered_lists_stay() -> None:
    markdown = "- one\n* two\n+ three\n  - nested\n1. first\n2. second"
    assert to_mrkdwn(markdown) == "• one\n• two\n• three\n  • nested\n1. first\n2. second"
    assert to_mrkdwn("---\n* * *") == "---\n* * *"  # rules are not bullets


def test_code_is_left_as_written() -> None:
    markdown = "Run `**not bold**` then:\n```python\n# not a heading\n- not a bullet **x**\n```"
    assert to_mrkdwn(markdown) == (
        "Run `**not bold**` then:\n```\n# not a heading\n- not a bullet **x**\n```"
    )
    assert to_mrkdwn("**use `a_b_c` here**") == "*use `a_b_c` here*"


def test_open_code_block_is_closed() -> None:
    assert to_mrkdwn("```\nprint(1)") == "```\nprint(1)\n```"


def test_control_characters_are_escaped_so_nobody_gets_pinged() -> None:
    assert to_mrkdwn("a & b <!channel> c > d") == "a &amp; b &lt;!channel&gt; c &gt; d"
    # Slack parses <...> inside code too, so code is escaped (only), not left raw.
    assert to_mrkdwn("`<@U123>`\n```\nx < y\n```") == "`&lt;@U123&gt;`\n```\nx &lt; y\n```"
    assert to_mrkdwn("[A & B](https://x.com)") == "<https://x.com|A &amp; B>"


def test_citation_markers_are_kept() -> None:
    assert to_mrkdwn("Reset it [1]. Or ask IT [1, 3].") == "Reset it [1]. Or ask IT [1, 3]."


# --- Splitting ------------------------------------------------------------------------------


def test_split_prefers_paragraphs_then_lines_then_sentences_then_spaces() -> None:
    assert split_text("aaaa bbbb\ncccc\n\ndddd", 16) == ["aaaa bbbb\ncccc", "dddd"]
    assert split_text("aaaa bbbb\ncccc dddd", 16) == ["aaaa bbbb", "cccc dddd"]
    assert split_text("One two. Three four five", 16) == ["One two.", "Three four five"]
    assert split_text("one two three four", 10) == ["one two", "three four"]
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


def test_split_short_and_empty_texts() -> None:
    assert split_text("short", 100) == ["short"]
    assert split_text("\n\n  \n", 100) == []


def test_split_avoids_code_blocks_and_links() -> None:
    # The only paragraph break is inside the code block: a line break outside it wins.
    text = "Intro line.\n```\nline 1\n\nline 2\n```\nafter"
    assert split_text(text, 30) == ["Intro line.", "```\nline 1\n\nline 2\n```\nafter"]
    linked = "intro words <https://x.com/a|the link text> end"
    assert split_text(linked, 40) == ["intro words", "<https://x.com/a|the link text> end"]


def test_a_code_block_longer_than_the_limit_is_closed_and_reopened() -> None:
    code = "\n".join(f"value_{i} = {i}" for i in range(200))
    pieces = split_text(f"```\n{code}\n```", 500)
    assert len(pieces) > 1
    for piece in pieces:
        assert len(piece) <= 500
        assert piece.startswith("```\n") and piece.endswith("\n```")
    assert squash("".join(p.removeprefix("```\n").removesuffix("\n```") for p in pieces)) == (
        squash(code)
    )


# --- Messages -------------------------------------------------------------------------------


def long_answer(chars: int = 30_000) -> str:
    """Paragraphs of 3 to 69 sentences: some longer than a section, which must then be cut."""
    paragraphs: list[str] = []
    while len("\n\n".join(paragraphs)) < chars:
        n = len(paragraphs) + 1
        sentence = f"Sentence {n} explains **step {n}** of the procedure [1]. "
        paragraphs.append((sentence * (3 + n * 7 % 67)).strip())
    return "\n\n".join(paragraphs)


def test_a_long_answer_is_split_within_slack_limits_and_keeps_all_text() -> None:
    markdown = long_answer()
    messages = answer_messages(make_answer(markdown))
    assert len(messages) >= len(markdown) // MESSAGE_TEXT_LIMIT + 1
    texts = []
    for message in messages:
        assert len(message.blocks) <= MAX_BLOCKS
        assert 0 < len(message.text) <= 3000
        sections = [b["text"]["text"] for b in message.blocks if b["type"] == "section"]
        assert all(b["text"]["type"] == "mrkdwn" for b in message.blocks if b["type"] == "section")
        assert all(0 < len(s) <= SECTION_LIMIT for s in sections)
        assert sum(len(s) for s in sections) <= MESSAGE_TEXT_LIMIT
        texts.append("".join(sections))
    assert squash("".join(texts)) == squash(to_mrkdwn(markdown))
    # The footer (sources and buttons) comes once, under the last message.
    footers = [[b for b in m.blocks if b["type"] != "section"] for m in messages]
    assert all(f == [] for f in footers[:-1])
    assert [b["type"] for b in footers[-1]] == ["context", "context_actions"]


def test_a_short_answer_is_one_message_with_its_footer() -> None:
    [message] = answer_messages(make_answer("**Yes**, see [1]."))
    assert message.text == "*Yes*, see [1]."
    assert message.blocks[0] == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": message.text},
    }
    assert message.blocks[1:] == footer_blocks(make_answer())


def test_feedback_can_be_left_out() -> None:
    [message] = answer_messages(make_answer(), feedback=False)
    assert all(b["type"] != "context_actions" for b in message.blocks)


def test_progress_text_is_mrkdwn_cut_to_the_message_limit() -> None:
    assert progress_text("So far **this**") == "So far *this*"
    assert progress_text("```\nhalf a code block") == "```\nhalf a code block\n```"
    long = progress_text(long_answer(20_000))
    assert len(long) <= MESSAGE_TEXT_LIMIT and long.endswith(" …")
    assert to_mrkdwn(long_answer(20_000)).startswith(long.removesuffix(" …"))


# --- Footer ---------------------------------------------------------------------------------


def test_sources_link_only_to_web_pages() -> None:
    assert source_link(HANDBOOK) == (
        "[1] <https://wiki.example.com/handbook?a=1&amp;b=2|Handbook › Passwords>"
    )
    assert source_link(LOCAL) == "[2] Policies &lt;draft&gt;"


def test_sources_block_lists_every_source_within_context_limits() -> None:
    block = sources_block([HANDBOOK, LOCAL])
    assert block is not None and block["type"] == "context"
    assert block["block_id"] == "expertbot_sources"
    assert "\n".join(e["text"] for e in block["elements"]) == (
        f"{source_link(HANDBOOK)}\n{source_link(LOCAL)}"
    )
    many = [Source(n, "T" * 250, f"https://x.com/{n}", "H" * 40) for n in range(1, 61)]
    block = sources_block(many)
    assert block is not None
    assert len(block["elements"]) <= 10
    assert all(len(e["text"]) <= 3000 for e in block["elements"])
    shown = "\n".join(e["text"] for e in block["elements"])
    assert all(f"[{n}] <https://x.com/{n}|" in shown for n in range(1, 61))
    assert sources_block([]) is None


@pytest.mark.parametrize(
    ("approved_by", "suffix"),
    [("U024BE7LH", " (approved by <@U024BE7LH>)"), ("Ana & Bo", " (approved by Ana &amp; Bo)")],
)
def test_curated_answers_are_marked(approved_by: str, suffix: str) -> None:
    block = curated_block(make_answer(curated=True, approved_by=approved_by))
    assert block is not None
    assert block["elements"][0]["text"] == "✅ Expert-approved answer" + suffix
    assert footer_blocks(make_answer(curated=True))[0]["elements"][0]["text"] == (
        "✅ Expert-approved answer"
    )
    assert curated_block(make_answer()) is None


def test_feedback_buttons_are_slacks_feedback_buttons_carrying_the_answer_id() -> None:
    block = footer_blocks(make_answer(id="ans-7"))[-1]
    assert block["type"] == "context_actions" and block["block_id"] == FEEDBACK_BLOCK
    [buttons] = block["elements"]
    assert buttons["type"] == "feedback_buttons" and buttons["action_id"] == FEEDBACK_ACTION
    assert buttons["positive_button"]["value"] == "up:ans-7"
    assert buttons["negative_button"]["value"] == "down:ans-7"
    assert buttons["positive_button"]["text"]["text"] == "Helpful"
    # The shape slack_sdk's own Block Kit classes read and write back unchanged.
    assert Block.parse(block).to_dict() == block  # type: ignore[union-attr]
    assert feedback_vote("up:ans-7") == (True, "ans-7")
    assert feedback_vote("down:ans-7") == (False, "ans-7")
    assert feedback_vote("ans-7") is None and feedback_vote("up:") is None


def test_an_abstained_answer_has_no_sources_but_still_has_buttons() -> None:
    answer = make_answer("I don't know.", sources=(), abstained=True)
    [message] = answer_messages(answer)
    assert [b["type"] for b in message.blocks] == ["section", "context_actions"]
    assert all(b.get("block_id") != "expertbot_sources" for b in message.blocks)
