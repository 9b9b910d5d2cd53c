"""How an `Answer` looks in Slack: mrkdwn text, section blocks, sources, Slack's feedback buttons.

The model writes Markdown, but Slack speaks its own mrkdwn (`*bold*`, `<url|text>`, no headings,
no bullets) and treats `&`, `<` and `>` as control characters: an unescaped `<!channel>` in an
answer would ping the channel. Slack also caps a section at 3000 characters and a message at 50
blocks, so a long answer is cut where a reader would expect a break, never inside a link or an
entity, and a code block cut in two is closed and reopened. Everything here is a pure function so
that both paths (streamed answers and posted ones) render the same way and can be tested offline.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.chat import curated_note
from bot.core.question import Answer, Source
from bot.slack.ids import FEEDBACK_ACTION, FEEDBACK_BLOCK

__all__ = [
    "MAX_BLOCKS",
    "MESSAGE_TEXT_LIMIT",
    "SECTION_LIMIT",
    "SOURCES_BLOCK",
    "SlackMessage",
    "answer_messages",
    "curated_block",
    "escape",
    "feedback_block",
    "feedback_vote",
    "footer_blocks",
    "progress_text",
    "source_link",
    "sources_block",
    "split_text",
    "to_mrkdwn",
]

SECTION_LIMIT = 3000  # Slack's limit on a section block's text (and on any text object)
MESSAGE_TEXT_LIMIT = 12000  # answer text per message (also appendStream's markdown_text limit)
MAX_BLOCKS = 50  # blocks per message
CONTEXT_ELEMENTS = 10  # elements per context block
SOURCES_BLOCK = "expertbot_sources"
_LABEL_LIMIT = 300  # a source's "Title › Heading", beyond which it is cut

_FENCE = re.compile(r"^[ \t]*(?:```|~~~)", re.MULTILINE)
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"\[([^\[\]\n]+)\]\((https?://[^\s()<>]+)\)|<(https?://[^\s<>]+)>")
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+")
_RULE = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_BOLD_ITALIC = re.compile(r"\*\*\*(?=\S)(.+?)(?<=\S)\*\*\*")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)")
_ITALIC = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_PLACEHOLDER = re.compile("\x00(\\d+)\x00")
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]+$")
# Where a long text may be cut, best first: paragraphs, lines, sentence ends, spaces.
_BREAKS = (
    re.compile(r"\n(?:[ \t]*\n)+"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?])[ \t]+"),
    re.compile(r"[ \t]+"),
)
_ATOM = re.compile(r"<[^<>\n]*>|&#?\w+;")  # a Slack link or mention, an entity: never cut
_REOPEN, _CLOSE = "```\n", "\n```"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape(text: str) -> str:
    """`text` shown literally in mrkdwn: Slack's control characters escaped."""
    return _escape(text)


def _link(uri: str, text: str) -> str:
    return f"<{_escape(uri).replace('|', '%7C')}|{_escape(text)}>"


def _inline(text: str, bold: str = "*") -> str:
    """Converts one line outside code blocks: links and emphasis; code spans are only escaped."""
    kept: list[str] = []

    def keep(rendered: str) -> str:
        kept.append(rendered)
        return f"\x00{len(kept) - 1}\x00"

    text = _INLINE_CODE.sub(lambda m: keep(_escape(m[0])), text)
    text = _LINK.sub(lambda m: keep(_link(m[2], m[1]) if m[2] else f"<{_escape(m[3])}>"), text)
    text = _BOLD_ITALIC.sub("\x01_\\1_\x01", _escape(text))
    text = _BOLD.sub(lambda m: f"\x01{m[1] or m[2]}\x01", text)
    text = _STRIKE.sub(r"~\1~", _ITALIC.sub(r"_\1_", text)).replace("\x01", bold)
    for _ in range(2):  # twice: a link's text may hold a code span
        text = _PLACEHOLDER.sub(lambda m: kept[int(m[1])], text)
    return text


def _line(line: str) -> str:
    if _RULE.match(line):
        return line
    if heading := _HEADING.match(line):
        return f"*{_inline(heading[1], bold='')}*" if heading[1] else ""
    return _inline(_BULLET.sub(r"\1• ", line))


def to_mrkdwn(markdown: str) -> str:
    """Markdown as models write it -> Slack mrkdwn. Code is escaped (Slack requires it) but not
    reformatted; a fence's language tag is dropped (Slack would show it) and an open fence closed."""
    out: list[str] = []
    in_fence = False
    markdown = markdown.replace("\r\n", "\n").replace("\x00", "").replace("\x01", "")
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
            out.append("```")
        else:
            out.append(_escape(line) if in_fence else _line(line))
    if in_fence:
        out.append("```")
    return "\n".join(out)


