"""Word, PowerPoint, Excel and CSV files as titled sections.

- Word (.docx): paragraph styles give the heading path (Heading 1, 2, 3 …, or a paragraph's or
  style's outline level); the title is the core properties' title, else the first Title-styled
  paragraph. Tables become records (below).
- PowerPoint (.pptx): one section per slide under its title ("Slide N" when it has none): the text
  of every shape, grouped shapes and tables included, then the speaker notes as a "Notes:"
  paragraph. The title is the core properties' title, else the first slide's title.
- Excel (.xlsx): one section per sheet under the sheet's name; formulas give their cached values
  (what Excel or LibreOffice last computed; nothing is evaluated: a cell never computed is empty).
- CSV (.csv, .tsv): one section without a heading; the delimiter is sniffed (comma when unsure;
  tab for .tsv); quoted fields may hold newlines.

Rows of a table, a sheet or a CSV file are records: the first non-empty row names the columns and
every later non-empty row reads "Name: Alice; Team: Billing; Phone: 123", each its own paragraph,
so that any chunk holding a row holds its column names. Dates are ISO (2024-03-01, 2024-03-01
14:30), numbers have no float noise (0.1 + 0.2 is 0.3; 3.0 is 3), percentages keep their %.

Refused, with the reason a sync reports:
- legacy binary formats (.doc, .xls, .ppt) and an Office (OLE) file under a new extension:
  `DocumentSkipped`, naming the format to save it as;
- a file larger than `max_unpacked_bytes` once unpacked (a zip bomb): `DocumentSkipped`;
- a password-protected file (OOXML encryption wraps the file in an OLE container):
  `DocumentError`, as for an encrypted PDF;
- a damaged file (not a zip archive, truncated, a missing part): `DocumentError`, as for a
  corrupt PDF.

A sheet or CSV file is read up to `MAX_SHEET_CELLS` cells (empty ones count: they cost reading
too); a longer one keeps its first rows and ends with a note that it was truncated.
"""

from __future__ import annotations

import csv
import io
import math
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from base.errors import DocumentError, DocumentSkipped
from knowledge.parsing import ParsedDocument, SectionBuilder, decode_text, strip_control

if TYPE_CHECKING:
    from docx.table import Table as DocxTable
    from docx.text.paragraph import Paragraph
    from pptx.shapes.base import BaseShape
    from pptx.slide import Slide

# Unpacked, an Office file may be at most 100 times its size (text XML packs 5 to 30 times; a zip
# bomb a thousand times and more), never more than 200 MB; up to 10 MB is always fine.
UNPACKED_RATIO = 100
UNPACKED_FLOOR = 10 * 1024 * 1024
UNPACKED_CEILING = 200 * 1024 * 1024

MAX_SHEET_CELLS = 100_000

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# The stream an encrypted OOXML file keeps its key data in, as its OLE directory names it.
_ENCRYPTION_INFO = "EncryptionInfo".encode("utf-16-le")

_LEGACY = {
    "doc": ("Word", "docx"),
    "xls": ("Excel", "xlsx"),
    "ppt": ("PowerPoint", "pptx"),
}


def parse_office(fmt: str, data: bytes) -> ParsedDocument:
    """Parse a file of format `fmt` (its extension without the dot: docx, pptx, xlsx, csv, tsv,
    or a legacy doc, xls, ppt, which is refused)."""
    if fmt in _LEGACY:
        app, modern = _LEGACY[fmt]
        raise DocumentSkipped(f"legacy {app} .{fmt} format is not supported: save it as .{modern}")
    if fmt in ("csv", "tsv"):
        return _parse_csv(data, tab=fmt == "tsv")
    _check_container(fmt, data)
    parse = _OOXML[fmt]
    try:
        return parse(data)
    except (DocumentError, MemoryError):
        raise
    except (
        LookupError,  # KeyError (a missing part), IndexError
        ValueError,
        TypeError,
        AttributeError,
        OSError,
        EOFError,
        SyntaxError,  # lxml's XMLSyntaxError, ElementTree's ParseError
        ArithmeticError,
        RecursionError,
        NotImplementedError,
        zipfile.BadZipFile,
        zlib.error,
        struct.error,
    ) as exc:
        raise DocumentError(f"corrupt .{fmt} file ({_describe(exc)})") from None
    except Exception as exc:
        # The libraries' own errors (docx's PackageNotFoundError, openpyxl's
        # InvalidFileException) say the file is damaged; any other is a bug of ours.
        if type(exc).__module__.split(".")[0] in ("docx", "pptx", "openpyxl"):
            raise DocumentError(f"corrupt .{fmt} file ({_describe(exc)})") from None
        raise


def max_unpacked_bytes(size: int) -> int:
    """The most a file of `size` bytes may hold unpacked."""
    return min(UNPACKED_CEILING, max(UNPACKED_FLOOR, UNPACKED_RATIO * size))


