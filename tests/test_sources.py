"""Sources as configured, listed and checked: the `type` of each entry of knowledge.sources,
credentials by reference, `expertbot sources list|test`, `expertbot sync --source`, and what
the sync makes of the protocol every connector speaks (tests/test_web_source.py drives the web
connector against a real site)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from base.errors import ConfigError, SourceError
from bot.settings import load_settings
from knowledge import sync as sync_module
from knowledge.config import FolderSource, KnowledgeConfig, WebSource
from knowledge.connectors.base import Entry, narrow
from knowledge.connectors.http import HttpClient
from knowledge.models import Access, AccessScope, SearchFilters
from knowledge.reports import SourceStateStore
from knowledge.runtime import Knowledge
from tests.helpers import HANDBOOK, run_cli

# --- configuration --------------------------------------------------------------------------


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "expertbot.toml"
    path.write_text(body)
    return path


def test_a_source_with_only_a_path_is_a_folder_as_before(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f"""
[[knowledge.sources]]
path = "{HANDBOOK}"
name = "handbook"

[[knowledge.sources]]
type = "web"
url = "https://intranet.example.com/handbook/start"
access = "restricted"
allowed = ["C0HR"]
schedule = "*/30 * * * *"
""",
    )
    settings = load_settings(config_file=config, environ={})
    folder, web = settings.knowledge.sources
    assert isinstance(folder, FolderSource) and folder.type == "folder"
    assert isinstance(web, WebSource) and web.source_name == "intranet.example.com"
    assert web.scope == "https://intranet.example.com/handbook/"
    assert web.access is Access.RESTRICTED and web.schedule == "*/30 * * * *"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('type = "web"', "needs `url` or `sitemap`"),
        ('type = "web"\nurl = "ftp://files.example.com/"', "not an http(s) URL"),
        ('type = "wiki"\nurl = "https://x.example.com/"', "type"),
        ('type = "web"\nurl = "https://x.example.com/"\nschedule = "every day"', "schedule"),
        (
            'type = "web"\nurl = "https://x.example.com/"\nauth = { token = "s3cr3t-inline" }',
            "unknown key",
        ),
        (
            'type = "web"\nurl = "ftp://x.example.com/"\nauth = { token = "s3cr3t-inline" }',
            "auth",
        ),
    ],
)
def test_a_bad_source_is_a_clear_error_naming_it(tmp_path: Path, body: str, message: str) -> None:
    config = write_config(tmp_path, f"[[knowledge.sources]]\n{body}\n")
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        load_settings(config_file=config, environ={})
    assert "s3cr3t-inline" not in str(caught.value)


def test_two_sources_with_one_name_are_refused(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f"""
[[knowledge.sources]]
path = "{HANDBOOK}"
name = "docs"

[[knowledge.sources]]
type = "web"
url = "https://docs.example.com/"
name = "docs"
""",
    )
    with pytest.raises(ConfigError, match="two sources are named 'docs'"):
        load_settings(config_file=config, environ={})


def test_credentials_are_read_by_reference_and_never_shown(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-123\n")
    config = write_config(
        tmp_path,
        f"""
[[knowledge.sources]]
type = "web"
name = "by-env"
url = "https://a.example.com/"
auth = {{ token_env = "INTRANET_TOKEN" }}

[[knowledge.sources]]
type = "web"
name = "by-file"
url = "https://b.example.com/"
auth = {{ token_file = "{token_file}" }}