def _spans(pattern: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    return [m.span() for m in pattern.finditer(text)]


def _fences(text: str) -> list[tuple[int, int]]:
    """The code blocks of mrkdwn text, from opening to closing fence; an open one runs on."""
    marks = list(_FENCE.finditer(text))
    ends = [m.end() for m in marks[1::2]] + [len(text) + 1]
    return [(m.start(), end) for m, end in zip(marks[::2], ends, strict=False)]


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(start < position < end for start, end in spans)


def _cut(text: str, limit: int) -> tuple[str, str]:
    """The best first piece of `text` (at most `limit` long) and what remains."""
    fences, atoms = _fences(text), _spans(_ATOM, text)
    can_close = limit > 4 * len(_CLOSE)
    for close in (False, True) if can_close else (False,):  # outside code blocks first
        room = limit - (len(_CLOSE) if close else 0)
        for pattern in _BREAKS:
            starts = [m.start() for m in pattern.finditer(text, 0, room + 1)]
            best = next(
                (
                    p
                    for p in reversed(starts)
                    if _inside(p, fences) == close
                    and not _inside(p, atoms)
                    and _FENCE.sub("", text[:p]).strip()
                ),
                None,
            )
            if best is not None:
                found = pattern.match(text, best)
                return _finish(text, best, found.end() if found else best, close)
    p = limit - len(_CLOSE) if can_close else limit  # no break anywhere: a hard cut
    p = next((s for s, e in atoms if s < p < e and _FENCE.sub("", text[:s]).strip()), p)
    return _finish(text, p, p, can_close and _inside(p, fences))


def _finish(text: str, start: int, end: int, close: bool) -> tuple[str, str]:
    head, tail = text[:start].rstrip(), text[end:]
    return (head + _CLOSE, _REOPEN + tail) if close else (head, tail)


def split_text(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at the most natural break available."""
    if limit < 1:
        raise ValueError("limit must be positive")
    pieces: list[str] = []
    rest = text.strip("\n").rstrip()
    while len(rest) > limit:
        head, rest = _cut(rest, limit)
        rest = rest.lstrip("\n")
        if head.strip():
            pieces.append(head)
    if rest.strip():
        pieces.append(rest)
    return pieces


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else _cut(text, limit - 2)[0] + " …"


def source_link(source: Source) -> str:
    label = source.label
    label = label if len(label) <= _LABEL_LIMIT else label[: _LABEL_LIMIT - 1].rstrip() + "…"
    if source.uri.startswith(("http://", "https://")):
        return f"[{source.number}] {_link(source.uri, label)}"
    return f"[{source.number}] {_escape(label)}"


def _context(texts: Sequence[str], block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": text} for text in texts],
    }
    if block_id:
        block["block_id"] = block_id
    return block


def sources_block(sources: Sequence[Source]) -> dict[str, Any] | None:
    """One line per source; lines are packed into the few elements a context block allows."""
    if not sources:
        return None
    elements: list[str] = []
    for line in (_truncate(source_link(s), SECTION_LIMIT) for s in sources):
        if elements and len(elements[-1]) + 1 + len(line) <= SECTION_LIMIT:
            elements[-1] += "\n" + line
        elif len(elements) < CONTEXT_ELEMENTS:
            elements.append(line)
    return _context(elements, SOURCES_BLOCK)


def curated_block(answer: Answer) -> dict[str, Any] | None:
    note = curated_note(answer, lambda by: f"<@{by}>" if _SLACK_USER.match(by) else _escape(by))
    return _context([note]) if note else None


def feedback_block(answer_id: str) -> dict[str, Any]:
    """Slack's feedback buttons (👍 / 👎, toggled by Slack) under the answer. Each click sends
    the button's value, `up:<answer id>` or `down:<answer id>`; unselecting sends nothing."""

    def button(label: str, describe: str, vote: str) -> dict[str, Any]:
        return {
            "text": {"type": "plain_text", "text": label},
            "accessibility_label": describe,
            "value": f"{vote}:{answer_id}",
        }

    return {
        "type": "context_actions",
        "block_id": FEEDBACK_BLOCK,
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION,
                "positive_button": button("Helpful", "This answer was helpful", "up"),
                "negative_button": button("Not helpful", "This answer was not helpful", "down"),
            }
        ],
    }


def feedback_vote(value: str) -> tuple[bool, str] | None:
    """A feedback button's value -> (helpful?, the answer id); None if it is not one."""
    vote, _, answer_id = value.partition(":")
    if vote not in ("up", "down") or not answer_id:
        return None
    return vote == "up", answer_id


def footer_blocks(answer: Answer, *, feedback: bool = True) -> list[dict[str, Any]]:
    """What goes under the answer text: the curated marker, the sources, the feedback buttons."""
    blocks = [curated_block(answer), sources_block(answer.sources)]
    if feedback:
        blocks.append(feedback_block(answer.id))
    return [block for block in blocks if block is not None]


@dataclass(frozen=True, slots=True)
class SlackMessage:
    text: str  # the notification fallback
    blocks: list[dict[str, Any]]


def answer_messages(answer: Answer, *, feedback: bool = True) -> list[SlackMessage]:
    """The whole answer as messages to post in order; the footer goes under the last one."""
    footer = footer_blocks(answer, feedback=feedback)
    room = MAX_BLOCKS - len(footer)
    groups: list[list[str]] = []
    for chunk in split_text(to_mrkdwn(answer.text), MESSAGE_TEXT_LIMIT):
        sections = split_text(chunk, SECTION_LIMIT)
        groups += [sections[i : i + room] for i in range(0, len(sections), room)]
    messages = []
    for n, sections in enumerate(groups or [[]], 1):
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": s}} for s in sections]
        text = _truncate("\n\n".join(sections), SECTION_LIMIT)
        last = n == max(len(groups), 1)
        messages.append(SlackMessage(text, blocks + footer if last else blocks))
    return messages


def progress_text(markdown_so_far: str) -> str:
    """The partial answer for a throttled chat.update while the model is still writing."""
    return _truncate(to_mrkdwn(markdown_so_far), MESSAGE_TEXT_LIMIT) or "…"