def _check_container(fmt: str, data: bytes) -> None:
    if data.startswith(OLE_MAGIC):
        if _ENCRYPTION_INFO in data:
            raise DocumentError("encrypted (password-protected) file")
        legacy = next(f for f, (_, modern) in _LEGACY.items() if modern == fmt)
        raise DocumentSkipped(
            f"a legacy Office file named .{fmt} is not supported: save it as .{fmt}"
            f" (it looks like a .{legacy})"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, struct.error):
        raise DocumentError(f"corrupt .{fmt} file (not a zip archive, or truncated)") from None
    limit = max_unpacked_bytes(len(data))
    if unpacked > limit:
        raise DocumentSkipped(
            f"too large unpacked: {_size(unpacked)} in a {_size(len(data))} file"
            f" (at most {_size(limit)}; a zip bomb?)"
        )


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{max(1, round(n / 1024))} KB"


def _describe(exc: BaseException) -> str:
    message = " ".join(strip_control(str(exc)).split())
    if len(message) > 120:
        message = message[:119] + "…"
    return f"{exc.__class__.__name__}: {message}" if message else exc.__class__.__name__


# --- values and records ------------------------------------------------------------------


def cell_text(value: Any, number_format: str = "General") -> str:
    """A cell's value as text: ISO dates, numbers without float noise, one line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, datetime):
        if value.time() == time(0):
            return value.date().isoformat()
        spec = "minutes" if not (value.second or value.microsecond) else "seconds"
        return value.isoformat(sep=" ", timespec=spec)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.isoformat(timespec="minutes" if not value.second else "seconds")
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, int | float):
        if "%" in number_format:
            return f"{_number(value * 100)}%"
        return _number(value)
    return " ".join(strip_control(str(value)).split())


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.15g}"


def records(rows: Iterable[Sequence[str]]) -> Iterator[str]:
    """Rows of cell texts as records: the first non-empty row names the columns; every later
    non-empty row is "Column: value; …" (empty cells left out; a value under an unnamed column
    stands alone). A table of one row is its cells joined by " | "."""
    header: list[str] | None = None
    rows_read = 0
    for row in rows:
        cells = [" ".join(c.split()) for c in row]
        if not any(cells):
            continue
        if header is None:
            header = cells
            continue
        rows_read += 1
        parts = []
        for i, value in enumerate(cells):
            if not value:
                continue
            name = header[i] if i < len(header) else ""
            parts.append(f"{name}: {value}" if name else value)
        yield "; ".join(parts)
    if header is not None and not rows_read:
        yield " | ".join(c for c in header if c)


def _add_records(builder: SectionBuilder, rows: Iterable[Sequence[str]]) -> None:
    for record in records(rows):
        builder.line("")
        builder.line(record)
    builder.line("")


# --- Word ----------------------------------------------------------------------------------

_HEADING_STYLE = re.compile(r"heading\s*([1-9])", re.IGNORECASE)
_STYLE_DEPTH = 10  # how far up a style's base styles a heading level is looked for


def _parse_docx(data: bytes) -> ParsedDocument:
    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(data))
    title = _one_line(document.core_properties.title or "")
    builder = SectionBuilder()
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            _add_records(builder, _docx_rows(block))
            continue
        text = strip_control(block.text.replace("\v", "\n")).strip()
        if not text:
            continue
        kind, level = _docx_kind(block)
        if kind == "title" and not title:
            title = _one_line(text)
        elif kind == "heading":
            builder.heading(level, _one_line(text))
        elif kind == "list":
            builder.line(f"- {text}")
        else:
            builder.line("")
            builder.line(text)
            builder.line("")
    builder.flush()
    return ParsedDocument(title, tuple(builder.sections))


def _docx_kind(paragraph: Paragraph) -> tuple[str, int]:
    """("heading", level), ("title", 0), ("list", 0) or ("text", 0), from the paragraph's own
    outline level, else its style's name or outline level (or a base style's)."""
    from docx.oxml.ns import qn

    ppr = paragraph._p.pPr
    style: Any = paragraph.style
    if style is not None and str(style.name or "").strip().lower() == "title":
        return "title", 0
    own = _outline_level(ppr, qn)
    if own is not None:
        return "heading", own
    is_list = ppr is not None and ppr.numPr is not None
    for _ in range(_STYLE_DEPTH):
        if style is None:
            break
        name = str(style.name or "").strip()
        if name.lower() == "title":
            return "title", 0
        match = _HEADING_STYLE.fullmatch(name)
        if match:
            return "heading", int(match.group(1))
        level = _outline_level(style.element.pPr, qn)
        if level is not None:
            return "heading", level
        is_list = is_list or name.lower().startswith("list")
        style = style.base_style
    return ("list" if is_list else "text"), 0


def _outline_level(ppr: Any, qn: Callable[[str], str]) -> int | None:
    """Heading level 1 to 9 from `w:outlineLvl` (0 to 8; 9 is body text)."""
    if ppr is None:
        return None
    element = ppr.find(qn("w:outlineLvl"))
    if element is None:
        return None
    try:
        level = int(element.get(qn("w:val"), ""))
    except ValueError:
        return None
    return level + 1 if 0 <= level <= 8 else None


def _docx_rows(table: DocxTable) -> Iterator[list[str]]:
    """Each row's cell texts, one per grid column: a cell merged across columns gives its text
    once (the columns it spans are empty); one merged down gives its text in every row."""
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            same = previous is not None and cell._tc is previous
            cells.append("" if same else strip_control(cell.text))
            previous = cell._tc
        yield cells


def _one_line(text: str) -> str:
    return " ".join(strip_control(text).split())


# --- PowerPoint ----------------------------------------------------------------------------


def _parse_pptx(data: bytes) -> ParsedDocument:
    import pptx

    presentation = pptx.Presentation(io.BytesIO(data))
    title = _one_line(presentation.core_properties.title or "")
    builder = SectionBuilder()
    for number, slide in enumerate(presentation.slides, start=1):
        title_shape = slide.shapes.title
        slide_title = _one_line(title_shape.text_frame.text) if title_shape is not None else ""
        if number == 1 and not title:
            title = slide_title
        builder.heading(1, slide_title or f"Slide {number}")
        for shape in slide.shapes:
            if title_shape is None or shape.shape_id != title_shape.shape_id:
                _add_shape(builder, shape)
        notes = _notes(slide)
        if notes:
            builder.line("")
            builder.line(f"Notes: {notes}")
    builder.flush()
    return ParsedDocument(title, tuple(builder.sections))


_GROUP_DEPTH = 20  # groups nested deeper than this are left out


def _add_shape(builder: SectionBuilder, shape: BaseShape, depth: int = 0) -> None:
    """A shape's text (a group's shapes in order, a table's rows as records)."""
    from pptx.shapes.graphfrm import GraphicFrame
    from pptx.shapes.group import GroupShape

    if isinstance(shape, GroupShape):
        if depth < _GROUP_DEPTH:
            for inner in shape.shapes:
                _add_shape(builder, inner, depth + 1)
        return
    if isinstance(shape, GraphicFrame):
        if shape.has_table:
            rows = ([strip_control(c.text) for c in row.cells] for row in shape.table.rows)
            _add_records(builder, rows)
        return
    if shape.has_text_frame:
        text = strip_control(shape.text_frame.text.replace("\v", "\n")).strip()  # type: ignore[attr-defined]
        if text:
            builder.line("")
            builder.line(text)
            builder.line("")


