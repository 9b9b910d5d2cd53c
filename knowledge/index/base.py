"""The protocol every index backend implements, and what its contract is.

The contract (tests/test_index_contract.py runs it against every reachable backend):

- `open(dim, model)` creates the store if missing. Opening a store built with another
  embedding model or dimension raises `IndexSchemaError` unless `recreate=True`.
- `replace_documents(records_by_doc)` makes the index hold exactly the given chunks for each
  given document: old chunks of those documents that are not in the new set are removed.
  Chunk ids are deterministic, so repeating a call never duplicates a chunk.
- `delete_documents(keys)` removes every chunk of those documents.
- `manifest()` tells, per document, the index hash its chunks carry, how many chunks the
  document was split into and how many the index holds (a sync compares this with the sources).
- `search(query)` returns at most `query.k` hits, best first, honouring `query.filters`
  (access scope, sources) in every mode. Scores are higher-is-better.
- `count_chunks()` is cheap (a readiness probe calls it); `stats()` also counts documents.
- `ping()` raises `IndexStoreError` quickly when the backend cannot be reached, and no call
  hangs for long on a backend that has gone away.
- `vectors_for(keys)` returns stored vectors by chunk text hash, so a sync can skip
  re-embedding text it has embedded before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from knowledge.models import ChunkRecord, DocKey, DocState, Hit, IndexStats, SearchQuery


@runtime_checkable
class KnowledgeIndex(Protocol):
    name: str

    async def open(self, *, dim: int, model: str, recreate: bool = False) -> None: ...

    async def close(self) -> None: ...

    async def manifest(self) -> dict[DocKey, DocState]: ...

    async def replace_documents(self, records: Mapping[DocKey, Sequence[ChunkRecord]]) -> None: ...

    async def delete_documents(self, keys: Sequence[DocKey]) -> None: ...

    async def vectors_for(self, keys: Sequence[DocKey]) -> dict[str, list[float]]: ...

    async def search(self, query: SearchQuery) -> list[Hit]: ...

    async def count_chunks(self) -> int:
        """How many chunks the index holds: cheap enough for a readiness probe."""
        ...

    async def stats(self) -> IndexStats:
        """Documents and chunks; counting documents reads the whole manifest."""
        ...

    async def optimize(self) -> None:
        """Bring secondary structures (ANN and full-text indices) up to date after writes."""
        ...

    async def ping(self) -> None:
        """Raise IndexStoreError when the backend cannot be reached."""
        ...
