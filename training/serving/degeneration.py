"""Telling a broken model output from an answer: `OutputGuard`, `degeneration()`.

Small models sometimes write nothing usable: nothing at all, a bare list marker or a few
characters ("1."), a loop (a sentence again and again), or the prompt's instructions copied
back. None of it may reach the asker as an answer, not even while it is
being written. The guard holds the text back until it is clearly an answer, stops at the first
sign of a loop, and judges the whole text at the end; the caller then shows something else (the
answering core quotes the best passage, cited).

Reasons: `empty`, `too_short`, `loop`, `echo` (mostly the prompt's own words). A passage copied
word for word is not one: it is grounded, and small models often answer a look-up that way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

Reason = Literal["empty", "too_short", "loop", "echo"]

# The model name recorded for an answer that quotes a passage in place of what the model wrote.
QUOTE_MODEL = "quote"

_WORD = re.compile(r"\w+")
_CITATION = re.compile(r"\[\d+\]")
_SHINGLE = 5  # words: long enough that a real answer rarely shares one with the instructions
_ECHO_SHARE = 0.5  # of an answer's shingles found in the prompt beyond its passages
_LOOP_WORDS = 12  # a loop repeats a unit at least 3 times, over at least this many words
_LOOP_UNIT = 60  # the longest unit (words) looked for
_RELEASE_WORDS = 6  # the text is shown once it has this many words ...
_RELEASE_LETTERS = 20  # ... and letters, and is not the prompt echoed


class OutputGuard:
    """Watches a model's text as it is written. `feed()` returns what may be shown now (nothing
    until the text is clearly an answer, then each new piece); `reason` is set once a loop is
    seen (stop generating then); `finish()` judges the whole text and returns what is still held
    back where it is an answer."""

    def __init__(self, *, instructions: Sequence[str] = (), passages: Sequence[str] = ()) -> None:
        """`instructions`: the prompt's texts (the passages in them are not counted as echo);
        `passages`: the passages' texts, numbered from 1 in this order."""
        self.instructions = instructions
        self.passages = passages
        self._prompt = _shingles(_words(" ".join(instructions))) - _shingles(
            _words(" ".join(passages))
        )
        self.text = ""
        self.held = ""
        self.released = False  # whether any of the text was shown
        self.reason: Reason | None = None

    def feed(self, piece: str) -> str:
        self.text += piece
        words = _words(self.text)
        growing = self.text[-1:].isalnum() or self.text.endswith("_")  # its last word may go on
        if _loops(words[:-1] if growing else words):
            self.reason = "loop"
        if self.reason is not None:
            return ""
        if self.released:
            return piece
        self.held += piece
        letters = sum(c.isalpha() for c in self.text)
        if (
            len(words) < _RELEASE_WORDS
            or letters < _RELEASE_LETTERS
            or _share(words, self._prompt) >= _ECHO_SHARE
        ):
            return ""
        self.released = True
        shown, self.held = self.held, ""
        return shown

    def finish(self) -> str:
        """Judge the whole text (`reason`); what is still held back, where it is an answer."""
        if self.reason is None:
            self.reason = _judge(self.text, self._prompt)
        if self.reason is not None:
            return ""
        shown, self.held = self.held, ""
        return shown


def degeneration(
    text: str, *, instructions: Sequence[str] = (), passages: Sequence[str] = ()
) -> Reason | None:
    """Why `text` is not an answer to show, or None where it is one."""
    guard = OutputGuard(instructions=instructions, passages=passages)
    guard.feed(text)
    guard.finish()
    return guard.reason


def _judge(text: str, prompt: set[tuple[str, ...]]) -> Reason | None:
    if not text.strip():
        return "empty"
    words = _words(text)
    if sum(c.isalpha() for w in words for c in w) < 2:  # "1.", "- ", "**", "1. 2. 3."
        return "too_short"
    if any(_loops(words[:end]) for end in range(_LOOP_WORDS, len(words) + 1)):
        return "loop"
    if _share(words, prompt) >= _ECHO_SHARE:
        return "echo"
    return None


def _words(text: str) -> list[str]:
    return _WORD.findall(_CITATION.sub(" ", text).lower())


def _shingles(words: Sequence[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + _SHINGLE]) for i in range(len(words) - _SHINGLE + 1)}


def _share(words: Sequence[str], prompt: set[tuple[str, ...]]) -> float:
    """The share of the text's shingles that are the prompt's own."""
    mine = _shingles(words)
    return len(mine & prompt) / len(mine) if mine else 0.0


def _loops(words: Sequence[str]) -> bool:
    """Whether `words` end in one unit repeated (3 times or more, over `_LOOP_WORDS` or more).
    Numbers count as one word, whatever they are: "6. Click Next", "7. Click Next", … is a loop
    that counts its own lines."""
    words = ["0" if w.isdigit() else w for w in words]
    n = len(words)
    for unit in range(1, min(_LOOP_UNIT, n // 3) + 1):
        times = max(3, -(-_LOOP_WORDS // unit))
        if unit * times > n:
            continue
        last = words[n - unit :]
        if all(words[n - unit * k : n - unit * (k - 1)] == last for k in range(2, times + 1)):
            return True
    return False
