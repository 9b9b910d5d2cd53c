"""The protocol every source speaks.

A connector lists its source's documents as `Entry`s: an id that is stable across syncs, a
title, the URI a citation links to, when it changed, and what the platform says of who may
see it. The sync decides what to do with each: an entry the platform reports unchanged since
the last sync (a 304 to a conditional GET, the same revision) is not fetched; the others are
read (`Connector.read`) in any format `knowledge/parsing.py` knows, hashed, and re-indexed
only if their content changed.

- Incremental: `entries` gets the source's saved state (a JSON-able dict: cursors, ETags,
  delta tokens — whatever the platform offers) and updates it in place; the sync saves it
  with the report only when the listing finished, so a failed sync restarts from the last
  good cursor.
- Deletions: a connector that lists everything (`full_listing`) lets the sync delete what it
  no longer lists; one that lists changes only (a delta API) yields `Entry(deleted=True)`.
- Failure: an exception out of `entries` fails this source only; its documents stay as they
  were and no deletion happens. An exception out of `read` fails that one document.
- Access: `Entry.access` / `allowed` are what the platform says; `narrow` combines them with
  the source's label, and may only narrow it.
- Secrets come from the source's configuration (`SecretReference`); a connector never logs or
  reports them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from knowledge.models import Access


@dataclass(slots=True)
class Entry:
    """One document as its source lists it."""

    doc_id: str  # stable across syncs; a path-like id ("handbook/travel.md", a URL's path)
    uri: str  # what a citation links to
    title: str | None = None  # the platform's title; the parsed document's own title wins
    modified: float = 0.0  # seconds since the epoch (0: unknown)
    size: int = -1  # bytes, when known before reading (-1: unknown)
    filename: str | None = None  # a name whose extension picks the parser (default: doc_id)
    access: Access | None = None  # what the platform says (None: nothing; the source's label)
    allowed: tuple[str, ...] = ()  # channels / groups, for access = restricted
    unchanged: bool = False  # the platform says: as it was at the last sync; not read
    deleted: bool = False  # a delta listing says: gone
    content: bytes | None = None  # already fetched while listing (else `Connector.read`)

    @property
    def parse_name(self) -> str:
        return self.filename or self.doc_id


class Connector(Protocol):
    """A source of documents (see the module's docstring)."""

    name: str
    full_listing: bool  # True: what `entries` does not list is gone
    expected: int | None  # how many entries this listing holds, once known (for progress)

    def entries(self, state: dict[str, Any], known: Collection[str]) -> AsyncIterator[Entry]:
        """Every document (or, for a delta listing, every change) since `state`, updating
        `state`. `known`: the ids the index holds whole; only those may be `unchanged`."""
        ...

    async def read(self, entry: Entry) -> bytes:
        """The document's bytes (SourceError, DocumentError with the reason)."""
        ...

    async def close(self) -> None: ...


def narrow(
    label: Access,
    allowed: tuple[str, ...],
    platform: Access | None,
    platform_allowed: tuple[str, ...] = (),
) -> tuple[Access, tuple[str, ...]]:
    """Who may see a document: the source's label narrowed by what the platform says, never
    widened. A platform restriction that no channel or group is tied to makes it private, and
    so does a restricted source whose channels the platform's list does not share."""
    if platform is None or platform is Access.PUBLIC:
        return label, allowed if label is Access.RESTRICTED else ()
    if label is Access.PRIVATE or platform is Access.PRIVATE:
        return Access.PRIVATE, ()
    # The platform restricts it.
    mapped = tuple(platform_allowed)
    if label is Access.RESTRICTED:
        mapped = tuple(a for a in mapped if a in set(allowed))
    if not mapped:
        return Access.PRIVATE, ()
    return Access.RESTRICTED, mapped
