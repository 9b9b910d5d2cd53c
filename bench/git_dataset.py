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

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

PACKAGE = "git-doc"
DEFAULT_SOURCES = Path("/usr/share/doc/git-doc")
FAQ = "gitfaq.txt"
EXCLUDED_FILES = {"gitfaq.html"}

ANCHOR_RE = re.compile(r"^\[\[[^\]]+\]\]\s*$")
LINKGIT_RE = re.compile(r"linkgit:([\w.-]+)\[\d+\]")
INLINE_RE = re.compile(r"`([^`]+)`")
GIT_CMD_RE = re.compile(r"(?:^|[\s;|&(])git\s+([a-z][a-z0-9-]*)")
DT_RE = re.compile(r'<dt class="hdlist1">\s*(.*?)\s*</dt>', re.S)
HEADING_RE = re.compile(r"<h[2-4][^>]*>(.*?)</h[2-4]>", re.S)


def package_version(package: str) -> str | None:
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
    """Return the git-doc folder (the one holding gitfaq.txt)."""
    hint = f"install the Git documentation with `apt-get install {PACKAGE}` or pass --sources DIR"
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
                    candidates.append(Path(line).parent)
    except (OSError, subprocess.SubprocessError):
        pass
    candidates.append(DEFAULT_SOURCES)
    for cand in candidates:
        if (cand / FAQ).is_file():
            return cand
    raise SystemExit(
        f"error: Git documentation not found "
        f"(looked via `dpkg -L {PACKAGE}` and in {DEFAULT_SOURCES}); {hint}"
    )


def plain_text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


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
            text = config.read_text(encoding="utf-8", errors="replace")
            self.config_vars = {plain_text(t).lower() for t in DT_RE.findall(text)}
        hooks = corpus_dir / "githooks.html"
        if hooks.is_file():
            text = hooks.read_text(encoding="utf-8", errors="replace")
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
            if rel in EXCLUDED_FILES:
                continue
            docs.add(rel)
            dest = corpus_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)

    names = GitDocs(docs, corpus_dir)
    entries = parse_faq((src / FAQ).read_text(encoding="utf-8", errors="replace"))
    questions = []
    dropped: list[str] = []
    for question, body in entries:
        gold = names.gold(body)
        if gold:
            questions.append({"question": question, "doc": gold})
        else:
            dropped.append(question)

    with open(out_dir / "questions.jsonl", "w", encoding="utf-8") as fh:
        for q in questions:
            fh.write(json.dumps(q, ensure_ascii=False) + "\n")

    stats = {
        "package": PACKAGE,
        "version": package_version(PACKAGE),
        "sources": str(src),
        "documents_in_corpus": len(docs),
        "questions_found": len(entries),
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build the Git FAQ retrieval benchmark dataset.")
    ap.add_argument("out_dir", type=Path, help="output folder")
    ap.add_argument(
        "--sources",
        type=Path,
        default=None,
        help=f"folder holding {FAQ} (default: from `dpkg -L {PACKAGE}`)",
    )
    args = ap.parse_args(argv)
    stats = build(args.out_dir, args.sources)
    print(f"package:             {stats['package']} {stats['version']}")
    print(f"sources:             {stats['sources']}")
    print(f"documents in corpus: {stats['documents_in_corpus']}")
    print(f"questions found:     {stats['questions_found']}")
    print(f"questions kept:      {stats['questions_kept']}")
    print(f"dropped (no gold):   {stats['dropped_no_gold']}")
    print(f"distinct gold docs:  {stats['distinct_gold_documents']}")
    print(f"gold docs/question:  {stats['gold_per_question_mean']}")
    print(f"time:                {stats['seconds']} s")
    print(f"wrote {args.out_dir / 'corpus'}, questions.jsonl, dataset.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
