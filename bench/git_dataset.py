#!/usr/bin/env python3
"""Build a retrieval benchmark from the Git FAQ (gitfaq(7)).

Corpus: the HTML pages of the Git documentation as shipped by Debian's
``git-doc`` package (``/usr/share/doc/git-doc``: the manual pages
``git-*.html``/``git*.html``, the user manual, ``howto/`` and ``technical/``),
minus ``gitfaq.html`` (which holds the answers).  The AsciiDoc ``.txt``
sources are not copied (they duplicate the pages).  Document ids are the paths
relative to the sources folder (``git-commit.html``).

Questions: every entry of ``gitfaq.txt`` (an ``[[anchor]]`` line followed by a
``question::`` line); its answer runs up to the next entry or section heading.
The FAQ links few pages, so the gold documents of a question are the corpus
pages that its entry (the question line and the answer) names, by these rules
(inline code may span lines):

* ``linkgit:NAME[N]`` -> ``NAME.html``
* a ``git <command>`` invocation in inline code (backticks) or in a listing
  block (between ``----`` lines) -> ``git-<command>.html``
* a configuration variable in inline code (``core.editor``) that
  ``git-config.html`` documents (one of its definition-list terms) ->
  ``git-config.html``
* a hook name in inline code (``pre-commit``) that ``githooks.html`` documents
  (one of its headings) -> ``githooks.html``
* a ``.gitignore``/``.gitattributes``-like file name in inline code ->
  ``gitignore.html``/``gitattributes.html``

Only pages present in the corpus are kept; questions without any gold page are
dropped (and counted).

Usage::

    python bench/git_dataset.py OUT_DIR [--sources DIR]

Writes ``OUT_DIR/corpus/``, ``OUT_DIR/questions.jsonl`` and
``OUT_DIR/dataset.json``.  Standard library only.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from faq_corpus import (
    Excluded,
    Package,
    Questions,
    cli_main,
    copy_corpus,
    fresh_corpus,
    plain_text,
    read_text,
    write_dataset,
)

PACKAGE = "git-doc"
DEFAULT_SOURCES = Path("/usr/share/doc/git-doc")
FAQ = "gitfaq.txt"

GIT = Package(
    name=PACKAGE,
    default=DEFAULT_SOURCES,
    marker=FAQ,
    title="Git documentation",
    hint=f"install the Git documentation with `apt-get install {PACKAGE}` or pass --sources DIR",
)
EXCLUDED = Excluded(files={"gitfaq.html"})

ANCHOR_RE = re.compile(r"^\[\[[^\]]+\]\]\s*$")
LINKGIT_RE = re.compile(r"linkgit:([\w.-]+)\[\d+\]")
INLINE_RE = re.compile(r"`([^`]+)`")
GIT_CMD_RE = re.compile(r"(?:^|[\s;|&(])git\s+([a-z][a-z0-9-]*)")
DT_RE = re.compile(r'<dt class="hdlist1">\s*(.*?)\s*</dt>', re.S)
HEADING_RE = re.compile(r"<h[2-4][^>]*>(.*?)</h[2-4]>", re.S)


def _is_underline(line: str) -> bool:
    s = line.rstrip()
    return len(s) >= 2 and set(s) <= {"-", "=", "~", "^", "+"}


def parse_faq(text: str) -> list[tuple[str, str]]:
    """Return (question, answer) for each ``[[anchor]]`` + ``question::`` entry."""
    lines = text.splitlines()
    entries: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        if not (ANCHOR_RE.match(lines[i]) and i + 1 < len(lines)):
            i += 1
            continue
        head = lines[i + 1].rstrip()
        if not head.endswith("::"):
            i += 1
            continue
        question = " ".join(head[:-2].replace("`", "").split())
        j = i + 2
        body: list[str] = []
        while j < len(lines):
            if ANCHOR_RE.match(lines[j]):
                break
            is_heading = (
                lines[j].strip()
                and j + 1 < len(lines)
                and _is_underline(lines[j + 1])
                and len(lines[j + 1].rstrip()) == len(lines[j].rstrip())
            )
            if is_heading:
                break
            body.append(lines[j])
            j += 1
        # The names in the question line count too (`http.postBuffer`).
        entries.append((question, "\n".join([head[:-2], *body])))
        i = j
    return entries


class GitDocs:
    """Names the corpus documents: configuration variables, hooks, pages."""

    def __init__(self, docs: set[str], corpus_dir: Path):
        self.docs = docs
        self.config_vars: set[str] = set()
        self.hooks: set[str] = set()
        config = corpus_dir / "git-config.html"
        if config.is_file():
            text = read_text(config)
            self.config_vars = {plain_text(t).lower() for t in DT_RE.findall(text)}
        hooks = corpus_dir / "githooks.html"
        if hooks.is_file():
            text = read_text(hooks)
            self.hooks = {plain_text(t) for t in HEADING_RE.findall(text)}

    def page(self, name: str) -> str | None:
        doc = f"{name}.html"
        return doc if doc in self.docs else None

    def gold(self, body: str) -> list[str]:
        found: list[str | None] = []
        found += [self.page(m.group(1)) for m in LINKGIT_RE.finditer(body)]
        code = [" ".join(m.group(1).split()) for m in INLINE_RE.finditer(body)]
        code += _listing_lines(body)
        for snippet in code:
            found += [self.page(f"git-{m.group(1)}") for m in GIT_CMD_RE.finditer(snippet)]
            if snippet.lower() in self.config_vars and "." in snippet:
                found.append(self.page("git-config"))
            if snippet in self.hooks:
                found.append(self.page("githooks"))
            if re.fullmatch(r"\.git[a-z]+", snippet):
                found.append(self.page(snippet[1:]))
        gold: list[str] = []
        for doc in found:
            if doc and doc not in gold:
                gold.append(doc)
        return gold


def _listing_lines(body: str) -> list[str]:
    """Lines of the ``----``-delimited listing blocks of an AsciiDoc body."""
    out: list[str] = []
    inside = False
    for line in body.splitlines():
        if re.fullmatch(r"-{4,}\s*", line):
            inside = not inside
            continue
        if inside:
            out.append(line.strip())
    return out


def build(out_dir: Path, sources_dir: Path | None = None) -> dict:
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    src = GIT.locate(sources_dir)
    corpus_dir = fresh_corpus(out_dir)
    docs = copy_corpus(src, corpus_dir, EXCLUDED)
    names = GitDocs(docs, corpus_dir)
    questions = Questions()
    for question, body in parse_faq(read_text(src / FAQ)):
        questions.add(question, names.gold(body))
    return write_dataset(out_dir, t0, GIT.about(src, docs), questions)


def main(argv: list[str] | None = None) -> int:
    return cli_main(
        argv,
        build,
        "Build the Git FAQ retrieval benchmark dataset.",
        f"folder holding {FAQ} (default: from `dpkg -L {PACKAGE}`)",
    )


if __name__ == "__main__":
    sys.exit(main())
