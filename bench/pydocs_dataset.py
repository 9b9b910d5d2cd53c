#!/usr/bin/env python3
"""Build a retrieval benchmark from the Python documentation FAQ.

Corpus: the reStructuredText sources of the Python 3.11 documentation as
shipped by Debian's ``python3.11-doc`` package (``.../html/_sources``), minus
``faq/`` (which holds the answers), ``whatsnew/`` and changelog-like files.
Each copied file is renamed to ``.rst`` (``library/shutil.rst.txt`` ->
``corpus/library/shutil.rst``) so that the indexer treats it as reST.

Questions: every section heading in ``faq/*.txt`` whose text ends with "?".
The gold documents of a question are the corpus documents referenced by the
cross-reference roles in its answer (the section body up to the next heading
of the same or a higher level):

* ``:mod:`x``` -> the page that declares ``.. module:: x`` (or ``library/x.rst``)
* ``:func:`` ``:meth:`` ``:class:`` ``:exc:`` ``:data:`` ``:attr:`` ``:const:``
  ``:obj:`` -> the page that defines the object (index of ``.. function::``
  etc. directives in the corpus), else the page of the longest module prefix
  (``os.path.join`` -> ``library/os.path.rst``), else for builtins
  ``library/functions.rst`` / ``library/stdtypes.rst`` /
  ``library/exceptions.rst``
* ``:c:func:`` ``:c:data:`` ``:c:type:`` ``:c:macro:`` ``:c:member:`` -> the
  C-API page that defines the C object
* ``:ref:`label``` / ``:ref:`text <label>``` / ``:keyword:`x``` -> the page
  that defines ``.. _label:``
* ``:doc:`path``` -> that page
* ``:term:`x``` -> ``glossary.rst``

Only gold documents present in the corpus are kept; questions without any gold
document are dropped (and counted).

Usage::

    python bench/pydocs_dataset.py OUT_DIR [--sources DIR]

Writes ``OUT_DIR/corpus/``, ``OUT_DIR/questions.jsonl`` and
``OUT_DIR/dataset.json``.  Standard library only.
"""

from __future__ import annotations

import builtins
import posixpath
import re
import sys
import time
from pathlib import Path
from typing import Any

from faq_corpus import (
    Package,
    Questions,
    cli_main,
    fresh_corpus,
    read_text,
    source_files,
    write_dataset,
)

PACKAGE = "python3.11-doc"
DEFAULT_SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
PYDOCS = Package(
    name=PACKAGE,
    default=DEFAULT_SOURCES,
    marker="faq",
    folder=True,
    listed="/_sources/faq",
    title="Python 3.11 documentation sources",
    hint=(
        f"install the Python documentation sources with "
        f"`apt-get install {PACKAGE}` or pass --sources DIR"
    ),
    missing="{sources} is not a Python documentation _sources folder (no faq/ subfolder)",
)

# Top-level folders / file stems left out of the corpus.
EXCLUDED_DIRS = {"faq", "whatsnew"}
CHANGELOG_RE = re.compile(r"(changelog|^changes$|^news$|^history$)", re.I)

# reST section adornment characters (docutils accepts any non-alphanumeric
# printable 7-bit ASCII character).
ADORN_RE = re.compile(r"([!-/:-@\[-`{-~])\1*")

# Cross-reference roles: :role:`content`, with optional domain prefix.
ROLE_RE = re.compile(r":(?P<role>[a-zA-Z][\w:+-]*):`(?P<content>(?:[^`\\]|\\.)+)`")
PY_OBJ_ROLES = {"func", "meth", "class", "exc", "data", "attr", "const", "obj"}
C_ROLES = {"func", "data", "type", "macro", "member", "var", "struct", "expr"}

