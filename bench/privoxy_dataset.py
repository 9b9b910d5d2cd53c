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

import argparse
import gzip
import html
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

PACKAGE = "privoxy"
DEFAULT_SOURCES = Path("/usr/share/doc/privoxy")
FAQ_DIR = "faq"
FAQ = "faq/index.html"

EXCLUDED_DIRS = {FAQ_DIR, "images"}
EXCLUDED_FILES = {"user-manual/whatsnew.html"}

HEADING_RE = re.compile(r"<h3[^>]*>(.*?)</h3\s*>", re.I | re.S)
END_RE = re.compile(r'<h[1-3][\s>]|<div\s+class="navfooter"', re.I)
NUMBER_RE = re.compile(r"^\d+(?:\.\d+)*\.\s*")


def package_version(package: str, src: Path | None = None) -> str | None:
    """The installed package's version, else the one its changelog.Debian.gz names."""
    if src is not None and (src / "changelog.Debian.gz").is_file():
        with gzip.open(src / "changelog.Debian.gz", "rt", encoding="utf-8") as fh:
            m = re.match(rf"{re.escape(package)} \(([^)]+)\)", fh.readline())
        if m:
            return m.group(1)
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", package],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def locate_sources(sources_dir: Path | None = None) -> Path:
    """Return the privoxy documentation folder (the one holding faq/index.html)."""
    hint = (
        f"unpack the {PACKAGE} package (`apt-get download {PACKAGE}`, `dpkg-deb -x`) "
        f"and pass --sources DIR"
    )
    if sources_dir is not None:
        sources_dir = Path(sources_dir)
        if not (sources_dir / FAQ).is_file():
            raise SystemExit(f"error: no {FAQ} in {sources_dir}; {hint}")
        return sources_dir
    candidates: list[Path] = []
    try:
        proc = subprocess.run(["dpkg", "-L", PACKAGE], capture_output=True, text=True, timeout=20)
        if proc.returncode == 0:
            for line in proc.stdout.splitlines():
                line = line.strip()
                if line.endswith("/" + FAQ):
                    candidates.append(Path(line).parent.parent)
    except (OSError, subprocess.SubprocessError):
        pass
    candidates.append(DEFAULT_SOURCES)
    for cand in candidates:
        if (cand / FAQ).is_file():
            return cand
    raise SystemExit(
        f"error: the Privoxy documentation not found "
        f"(looked via `dpkg -L {PACKAGE}` and in {DEFAULT_SOURCES}); {hint}"
    )


def is_excluded(rel: str) -> bool:
    parts = rel.split("/")
    return parts[0] in EXCLUDED_DIRS or rel in EXCLUDED_FILES


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            for name, value in attrs:
                if name == "href" and value:
                    self.hrefs.append(value)


def linked_documents(body: str, from_doc: str, docs: set[str]) -> list[str]:
    """Corpus pages linked from an HTML fragment of page ``from_doc``, in order."""
    parser = _Links()
    parser.feed(body)
    parser.close()
    gold: list[str] = []
    for href in parser.hrefs:
        parts = urlsplit(href.strip())
        if parts.scheme or parts.netloc or not parts.path:
            continue
        target = posixpath.normpath(
            posixpath.join(posixpath.dirname(from_doc), unquote(parts.path))
        )
        if target in docs and target not in gold:
            gold.append(target)
    return gold


def plain_text(fragment: str) -> str:
    text = re.sub(r"<[^>]+>", "", fragment)
    return " ".join(html.unescape(text).split())


def parse_faq(text: str) -> list[tuple[str, str]]:
    """Return (question, answer HTML) for each ``<h3>`` section of a FAQ page."""
    entries = []
    for m in HEADING_RE.finditer(text):
        end = END_RE.search(text, m.end())
        body = text[m.end() : end.start() if end else len(text)]
        question = NUMBER_RE.sub("", plain_text(m.group(1)))
        if question:
            entries.append((question, body))
    return entries


def build(out_dir: Path, sources_dir: Path | None = None) -> dict:
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    src = locate_sources(sources_dir)

    corpus_dir = out_dir / "corpus"
    if corpus_dir.exists():
        shutil.rmtree(corpus_dir)
    corpus_dir.mkdir(parents=True)
    docs: set[str] = set()
    for root, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for fname in sorted(filenames):
            if not fname.endswith(".html"):
                continue
            path = Path(root) / fname
            rel = path.relative_to(src).as_posix()
            if is_excluded(rel):
                continue
            docs.add(rel)
            dest = corpus_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)

    questions = []
    dropped: list[str] = []
    faq_pages = sorted(p.name for p in (src / FAQ_DIR).glob("*.html"))
    found = 0
    for name in faq_pages:
        rel = f"{FAQ_DIR}/{name}"
        text = (src / rel).read_text(encoding="utf-8", errors="replace")
        for question, body in parse_faq(text):
            found += 1
            gold = linked_documents(body, rel, docs)
            if gold:
                questions.append({"question": question, "doc": gold, "faq": rel})
            else:
                dropped.append(question)

    with open(out_dir / "questions.jsonl", "w", encoding="utf-8") as fh:
        for q in questions:
            fh.write(json.dumps(q, ensure_ascii=False) + "\n")

    stats = {
        "package": PACKAGE,
        "version": package_version(PACKAGE, src),
        "sources": str(src),
        "documents_in_corpus": len(docs),
        "faq_pages": len(faq_pages),
        "questions_found": found,
        "questions_kept": len(questions),
        "dropped_no_gold": len(dropped),
        "dropped": dropped,
        "distinct_gold_documents": len({d for q in questions for d in q["doc"]}),
        "gold_per_question_mean": round(
            sum(len(q["doc"]) for q in questions) / max(1, len(questions)), 2
        ),
        "seconds": round(time.monotonic() - t0, 2),
    }
    (out_dir / "dataset.json").write_text(
        json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return stats


def print_stats(stats: dict, out_dir: Path) -> None:
    print(f"package:             {stats['package']} {stats['version']}")
    print(f"sources:             {stats['sources']}")
    print(f"documents in corpus: {stats['documents_in_corpus']}")
    print(f"questions found:     {stats['questions_found']}")
    print(f"questions kept:      {stats['questions_kept']}")
    print(f"dropped (no gold):   {stats['dropped_no_gold']}")
    print(f"distinct gold docs:  {stats['distinct_gold_documents']}")
    print(f"gold docs/question:  {stats['gold_per_question_mean']}")
    print(f"time:                {stats['seconds']} s")
    print(f"wrote {out_dir / 'corpus'}, questions.jsonl, dataset.json")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the Privoxy FAQ retrieval benchmark dataset.")
    ap.add_argument("out_dir", type=Path, help="output folder")
    ap.add_argument(
        "--sources",
        type=Path,
        default=None,
        help=f"documentation folder holding {FAQ} (default: from `dpkg -L {PACKAGE}`)",
    )
    args = ap.parse_args(argv)
    print_stats(build(args.out_dir, args.sources), args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
