"""Telling a broken model output from an answer, whole and while it is being written."""

from __future__ import annotations

import pytest

from training.config import DEFAULT_SYSTEM_PROMPT
from training.serving.degeneration import OutputGuard, degeneration

PASSAGE = (
    "Employees in Portugal get 25 working days of paid vacation per calendar year. Unused days "
    "may be carried over until the end of April of the next year, with the manager's approval."
)
OTHER = "Passwords are reset at the KeyDesk kiosk on the second floor, with a one-time code."
QUESTION = "How many vacation days do I get in Portugal?"
USER = f"Context passages:\n[1] Vacation › Portugal\n{PASSAGE}\n[2] IT › Passwords\n{OTHER}\n\n"
USER += f"Question: {QUESTION}\nAnswer from the passages above."
INSTRUCTIONS = (DEFAULT_SYSTEM_PROMPT, USER)


def judge(text: str) -> str | None:
    return degeneration(text, instructions=INSTRUCTIONS, passages=(PASSAGE, OTHER))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("1.", "too_short"),
        ("- ", "too_short"),
        ("**", "too_short"),
        ("1. 2. 3.", "too_short"),
        ("a", "too_short"),
        ("[1]", "too_short"),
        ("You get 25 days of vacation [1]. " * 5, "loop"),
        (" ".join(["the office opens at nine and closes at six every single day"] * 3), "loop"),
        ("Yes " * 12, "loop"),
        ("Portugal: 25 days [1]. " + "and and " * 6, "loop"),
        # A loop that numbers its own lines (the demo model did this on a password question).
        (
            "5. Enter your password.\n"
            + "".join(f"{n}. Click **Next** and create a new keychain.\n" for n in range(6, 12)),
            "loop",
        ),
        (DEFAULT_SYSTEM_PROMPT, "echo"),
        ("Answer the question using only the numbered context passages. Cite them.", "echo"),
        (f"Question: {QUESTION}", "echo"),
    ],
)
def test_broken_outputs_are_told_apart(text: str, reason: str) -> None:
    assert judge(text) == reason


@pytest.mark.parametrize(
    "text",
    [
        "Yes, 25 days [1].",
        "9 minutes [1].",
        "No.",
        "Use the self-service portal.",
        "You get 25 working days of paid vacation per year in Portugal [1].",
        # A passage copied, cited or not: grounded, only plain.
        f"{PASSAGE} [1]",
        PASSAGE,
        f"  {OTHER}\n",
        "Employees in Portugal get 25 working days of paid vacation per calendar year [1]; unused "
        "days may be carried over until April.",
        "The passages do not say, so I don't know.",
        "1. Go to KeyDesk.\n2. Enter the code.\n3. Choose a new password.\n4. Log in again.",
        "Portugal 25 days, Spain 22 days, France 25 days, Canada 15 days [1].",
        "| Country | Days |\n|---|---|\n| Portugal | 25 |\n| Spain | 22 |\n| France | 25 |",
        "Very, very, very good: 25 days [1].",
    ],
)
def test_real_answers_pass_however_short(text: str) -> None:
    assert judge(text) is None


def feed_words(guard: OutputGuard, text: str) -> list[str]:
    """Feed `text` a word at a time, as a model streams it; what was released at each step."""
    shown = []
    for i, word in enumerate(text.split(" ")):
        shown.append(guard.feed(word if i == 0 else f" {word}"))
        if guard.reason is not None:
            break
    return shown


def test_an_answer_is_held_back_until_clearly_one_then_streams() -> None:
    guard = OutputGuard(instructions=INSTRUCTIONS, passages=(PASSAGE,))
    text = "You get 25 working days of paid vacation per year in Portugal [1]."
    shown = feed_words(guard, text)
    assert shown[0] == "" and guard.released
    first = next(i for i, s in enumerate(shown) if s)
    assert shown[first] == " ".join(text.split(" ")[: first + 1])  # all that was held, at once
    assert all(shown[first + 1 :])  # then each piece as it comes
    assert guard.finish() == "" and guard.reason is None
    assert "".join(shown) == text


def test_a_short_answer_is_released_whole_at_the_end() -> None:
    guard = OutputGuard(instructions=INSTRUCTIONS, passages=(PASSAGE,))
    assert not any(feed_words(guard, "Yes, 25 days [1]."))
    assert guard.finish() == "Yes, 25 days [1]." and guard.reason is None


def test_a_bare_list_marker_is_never_released() -> None:
    guard = OutputGuard(instructions=INSTRUCTIONS, passages=(PASSAGE,))
    assert not any(feed_words(guard, "1."))
    assert guard.finish() == "" and guard.reason == "too_short" and not guard.released


def test_the_prompt_echoed_is_held_back_while_it_is_written() -> None:
    guard = OutputGuard(instructions=INSTRUCTIONS, passages=(PASSAGE,))
    assert not any(feed_words(guard, DEFAULT_SYSTEM_PROMPT))
    assert guard.finish() == "" and guard.reason == "echo"


def test_a_loop_stops_the_stream_as_soon_as_it_shows() -> None:
    guard = OutputGuard(instructions=INSTRUCTIONS, passages=(PASSAGE,))
    sentence = "Employees get vacation days every year."
    shown = feed_words(guard, " ".join([sentence] * 50))
    assert guard.reason == "loop"
    # Stopped during the third time round (plus the word that may still be growing).
    assert len(shown) <= 3 * len(sentence.split(" ")) + 1
    assert guard.finish() == ""


def test_a_loop_before_anything_was_shown_is_never_shown() -> None:
    guard = OutputGuard(instructions=INSTRUCTIONS, passages=(PASSAGE,))
    assert not any(feed_words(guard, "1. 1. 1. 1. 1. 1. 1. 1. 1. 1. 1. 1. 1. 1. 1. 1."))
    assert guard.reason == "loop" and not guard.released
