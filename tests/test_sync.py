"""Incremental sync on the real example handbook, real embeddings, real LanceDB and SQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from base.database import make_engine
from base.errors import AlreadyRunningError, ConfigError
from knowledge.config import FolderSource, KnowledgeConfig
from knowledge.index.lancedb import LanceIndex
from knowledge.models import Access, AccessScope, SearchFilters
from knowledge.reports import SyncRunStore
from knowledge.runtime import Knowledge
from knowledge.sources import source_statuses

HANDBOOK_DOCS = 18
PDF = "finance/travel-and-expense-policy.pdf"


def build(config: KnowledgeConfig, engine, embedder, data_dir: Path) -> Knowledge:
    return Knowledge.build(config, data_dir=data_dir, engine=engine, embedder=embedder)


@pytest.fixture
async def kb(knowledge_config, engine, embedder, clean_environ):
    knowledge = build(knowledge_config, engine, embedder, clean_environ)
    await knowledge.open(index=False)
    yield knowledge
    await knowledge.close()


async def assert_consistent(knowledge: Knowledge) -> None:
    """Every document whole, no chunk twice."""
    manifest = await knowledge.index.manifest()
    assert all(state.complete for state in manifest.values()), manifest
    stats = await knowledge.index.stats()
    assert stats.chunks == sum(s.n_chunks for s in manifest.values())
    if isinstance(knowledge.index, LanceIndex):
        ids = (
            knowledge.index._require()
            .to_lance()
            .to_table(columns=["chunk_id"])
            .column("chunk_id")
            .to_pylist()
        )
        assert len(ids) == len(set(ids))


async def docs_found(knowledge: Knowledge, question: str, **kwargs) -> set[str]:
    found: set[str] = set()
    for mode in ("hybrid", "vector", "keyword"):
        hits = await knowledge.search.search(question, k=10, mode=mode, **kwargs)
        found |= {h.doc_id for h in hits}
    return found


async def test_first_sync_indexes_every_handbook_document(kb):
    report = await kb.syncer.run()
    assert (report.added, report.skipped, report.failed, report.status) == (
        HANDBOOK_DOCS,
        0,
        0,
        "ok",
    )
    assert report.chunks_written == report.chunks_embedded > HANDBOOK_DOCS
    stats = await kb.index.stats()
    assert (stats.documents, stats.chunks) == (HANDBOOK_DOCS, report.chunks_written)
    await assert_consistent(kb)

    hits = await kb.search.search("What is the hotel cap in Lisbon?", k=3)
    assert hits[0].doc_id == PDF and hits[0].heading.startswith("Page")
    private = await kb.search.search("salary range for an L3 engineer in Toronto", k=1)
    assert (
        private[0].doc_id == "people/compensation-bands.md" and private[0].access == Access.PRIVATE
    )
    public = await kb.search.search(
        "salary range for an L3 engineer in Toronto",
        k=10,
        filters=SearchFilters(scope=AccessScope()),
    )
    assert "people/compensation-bands.md" not in {h.doc_id for h in public}


async def test_resync_of_an_unchanged_corpus_embeds_nothing(kb, embedder):
    await kb.syncer.run()
    embedder.calls.clear()
    report = await kb.syncer.run()
    assert (report.unchanged, report.added, report.updated, report.deleted) == (
        HANDBOOK_DOCS,
        0,
        0,
        0,
    )
    assert report.chunks_embedded == 0 and embedder.calls == []


async def test_a_changed_document_alone_is_re_embedded(kb, handbook):
    first = await kb.syncer.run()
    vpn = handbook / "it" / "vpn-setup.md"
    vpn.write_text(
        vpn.read_text()
        + "\n\n## Travel routers\n\nHotel routers that block UDP need the NetGate TCP fallback on port 8443.\n"
    )
    report = await kb.syncer.run()
    assert (report.updated, report.unchanged, report.added) == (1, HANDBOOK_DOCS - 1, 0)
    assert [(i.doc_id, i.action) for i in report.items] == [("it/vpn-setup.md", "updated")]
    # Only the new section's text is new: the other chunks reuse their stored vectors.
    assert 1 <= report.chunks_embedded <= 2 < first.chunks_written
    hits = await kb.search.search("router blocks UDP in the hotel", k=1)
    assert hits[0].doc_id == "it/vpn-setup.md" and "8443" in hits[0].text
    await assert_consistent(kb)


async def test_a_deleted_document_is_never_found_after_a_sync(kb, handbook):
    await kb.syncer.run()
    question = "How do I join the Lisbon office Wi-Fi and which printer do I use?"
    assert "it/wifi-and-printers.txt" in await docs_found(kb, question)
    (handbook / "it" / "wifi-and-printers.txt").unlink()
    report = await kb.syncer.run()
    assert report.deleted == 1 and [i.action for i in report.items] == ["deleted"]
    assert "it/wifi-and-printers.txt" not in await docs_found(kb, question)
    assert (await kb.index.stats()).documents == HANDBOOK_DOCS - 1


async def test_a_renamed_document_is_added_under_its_new_id_and_the_old_removed(kb, handbook):
    await kb.syncer.run()
    shutil.move(handbook / "it" / "help-desk.md", handbook / "it" / "service-desk.md")
    report = await kb.syncer.run()
    assert sorted((i.doc_id, i.action) for i in report.items) == [
        ("it/help-desk.md", "deleted"),
        ("it/service-desk.md", "added"),
    ]
    hits = await kb.search.search("How do I open an IT ticket?", k=3)
    assert "it/help-desk.md" not in {h.doc_id for h in hits}
    assert (await kb.index.stats()).documents == HANDBOOK_DOCS


async def test_bad_files_are_skipped_or_failed_with_reasons_and_the_rest_indexed(
    tmp_path, engine, embedder, clean_environ
):
    src = tmp_path / "mixed"
    src.mkdir()
    (src / "good.md").write_text("# Parking\n\nVisitor parking is on level -2, bay 14 to 30.\n")
    (src / "latin1.txt").write_bytes(
        "Menu du café: crème brûlée le vendredi à la cantine.\n".encode("latin-1")
    )
    (src / "broken.pdf").write_bytes(
        b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\nthis is not a pdf\n%%EOF"
    )
    (src / "binary.md").write_bytes(os.urandom(4096).replace(b"\x00", b"\x01") + b"\x00")
    (src / "empty.md").write_text("   \n")
    (src / "huge.txt").write_text("word " * 50_000)
    (src / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    (src / "bad-front-matter.md").write_text("---\naccess: secret\n---\n# Hello\n\nHi\n")
    (src / ".hidden.md").write_text("# Hidden\n\nnever indexed\n")
    (src / "dangling.md").symlink_to(src / "moved-away.md")  # unreadable: its target is gone
    config = KnowledgeConfig(sources=[FolderSource(path=src)], max_file_bytes=100_000)
    knowledge = build(config, engine, embedder, clean_environ)
    await knowledge.open(index=False)
    report = await knowledge.syncer.run()
    reasons = {
        i.doc_id: (i.action, i.reason or "")
        for i in report.items
        if i.action in ("skipped", "failed")
    }
    assert reasons["broken.pdf"][0] == "failed" and "corrupt PDF" in reasons["broken.pdf"][1]
    assert reasons["binary.md"] == ("skipped", "binary file (not text)")
    assert reasons["empty.md"] == ("skipped", "empty file")
    assert reasons["huge.txt"][0] == "skipped" and "too large" in reasons["huge.txt"][1]
    assert reasons["photo.png"] == ("skipped", "unsupported file type .png")
    assert (
        reasons["bad-front-matter.md"][0] == "failed"
        and "access" in reasons["bad-front-matter.md"][1]
    )
    assert reasons["dangling.md"][0] == "failed" and "unreadable" in reasons["dangling.md"][1]
    assert ".hidden.md" not in {i.doc_id for i in report.items}
    assert (report.added, report.skipped, report.failed) == (2, 4, 3)
    hits = await knowledge.search.search("crème brûlée", k=1)
    assert hits[0].doc_id == "latin1.txt" and "café" in hits[0].text
    await knowledge.close()


async def test_a_document_that_breaks_keeps_its_previous_version(kb, handbook):
    await kb.syncer.run()
    (handbook / PDF).write_bytes(b"%PDF-1.4\ngarbage")
    report = await kb.syncer.run()
    [item] = [i for i in report.items if i.doc_id == PDF]
    assert item.action == "failed" and "previous version stays" in item.reason
    hits = await kb.search.search("What is the hotel cap in Lisbon?", k=3)
    assert hits[0].doc_id == PDF


async def test_an_emptied_document_is_removed(kb, handbook):
    await kb.syncer.run()
    (handbook / "people" / "benefits.md").write_text("")
    report = await kb.syncer.run()
    [item] = report.items
    assert (item.doc_id, item.action) == (
        "people/benefits.md",
        "skipped",
    ) and "removed" in item.reason
    assert "people/benefits.md" not in {k.doc_id for k in await kb.index.manifest()}


async def test_a_source_that_cannot_be_read_keeps_its_documents_and_never_blocks_the_others(
    handbook, tmp_path, engine, embedder, clean_environ
):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "parking.md").write_text("# Parking\n\nThe garage code is 4711.\n")
    config = KnowledgeConfig(
        sources=[FolderSource(path=handbook, name="handbook"), FolderSource(path=notes)]
    )
    knowledge = build(config, engine, embedder, clean_environ)
    await knowledge.open(index=False)
    first = await knowledge.syncer.run()
    assert first.failed_sources == [] and first.added > 1

    shutil.rmtree(notes)  # an unmounted share, a folder renamed by mistake
    (handbook / "it" / "printers.md").write_text("# Printers\n\nPrint on the 3rd floor.\n")
    report = await knowledge.syncer.run()
    assert report.failed_sources == ["notes"]
    [failure] = [i for i in report.items if i.source == "notes"]
    assert "does not exist" in (failure.reason or "") and "stays in the index" in (
        failure.reason or ""
    )
    assert ("handbook", "it/printers.md", "added") in {
        (i.source, i.doc_id, i.action) for i in report.items
    }
    assert report.deleted == 0
    hits = await knowledge.search.search("garage code", k=3)
    assert hits and hits[0].doc_id == "parking.md"  # kept until the folder is back
    [notes_status] = [s for s in source_statuses(config, engine) if s.name == "notes"]
    assert notes_status.status == "failed" and notes_status.documents == 1


async def test_no_sources_is_a_clear_error(engine, embedder, clean_environ):
    knowledge = build(KnowledgeConfig(), engine, embedder, clean_environ)
    await knowledge.open(index=False)
    with pytest.raises(ConfigError, match="no document sources"):
        await knowledge.syncer.run()


async def test_source_access_applies_unless_front_matter_says_otherwise(
    handbook, engine, embedder, clean_environ
):
    config = KnowledgeConfig(sources=[FolderSource(path=handbook, access=Access.PRIVATE)])
    knowledge = build(config, engine, embedder, clean_environ)
    await knowledge.open(index=False)
    await knowledge.syncer.run()
    public = await knowledge.search.search(
        "hotel cap", k=10, filters=SearchFilters(scope=AccessScope())
    )
    assert public == []
    finance = SearchFilters(scope=AccessScope(principals=frozenset({"finance-team"})))
    hits = await knowledge.search.search(
        "supplier invoice cut-off for the quarter", k=10, filters=finance
    )
    assert {h.doc_id for h in hits} == {"finance/quarter-close.md"}
    await knowledge.close()

    # Making the source public again re-indexes every document with the new label.
    config = KnowledgeConfig(sources=[FolderSource(path=handbook)])
    knowledge = build(config, engine, embedder, clean_environ)
    await knowledge.open(index=False)
    report = await knowledge.syncer.run()
    assert report.updated == HANDBOOK_DOCS and report.chunks_embedded == 0
    public = await knowledge.search.search(
        "hotel cap", k=3, filters=SearchFilters(scope=AccessScope())
    )
    assert public[0].doc_id == PDF
    await knowledge.close()


@pytest.fixture
async def two_replicas(knowledge_config, engine, embedder, clean_environ):
    """Two Knowledge instances on the same index and database, as two processes would be."""
    pair = [build(knowledge_config, engine, embedder, clean_environ) for _ in range(2)]
    for knowledge in pair:
        await knowledge.open(index=False)
    yield pair
    for knowledge in pair:
        await knowledge.close()


async def test_two_syncs_at_once_one_runs_the_other_is_told(two_replicas):
    first, second = two_replicas
    results = await asyncio.gather(first.syncer.run(), second.syncer.run(), return_exceptions=True)
    refused = [r for r in results if isinstance(r, AlreadyRunningError)]
    done = [r for r in results if not isinstance(r, BaseException)]
    assert len(refused) == 1 and len(done) == 1
    assert "already running since" in str(refused[0])
    await assert_consistent(first)


async def test_a_waiting_sync_runs_after_the_first_and_finds_nothing_to_do(two_replicas):
    first, second = two_replicas
    a, b = await asyncio.gather(first.syncer.run(), second.syncer.run(wait=True))
    assert {a.added, b.added} == {HANDBOOK_DOCS, 0}
    assert {a.unchanged, b.unchanged} == {0, HANDBOOK_DOCS}
    await assert_consistent(first)


async def test_each_sync_report_is_recorded_in_the_sql_store(
    database_url, knowledge_config, embedder, clean_environ, handbook
):
    engine = make_engine(database_url)
    knowledge = build(knowledge_config, engine, embedder, clean_environ)
    await knowledge.open(index=False)
    await knowledge.syncer.run(trigger="test")
    (handbook / "it" / "vpn-setup.md").unlink()
    await knowledge.syncer.run(trigger="scheduler")
    runs = SyncRunStore(engine)
    last = runs.last()
    assert last is not None and last.run_id is not None
    assert (last.status, last.trigger, last.deleted, last.unchanged) == (
        "ok",
        "scheduler",
        1,
        HANDBOOK_DOCS - 1,
    )
    assert [(i.doc_id, i.action) for i in last.items] == [("it/vpn-setup.md", "deleted")]
    first = runs.get(last.run_id - 1)
    assert first is not None and first.finished_at is not None and first.duration_s is not None
    assert (first.added, first.trigger, len(first.items)) == (HANDBOOK_DOCS, "test", HANDBOOK_DOCS)
    assert first.finished_at >= first.started_at and first.duration_s > 0
    await knowledge.close()
    engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [1, 4])
async def test_kill_9_mid_sync_then_resync_leaves_nothing_missing_or_twice(
    kill_after, handbook, engine, embedder, clean_environ
):
    child = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent / "sync_child.py"),
            str(handbook),
            str(clean_environ),
            str(kill_after),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -9, child.stdout + child.stderr
    runs = SyncRunStore(engine)
    running = runs.last(finished=False)
    assert running is not None and running.status == "running"

    config = KnowledgeConfig(sources=[FolderSource(path=handbook, name="handbook")])
    knowledge = build(config, engine, embedder, clean_environ)
    await knowledge.open(index=False)
    report = await knowledge.syncer.run()  # the dead child's lease is taken over at once
    assert report.added + report.unchanged + report.updated == HANDBOOK_DOCS
    assert report.unchanged >= 2 * kill_after - 1  # what the child wrote before dying is kept
    await assert_consistent(knowledge)
    assert (await knowledge.index.stats()).documents == HANDBOOK_DOCS
    assert report.run_id is not None
    interrupted = runs.get(report.run_id - 1)
    assert interrupted is not None and interrupted.status == "interrupted"
    await knowledge.close()
