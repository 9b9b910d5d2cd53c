#!/usr/bin/env python3
"""Build a retrieval benchmark from the Apache HTTP Server SSL/TLS FAQ.

Corpus: the English HTML pages of the Apache HTTP Server 2.4 manual as shipped
by Debian's ``apache2-doc`` package (``/usr/share/doc/apache2-doc/manual/en``:
the guides, ``mod/``, ``programs/``, ``howto/``, ``ssl/``, ``vhosts/``, ...),
minus ``ssl/ssl_faq.html`` (which holds the answers), ``faq/`` (a stub pointing
to the wiki) and the release notes (``new_features_*.html``).  Document ids
are the paths relative to ``en/`` (``mod/mod_ssl.html``).

Questions: every ``<h3>`` heading of ``ssl/ssl_faq.html`` (all of them are
questions).  The gold documents of a question are the corpus pages its answer
(up to the next ``<h2>``/``<h3>`` heading or the end of the page body) links
to: ``href`` resolved relative to ``ssl/``, fragment dropped; links to other
sites and to the FAQ itself are ignored.  Questions whose answer links to no
corpus page are dropped (and counted).

Usage::

    python bench/apache_dataset.py OUT_DIR [--sources DIR]

Writes ``OUT_DIR/corpus/``, ``OUT_DIR/questions.jsonl`` and
``OUT_DIR/dataset.json``.  Standard library only.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from faq_corpus import Excluded, Package, build_html_faq, cli_main, heading_sections

PACKAGE = "apache2-doc"
DEFAULT_SOURCES = Path("/usr/share/doc/apache2-doc/manual/en")
FAQ = "ssl/ssl_faq.html"

APACHE = Package(
    name=PACKAGE,
    default=DEFAULT_SOURCES,
    marker=FAQ,
    listed="/en/" + FAQ,  # the English manual, not another language's
    title="the Apache HTTP Server manual",
    hint=f"install the Apache manual with `apt-get install {PACKAGE}` or pass --sources DIR",
)
EXCLUDED = Excluded(
    dirs={"faq", "images", "style"},
    files={FAQ},
    top_level=re.compile(r"^new_features_.*\.html$"),
)

HEADING_RE = re.compile(r"<h3[^>]*>(.*?)</h3>", re.I | re.S)
END_RE = re.compile(r'<h[1-3][\s>]|<div class="(?:top|bottomlang)">', re.I)


def parse_faq(text: str) -> list[tuple[str, str]]:
    """Return (question, answer HTML) for each ``<h3>`` section of the FAQ."""
    return heading_sections(text, HEADING_RE, END_RE)


def build(out_dir: Path, sources_dir: Path | None = None) -> dict:
    return build_html_faq(out_dir, sources_dir, APACHE, EXCLUDED, parse_faq)


def main(argv: list[str] | None = None) -> int:
    return cli_main(
        argv,
        build,
        "Build the Apache SSL FAQ retrieval benchmark dataset.",
        f"manual folder holding {FAQ} (default: from `dpkg -L {PACKAGE}`)",
    )


if __name__ == "__main__":
    sys.exit(main())
