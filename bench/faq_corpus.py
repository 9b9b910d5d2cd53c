"""What the FAQ benchmark builders (``bench/<name>_dataset.py``) have in common.

Each builder turns the FAQ of a Debian documentation package into a retrieval benchmark:
the FAQ's questions, their gold documents (what the answers link to or name) and the
corpus (the package's documents without the FAQ), written as ``OUT_DIR/corpus/``,
``OUT_DIR/questions.jsonl`` and ``OUT_DIR/dataset.json``.  Here: finding the package's
sources folder and its version, copying the corpus, the corpus pages an HTML answer links
to, counting the kept and dropped questions, writing the files, printing the figures and
the command line.  A builder keeps where its FAQ is and how it splits into questions and
answers.

The builders import this as the top-level module ``faq_corpus``: ``bench/`` is on
``sys.path`` when they run as ``python bench/<name>_dataset.py`` and when they are
imported as ``bench.<name>_dataset`` (``bench/__init__.py``).  Standard library only.
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
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Package:
    """A Debian package and the sources folder it installs: the one holding ``marker``."""

    name: str
    default: Path  # where the package puts the sources folder
    marker: str  # the path, inside the sources folder, that tells it (the FAQ)
    title: str  # what the package holds: "<title> not found"
    hint: str  # how to get it, the end of every error message
    listed: str = ""  # how the marker's line in `dpkg -L` ends (default: "/" + marker)
    folder: bool = False  # the marker is a folder, not a file
    missing: str = "no {marker} in {sources}"  # why a --sources folder is not the one
    changelog: bool = False  # the version its changelog.Debian.gz names comes first

    def holds(self, folder: Path) -> bool:
        path = folder / self.marker
        return path.is_dir() if self.folder else path.is_file()

    def locate(self, sources_dir: Path | None = None) -> Path:
        """The sources folder: ``sources_dir``, else from `dpkg -L`, else the default."""
        if sources_dir is not None:
            sources_dir = Path(sources_dir)
            if not self.holds(sources_dir):
                why = self.missing.format(marker=self.marker, sources=sources_dir)
                raise SystemExit(f"error: {why}; {self.hint}")
            return sources_dir
        candidates: list[Path] = []
        listed = self.listed or "/" + self.marker
        try:
            proc = subprocess.run(
                ["dpkg", "-L", self.name], capture_output=True, text=True, timeout=20
            )
            if proc.returncode == 0:
                for line in proc.stdout.splitlines():
                    line = line.strip()
                    if line.endswith(listed):
                        candidates.append(Path(line[: -len(self.marker)]))
        except (OSError, subprocess.SubprocessError):
            pass
        candidates.append(self.default)
        for cand in candidates:
            if self.holds(cand):
                return cand
        raise SystemExit(
            f"error: {self.title} not found "
            f"(looked via `dpkg -L {self.name}` and in {self.default}); {self.hint}"
        )

    def version(self, src: Path) -> str | None:
        """The version its changelog in ``src`` names (if ``changelog``), else the installed one."""
        changelog = src / "changelog.Debian.gz"
        if self.changelog and changelog.is_file():
            with gzip.open(changelog, "rt", encoding="utf-8") as fh:
                m = re.match(rf"{re.escape(self.name)} \(([^)]+)\)", fh.readline())
            if m:
                return m.group(1)
        try:
            proc = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", self.name],
                capture_output=True,
                text=True,
                timeout=20,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        if proc.returncode != 0:
            return None
        return proc.stdout.strip() or None

    def about(self, src: Path, docs: Collection[str]) -> dict[str, Any]:
        """The first figures of its ``dataset.json``."""
        return {
            "package": self.name,
            "version": self.version(src),
            "sources": str(src),
            "documents_in_corpus": len(docs),
        }


@dataclass(frozen=True)
class Excluded:
    """Which documents a corpus leaves out, by their paths relative to the sources folder."""

    dirs: Collection[str] = ()  # top-level folders
    files: Collection[str] = ()  # paths
    top_level: re.Pattern[str] | None = None  # names of the files in the top-level folder

    def __call__(self, rel: str) -> bool:
        parts = rel.split("/")
        if parts[0] in self.dirs or rel in self.files:
            return True
        return len(parts) == 1 and self.top_level is not None and bool(self.top_level.match(rel))


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def plain_text(fragment: str) -> str:
    """The text of an HTML fragment: tags dropped, entities decoded, spaces collapsed."""
    text = re.sub(r"<[^>]+>", "", fragment)
    return " ".join(html.unescape(text).split())


def source_files(src: Path, suffix: str) -> Iterator[tuple[Path, str]]:
    """The files under ``src`` whose names end with ``suffix``, with their paths relative
    to it (``a/b.html``), folder by folder in name order."""
    for root, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for fname in sorted(filenames):
            if fname.endswith(suffix):
                path = Path(root) / fname
                yield path, path.relative_to(src).as_posix()


def fresh_corpus(out_dir: Path) -> Path:
    """``out_dir/corpus``, emptied."""
    corpus_dir = out_dir / "corpus"
    if corpus_dir.exists():
        shutil.rmtree(corpus_dir)
    corpus_dir.mkdir(parents=True)
    return corpus_dir


def copy_corpus(src: Path, corpus_dir: Path, excluded: Callable[[str], bool]) -> set[str]:
    """Copy the HTML pages of ``src`` but the excluded ones; return their ids (paths)."""
    docs: set[str] = set()
    for path, rel in source_files(src, ".html"):
        if excluded(rel):
            continue
        docs.add(rel)
        dest = corpus_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
    return docs


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


def heading_sections(
    text: str,
    heading: re.Pattern[str],
    end: re.Pattern[str],
    question: Callable[[str], str] = plain_text,
) -> list[tuple[str, str]]:
    """(question, answer HTML) for each ``heading`` match whose ``question`` (of its first
    group) is not empty; the answer runs up to the next ``end`` match or the end."""
    entries = []
    for m in heading.finditer(text):
        stop = end.search(text, m.end())
        body = text[m.end() : stop.start() if stop else len(text)]
        title = question(m.group(1))
        if title:
            entries.append((title, body))
    return entries


@dataclass
class Questions:
    """The FAQ's questions: those kept with their gold documents, and those dropped."""

    kept: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    @property
    def found(self) -> int:
        return len(self.kept) + len(self.dropped)

    def add(self, question: str, gold: list[str], **more: str) -> None:
        """Keep the question if it has gold documents (with ``more`` fields), else drop it."""
        if gold:
            self.kept.append({"question": question, "doc": gold, **more})
        else:
            self.dropped.append(question)


