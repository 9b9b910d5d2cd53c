"""The values that flow through the knowledge pipeline.

A source folder yields `Document`s; chunking turns a document into `Chunk`s; the index
stores `ChunkRecord`s (a chunk plus its vector and what we need to re-sync it) and
answers a `SearchQuery` with `Hit`s.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Access(StrEnum):
    """Who may see a document.

    public      anyone, anywhere (the default)
    restricted  only in the channels / groups named in `allowed`
    private     only in direct messages of permitted people
    """

    PUBLIC = "public"
    RESTRICTED = "restricted"
    PRIVATE = "private"


@dataclass(frozen=True, slots=True)
class AccessScope:
    """What a question may see. Public documents are always visible.

    `principals` are the channel ids and group names of where (and by whom) a question
    was asked; a restricted document is visible when it allows any of them.
    `include_private` admits private documents (a DM of a permitted person).
    """

    principals: frozenset[str] = frozenset()
    include_private: bool = False

    @classmethod
    def public_only(cls) -> AccessScope:
        return cls()

    def grants(self) -> tuple[Grant, ...]:
        """The access rule, written once: public documents anywhere, private ones where private
        documents may be shown, restricted ones when they allow one of the principals. A document
        is visible when any grant admits it; each index backend turns the grants, term by term,
        into its own filter."""
        grants = [Grant(Access.PUBLIC)]
        if self.principals:
            grants.append(Grant(Access.RESTRICTED, self.principals))
        if self.include_private:
            grants.append(Grant(Access.PRIVATE))
        return tuple(grants)

    def sees(self, access: str, allowed: Iterable[str] = ()) -> bool:
        """Whether a document of `access` (allowing `allowed`) is visible in this scope."""
        allowed = tuple(allowed)
        return any(grant.admits(access, allowed) for grant in self.grants())


@dataclass(frozen=True, slots=True)
class Grant:
    """One term of the access rule: documents of `access`, and when `allowed_any` is set, only
    those whose `allowed` names one of its members (it is then never empty)."""

    access: Access
    allowed_any: frozenset[str] | None = None

    def admits(self, access: str, allowed: Iterable[str] = ()) -> bool:
        if access != self.access:
            return False
        return self.allowed_any is None or not self.allowed_any.isdisjoint(allowed)


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """Restrictions on a search. `scope=None` means no access filtering (operators only)."""

    scope: AccessScope | None = None
    sources: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text under one heading path, in document order."""

    heading_path: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class Document:
    """One parsed source file."""

    source: str
    doc_id: str  # path relative to the source root, forward slashes: stable across syncs
    title: str
    uri: str
    modified: float  # mtime, seconds since the epoch
    content_hash: str  # sha256 of the raw bytes
    access: Access
    allowed: tuple[str, ...]
    sections: tuple[Section, ...]

    @property
    def key(self) -> DocKey:
        return DocKey(self.source, self.doc_id)


@dataclass(frozen=True, slots=True, order=True)
class DocKey:
    """A document's identity in the index: its source name and its id within the source."""

    source: str
    doc_id: str

    def __str__(self) -> str:
        return f"{self.source}:{self.doc_id}"


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document small enough to embed, with the heading path it sits under."""

    ordinal: int
    heading_path: tuple[str, ...]
    text: str
    token_count: int

    @property
    def heading(self) -> str:
        return " > ".join(self.heading_path)


@dataclass(slots=True)
class ChunkRecord:
    """What the index stores for one chunk. Every chunk of a document carries the document's
    `index_hash` and `n_chunks`, so a sync can tell a complete, current document from a stale or
    partly written one by looking at the index alone."""

    chunk_id: str
    source: str
    doc_id: str
    title: str
    uri: str
    heading: str
    ordinal: int
    text: str
    text_hash: str
    index_hash: str
    n_chunks: int
    modified: float
    access: str
    allowed: list[str]
    vector: list[float] = field(repr=False)

    @property
    def key(self) -> DocKey:
        return DocKey(self.source, self.doc_id)


@dataclass(frozen=True, slots=True)
class DocState:
    """What the index holds for one document."""

    index_hash: str
    n_chunks: int  # how many chunks the document was split into
    stored_chunks: int  # how many the index actually holds

    @property
    def complete(self) -> bool:
        return self.n_chunks == self.stored_chunks


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A search as the index sees it: the query text and its embedding.

    mode: "hybrid" fuses vector and keyword results; "vector" and "keyword" use one.
    alpha: weight of the vector side in hybrid (1.0 = vector only, 0.0 = keyword only).
    """

    text: str
    vector: list[float]
    k: int = 5
    mode: str = "hybrid"
    alpha: float = 0.5
    fusion: str = "rrf"
    candidates: int = 50
    filters: SearchFilters = field(default_factory=SearchFilters)


# The stored chunk fields a Hit is made of (what every index returns for a search).
HIT_FIELDS = (
    "chunk_id",
    "source",
    "doc_id",
    "title",
    "uri",
    "heading",
    "text",
    "access",
    "allowed",
)


@dataclass(frozen=True, slots=True)
class Hit:
    """One ranked search result."""

    chunk_id: str
    source: str
    doc_id: str
    title: str
    uri: str
    heading: str
    text: str
    score: float
    access: str
    allowed: tuple[str, ...] = ()  # for access "restricted": the channels / groups that may see it

    def as_json(self) -> dict[str, object]:
        return {
            "doc": self.doc_id,
            "source": self.source,
            "uri": self.uri,
            "title": self.title,
            "heading": self.heading,
            "score": round(self.score, 6),
            "access": self.access,
            "allowed": list(self.allowed),
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class IndexStats:
    documents: int
    chunks: int
    store: str
    location: str
    ann_index: bool = False


_CHUNK_NAMESPACE = uuid.UUID("5b6f3f0e-6c0b-4c1e-9a55-2f7f8b1f2a10")


def chunk_id(source: str, doc_id: str, ordinal: int) -> str:
    """A deterministic id (a UUID5) for the `ordinal`-th chunk of a document.

    Deterministic ids make re-writes idempotent: writing a document twice (after a crash,
    say) replaces its chunks instead of duplicating them, in LanceDB and Weaviate alike.
    """
    return str(uuid.uuid5(_CHUNK_NAMESPACE, f"{source}\x00{doc_id}\x00{ordinal}"))


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()