PY_DIRECTIVES = {
    "function",
    "class",
    "method",
    "classmethod",
    "staticmethod",
    "exception",
    "data",
    "attribute",
    "decorator",
    "decoratormethod",
    "property",
    "abstractmethod",
    "coroutinefunction",
    "coroutinemethod",
    "awaitablefunction",
    "awaitablemethod",
}
CLASS_LIKE = {"class", "exception"}
DIRECTIVE_RE = re.compile(
    r"^(?P<indent>\s*)\.\.\s+(?:(?P<domain>py|c):)?(?P<name>[\w-]+)::\s*(?P<arg>.*)$"
)
LABEL_RE = re.compile(r"^\s*\.\.\s+_(?:`(?P<q>[^`]+)`|(?P<l>[^:`][^:]*)):\s*$")

BUILTIN_TYPES = {
    "bool",
    "bytearray",
    "bytes",
    "complex",
    "dict",
    "float",
    "frozenset",
    "int",
    "list",
    "memoryview",
    "range",
    "set",
    "str",
    "tuple",
    "object",
    "type",
    "slice",
}


# --------------------------------------------------------------------------
# The corpus documents


def doc_id(rel: str) -> str:
    """``library/shutil.rst.txt`` or ``library/shutil.txt`` -> ``library/shutil.rst``."""
    if rel.endswith(".txt"):
        rel = rel[: -len(".txt")]
    if rel.endswith(".rst"):
        rel = rel[: -len(".rst")]
    return rel + ".rst"


def doc_base(doc: str) -> str:
    """``library/shutil.rst`` -> ``library/shutil`` (Sphinx docname)."""
    return doc[: -len(".rst")] if doc.endswith(".rst") else doc


def is_excluded(rel: str) -> bool:
    parts = rel.split("/")
    if parts[0] in EXCLUDED_DIRS:
        return True
    stem = parts[-1].split(".")[0]
    return bool(CHANGELOG_RE.search(stem))


# --------------------------------------------------------------------------
# Corpus indexes


