"""Finding the documents of a source folder."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from base.errors import ConfigError, SourceError
from knowledge.config import SourceConfig


@dataclass(frozen=True, slots=True)
class SourceFile:
    source: SourceConfig
    doc_id: str  # relative path, forward slashes
    path: Path
    size: int
    modified: float

    @property
    def uri(self) -> str:
        if self.source.base_url:
            return self.source.base_url.rstrip("/") + "/" + self.doc_id
        return self.path.resolve().as_uri()


def check_sources(sources: list[SourceConfig]) -> None:
    names: dict[str, Path] = {}
    for source in sources:
        if not source.path.exists():
            raise SourceError(f"source folder {source.path} does not exist")
        if not source.path.is_dir():
            raise SourceError(f"source {source.path} is not a folder")
        if source.source_name in names:
            raise ConfigError(
                f"two sources are named {source.source_name!r} ({names[source.source_name]} and "
                f"{source.path}); give one a `name`"
            )
        names[source.source_name] = source.path


def scan(source: SourceConfig) -> Iterator[SourceFile]:
    """Every file under the source folder (recursively, in a stable order), hidden ones excepted."""
    root = source.path
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
            yield SourceFile(
                source, doc_id, path, st.st_size if st else -1, st.st_mtime if st else 0.0
            )


def _selected(doc_id: str, source: SourceConfig) -> bool:
    included = any(fnmatch.fnmatch(doc_id, pattern) for pattern in source.include)
    return included and not any(fnmatch.fnmatch(doc_id, pattern) for pattern in source.exclude)


def _raise(exc: OSError) -> None:
    raise exc
