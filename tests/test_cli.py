"""The command line contract: what users and scripts rely on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from knowledge.sync import sync_lock
from tests.helpers import HANDBOOK, run_cli


@pytest.fixture(scope="module")
def synced(tmp_path_factory) -> Path:
    """A data dir holding the synced handbook, shared by read-only tests of this module."""
    data = tmp_path_factory.mktemp("cli") / "data"
    result = run_cli("--data-dir", str(data), "sync", str(HANDBOOK), "--json")
    assert result.exit_code == 0, result.output
    return data


def test_sync_json_report(tmp_path):
    docs = tmp_path / "kb"
    shutil.copytree(HANDBOOK / "it", docs)
    result = run_cli("sync", str(docs), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "ok" and report["added"] == len(list(docs.iterdir()))
    # The folder given, and the experts' answers every sync indexes.
    assert report["sources"] == [
        {
            "name": "kb",
            "type": "folder",
            "path": str(docs),
            "listed": report["added"],
            "cursor": "saved",
        },
        {"name": "expert-answers", "type": "feed", "path": ""},
    ]
    again = run_cli("sync", str(docs))
    assert again.exit_code == 0
    assert "0 added, 0 updated, 0 deleted, 4 unchanged" in again.stdout


def test_search_json_has_the_documented_fields(synced):
    result = run_cli(
        "--data-dir", str(synced), "search", "How do I reset my password?", "-k", "3", "--json"
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 3
    assert {"doc", "uri", "title", "heading", "score", "text"} <= set(hits[0])
    assert hits[0]["doc"] == "it/help-desk.md" and hits[0]["uri"].startswith("file://")


def test_search_public_only_hides_private_documents(synced):
    question = "What is the bonus target for a director?"
    everything = json.loads(run_cli("--data-dir", str(synced), "search", question, "--json").stdout)
    public = json.loads(
        run_cli("--data-dir", str(synced), "search", question, "--json", "--public-only").stdout
    )
    assert everything[0]["doc"] == "people/compensation-bands.md"
    assert all(h["access"] == "public" for h in public)


def test_search_prints_readable_hits(synced):
    result = run_cli("--data-dir", str(synced), "search", "VPN server address", "-k", "2")
    assert result.exit_code == 0
    assert "[1] VPN Setup Guide" in result.stdout and "file://" in result.stdout


def test_eval_retrieval_reports_recall_and_mrr(synced):
    result = run_cli(
        "--data-dir",
        str(synced),
        "eval",
        "retrieval",
        str(HANDBOOK.parent / "questions.jsonl"),
        "--json",
        "--mode",
        "all",
    )
    assert result.exit_code == 0, result.output
    rows = {row["mode"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"hybrid", "vector", "keyword", "passages"}
    assert rows["hybrid"]["questions"] == 30
    assert rows["hybrid"]["recall@5"] >= 0.9 and rows["hybrid"]["mrr"] >= 0.85
    assert all(r["rank"] is None or r["rank"] >= 1 for r in rows["hybrid"]["results"])


def test_index_status(synced):
    result = run_cli("--data-dir", str(synced), "index", "status", "--json")
    status = json.loads(result.stdout)
    assert (status["store"], status["documents"]) == ("lancedb", 18)
    assert status["embedding_model"] == "all-MiniLM-L6-v2" and status["embedding_dim"] == 384
    assert status["last_sync"]["status"] == "ok" and status["last_sync"]["added"] == 18
    text = run_cli("--data-dir", str(synced), "index", "status").stdout
    assert "documents:  18" in text and "last sync:" in text


def test_status_of_a_fresh_install(tmp_path):
    status = json.loads(run_cli("index", "status", "--json").stdout)
    assert (status["documents"], status["chunks"], status["last_sync"]) == (0, 0, None)
    assert "never" in run_cli("index", "status").stdout


def test_search_before_any_sync_says_what_to_do():
    result = run_cli("search", "anything")
    assert result.exit_code == 0 and "expertbot sync" in result.stdout


def test_missing_folder_is_one_clear_line_and_exit_1(tmp_path):
    result = run_cli("sync", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert "does not exist" in result.stderr and "Traceback" not in result.output


def test_bad_setting_is_named(tmp_path):
    result = run_cli("search", "x", env={"EXPERTBOT_KNOWLEDGE__SEARCH__FUSION": "magic"})
    assert result.exit_code == 1
    assert "knowledge.search.fusion" in result.stderr


def test_bad_eval_file_names_the_line(tmp_path, synced):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "ok?", "doc": "a.md"}\n{"question": "no doc"}\n')
    result = run_cli("--data-dir", str(synced), "eval", "retrieval", str(bad))
    assert result.exit_code == 1 and "q.jsonl:2" in result.stderr


def test_empty_query_is_refused_clearly(synced):
    result = run_cli("--data-dir", str(synced), "search", "   ")
    assert result.exit_code == 1 and "empty" in result.stderr


def test_a_second_sync_while_one_runs_exits_3_and_says_since_when(tmp_path):
    from base.database import make_engine, sqlite_url
    from base.locks import JobLock
    from base.migrations import migrate_all

    engine = make_engine(sqlite_url(tmp_path / "data" / "expertbot.db"))
    migrate_all(engine)
    for source in ("knowledge", "expert-answers"):
        JobLock(engine, sync_lock(source), holder="other-host:1:abc").try_acquire()
    result = run_cli("sync", str(HANDBOOK))
    assert result.exit_code == 3
    assert "already running since" in result.stderr and "other-host" in result.stderr


def test_a_source_syncing_elsewhere_is_left_to_it_and_the_others_sync(tmp_path):
    from base.database import make_engine, sqlite_url
    from base.locks import JobLock
    from base.migrations import migrate_all

    engine = make_engine(sqlite_url(tmp_path / "data" / "expertbot.db"))
    migrate_all(engine)
    JobLock(engine, sync_lock("knowledge"), holder="other-host:1:abc").try_acquire()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "parking.md").write_text("# Parking\n\nThe garage code is 4711.\n")
    result = run_cli("sync", str(HANDBOOK), str(notes), "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    actions = {(i["source"], i["doc_id"], i["action"]) for i in report["items"]}
    assert ("notes", "parking.md", "added") in actions
    [busy] = [i for i in report["items"] if i["source"] == "knowledge"]
    assert busy["action"] == "skipped" and "already running" in busy["reason"]


def test_help_lists_the_commands():
    result = run_cli("--help")
    for command in ("sync", "search", "eval", "index"):
        assert command in result.stdout


def test_brackets_in_titles_and_errors_are_printed_as_written(tmp_path):
    docs = tmp_path / "kb"
    docs.mkdir()
    (docs / "draft.md").write_text(
        "# [DRAFT] Parking [bold] rules\n\nVisitors park on level -2 [C0FINANCE].\n"
    )
    assert run_cli("sync", str(docs)).exit_code == 0
    result = run_cli("search", "visitor parking level", "-k", "1")
    assert "[1] [DRAFT] Parking [bold] rules" in result.stdout
    assert "level -2 [C0FINANCE]." in result.stdout
    missing = run_cli("sync", str(tmp_path / "[red]nope"))
    assert missing.exit_code == 1 and "[red]nope does not exist" in missing.stderr