class CorpusIndex:
    def __init__(self, docs: dict[str, str]):
        self.docs = docs  # doc id -> text
        self.labels: dict[str, str] = {}
        self.modules: dict[str, str] = {}
        self.objects: dict[str, str] = {}
        self.objects_noindex: dict[str, str] = {}
        self.c_objects: dict[str, str] = {}
        self.envvars: dict[str, str] = {}
        self.docnames = {doc_base(d): d for d in docs}
        for doc in sorted(docs):
            self._scan(doc, docs[doc])

    def _scan(self, doc: str, text: str) -> None:
        lines = text.splitlines()
        module: str | None = None
        class_stack: list[tuple[int, str]] = []  # (indent, class path)
        for i, line in enumerate(lines):
            m = LABEL_RE.match(line)
            if m:
                label = norm_label(m.group("q") or m.group("l"))
                self.labels.setdefault(label, doc)
                continue
            m = DIRECTIVE_RE.match(line)
            if not m:
                continue
            indent = len(m.group("indent").expandtabs())
            domain, name, arg = m.group("domain"), m.group("name"), m.group("arg").strip()
            while class_stack and class_stack[-1][0] >= indent:
                class_stack.pop()
            if domain in (None, "py") and name in ("module", "currentmodule"):
                module = None if arg in ("", "None") else arg.split()[0]
                class_stack.clear()
                if name == "module" and module:
                    self.modules.setdefault(module, doc)
                continue
            noindex = _has_noindex(lines, i, indent)
            if domain is None and name == "envvar" and arg:
                self.envvars.setdefault(arg.split()[0], doc)
                continue
            # A directive may carry several signatures, one per line.
            sigs = [arg, *_continuation_signatures(lines, i, indent)]
            if domain == "c":
                for sig in sigs:
                    cname = c_name(sig)
                    if cname and not noindex:
                        self.c_objects.setdefault(cname, doc)
                continue
            if name not in PY_DIRECTIVES or not arg:
                continue
            first = None
            for sig in sigs:
                mname = re.match(r"[\w.]+", sig)
                if not mname:
                    continue
                path = obj = mname.group(0)
                if class_stack:
                    # Like Sphinx: ``.. method:: list.sort`` nested in
                    # ``.. class:: list`` is ``list.sort``, not ``list.list.sort``.
                    cls = class_stack[-1][1]
                    if obj != cls and not obj.startswith(cls + "."):
                        path = f"{cls}.{obj}"
                full = f"{module}.{path}" if module else path
                target = self.objects_noindex if noindex else self.objects
                target.setdefault(full, doc)
                first = first or path
            if name in CLASS_LIKE and first:
                class_stack.append((indent, first))

    # -- resolution -------------------------------------------------------

    def resolve_label(self, label: str) -> str | None:
        return self.labels.get(norm_label(label))

    def resolve_doc(self, target: str, from_doc: str) -> str | None:
        target = target.strip()
        if target.startswith("/"):
            name = target.lstrip("/")
        else:
            name = posixpath.normpath(posixpath.join(posixpath.dirname(from_doc), target))
        return self.docnames.get(name)

    def resolve_module(self, name: str) -> str | None:
        if name in self.modules:
            return self.modules[name]
        cand = f"library/{name}.rst"
        if cand in self.docs:
            return cand
        cand = f"library/{name.lower()}.rst"
        return cand if cand in self.docs else None

    def resolve_py(self, target: str, role: str, module: str | None) -> str | None:
        target = target.strip()
        if target.endswith("()"):
            target = target[:-2]
        if not target:
            return None
        if target.startswith("."):
            suffix = target
            hits = {d for n, d in self.objects.items() if n.endswith(suffix)}
            if len(hits) == 1:
                return hits.pop()
            target = target.lstrip(".")
        parts = target.split(".")
        if role == "mod":
            # :mod:`~concurrent.futures.ThreadPoolExecutor` -> longest prefix.
            for n in range(len(parts), 0, -1):
                doc = self.resolve_module(".".join(parts[:n]))
                if doc:
                    return doc
            return None
        head = target.split(".")[0]
        if head in BUILTIN_TYPES and head not in ("object", "type") and role != "func":
            # Builtin types (:class:`dict`, :meth:`list.sort`) are described
            # in stdtypes (Sphinx would send :class:`int` to functions.rst).
            return _existing(self.docs, "library/stdtypes.rst")
        names = [f"{module}.{target}", target] if module else [target]
        if re.fullmatch(r"__\w+__", target):
            # Bare special method name: documented as object.__x__.
            names.append(f"object.{target}")
        for name in names:
            for table in (self.objects, self.objects_noindex):
                if name in table:
                    return table[name]
        # Longest module prefix (a bare name is never taken as a module).
        if len(parts) > 1:
            for n in range(len(parts), 0, -1):
                doc = self.resolve_module(".".join(parts[:n]))
                if doc:
                    return doc
        # Builtins.
        if head in BUILTIN_TYPES:
            return _existing(self.docs, "library/stdtypes.rst")
        obj = getattr(builtins, head, None)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            return _existing(self.docs, "library/exceptions.rst")
        if role == "exc" and head.endswith(("Error", "Exception", "Warning")):
            return _existing(self.docs, "library/exceptions.rst")
        if obj is not None and len(parts) == 1:
            return _existing(self.docs, "library/functions.rst")
        return None

    def resolve_c(self, target: str) -> str | None:
        target = target.strip()
        if target.endswith("()"):
            target = target[:-2]
        return self.c_objects.get(target)


def _existing(docs: dict[str, str], doc: str) -> str | None:
    return doc if doc in docs else None


def _continuation_signatures(lines: list[str], i: int, indent: int) -> list[str]:
    """Extra signature lines following a directive line (before any option)."""
    sigs = []
    for line in lines[i + 1 : i + 20]:
        s = line.strip()
        if not s or s.startswith(":"):
            break
        if len(line) - len(line.lstrip()) <= indent:
            break
        sigs.append(s)
    return sigs


