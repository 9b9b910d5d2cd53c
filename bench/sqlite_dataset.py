#!/usr/bin/env python3
"""Build a retrieval benchmark from the SQLite documentation FAQ.

Corpus: the HTML pages of the SQLite documentation as shipped by Debian's
``sqlite3-doc`` package (``/usr/share/doc/sqlite3``), including the
``c3ref/``, ``session/`` and ``syntax/`` sub-folders, minus ``faq.html``
(which holds the answers) and the release history (``releaselog/``,
``changes.html``, ``chronology.html``, ``news.html``, ``oldnews.html``,
``pressrelease-*.html``).  Document ids are the paths relative to the sources
folder (``lang_createtable.html``, ``c3ref/last_insert_rowid.html``).

Questions: every numbered entry of ``faq.html`` (``<a name="qN">`` followed by
``<p><b>(N) question</b></p>``), with the "(N)" prefix removed.  The gold
documents of a question are the corpus pages its answer links to (``href``
relative to ``faq.html``, fragment dropped; links to other sites and to the
FAQ itself are ignored).  Questions whose answer links to no corpus page are
dropped (and counted).

Usage::

    python bench/sqlite_dataset.py OUT_DIR [--sources DIR]

Writes ``OUT_DIR/corpus/``, ``OUT_DIR/questions.jsonl`` and
``OUT_DIR/dataset.json``.  Standard library only.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from faq_corpus import Excluded, Package, build_html_faq, cli_main, plain_text

PACKAGE = "sqlite3-doc"
DEFAULT_SOURCES = Path("/usr/share/doc/sqlite3")
FAQ = "faq.html"

SQLITE = Package(
    name=PACKAGE,
    default=DEFAULT_SOURCES,
    marker=FAQ,
    title="SQLite documentation",
    hint=f"install the SQLite documentation with `apt-get install {PACKAGE}` or pass --sources DIR",
)
EXCLUDED = Excluded(
    dirs={"releaselog", "search.d", "images"},
    files={FAQ, "changes.html", "chronology.html", "news.html", "oldnews.html"},
    top_level=re.compile(r"^pressrelease-.*\.html$"),
)

ENTRY_RE = re.compile(r'<a\s+name="q(\d+)"\s*>\s*</a>', re.I)
QUESTION_RE = re.compile(r"<b>(.*?)</b>", re.I | re.S)


def parse_faq(text: str) -> list[tuple[str, str]]:
    """Return (question, answer HTML) for each numbered FAQ entry."""
    marks = list(ENTRY_RE.finditer(text))
    entries = []
    for k, m in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(text)
        chunk = text[m.end() : end]
        q = QUESTION_RE.search(chunk)
        if not q:
            continue
        question = re.sub(r"^\(\d+\)\s*", "", plain_text(q.group(1)))
        entries.append((question, chunk[q.end() :]))
    return entries


def build(out_dir: Path, sources_dir: Path | None = None) -> dict:
    return build_html_faq(out_dir, sources_dir, SQLITE, EXCLUDED, parse_faq)


def main(argv: list[str] | None = None) -> int:
    return cli_main(
        argv,
        build,
        "Build the SQLite FAQ retrieval benchmark dataset.",
        f"folder holding {FAQ} (default: from `dpkg -L {PACKAGE}`)",
    )


if __name__ == "__main__":
    sys.exit(main())