[[knowledge.sources]]
type = "web"
name = "unset"
url = "https://c.example.com/"
auth = {{ token_env = "NOT_SET_ANYWHERE" }}
""",
    )
    settings = load_settings(config_file=config, environ={"INTRANET_TOKEN": "env-token-456"})
    by_env, by_file, unset = settings.knowledge.sources
    assert isinstance(by_env, WebSource) and by_env.auth is not None
    assert by_env.auth.token().get_secret_value() == "env-token-456"  # type: ignore[union-attr]
    assert isinstance(by_file, WebSource) and by_file.auth is not None
    assert by_file.auth.token().get_secret_value() == "file-token-123"  # type: ignore[union-attr]
    assert isinstance(unset, WebSource) and unset.auth is not None
    with pytest.raises(SourceError, match="NOT_SET_ANYWHERE is not set"):
        unset.auth.token()
    shown = settings.model_dump_json() + repr(settings)
    assert "env-token-456" not in shown and "file-token-123" not in shown


# --- access ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "allowed", "platform", "platform_allowed", "expected"),
    [
        # nothing said by the platform: the source's label
        (Access.PUBLIC, (), None, (), (Access.PUBLIC, ())),
        (Access.RESTRICTED, ("C1",), None, (), (Access.RESTRICTED, ("C1",))),
        # the platform narrows a public source to the channels it maps to
        (Access.PUBLIC, (), Access.RESTRICTED, ("C2",), (Access.RESTRICTED, ("C2",))),
        # a restriction no channel or group is tied to: private
        (Access.PUBLIC, (), Access.RESTRICTED, (), (Access.PRIVATE, ())),
        # never widened: a restricted source stays within its own channels
        (Access.RESTRICTED, ("C1",), Access.RESTRICTED, ("C1", "C2"), (Access.RESTRICTED, ("C1",))),
        (Access.RESTRICTED, ("C1",), Access.RESTRICTED, ("C2",), (Access.PRIVATE, ())),
        (Access.RESTRICTED, ("C1",), Access.PUBLIC, (), (Access.RESTRICTED, ("C1",))),
        (Access.PRIVATE, (), Access.PUBLIC, (), (Access.PRIVATE, ())),
        (Access.PRIVATE, (), Access.RESTRICTED, ("C1",), (Access.PRIVATE, ())),
        (Access.PUBLIC, (), Access.PRIVATE, (), (Access.PRIVATE, ())),
    ],
)
def test_the_platform_may_narrow_a_sources_access_never_widen_it(
    label: Access,
    allowed: tuple[str, ...],
    platform: Access | None,
    platform_allowed: tuple[str, ...],
    expected: tuple[Access, tuple[str, ...]],
) -> None:
    assert narrow(label, allowed, platform, platform_allowed) == expected


# --- the protocol, as the sync reads it -----------------------------------------------------


class ScriptedConnector:
    """A connector whose listing each test writes: a delta API, a platform's ACLs, a failure
    mid-listing. Follows knowledge/connectors/base.py."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.full_listing = False
        self.expected: int | None = None
        self.entries_next: list[Entry] = []
        self.fail_after: int | None = None
        self.states_seen: list[dict[str, Any]] = []
        self.known_seen: list[set[str]] = []

    async def entries(self, state: dict[str, Any], known: Collection[str]) -> AsyncIterator[Entry]:
        self.states_seen.append(dict(state))
        self.known_seen.append(set(known))
        for n, entry in enumerate(self.entries_next):
            if self.fail_after is not None and n >= self.fail_after:
                raise SourceError("HTTP 503 from the API after 4 tries")
            yield entry
        state["delta"] = int(state.get("delta", 0)) + 1

    async def read(self, entry: Entry) -> bytes:
        raise SourceError("every entry here comes with its content")

    async def close(self) -> None:
        return None


def page(doc_id: str, text: str, **kwargs: Any) -> Entry:
    title = doc_id.rsplit("/", 1)[-1].removesuffix(".md").capitalize()
    body = f"# {title}\n\n{text}\n".encode()
    return Entry(doc_id=doc_id, uri=f"https://wiki.example.com/{doc_id}", content=body, **kwargs)


@pytest.fixture
async def wiki(
    tmp_path: Path, engine: Any, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Knowledge, ScriptedConnector]]:
    source = WebSource(type="web", url="https://wiki.example.com/", name="wiki")
    connector = ScriptedConnector("wiki")
    monkeypatch.setattr(sync_module, "connector_for", lambda *_a, **_k: connector)
    knowledge = Knowledge.build(
        KnowledgeConfig(sources=[source]), data_dir=tmp_path, engine=engine, embedder=embedder
    )
    await knowledge.open(index=False)
    yield knowledge, connector
    await knowledge.close()


async def test_a_delta_listing_deletes_what_it_says_and_keeps_what_it_does_not_list(wiki) -> None:
    knowledge, connector = wiki
    connector.entries_next = [
        page("travel.md", "Book trains for trips under 600 km."),
        page("parking.md", "The garage code is 4711."),
    ]
    first = await knowledge.syncer.run()
    assert first.added == 2
    connector.entries_next = [
        page("travel.md", "Book trains for trips under 800 km."),
        Entry(doc_id="parking.md", uri="", deleted=True),
    ]
    second = await knowledge.syncer.run()
    assert (second.updated, second.deleted) == (1, 1)
    assert connector.states_seen[1] == {"delta": 1}  # the cursor the first sync saved
    assert connector.known_seen[1] == {"travel.md", "parking.md"}
    connector.entries_next = []  # nothing changed: the delta lists nothing, nothing is lost
    third = await knowledge.syncer.run()
    assert third.deleted == 0
    hits = await knowledge.search.search("how far by train", k=1)
    assert hits[0].doc_id == "travel.md" and "800 km" in hits[0].text
    assert not await knowledge.search.search("garage code 4711", k=5, mode="keyword")