def _has_noindex(lines: list[str], i: int, indent: int) -> bool:
    """Whether the directive starting at line i has a :noindex: option."""
    for line in lines[i + 1 : i + 12]:
        s = line.strip()
        if not s:
            break
        if len(line) - len(line.lstrip()) <= indent:
            break
        if s in (":noindex:", ":no-index:", ":no-contents-entry:"):
            return True
    return False


def c_name(sig: str) -> str | None:
    sig = sig.strip()
    if not sig:
        return None
    m = re.search(r"(\w+)\s*\(", sig)
    if m and not re.match(r"\(\s*\*", sig[m.end() - 1 :]):
        # Function pointer declarations like ``int (*f)(...)`` are rare.
        return m.group(1)
    idents = re.findall(r"[A-Za-z_]\w*", sig.split("(")[0])
    return idents[-1] if idents else None


def norm_label(label: str) -> str:
    return " ".join(label.lower().split())


# --------------------------------------------------------------------------
# Inline markup


def split_role_content(content: str) -> tuple[str, str]:
    """Return (title, target) of a role content like ``title <target>``."""
    content = content.replace("\\`", "`").strip()
    m = re.match(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$", content, re.S)
    if m and m.group("title"):
        return m.group("title"), m.group("target").strip()
    return content, content


def clean_target(target: str) -> str:
    target = " ".join(target.split())
    return target.lstrip("~!")


def clean_inline(text: str) -> str:
    """Plain text of a heading with reST inline markup."""

    def role(m: re.Match) -> str:
        rname = m.group("role")
        title, target = split_role_content(m.group("content"))
        if title != target:
            return title
        t = title.lstrip("!")
        if t.startswith("~"):
            t = t[1:].split(".")[-1]
        if rname.endswith(("func", "meth")) and not t.endswith("()") and "(" not in t:
            # Sphinx adds parentheses to callables (add_function_parentheses).
            t += "()"
        return t

    text = ROLE_RE.sub(role, text)
    text = re.sub(r"``(.+?)``", r"\1", text)
    text = re.sub(r"`([^`<]+?)\s*<[^>]*>`__?", r"\1", text)  # hyperlinks
    text = re.sub(r"`([^`]+)`_{1,2}", r"\1", text)  # named references
    text = re.sub(r"`([^`]+)`", r"\1", text)  # default role
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"\1", text)
    text = re.sub(r"\|([^|\s][^|]*)\|", r"\1", text)  # substitutions
    text = re.sub(r"\\(.)", r"\1", text)
    return " ".join(text.split())


# --------------------------------------------------------------------------
# FAQ parsing


def parse_sections(text: str) -> list[dict[str, Any]]:
    """Return the section headings of a reST document.

    Each item: title (raw), level (0 = top), line (title line index),
    start (first body line), style.
    """
    lines = text.splitlines()
    styles: list[tuple[str, bool]] = []
    sections: list[dict[str, Any]] = []
    i = 0
    n = len(lines)

    def adorn(line: str) -> str | None:
        s = line.rstrip()
        if len(s) >= 2 and ADORN_RE.fullmatch(s):
            return s[0]
        return None

    while i < n:
        line = lines[i]
        prev_blank = i == 0 or not lines[i - 1].strip()
        # Overline + title + underline.
        ch = adorn(line)
        under = adorn(lines[i + 1]) if i + 1 < n else None
        if (
            ch
            and prev_blank
            and i + 2 < n
            and lines[i + 1].strip()
            and adorn(lines[i + 2]) == ch
            and len(lines[i + 2].rstrip()) == len(line.rstrip())
            and len(line.rstrip()) >= len(lines[i + 1].strip())
        ):
            style = (ch, True)
            title_line, start = i + 1, i + 3
            title = lines[i + 1].strip()
        elif (
            line.strip()
            and not line[0].isspace()
            and prev_blank
            and not ch
            and under
            and len(lines[i + 1].rstrip()) >= len(line.rstrip())
        ):
            style = (under, False)
            title_line, start = i, i + 2
            title = line.strip()
        else:
            i += 1
            continue
        if style not in styles:
            styles.append(style)
        sections.append(
            {
                "title": title,
                "level": styles.index(style),
                "line": title_line,
                "start": start,
            }
        )
        i = start
    # Body end = next heading at same or higher (numerically <=) level.
    for k, sec in enumerate(sections):
        end = len(lines)
        for nxt in sections[k + 1 :]:
            if nxt["level"] <= sec["level"]:
                # Overlined headings start one line earlier.
                end = nxt["line"] - (1 if styles[nxt["level"]][1] else 0)
                break
        sec["body"] = "\n".join(lines[sec["start"] : end])
    return sections


