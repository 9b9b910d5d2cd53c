"""Turning a file's bytes into a title, an access label and sections under heading paths.

Formats are chosen by extension: Markdown, plain text, reStructuredText, HTML, PDF, and (in
`knowledge/office.py`) Word, PowerPoint, Excel and CSV; legacy .doc, .xls and .ppt are refused.
Every failure is a `DocumentError` whose message is the reason a sync reports.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import PurePosixPath
from typing import Any

import yaml

from base.errors import DocumentError, DocumentSkipped
from knowledge.models import Access, Section

# Bump when parsing or chunking changes in a way that should re-index every document.
PARSER_VERSION = "2"

FORMATS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "rst",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".xlsx": "xlsx",
    ".csv": "csv",
    ".tsv": "tsv",
    ".doc": "doc",
    ".xls": "xls",
    ".ppt": "ppt",
}
_OFFICE = ("docx", "pptx", "xlsx", "csv", "tsv", "doc", "xls", "ppt")


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    title: str
    sections: tuple[Section, ...]
    access: Access | None = None  # None: take the source's label
    allowed: tuple[str, ...] | None = None


def format_of(path: str) -> str | None:
    return FORMATS.get(PurePosixPath(path).suffix.lower())


def parse_document(doc_id: str, data: bytes) -> ParsedDocument:
    """Parse one file; `doc_id` (its relative path) picks the format and the fallback title."""
    fmt = format_of(doc_id)
    if fmt is None:
        raise DocumentSkipped(f"unsupported file type {PurePosixPath(doc_id).suffix or '(none)'}")
    if not data.strip():
        raise DocumentSkipped("empty file")
    parsed = _PARSERS[fmt](data)
    sections = tuple(s for s in parsed.sections if s.text.strip())
    if not sections:
        raise DocumentSkipped("no text could be extracted")
    title = parsed.title.strip() or _title_from_path(doc_id)
    return ParsedDocument(title, sections, parsed.access, parsed.allowed)


def _title_from_path(doc_id: str) -> str:
    stem = PurePosixPath(doc_id).stem
    return re.sub(r"[-_]+", " ", stem).strip().capitalize() or doc_id


# --- decoding -------------------------------------------------------------------------------


def decode_text(data: bytes) -> str:
    """Decode text sensibly: UTF-8 (with or without BOM), else the detected charset.

    Binary data (NUL bytes, or no plausible charset) is refused.
    """
    if b"\x00" in data[:8192]:
        raise DocumentSkipped("binary file (not text)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = _decode_legacy(data)
    return text.replace("\r\n", "\n").replace("\r", "\n")


# Short texts fit several single-byte code pages equally well; among equally clean
# candidates, prefer the Western ones most legacy office documents use.
_PREFERRED = ("cp1252", "iso8859_15", "latin_1")


def _decode_legacy(data: bytes) -> str:
    import charset_normalizer

    matches = list(charset_normalizer.from_bytes(data))
    if not matches:
        raise DocumentSkipped("binary file (no text encoding fits)")
    best = matches[0]
    for match in matches:
        if match.encoding in _PREFERRED and match.percent_chaos <= best.percent_chaos + 1.0:
            return str(match)
    return str(best)


# --- front matter ----------------------------------------------------------------------------

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)---[ \t]*\n", re.DOTALL)


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        raise DocumentError(f"front matter is not valid YAML: {exc.__class__.__name__}") from None
    except RecursionError:  # `[[[[…` or `- - - …` nested deeper than the parser recurses
        raise DocumentError("front matter is nested too deeply") from None
    if not isinstance(meta, dict):
        raise DocumentError("front matter must be a mapping of keys to values")
    return meta, text[match.end() :]


def access_from_meta(meta: dict[str, Any]) -> tuple[Access | None, tuple[str, ...] | None]:
    raw_access = meta.get("access")
    access: Access | None = None
    if raw_access is not None:
        try:
            access = Access(str(raw_access).strip().lower())
        except ValueError:
            choices = ", ".join(a.value for a in Access)
            raise DocumentError(
                f"front matter access {raw_access!r} is not one of {choices}"
            ) from None
    raw_allowed = meta.get("allowed")
    allowed: tuple[str, ...] | None = None
    if raw_allowed is not None:
        items = raw_allowed.split(",") if isinstance(raw_allowed, str) else raw_allowed
        if not isinstance(items, list):
            raise DocumentError("front matter 'allowed' must be a list of channels or groups")
        allowed = tuple(str(i).strip() for i in items if str(i).strip())
    if access is Access.RESTRICTED and not allowed:
        raise DocumentError("access: restricted needs a non-empty 'allowed' list")
    if allowed and access is None:
        access = Access.RESTRICTED
    return access, allowed


# --- sections ------------------------------------------------------------------------------


class SectionBuilder:
    """Collects lines under the current heading path."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.path: list[tuple[int, str]] = []
        self.lines: list[str] = []

    def heading(self, level: int, text: str) -> None:
        self.flush()
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, text.strip()))

    def line(self, text: str) -> None:
        self.lines.append(text)

    def flush(self) -> None:
        body = tidy("\n".join(self.lines))
        if body:
            self.sections.append(Section(tuple(t for _, t in self.path), body))
        self.lines = []