def write_dataset(
    out_dir: Path,
    t0: float,
    about: dict[str, Any],
    questions: Questions,
    *,
    list_dropped: bool = True,
    more: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``questions.jsonl`` and ``dataset.json`` (``about``, the question counts, the
    gold figures, ``more`` and the seconds since ``t0``); return the latter's figures."""
    kept = questions.kept
    with open(out_dir / "questions.jsonl", "w", encoding="utf-8") as fh:
        for q in kept:
            fh.write(json.dumps(q, ensure_ascii=False) + "\n")
    stats = {
        **about,
        "questions_found": questions.found,
        "questions_kept": len(kept),
        "dropped_no_gold": len(questions.dropped),
        **({"dropped": questions.dropped} if list_dropped else {}),
        "distinct_gold_documents": len({d for q in kept for d in q["doc"]}),
        "gold_per_question_mean": round(sum(len(q["doc"]) for q in kept) / max(1, len(kept)), 2),
        **(more or {}),
        "seconds": round(time.monotonic() - t0, 2),
    }
    (out_dir / "dataset.json").write_text(
        json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return stats


def build_html_faq(
    out_dir: Path,
    sources_dir: Path | None,
    package: Package,
    excluded: Callable[[str], bool],
    parse_faq: Callable[[str], list[tuple[str, str]]],
    faq_dir: str | None = None,
) -> dict[str, Any]:
    """The dataset of an HTML documentation whose FAQ is the page ``package.marker``, or
    every page of ``faq_dir`` (then each question names its page, ``faq``): the gold
    documents of a question are the corpus pages its answer links to."""
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    src = package.locate(sources_dir)
    docs = copy_corpus(src, fresh_corpus(out_dir), excluded)
    if faq_dir is None:
        pages = [package.marker]
    else:
        pages = sorted(f"{faq_dir}/{p.name}" for p in (src / faq_dir).glob("*.html"))
    questions = Questions()
    for rel in pages:
        label = {} if faq_dir is None else {"faq": rel}
        for question, body in parse_faq(read_text(src / rel)):
            questions.add(question, linked_documents(body, rel, docs), **label)
    about = package.about(src, docs)
    if faq_dir is not None:
        about["faq_pages"] = len(pages)
    return write_dataset(out_dir, t0, about, questions)


def print_stats(stats: dict[str, Any], out_dir: Path) -> None:
    if "package" in stats:
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


def cli_main(
    argv: list[str] | None,
    build: Callable[[Path, Path | None], dict[str, Any]],
    description: str,
    sources_help: str,
) -> int:
    """``OUT_DIR [--sources DIR]``: build the dataset and print its figures."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("out_dir", type=Path, help="output folder")
    ap.add_argument("--sources", type=Path, default=None, help=sources_help)
    args = ap.parse_args(argv)
    print_stats(build(args.out_dir, args.sources), args.out_dir)
    return 0
