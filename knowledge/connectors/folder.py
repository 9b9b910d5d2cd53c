"""A folder of documents on a disk (or a mounted share): every file under it, recursively,
hidden ones excepted, filtered by `include` / `exclude` globs. Every sync lists the whole
folder and reads each file to hash it: a file's bytes, not its mtime, say if it changed."""

from __future__ import annotations

import asyncio
import fnmatch
import os
from collections.abc import AsyncIterator, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.errors import SourceError
from knowledge.config import FolderSource
from knowledge.connectors.base import Entry


@dataclass(frozen=True, slots=True)
class SourceFile:
    doc_id: str  # relative path, forward slashes
    path: Path
    size: int
    modified: float


class FolderConnector:
    full_listing = True

    def __init__(self, source: FolderSource) -> None:
        self.source = source
        self.name = source.source_name
        self.expected: int | None = None

    async def entries(self, state: dict[str, Any], known: Collection[str]) -> AsyncIterator[Entry]:
        files = await asyncio.to_thread(lambda: list(scan(self.source)))
        self.expected = len(files)
        for file in files:
            yield Entry(
                doc_id=file.doc_id,
                uri=self.uri(file),
                modified=file.modified,
                size=file.size,
            )

    async def read(self, entry: Entry) -> bytes:
        path = self.source.path / entry.doc_id
        try:
            return await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise SourceError(f"unreadable: {exc.strerror or exc.__class__.__name__}") from None

    async def close(self) -> None:
        return None

    def uri(self, file: SourceFile) -> str:
        if self.source.base_url:
            return self.source.base_url.rstrip("/") + "/" + file.doc_id
        return file.path.resolve().as_uri()


def scan(source: FolderSource) -> Iterator[SourceFile]:
    """Every file under the source folder (recursively, in a stable order), hidden ones excepted."""
    root = source.path
    if not root.exists():
        raise SourceError(f"source folder {root} does not exist")
    if not root.is_dir():
        raise SourceError(f"source {root} is not a folder")
    try:
        walker = sorted(os.walk(root, onerror=_raise))
    except OSError as exc:
        raise SourceError(f"cannot read source folder {root}: {exc.strerror or exc}") from exc
    for dirpath, dirnames, filenames in walker:
        rel_dir = Path(dirpath).relative_to(root)
        if any(part.startswith(".") for part in rel_dir.parts):
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for filename in sorted(filenames):
            if filename.startswith("."):
                continue
            path = Path(dirpath) / filename
            doc_id = (rel_dir / filename).as_posix()
            if not _selected(doc_id, source):
                continue
            try:
                st = path.stat()
            except OSError:
                st = None
            yield SourceFile(doc_id, path, st.st_size if st else -1, st.st_mtime if st else 0.0)


def _selected(doc_id: str, source: FolderSource) -> bool:
    included = any(fnmatch.fnmatch(doc_id, pattern) for pattern in source.include)
    return included and not any(fnmatch.fnmatch(doc_id, pattern) for pattern in source.exclude)


def _raise(exc: OSError) -> None:
    raise exc