def tidy(text: str) -> str:
    # Line by line: the regex `[ \t]+\n` rescans a run of blanks from each of its characters,
    # which on a long run (a padded export) takes minutes.
    text = "\n".join(line.rstrip(" \t") for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def strip_control(text: str) -> str:
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)


# --- Markdown ------------------------------------------------------------------------------

_ATX = re.compile(r"(#{1,6})[ \t]+")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")


def _parse_markdown(data: bytes) -> ParsedDocument:
    meta, body = split_front_matter(decode_text(data))
    access, allowed = access_from_meta(meta)
    builder = SectionBuilder()
    first_h1 = ""
    lines = body.split("\n")
    in_fence = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            builder.line(line)
            continue
        if not in_fence:
            atx = _atx_heading(line)
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if atx:
                level, text = atx[0], _md_inline(atx[1])
                first_h1 = first_h1 or (text if level == 1 else "")
                builder.heading(level, text)
                continue
            if line.strip() and re.fullmatch(r"=+\s*|-+\s*", nxt) and not builder_is_list(line):
                level = 1 if nxt.startswith("=") else 2
                text = _md_inline(line)
                first_h1 = first_h1 or (text if level == 1 else "")
                builder.heading(level, text)
                lines[i + 1] = ""
                continue
        builder.line(line)
    builder.flush()
    title = str(meta.get("title") or first_h1 or "")
    return ParsedDocument(title, tuple(builder.sections), access, allowed)


def _atx_heading(line: str) -> tuple[int, str] | None:
    """`## Text ##` → (2, "Text"): the hashes, at least one blank, the text without its closing
    hashes and blanks (all hashes: the first one). None if `line` is no ATX heading. String
    methods, not one regex: `(.+?)[ \t]*#*[ \t]*$` backtracks cubically over a run of blanks
    inside the heading (a minute for 2,000 spaces)."""
    opening = _ATX.match(line)
    if opening is None:
        return None
    rest = line[opening.end() :]
    if not rest:  # blanks only: the text is the last of them (at least two)
        blanks = opening.end() - len(opening.group(1))
        return (len(opening.group(1)), line[-1]) if blanks > 1 else None
    text = rest.rstrip(" \t").rstrip("#").rstrip(" \t")
    return len(opening.group(1)), text or rest[0]


def builder_is_list(line: str) -> bool:
    return bool(re.match(r"^\s*([-*+]|\d+[.)])\s", line))