async def test_a_listing_that_fails_midway_keeps_the_old_cursor_and_every_document(wiki) -> None:
    knowledge, connector = wiki
    connector.full_listing = True
    connector.entries_next = [page("a.md", "Alpha is our billing system."), page("b.md", "Beta.")]
    await knowledge.syncer.run()
    connector.fail_after = 1
    report = await knowledge.syncer.run()
    assert report.failed_sources == ["wiki"] and report.deleted == 0
    assert report.source("wiki") == {
        "name": "wiki",
        "type": "web",
        "path": "https://wiki.example.com/",
        "listed": 1,
        "cursor": "kept",
    }
    assert "503" in next(i.reason for i in report.items if i.doc_id == "*")
    state = SourceStateStore(knowledge.engine).all()["wiki"]
    assert state.status == "failed" and state.cursor == {"delta": 1} and state.documents == 2
    connector.fail_after = None
    last = await knowledge.syncer.run()
    assert SourceStateStore(knowledge.engine).cursor("wiki") == {"delta": 2}
    assert SourceStateStore(knowledge.engine).all()["wiki"].run_id == last.run_id


async def test_the_cursor_moves_on_only_once_the_index_holds_what_it_covers(
    wiki, monkeypatch: pytest.MonkeyPatch
) -> None:
    knowledge, connector = wiki
    connector.entries_next = [page("a.md", "Alpha is our billing system.")]
    await knowledge.syncer.run()
    connector.entries_next = [page("b.md", "Beta is our ticketing system.")]

    async def index_down(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the index went away mid-write")

    working = knowledge.index.replace_documents
    monkeypatch.setattr(knowledge.index, "replace_documents", index_down)
    with pytest.raises(RuntimeError):
        await knowledge.syncer.run()
    assert SourceStateStore(knowledge.engine).cursor("wiki") == {"delta": 1}  # not moved on
    monkeypatch.setattr(knowledge.index, "replace_documents", working)
    await knowledge.syncer.run()
    assert connector.states_seen[-1] == {"delta": 1}  # the lost change is listed again
    hits = await knowledge.search.search("ticketing system", k=1)
    assert hits and hits[0].doc_id == "b.md"


async def test_what_the_platform_restricts_is_only_seen_where_it_is_allowed(wiki) -> None:
    knowledge, connector = wiki
    connector.entries_next = [
        page("salaries.md", "Salary bands are reviewed in March.", access=Access.RESTRICTED),
        page(
            "board.md", "The board meets in Lisbon.", access=Access.RESTRICTED, allowed=("C0BOARD",)
        ),
        page("lunch.md", "Lunch is served at noon."),
    ]
    await knowledge.syncer.run()

    async def visible(question: str, scope: AccessScope) -> set[str]:
        hits = await knowledge.search.search(question, k=5, filters=SearchFilters(scope=scope))
        return {h.doc_id for h in hits}

    public = AccessScope.public_only()
    assert await visible("salary bands lisbon lunch", public) == {"lunch.md"}
    board = AccessScope(principals=frozenset({"C0BOARD"}))
    assert "board.md" in await visible("where does the board meet", board)
    assert "salaries.md" not in await visible("salary bands", board)
    private = AccessScope(include_private=True)
    assert "salaries.md" in await visible("salary bands", private)


# --- the CLI --------------------------------------------------------------------------------


def two_folders(tmp_path: Path) -> Path:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "parking.md").write_text("# Parking\n\nThe garage code is 4711.\n")
    return write_config(
        tmp_path,
        f"""
[[knowledge.sources]]
path = "{HANDBOOK}"
name = "handbook"

[[knowledge.sources]]
path = "{notes}"
schedule = "0 6 * * *"

[[knowledge.sources]]
path = "{tmp_path / "gone"}"
name = "gone"
""",
    )