def _notes(slide: Slide) -> str:
    if not slide.has_notes_slide:
        return ""
    frame = slide.notes_slide.notes_text_frame
    if frame is None:
        return ""
    return strip_control(frame.text.replace("\v", "\n")).strip()


# --- Excel ---------------------------------------------------------------------------------


def _parse_xlsx(data: bytes) -> ParsedDocument:
    import openpyxl

    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        title = _one_line(workbook.properties.title or "")
        builder = SectionBuilder()
        for sheet in workbook.worksheets:
            builder.heading(1, _one_line(str(sheet.title)) or "Sheet")
            if hasattr(sheet, "reset_dimensions"):  # a stored size may be wrong: read every row
                sheet.reset_dimensions()
            rows = (
                [cell_text(c.value, str(getattr(c, "number_format", "General"))) for c in row]
                for row in sheet.iter_rows()
            )
            _add_capped(builder, rows, "sheet")
        builder.flush()
    finally:
        workbook.close()
    return ParsedDocument(title, tuple(builder.sections))


def _add_capped(builder: SectionBuilder, rows: Iterable[list[str]], what: str) -> None:
    """Records of `rows`, read up to MAX_SHEET_CELLS cells; a note ends a longer table."""
    limit = MAX_SHEET_CELLS
    seen = {"cells": 0, "rows": 0, "cut": False}

    def capped() -> Iterator[list[str]]:
        for row in rows:
            seen["cells"] += max(len(row), 1)
            if seen["cells"] > limit:
                seen["cut"] = True
                return
            seen["rows"] += 1
            yield row

    _add_records(builder, capped())
    if seen["cut"]:
        builder.line(
            f"(Truncated: only the first {seen['rows']:,} rows of this {what} are indexed;"
            f" the limit is {limit:,} cells.)"
        )


# --- CSV -----------------------------------------------------------------------------------

_DELIMITERS = ",;\t|"
_SNIFF_CHARS = 4096  # csv.Sniffer's quote regex is quadratic in its sample


def _parse_csv(data: bytes, *, tab: bool) -> ParsedDocument:
    text = strip_control(decode_text(data))
    delimiter = "\t" if tab else _sniff_delimiter(text)
    builder = SectionBuilder()
    try:
        _add_capped(builder, csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), "file")
    except csv.Error as exc:
        raise DocumentError(f"malformed CSV ({_describe(exc)})") from None
    builder.flush()
    return ParsedDocument("", tuple(builder.sections))


def _sniff_delimiter(text: str) -> str:
    sample = text[:_SNIFF_CHARS]
    if len(text) > _SNIFF_CHARS and "\n" in sample:  # whole lines only
        sample = sample[: sample.rindex("\n")]
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        return ","


_OOXML: dict[str, Callable[[bytes], ParsedDocument]] = {
    "docx": _parse_docx,
    "pptx": _parse_pptx,
    "xlsx": _parse_xlsx,
}