def _md_inline(text: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[*_`]+", "", text).strip()


# --- plain text ----------------------------------------------------------------------------


def _parse_text(data: bytes) -> ParsedDocument:
    meta, body = split_front_matter(decode_text(data))
    access, allowed = access_from_meta(meta)
    body = strip_control(body)
    title = str(meta.get("title") or "")
    if not title:
        first = next((ln.strip() for ln in body.split("\n") if ln.strip()), "")
        title = first if len(first) <= 80 else ""
    return ParsedDocument(title, (Section((), tidy(body)),), access, allowed)


# --- reStructuredText ----------------------------------------------------------------------

_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:.<>_])\1{2,}\s*$")
_RST_DROP_BLOCK = re.compile(
    r"^\.\.\s+(index|toctree|highlight|sectionauthor|moduleauthor|_[^:]*):"
)


def _parse_rst(data: bytes) -> ParsedDocument:
    meta, body = split_front_matter(decode_text(data))
    access, allowed = access_from_meta(meta)
    lines = body.split("\n")
    builder = SectionBuilder()
    styles: list[tuple[str, bool]] = []
    title = ""
    i = 0
    dropping = False
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if dropping:
            if line.strip() and not line.startswith((" ", "\t")):
                dropping = False
            else:
                i += 1
                continue
        if _RST_DROP_BLOCK.match(line):
            dropping = True
            i += 1
            continue
        # over- and underlined title
        if _ADORNMENT.match(line) and i + 2 < len(lines) and lines[i + 1].strip():
            under = lines[i + 2]
            if _ADORNMENT.match(under) and under.strip()[0] == line.strip()[0]:
                text = _rst_inline(lines[i + 1])
                title = _rst_heading(builder, styles, (line.strip()[0], True), text, title)
                i += 3
                continue
        is_underlined = (
            line.strip()
            and not line.startswith((" ", "\t"))
            and _ADORNMENT.match(nxt)
            and len(nxt.strip()) >= len(line.strip()) - 1
        )
        if is_underlined:
            text = _rst_inline(line)
            title = _rst_heading(builder, styles, (nxt.strip()[0], False), text, title)
            i += 2
            continue
        builder.line(line)
        i += 1
    builder.flush()
    title = str(meta.get("title") or title)
    return ParsedDocument(title, tuple(builder.sections), access, allowed)


def _rst_heading(
    builder: SectionBuilder,
    styles: list[tuple[str, bool]],
    style: tuple[str, bool],
    text: str,
    title: str,
) -> str:
    if style not in styles:
        styles.append(style)
    level = styles.index(style) + 1
    builder.heading(level, text)
    return title or text


def _rst_inline(text: str) -> str:
    text = re.sub(r":[\w:+-]+:`([^`<]*?)\s*(?:<[^>]*>)?`", r"\1", text)
    return re.sub(r"[*`]+", "", text).strip()


# --- HTML ----------------------------------------------------------------------------------

_HEADING_MARK = "\x1eH"


def _parse_html(data: bytes) -> ParsedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode_text(data), "html.parser")
    meta: dict[str, Any] = {}
    for tag in soup.find_all("meta"):
        name = str(tag.get("name") or "").lower()
        if name in ("expertbot-access", "access"):
            meta["access"] = tag.get("content")
        elif name in ("expertbot-allowed", "allowed"):
            meta["allowed"] = str(tag.get("content") or "")
    access, allowed = access_from_meta(meta)
    for tag in soup(["script", "style", "noscript", "template", "svg", "nav", "head"]):
        if tag.name == "head":
            continue
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.head:
        soup.head.decompose()
    _flatten(
        soup,
        ["tr"],
        lambda row: " | ".join(c.get_text(" ", strip=True) for c in row.find_all(["td", "th"])),
        within="table",
    )
    marked = _flatten(
        soup,
        ["h1", "h2", "h3", "h4", "h5", "h6"],
        lambda tag: f"{_HEADING_MARK}{tag.name[1]}{tag.get_text(' ', strip=True)}",
    )
    h1s = [line[len(_HEADING_MARK) + 1 :] for line in marked if line[len(_HEADING_MARK)] == "1"]
    first_h1 = next((text for text in h1s if text), "")
    for tag in soup.find_all("li"):
        tag.insert(0, "- ")
    builder = SectionBuilder()
    for raw in soup.get_text("\n").split("\n"):
        if raw.startswith(_HEADING_MARK):
            builder.heading(int(raw[len(_HEADING_MARK)]), raw[len(_HEADING_MARK) + 1 :])
        else:
            builder.line(raw.strip())
    builder.flush()
    sections = tuple(
        Section(s.heading_path, re.sub(r"\n(?=[^\n-])", " ", s.text).replace("\n- ", "\n- "))
        for s in builder.sections
    )
    return ParsedDocument(title or first_h1, sections, access, allowed)


def _flatten(
    soup: Any, names: list[str], line: Callable[[Any], str], *, within: str = ""
) -> list[str]:
    """Replace every `names` element by its `line` (one line of text); returns the lines in
    document order. An element left open (`<tr>` without `</tr>`, valid HTML) holds the next one
    in html.parser's tree (`within`: unless a `within` element, a nested table, comes between):
    innermost first, each is taken out before the one around it reads its text, and its line
    follows that one's. (Outermost first reads every nested element's text again: cubic in
    their number, minutes for a few hundred table rows.)"""
    tags = soup.find_all(names)
    lines: dict[int, str] = {}
    nested: dict[int, list[Any]] = {}
    for tag in reversed(tags):
        lines[id(tag)] = line(tag)
        outer = tag.find_parent([*names, within] if within else names)
        if outer is not None and outer.name in names:
            nested.setdefault(id(outer), []).append(tag.extract())
            continue
        flat, stack = [], [tag]
        while stack:
            top = stack.pop()
            flat.append(lines[id(top)])
            stack.extend(nested.pop(id(top), ()))
        tag.replace_with("\n" + "\n".join(flat) + "\n")
    return [lines[id(tag)] for tag in tags]


# --- PDF -----------------------------------------------------------------------------------


def _parse_pdf(data: bytes) -> ParsedDocument:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    if not data.lstrip().startswith(b"%PDF"):
        raise DocumentError("corrupt PDF (no PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError("encrypted PDF (needs a password)")
        pages = [strip_control(page.extract_text() or "") for page in reader.pages]
        metadata: dict[str, Any] = dict(reader.metadata or {})
        meta_title = str(metadata.get("/Title") or "")
    except DocumentError:
        raise
    except (
        PyPdfError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        OSError,
    ) as exc:
        raise DocumentError(f"corrupt PDF ({exc.__class__.__name__})") from None
    sections = tuple(
        Section((f"Page {n}",), tidy(text)) for n, text in enumerate(pages, start=1) if text.strip()
    )
    return ParsedDocument(meta_title, sections)


# --- Office and CSV ------------------------------------------------------------------------


def _parse_office(fmt: str, data: bytes) -> ParsedDocument:
    from knowledge.office import parse_office  # it builds on this module

    return parse_office(fmt, data)


_PARSERS: dict[str, Callable[[bytes], ParsedDocument]] = {
    "markdown": _parse_markdown,
    "text": _parse_text,
    "rst": _parse_rst,
    "html": _parse_html,
    "pdf": _parse_pdf,
    **{fmt: partial(_parse_office, fmt) for fmt in _OFFICE},
}