def test_sources_list_and_sync_of_one_source(tmp_path: Path) -> None:
    config = str(two_folders(tmp_path))
    before = json.loads(run_cli("--config", config, "sources", "list", "--json").stdout)
    assert [(s["name"], s["type"], s["status"]) for s in before] == [
        ("handbook", "folder", "never"),
        ("notes", "folder", "never"),
        ("gone", "folder", "never"),
    ]
    synced = run_cli("--config", config, "sync", "--source", "notes", "--json")
    assert synced.exit_code == 0, synced.stderr
    report = json.loads(synced.stdout)
    assert [s["name"] for s in report["sources"]] == ["notes"]  # not the others, nor the feeds
    assert report["added"] == 1
    after = {
        s["name"]: s
        for s in json.loads(run_cli("--config", config, "sources", "list", "--json").stdout)
    }
    assert after["notes"]["status"] == "ok" and after["notes"]["documents"] == 1
    assert 0 <= after["notes"]["cursor_age_s"] < 60 and after["notes"]["schedule"] == "0 6 * * *"
    assert after["handbook"]["status"] == "never"
    shown = run_cli("--config", config, "sources", "list")
    assert "notes  (folder, public)" in shown.stdout and "1 documents" in shown.stdout

    everything = run_cli("--config", config, "sync")
    assert everything.exit_code == 1  # one source could not be read: said, and the rest synced
    assert "gone:*: could not be listed" in everything.stderr
    assert "could not read gone" in everything.stdout
    listed = {
        s["name"]: s
        for s in json.loads(run_cli("--config", config, "sources", "list", "--json").stdout)
    }
    assert listed["handbook"]["status"] == "ok" and listed["handbook"]["documents"] > 5
    assert listed["gone"]["status"] == "failed" and "does not exist" in listed["gone"]["error"]

    unknown = run_cli("--config", config, "sync", "--source", "wiki")
    assert unknown.exit_code == 1 and "no source named 'wiki'" in unknown.stderr
    partial = run_cli("--config", config, "sync", "--source", "notes", "--rebuild")
    assert partial.exit_code == 1 and "--rebuild re-reads every source" in partial.stderr


def test_sources_test_lists_a_few_documents_or_says_why_not(tmp_path: Path) -> None:
    config = str(two_folders(tmp_path))
    ok = run_cli("--config", config, "sources", "test", "handbook", "--json")
    assert ok.exit_code == 0
    result = json.loads(ok.stdout)
    assert result["ok"] is True and len(result["documents"]) == 5
    assert all(d["uri"].startswith("file://") for d in result["documents"])
    bad = run_cli("--config", config, "sources", "test", "gone")
    assert bad.exit_code == 1
    assert bad.stderr.strip().count("\n") == 0 and "does not exist" in bad.stderr
    assert run_cli("--config", config, "sources", "list", "--json").exit_code == 0
    # testing indexes nothing and saves no cursor
    listed = json.loads(run_cli("--config", config, "sources", "list", "--json").stdout)
    assert {s["status"] for s in listed} == {"never"}


async def test_two_sources_sync_at_once_each_under_its_own_lease(
    tmp_path: Path, engine: Any, embedder: Any
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "parking.md").write_text("# Parking\n\nThe garage code is 4711.\n")
    config = KnowledgeConfig(
        sources=[FolderSource(path=HANDBOOK, name="handbook"), FolderSource(path=notes)]
    )
    knowledge = Knowledge.build(config, data_dir=tmp_path, engine=engine, embedder=embedder)
    await knowledge.open(index=False)
    try:
        with capture_logs() as logs:
            first, second = await asyncio.gather(
                knowledge.syncer.run([config.sources[0]], feeds=False),
                knowledge.syncer.run([config.sources[1]], feeds=False),
            )
        assert first.failed == second.failed == 0 and first.skipped == second.skipped == 0
        assert first.added > 5 and second.added == 1
        assert not [e for e in logs if "already running" in str(e)]
    finally:
        await knowledge.close()


def test_retry_after_is_honoured_in_seconds_or_as_a_date_and_capped() -> None:
    from email.utils import format_datetime

    client = HttpClient(source="intranet", user_agent="expertbot", max_wait_s=120)
    assert client._wait("7", attempt=1) == 7
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < client._wait(soon, attempt=1) <= 30
    assert client._wait("86400", attempt=1) == 120  # a day is not worth waiting for here
    assert client._wait("soon-ish", attempt=3) <= 120  # unreadable: exponential backoff