def gold_documents(body: str, index: CorpusIndex, faq_doc: str) -> list[str]:
    gold: list[str] = []
    module: str | None = None
    for line in body.splitlines():
        m = re.match(r"^\s*\.\.\s+(?:py:)?currentmodule::\s*(\S*)", line)
        if m:
            module = None if m.group(1) in ("", "None") else m.group(1)
    for m in ROLE_RE.finditer(body):
        role = m.group("role")
        _title, target = split_role_content(m.group("content"))
        target = clean_target(target)
        domain, _, rname = role.rpartition(":")
        doc = None
        if domain in ("", "py") and (rname in PY_OBJ_ROLES or rname == "mod"):
            doc = index.resolve_py(target, rname, module)
        elif domain == "c" and rname in C_ROLES:
            doc = index.resolve_c(target)
        elif domain in ("", "std") and rname in ("ref", "keyword"):
            doc = index.resolve_label(target)
        elif domain in ("", "std") and rname == "doc":
            doc = index.resolve_doc(target, doc_base(faq_doc))
        elif domain in ("", "std") and rname == "envvar":
            doc = index.envvars.get(target)
        elif domain in ("", "std") and rname == "term":
            doc = _existing(index.docs, "glossary.rst")
        if doc and doc in index.docs and doc not in gold:
            gold.append(doc)
    return gold


# --------------------------------------------------------------------------
# Build


def build(out_dir: Path, sources_dir: Path | None = None) -> dict:
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    src = PYDOCS.locate(sources_dir)

    # 1. Read and copy the corpus.
    corpus_dir = fresh_corpus(out_dir)
    docs: dict[str, str] = {}
    faq_files: list[tuple[str, str]] = []
    for path, rel in source_files(src, ".txt"):
        text = read_text(path)
        if rel.split("/")[0] == "faq":
            faq_files.append((rel, text))
        if is_excluded(rel):
            continue
        did = doc_id(rel)
        docs[did] = text
        dest = corpus_dir / did
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")

    index = CorpusIndex(docs)

    # 2. Parse the FAQ.
    questions = Questions()
    for rel, text in sorted(faq_files):
        for sec in parse_sections(text):
            question = clean_inline(sec["title"])
            if question.endswith("?"):
                questions.add(question, gold_documents(sec["body"], index, doc_id(rel)), faq=rel)

    about = {"sources": str(src), "documents_in_corpus": len(docs), "faq_files": len(faq_files)}
    per_faq = {
        rel: sum(1 for q in questions.kept if q["faq"] == rel) for rel, _ in sorted(faq_files)
    }
    return write_dataset(
        out_dir, t0, about, questions, list_dropped=False, more={"questions_per_faq": per_faq}
    )


def main(argv: list[str] | None = None) -> int:
    return cli_main(
        argv,
        build,
        "Build the Python-docs FAQ retrieval benchmark dataset.",
        "reST _sources folder (default: from `dpkg -L python3.11-doc`)",
    )


if __name__ == "__main__":
    sys.exit(main())
