"""Incremental re-sync of the index with its sources.

The index itself is the record of what was synced: every chunk carries its document's
`index_hash` (content hash + pipeline fingerprint + access label) and chunk count. A sync:

1. takes the `knowledge.sync` lease (a second sync waits or is told "already running");
2. walks the sources; a document whose hash and chunk count match the index is unchanged and
   is not even parsed;
3. parses, chunks and embeds the new and changed documents in batches, reusing the stored
   vector of any chunk whose text was embedded before, and replaces each batch of documents in
   one atomic write;
4. deletes the chunks of documents that disappeared from the synced sources;
5. does the same for every document feed (`DocumentFeed`: documents that are not files, such
   as the experts' answers, already parsed): what a feed no longer lists leaves the index, and
   a feed that fails is reported and keeps its documents as they were;
6. brings the full-text and ANN indices up to date, and records the report in the SQL store.

Killed at any point, the index holds each document either whole in its old state or whole in
its new one; the next run sees what is stale or missing and finishes the job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from sqlalchemy.engine import Engine

from base.database import utcnow
from base.errors import ConfigError, DocumentError, DocumentSkipped
from base.locks import JobLock
from knowledge.answerability import content_terms
from knowledge.chunking import Chunker
from knowledge.config import KnowledgeConfig, SourceConfig
from knowledge.embedding import Embedder
from knowledge.index.base import KnowledgeIndex
from knowledge.models import (
    Access,
    Chunk,
    ChunkRecord,
    DocKey,
    DocState,
    Document,
    chunk_id,
    sha256_hex,
)
from knowledge.parsing import PARSER_VERSION, parse_document
from knowledge.reports import SyncReport, SyncRunStore
from knowledge.sources import SourceFile, check_sources, scan
from knowledge.vocabulary import Vocabulary, visibility

log = structlog.get_logger(__name__)

SYNC_LOCK = "knowledge.sync"
VOCABULARY_VERSION = 1  # how document terms are counted (knowledge/vocabulary.py)
KEPT = "; the previous version stays in the index"

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True, slots=True)
class FeedListing:
    """What a feed holds now: its documents (already parsed), and those it keeps out of the
    index with why (doc id → reason; reported as skipped)."""

    documents: list[Document]
    skipped: dict[str, str] = field(default_factory=dict)


class DocumentFeed(Protocol):
    """Documents that are not files of a folder, indexed as the source `name`. Each sync asks
    for the whole listing: new and changed documents are indexed, unchanged ones (same
    `content_hash`, which covers their text and access) skipped, and indexed documents of the
    source that the listing lacks are deleted."""

    @property
    def name(self) -> str: ...

    async def listing(self) -> FeedListing: ...


@dataclass(slots=True)
class _Pending:
    doc: Document
    chunks: list[Chunk]
    action: str  # added | updated
    existed: bool
    index_hash: str


class Syncer:
    def __init__(
        self,
        *,
        index: KnowledgeIndex,
        embedder: Embedder,
        engine: Engine,
        config: KnowledgeConfig,
        batch_chunks: int = 512,
        batch_docs: int = 64,
        feeds: Sequence[DocumentFeed] = (),
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.engine = engine
        self.config = config
        self.runs = SyncRunStore(engine)
        self.chunker = Chunker(embedder.count_tokens, config.chunking)
        self.batch_chunks = batch_chunks
        self.batch_docs = batch_docs
        self.vocabulary = Vocabulary(engine)
        self.feeds: list[DocumentFeed] = list(feeds)
        # What an indexed document's chunks depend on besides its bytes: a change re-indexes
        # every document on the next sync (unchanged chunk texts keep their stored vectors).
        self.fingerprint = sha256_hex(
            f"{PARSER_VERSION}|{embedder.model_name}|{config.chunking.max_tokens}|"
            f"{config.chunking.overlap_tokens}|vocabulary {VOCABULARY_VERSION}"
        )[:16]

    async def run(
        self,
        sources: list[SourceConfig] | None = None,
        *,
        trigger: str = "cli",
        wait: bool = False,
        rebuild: bool = False,
        progress: Progress | None = None,
    ) -> SyncReport:
        """Sync `sources` (default: the configured ones) and every feed. Raises
        AlreadyRunningError, SourceError."""
        sources = list(self.config.sources if sources is None else sources)
        if not sources and not self.feeds:
            raise ConfigError(
                "no document sources: pass folders to `expertbot sync` or set knowledge.sources"
            )
        check_sources(sources)
        for feed in self.feeds:
            if any(s.source_name == feed.name for s in sources):
                raise ConfigError(
                    f"a source folder is named {feed.name!r}, the name of a built-in source; "
                    "give it another `name`"
                )
        lock = JobLock(self.engine, SYNC_LOCK)
        async with lock.held(wait=wait):
            if lock.previous_holder:
                await asyncio.to_thread(self.runs.mark_interrupted, lock.previous_holder)
            report = SyncReport(
                trigger=trigger,
                store=self.index.name,
                sources=[{"name": s.source_name, "path": str(s.path)} for s in sources]
                + [{"name": feed.name, "path": ""} for feed in self.feeds],
            )
            await asyncio.to_thread(self.runs.start, report, lock.holder)
            log.info("sync.started", run_id=report.run_id, trigger=trigger, sources=len(sources))
            started = time.perf_counter()
            try:
                await self._sync(sources, report, rebuild=rebuild, progress=progress)
                report.status = "ok"
            except (asyncio.CancelledError, KeyboardInterrupt):
                report.status, report.error = "interrupted", "the sync was cancelled"
                raise
            except Exception as exc:
                report.status, report.error = "failed", f"{exc.__class__.__name__}: {exc}"
                raise
            finally:
                report.finished_at = utcnow()
                report.duration_s = round(time.perf_counter() - started, 3)
                await asyncio.shield(asyncio.to_thread(self.runs.finish, report))
                log.info(
                    "sync.finished",
                    run_id=report.run_id,
                    status=report.status,
                    added=report.added,
                    updated=report.updated,
                    deleted=report.deleted,
                    unchanged=report.unchanged,
                    skipped=report.skipped,
                    failed=report.failed,
                    chunks_embedded=report.chunks_embedded,
                    duration_s=report.duration_s,
                )
        return report

    async def _sync(
        self,
        sources: list[SourceConfig],
        report: SyncReport,
        *,
        rebuild: bool,
        progress: Progress | None,
    ) -> None:
        await self.index.open(
            dim=self.embedder.dim, model=self.embedder.model_name, recreate=rebuild
        )
        if rebuild:
            await asyncio.to_thread(self.vocabulary.clear)
        manifest = await self.index.manifest()
        files = await asyncio.to_thread(lambda: [f for source in sources for f in scan(source)])
        listings = await self._list_feeds(report)
        fed = [doc for listing in listings.values() for doc in listing.documents]
        total = len(files) + len(fed)
        seen: set[DocKey] = set()
        pending: dict[DocKey, _Pending] = {}
        pending_chunks = 0
        removals: list[DocKey] = []

        items: list[SourceFile | Document] = [*files, *fed]
        for done, item in enumerate(items, start=1):
            key = (
                DocKey(item.source.source_name, item.doc_id)
                if isinstance(item, SourceFile)
                else item.key
            )
            seen.add(key)
            state = manifest.get(key)
            outcome = await asyncio.to_thread(self._prepare_any, item, state)
            if isinstance(outcome, _Pending):
                pending[key] = outcome
                pending_chunks += len(outcome.chunks)
                if pending_chunks >= self.batch_chunks or len(pending) >= self.batch_docs:
                    await self._flush(pending, report)
                    pending, pending_chunks = {}, 0
            else:
                action, reason = outcome
                if action == "remove":
                    removals.append(key)
                    report.record(key.source, key.doc_id, "skipped", reason)
                else:
                    report.record(key.source, key.doc_id, action, reason)
                    if action != "unchanged":
                        log.info("sync.document_" + action, doc=str(key), reason=reason)
            if progress:
                progress(done, total, item.doc_id)
        if pending:
            await self._flush(pending, report)
        for name, listing in listings.items():
            for doc_id, reason in sorted(listing.skipped.items()):
                report.record(name, doc_id, "skipped", reason)

        # A feed that failed lists nothing: its documents stay as they were.
        synced = {s.source_name for s in sources} | set(listings)
        gone = sorted(k for k in manifest if k.source in synced and k not in seen)
        await self.index.delete_documents(gone + removals)
        await asyncio.to_thread(self.vocabulary.update, {}, gone + removals)
        for key in gone:
            report.record(key.source, key.doc_id, "deleted")
        await self.index.optimize()

    async def _list_feeds(self, report: SyncReport) -> dict[str, FeedListing]:
        """Every feed's listing; a feed that fails is reported and left out of this sync."""
        listings: dict[str, FeedListing] = {}
        for feed in self.feeds:
            try:
                listings[feed.name] = await feed.listing()
            except Exception as exc:
                log.exception("sync.feed_failed", source=feed.name)
                reason = f"could not be listed ({exc.__class__.__name__}: {exc}){KEPT}"
                report.record(feed.name, "*", "failed", reason)
        return listings

    def _prepare_any(
        self, item: SourceFile | Document, state: DocState | None
    ) -> _Pending | tuple[str, str | None]:
        if isinstance(item, SourceFile):
            return self._prepare(item, state)
        return self._prepare_fed(item, state)

    def _prepare_fed(
        self, doc: Document, state: DocState | None
    ) -> _Pending | tuple[str, str | None]:
        """A feed's document: unchanged, or chunked to be indexed."""
        index_hash = sha256_hex(
            f"{self.fingerprint}|{doc.content_hash}|{doc.access.value}|{','.join(doc.allowed)}|"
            f"{doc.uri}|{doc.title}"
        )
        if state and state.index_hash == index_hash and state.complete:
            return "unchanged", None
        chunks = self.chunker.chunk(doc.sections)
        if not chunks:
            return "remove", "no text (removed from the index)"
        return _Pending(doc, chunks, "updated" if state else "added", state is not None, index_hash)

    def _index_hash(self, file: SourceFile, content_hash: str) -> str:
        src = file.source
        return sha256_hex(
            f"{self.fingerprint}|{content_hash}|{src.access.value}|{','.join(src.allowed)}|{file.uri}"
        )

    def _prepare(
        self, file: SourceFile, state: DocState | None
    ) -> _Pending | tuple[str, str | None]:
        """Decide what to do with one file: unchanged, skipped/failed (with reason), or index it."""
        kept = KEPT if state else ""
        limit = self.config.max_file_bytes
        if file.size > limit:
            return "skipped", _too_large(file.size, limit) + kept
        try:
            data = file.path.read_bytes()
        except OSError as exc:
            return "failed", f"unreadable: {exc.strerror or exc.__class__.__name__}{kept}"
        if len(data) > limit:  # it grew between the listing and the read
            return "skipped", _too_large(len(data), limit) + kept
        content_hash = sha256_hex(data)
        index_hash = self._index_hash(file, content_hash)
        if state and state.index_hash == index_hash and state.complete:
            return "unchanged", None
        try:
            parsed = parse_document(file.doc_id, data)
            chunks = self.chunker.chunk(parsed.sections)
        except DocumentSkipped as exc:
            if state and str(exc) in ("empty file", "no text could be extracted"):
                return "remove", f"{exc} (removed from the index)"
            return "skipped", f"{exc}{kept}"
        except DocumentError as exc:
            return "failed", f"{exc}{kept}"
        except Exception as exc:  # a parser bug must not abort the sync
            log.exception("sync.parser_crashed", doc=file.doc_id)
            return "failed", f"parser error ({exc.__class__.__name__}){kept}"
        access = parsed.access or file.source.access
        allowed = parsed.allowed if parsed.allowed is not None else tuple(file.source.allowed)
        if access is not Access.RESTRICTED:
            allowed = ()
        doc = Document(
            source=file.source.source_name,
            doc_id=file.doc_id,
            title=parsed.title,
            uri=file.uri,
            modified=file.modified,
            content_hash=content_hash,
            access=access,
            allowed=allowed,
            sections=parsed.sections,
        )
        return _Pending(doc, chunks, "updated" if state else "added", state is not None, index_hash)

    async def _flush(self, pending: dict[DocKey, _Pending], report: SyncReport) -> None:
        reuse = await self.index.vectors_for([k for k, p in pending.items() if p.existed])
        texts: dict[str, str] = {}
        plan: dict[DocKey, list[tuple[Chunk, str, str]]] = {}
        for key, item in pending.items():
            rows = []
            for chunk in item.chunks:
                text = embedding_text(item.doc.title, chunk)
                text_hash = sha256_hex(f"{self.embedder.model_name}\x00{text}")
                rows.append((chunk, text, text_hash))
                if text_hash not in reuse:
                    texts[text_hash] = text
            plan[key] = rows
        hashes = list(texts)
        if hashes:
            vectors = await asyncio.to_thread(
                self.embedder.embed_documents, [texts[h] for h in hashes]
            )
            reuse.update({h: v.tolist() for h, v in zip(hashes, vectors, strict=True)})
        records: dict[DocKey, list[ChunkRecord]] = {}
        for key, rows in plan.items():
            doc, index_hash = pending[key].doc, pending[key].index_hash
            records[key] = [
                ChunkRecord(
                    chunk_id=chunk_id(doc.source, doc.doc_id, chunk.ordinal),
                    source=doc.source,
                    doc_id=doc.doc_id,
                    title=doc.title,
                    uri=doc.uri,
                    heading=display_heading(doc.title, chunk.heading_path),
                    ordinal=chunk.ordinal,
                    text=chunk.text,
                    text_hash=text_hash,
                    index_hash=index_hash,
                    n_chunks=len(rows),
                    modified=doc.modified,
                    access=doc.access.value,
                    allowed=list(doc.allowed),
                    vector=list(reuse[text_hash]),
                )
                for chunk, _text, text_hash in rows
            ]
        await self.index.replace_documents(records)
        await asyncio.to_thread(
            self.vocabulary.update,
            {
                key: (
                    visibility(item.doc.access.value, item.doc.allowed),
                    document_terms(item.doc.title, [c for c, _, _ in plan[key]]),
                )
                for key, item in pending.items()
            },
        )
        report.chunks_embedded += len(hashes)
        report.chunks_written += sum(len(r) for r in records.values())
        for key, item in pending.items():
            report.record(key.source, key.doc_id, item.action)


def _too_large(size: int, limit: int) -> str:
    return f"too large ({size / 1e6:.1f} MB > {limit / 1e6:.1f} MB limit)"


def _below_title(title: str, path: tuple[str, ...]) -> list[str]:
    parts = list(path)
    if parts and parts[0].strip().lower() == title.strip().lower():
        parts = parts[1:]
    return parts


def display_heading(title: str, path: tuple[str, ...]) -> str:
    """The section a citation points at: the heading path below the document's title."""
    return " > ".join(_below_title(title, path))


def document_terms(title: str, chunks: Sequence[Chunk]) -> set[str]:
    """The distinct terms of a document, as questions are read (`content_terms`)."""
    terms = content_terms(title)
    for chunk in chunks:
        terms |= content_terms(" ".join(chunk.heading_path))
        terms |= content_terms(chunk.text)
    return terms


def embedding_text(title: str, chunk: Chunk) -> str:
    """What gets embedded: the chunk with its title and heading path, for context."""
    head = " > ".join(
        [title, *_below_title(title, chunk.heading_path)] if title else chunk.heading_path
    )
    return f"{head}\n\n{chunk.text}" if head else chunk.text
