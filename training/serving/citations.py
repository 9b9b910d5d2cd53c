"""Citation markers in generated answers: checked, renumbered, and removed when invalid.

The model sees passages [1]…[n] and cites them as `[2]` or `[1, 3]`. What the user sees:
- a number that matches no passage is removed, never shown;
- the cited passages are renumbered 1, 2, … in the order of first citation, so the sources
  listed under the answer are exactly the cited ones, in reading order.

`CitationRewriter` does this on a stream of deltas (a marker may arrive split across deltas),
so that the streamed text and the final text are the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_MARKER = re.compile(r"\[(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]")
# What may still grow into a marker: "[", "[1", "[1,", "[1, 2" …
_PARTIAL = re.compile(r"\[[\d\s,;]{0,24}$")
_PUNCT_AFTER = tuple(".,;:!?)")


@dataclass
class CitationRewriter:
    passages: int  # valid numbers are 1..passages
    order: list[int] = field(default_factory=list)  # original numbers, in order of first citation
    invalid: int = 0  # markers (or numbers in them) that matched no passage
    _buffer: str = ""
    _held_space: str = ""
    _dropped: bool = False

    def feed(self, delta: str) -> str:
        """Text that can be shown now; the rest waits until it cannot be a marker any more."""
        self._buffer += delta
        return self._drain(final=False)

    def finish(self) -> str:
        return self._drain(final=True)

    def rewrite(self, text: str) -> str:
        """The whole text at once."""
        return self.feed(text) + self.finish()

    def _drain(self, *, final: bool) -> str:
        out: list[str] = []
        buf = self._buffer
        while buf:
            start = buf.find("[")
            if start < 0:
                out.append(self._emit(buf))
                buf = ""
                break
            if start:
                out.append(self._emit(buf[:start]))
                buf = buf[start:]
            match = _MARKER.match(buf)
            if match:
                out.append(self._emit(self._replace(match.group(1))))
                buf = buf[match.end() :]
                continue
            if _PARTIAL.fullmatch(buf):
                if not final:
                    break  # wait for more
                if any(c.isdigit() for c in buf):
                    buf = ""  # a citation cut off by the end of the answer ("see [1"): dropped
                    break
            out.append(self._emit("["))
            buf = buf[1:]
        self._buffer = buf
        if final:
            self._held_space = ""
        return "".join(out)

    def _emit(self, text: str) -> str:
        """Hold trailing whitespace back: if the next thing is a removed marker followed by
        punctuation, the space before the marker goes too ("see [9]." → "see.")."""
        if not text:
            return ""
        lead = self._held_space
        if self._dropped and (text[:1].isspace() or text.startswith(_PUNCT_AFTER)):
            lead = ""
        self._dropped = False
        body = lead + text
        stripped = body.rstrip(" \t")
        self._held_space = body[len(stripped) :]
        return stripped

    def _replace(self, inner: str) -> str:
        numbers = [int(n) for n in re.split(r"\s*[,;]\s*", inner.strip())]
        shown: list[int] = []
        for number in numbers:
            if not 1 <= number <= self.passages:
                self.invalid += 1
                continue
            if number not in self.order:
                self.order.append(number)
            new = self.order.index(number) + 1
            if new not in shown:
                shown.append(new)
        if not shown:
            self._dropped = True
            return ""
        return "[" + ", ".join(str(n) for n in shown) + "]"


def cited_numbers(text: str) -> list[int]:
    """Every number cited in `text`, in order of first citation."""
    seen: list[int] = []
    for match in _MARKER.finditer(text):
        for n in re.split(r"\s*[,;]\s*", match.group(1).strip()):
            if int(n) not in seen:
                seen.append(int(n))
    return seen
