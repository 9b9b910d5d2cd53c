"""Incremental re-sync of the index with its sources.

The index itself is the record of what was synced: every chunk carries its document's
`index_hash` (content hash + pipeline fingerprint + access label) and chunk count. A sync:

1. takes each synced source's own lease (`knowledge.sync:<name>`): sources sync
   independently; a source already syncing elsewhere is waited for or reported busy, and a
   sync whose every source is busy is told "already running";
2. asks each source's connector (`knowledge/connectors/`) for its documents, with the cursor
   the source's last good sync saved; what the platform reports unchanged is not even read,
   and a document whose content hash matches the index is not parsed;
3. parses, chunks and embeds the new and changed documents in batches, reusing the stored
   vector of any chunk whose text was embedded before, and replaces each batch of documents in
   one atomic write;
4. deletes the chunks of documents that disappeared from a source (or that a delta listing
   says are gone); a source that fails is reported, keeps its documents and its old cursor,
   and never stops the others;
5. does the same for every document feed (`DocumentFeed`: documents that are not files, such
   as the experts' answers, already parsed): what a feed no longer lists leaves the index, and
   a feed that fails is reported and keeps its documents as they were;
6. brings the full-text and ANN indices up to date, saves each source's cursor, and records
   the report in the SQL store.

Killed at any point, the index holds each document either whole in its old state or whole in
its new one; the next run sees what is stale or missing and finishes the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from sqlalchemy.engine import Engine

from base.database import utcnow
from base.errors import (
    AlreadyRunningError,
    ConfigError,
    DocumentError,
    DocumentSkipped,
    SourceError,
)
from base.locks import JobLock, make_holder
from knowledge.answerability import content_terms
from knowledge.chunking import Chunker
from knowledge.config import KnowledgeConfig, SourceConfig, name_clash
from knowledge.connectors import connector_for
from knowledge.connectors.base import Connector, Entry, narrow
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
from knowledge.reports import SourceStateStore, SyncReport, SyncRunStore
from knowledge.vocabulary import Vocabulary, visibility

log = structlog.get_logger(__name__)

SYNC_LOCK = "knowledge.sync"  # + ":<source name>": one lease per source
OPTIMIZE_LOCK = "knowledge.optimize"
VOCABULARY_VERSION = 1  # how document terms are counted (knowledge/vocabulary.py)
KEPT = "; the previous version stays in the index"
BUSY = "a sync of this source is already running"

Progress = Callable[[int, int, str], None]


def sync_lock(source: str) -> str:
    return f"{SYNC_LOCK}:{source}"


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


Outcome = _Pending | tuple[str, str | None]


class _Batch:
    """Documents waiting to be embedded and written together."""

    def __init__(self, syncer: Syncer, report: SyncReport) -> None:
        self.syncer, self.report = syncer, report
        self.pending: dict[DocKey, _Pending] = {}
        self.chunks = 0

    async def add(self, key: DocKey, item: _Pending) -> None:
        self.pending[key] = item
        self.chunks += len(item.chunks)
        if self.chunks >= self.syncer.batch_chunks or len(self.pending) >= self.syncer.batch_docs:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            await self.syncer._flush(self.pending, self.report)
        self.pending, self.chunks = {}, 0


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
        self.states = SourceStateStore(engine)
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
        sources: Sequence[SourceConfig] | None = None,
        *,
        feeds: bool = True,
        trigger: str = "cli",
        wait: bool = False,
        rebuild: bool = False,
        progress: Progress | None = None,
    ) -> SyncReport:
        """Sync `sources` (default: every configured one) and, unless `feeds` is False, every
        feed. Raises AlreadyRunningError when every one of them is already syncing elsewhere,
        ConfigError when there is nothing to sync."""
        sources = list(self.config.sources if sources is None else sources)
        feeds_synced = self.feeds if feeds else []
        if not sources and not feeds_synced:
            raise ConfigError(
                "no document sources: pass folders to `expertbot sync` or set knowledge.sources"
            )
        clash = name_clash(sources)
        if clash:
            raise ConfigError(clash)
        names = [s.source_name for s in sources]
        for feed in self.feeds:
            if feed.name in names:
                raise ConfigError(
                    f"a source is named {feed.name!r}, the name of a built-in source; "
                    "give it another `name`"
                )
        async with contextlib.AsyncExitStack() as stack:
            held, busy = await self._take_locks(
                stack, [*names, *(f.name for f in feeds_synced)], wait=wait or rebuild
            )
            report = SyncReport(
                trigger=trigger,
                store=self.index.name,
                sources=[
                    {"name": s.source_name, "type": s.type, "path": s.location} for s in sources
                ]
                + [{"name": feed.name, "type": "feed", "path": ""} for feed in feeds_synced],
            )
            for previous in {lock.previous_holder for lock in held if lock.previous_holder}:
                await asyncio.to_thread(self.runs.mark_interrupted, previous)
            await asyncio.to_thread(self.runs.start, report, held[0].holder)
            for name, since in busy.items():
                report.record(name, "*", "skipped", f"{BUSY} (since {since})")
            log.info("sync.started", run_id=report.run_id, trigger=trigger, sources=len(held))
            started = time.perf_counter()
            try:
                await self._sync(
                    [s for s in sources if s.source_name not in busy],
                    [f for f in feeds_synced if f.name not in busy],
                    report,
                    rebuild=rebuild,
                    progress=progress,
                )
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

    async def _take_locks(
        self, stack: contextlib.AsyncExitStack, names: list[str], *, wait: bool
    ) -> tuple[list[JobLock], dict[str, str]]:
        """Each source's lease, held until the sync ends; the busy ones (name → since) are
        left out, unless every one is busy (AlreadyRunningError) or `wait`."""
        held: list[JobLock] = []
        busy: dict[str, str] = {}
        first_refusal: AlreadyRunningError | None = None
        holder = make_holder()  # one for the run: a run that died is closed by any of its leases
        for name in names:
            lock = JobLock(self.engine, sync_lock(name), holder=holder)
            try:
                await stack.enter_async_context(lock.held(wait=wait))
            except AlreadyRunningError as exc:
                first_refusal = first_refusal or exc
                busy[name] = exc.since.isoformat(timespec="seconds") if exc.since else "earlier"
                continue
            held.append(lock)
        if not held:
            assert first_refusal is not None
            raise first_refusal
        return held, busy

    async def _sync(
        self,
        sources: list[SourceConfig],
        feeds: list[DocumentFeed],
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
            await asyncio.to_thread(self.states.clear)
        manifest = await self.index.manifest()
        batch = _Batch(self, report)
        counter = _Counter(progress)
        for source in sources:
            connector = connector_for(source, max_bytes=self.config.max_file_bytes)
            try:
                await self._sync_source(source, connector, manifest, batch, report, counter)
            finally:
                await connector.close()
        gone: list[DocKey] = []
        emptied: list[DocKey] = []
        listings = await self._list_feeds(feeds, report)
        for name, listing in listings.items():
            seen: set[DocKey] = set()
            counter.expect(name, len(listing.documents))
            for doc in listing.documents:
                seen.add(doc.key)
                outcome = await asyncio.to_thread(self._prepare_fed, doc, manifest.get(doc.key))
                await self._apply(doc.key, outcome, batch, report, emptied)
                counter.step(doc.doc_id)
            for doc_id, reason in sorted(listing.skipped.items()):
                report.record(name, doc_id, "skipped", reason)
            gone += sorted(k for k in manifest if k.source == name and k not in seen)
        await batch.flush()
        await self._remove(gone, emptied, report)
        await self._optimize()

    async def _sync_source(
        self,
        source: SourceConfig,
        connector: Connector,
        manifest: dict[DocKey, DocState],
        batch: _Batch,
        report: SyncReport,
        counter: _Counter,
    ) -> None:
        """One source: its documents indexed and deleted, then its cursor saved. A source that
        fails keeps its documents and its previous cursor."""
        name = source.source_name
        ours = {k: st for k, st in manifest.items() if k.source == name}
        state = await asyncio.to_thread(self.states.cursor, name)
        known = {k.doc_id for k, st in ours.items() if st.complete}
        seen: set[DocKey] = set()
        gone: list[DocKey] = []
        emptied: list[DocKey] = []
        listed = 0
        try:
            async for entry in connector.entries(state, known):
                counter.expect(name, connector.expected)
                key = DocKey(name, entry.doc_id)
                if entry.deleted:
                    if key in ours:
                        gone.append(key)
                    continue
                if key in seen:
                    continue
                seen.add(key)
                listed += 1
                outcome = await self._prepare_entry(source, connector, entry, ours.get(key))
                await self._apply(key, outcome, batch, report, emptied)
                counter.step(entry.doc_id)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:
            if isinstance(exc, SourceError | DocumentError):
                why = str(exc)
            else:
                log.exception("sync.source_failed", source=name)
                why = f"{exc.__class__.__name__}: {exc}"
            report.record(name, "*", "failed", f"could not be listed ({why}){KEPT}")
            await asyncio.to_thread(self.states.failed, source, why, report.run_id)
            report.source(name).update(listed=listed, cursor="kept")
            return
        if connector.full_listing:
            gone += sorted(k for k in ours if k not in seen)
        # The cursor moves on only once what it covers is in the index: a sync killed before
        # this point lists the same changes again.
        await batch.flush()
        await self._remove(gone, emptied, report)
        await asyncio.to_thread(self.states.saved, source, state, listed, report.run_id)
        report.source(name).update(listed=listed, cursor="saved")

    async def _apply(
        self,
        key: DocKey,
        outcome: Outcome,
        batch: _Batch,
        report: SyncReport,
        emptied: list[DocKey],
    ) -> None:
        """Record `outcome`: a document to index goes into the batch; one with no text left
        leaves the index (`emptied`, reported skipped with why)."""
        if isinstance(outcome, _Pending):
            await batch.add(key, outcome)
            return
        action, reason = outcome
        if action == "remove":
            emptied.append(key)
            report.record(key.source, key.doc_id, "skipped", reason)
            return
        report.record(key.source, key.doc_id, action, reason)
        if action != "unchanged":
            log.info("sync.document_" + action, doc=str(key), reason=reason)

    async def _remove(self, gone: list[DocKey], emptied: list[DocKey], report: SyncReport) -> None:
        """Documents gone from their source (reported deleted) and those kept out of it now
        (already reported skipped) leave the index."""
        keys = sorted({*gone, *emptied})
        await self.index.delete_documents(keys)
        await asyncio.to_thread(self.vocabulary.update, {}, keys)
        for key in sorted(set(gone) - set(emptied)):
            report.record(key.source, key.doc_id, "deleted")

    async def _optimize(self) -> None:
        """Bring the full-text and ANN indices up to date; a sync of another source doing it
        right now does it for both."""
        lock = JobLock(self.engine, OPTIMIZE_LOCK)
        try:
            async with lock.held():
                await self.index.optimize()
        except AlreadyRunningError:
            log.info("sync.optimize_left", reason="another sync is optimizing the index")

    async def _list_feeds(
        self, feeds: list[DocumentFeed], report: SyncReport
    ) -> dict[str, FeedListing]:
        """Every feed's listing; a feed that fails is reported and left out of this sync."""
        listings: dict[str, FeedListing] = {}
        for feed in feeds:
            try:
                listings[feed.name] = await feed.listing()
            except Exception as exc:
                log.exception("sync.feed_failed", source=feed.name)
                reason = f"could not be listed ({exc.__class__.__name__}: {exc}){KEPT}"
                report.record(feed.name, "*", "failed", reason)
        return listings

    def _prepare_fed(self, doc: Document, state: DocState | None) -> Outcome:
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

    async def _prepare_entry(
        self, source: SourceConfig, connector: Connector, entry: Entry, state: DocState | None
    ) -> Outcome:
        """Decide what to do with one listed document: unchanged, skipped/failed (with reason),
        or index it."""
        if entry.unchanged and state is not None and state.complete:
            return "unchanged", None
        kept = KEPT if state else ""
        limit = self.config.max_file_bytes
        if entry.size > limit:
            return "skipped", _too_large(entry.size, limit) + kept
        try:
            data = entry.content if entry.content is not None else await connector.read(entry)
        except (SourceError, DocumentError) as exc:
            return "failed", f"{exc}{kept}"
        except Exception as exc:  # a connector bug must not abort the sync
            log.exception("sync.read_crashed", source=source.source_name, doc=entry.doc_id)
            return "failed", f"read error ({exc.__class__.__name__}){kept}"
        if len(data) > limit:  # it grew between the listing and the read
            return "skipped", _too_large(len(data), limit) + kept
        return await asyncio.to_thread(self._prepare_bytes, source, entry, data, state)

    def _prepare_bytes(
        self, source: SourceConfig, entry: Entry, data: bytes, state: DocState | None
    ) -> Outcome:
        kept = KEPT if state else ""
        content_hash = sha256_hex(data)
        index_hash = sha256_hex(
            f"{self.fingerprint}|{content_hash}|{source.access.value}|{','.join(source.allowed)}|"
            f"{entry.access.value if entry.access else ''}|{','.join(entry.allowed)}|"
            f"{entry.uri}|{entry.title or ''}"
        )
        if state and state.index_hash == index_hash and state.complete:
            return "unchanged", None
        try:
            parsed = parse_document(entry.parse_name, data)
            chunks = self.chunker.chunk(parsed.sections)
        except DocumentSkipped as exc:
            if state and str(exc) in ("empty file", "no text could be extracted"):
                return "remove", f"{exc} (removed from the index)"
            return "skipped", f"{exc}{kept}"
        except DocumentError as exc:
            return "failed", f"{exc}{kept}"
        except Exception as exc:  # a parser bug must not abort the sync
            log.exception("sync.parser_crashed", doc=entry.doc_id)
            return "failed", f"parser error ({exc.__class__.__name__}){kept}"
        # The document's own front matter labels it, else its source; what the platform says
        # of it may then only narrow that.
        label = parsed.access or source.access
        allowed = parsed.allowed if parsed.allowed is not None else tuple(source.allowed)
        access, allowed = narrow(
            label, allowed if label is Access.RESTRICTED else (), entry.access, entry.allowed
        )
        doc = Document(
            source=source.source_name,
            doc_id=entry.doc_id,
            title=entry.title or parsed.title,
            uri=entry.uri,
            modified=entry.modified,
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


class _Counter:
    """Documents seen so far, for a progress display, and how many there will be as far as the
    sources said (0 while one that does not say is listed)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.done = 0
        self.total = 0
        self._said: set[str] = set()

    def expect(self, source: str, count: int | None) -> None:
        """`source` will list `count` documents (None: it does not say)."""
        if source in self._said:
            return
        self._said.add(source)
        self.total = self.done + count if count is not None else 0

    def step(self, doc_id: str) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total, doc_id)


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
