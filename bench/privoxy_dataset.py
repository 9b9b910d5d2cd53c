#!/usr/bin/env python3
"""Build a retrieval benchmark from the Privoxy FAQ.

Corpus: the HTML documentation of the Privoxy web proxy as shipped by Debian's
``privoxy`` package (``/usr/share/doc/privoxy``): the user manual, the
developer manual, the manual page and the top-level index, minus ``faq/``
(which holds the answers) and the release notes
(``user-manual/whatsnew.html``).  Document ids are the paths relative to the
sources folder (``user-manual/actions-file.html``).

The package is a daemon, not a documentation package: to build without
installing (and starting) it, unpack it and pass the folder::

    apt-get download privoxy && dpkg-deb -x privoxy_*.deb /tmp/privoxy
    python bench/privoxy_dataset.py OUT_DIR --sources /tmp/privoxy/usr/share/doc/privoxy

Questions: every ``<h3>`` heading of ``faq/*.html`` (DocBook output: each is a
numbered question, "3.2. ..."; the number is removed).  The gold documents of
a question are the corpus pages its answer (up to the next heading or the
page footer) links to: ``href`` resolved relative to ``faq/``, fragment
dropped; links to other sites and to the FAQ itself are ignored.  Questions
whose answer links to no corpus page are dropped (and counted).

Usage::

    python bench/privoxy_dataset.py OUT_DIR [--sources DIR]

Writes ``OUT_DIR/corpus/``, ``OUT_DIR/questions.jsonl`` and
``OUT_DIR/dataset.json``.  Standard library only.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from faq_corpus import Excluded, Package, build_html_faq, cli_main, heading_sections, plain_text

PACKAGE = "privoxy"
DEFAULT_SOURCES = Path("/usr/share/doc/privoxy")
FAQ_DIR = "faq"
FAQ = "faq/index.html"

PRIVOXY = Package(
    name=PACKAGE,
    default=DEFAULT_SOURCES,
    marker=FAQ,
    title="the Privoxy documentation",
    hint=(
        f"unpack the {PACKAGE} package (`apt-get download {PACKAGE}`, `dpkg-deb -x`) "
        f"and pass --sources DIR"
    ),
    changelog=True,  # unpacked, not installed: the version is the changelog's
)
EXCLUDED = Excluded(dirs={FAQ_DIR, "images"}, files={"user-manual/whatsnew.html"})

HEADING_RE = re.compile(r"<h3[^>]*>(.*?)</h3\s*>", re.I | re.S)
END_RE = re.compile(r'<h[1-3][\s>]|<div\s+class="navfooter"', re.I)
NUMBER_RE = re.compile(r"^\d+(?:\.\d+)*\.\s*")


def parse_faq(text: str) -> list[tuple[str, str]]:
    """Return (question, answer HTML) for each ``<h3>`` section of a FAQ page."""
    return heading_sections(
        text, HEADING_RE, END_RE, lambda heading: NUMBER_RE.sub("", plain_text(heading))
    )


def build(out_dir: Path, sources_dir: Path | None = None) -> dict:
    return build_html_faq(out_dir, sources_dir, PRIVOXY, EXCLUDED, parse_faq, faq_dir=FAQ_DIR)


def main(argv: list[str] | None = None) -> int:
    return cli_main(
        argv,
        build,
        "Build the Privoxy FAQ retrieval benchmark dataset.",
        f"documentation folder holding {FAQ} (default: from `dpkg -L {PACKAGE}`)",
    )


if __name__ == "__main__":
    sys.exit(main())
