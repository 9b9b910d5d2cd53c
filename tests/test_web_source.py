"""The web connector against a real site served on 127.0.0.1 (tests/web_site.py), and a web
source synced end to end into a real LanceDB index with real embeddings."""

from __future__ import annotations

import gzip
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from base.errors import SourceError
from knowledge.config import KnowledgeConfig, SecretReference, WebSource
from knowledge.connectors.base import Entry
from knowledge.connectors.web import WebConnector, parse_robots
from knowledge.parsing import parse_document
from knowledge.runtime import Knowledge
from tests.web_site import (
    DOCX,
    Resource,
    WebSite,
    docx_file,
    intranet,
    page,
    sitemap,
)

LIMIT = 100_000  # bytes a document may weigh: /handbook/huge is over it
DOCUMENTS = {
    "/handbook/",
    "/handbook/travel",
    "/handbook/leave",
    "/handbook/leave/parental",
    "/handbook/expenses",
    "/handbook/forms/claim.pdf",
    "/handbook/huge",
}


@pytest.fixture
async def site() -> AsyncIterator[WebSite]:
    async with intranet() as served:
        yield served


def source(site: WebSite, **settings: Any) -> WebSource:
    return WebSource(type="web", url=f"{site.url}/handbook/", **settings)


def connector(site: WebSite, **settings: Any) -> WebConnector:
    return WebConnector(source(site, **settings), max_bytes=LIMIT, backoff_s=0.01)


async def listing(
    web: WebConnector, state: dict[str, Any] | None = None, known: set[str] | None = None
) -> dict[str, Entry]:
    """The entries listed, by path; `state` is updated in place. (The connector's session
    is closed after; a later call opens another.)"""
    try:
        entries = [e async for e in web.entries({} if state is None else state, known or set())]
    finally:
        await web.close()
    paths = [e.doc_id.split("/", 1)[1] for e in entries]
    assert len(paths) == len(set(paths)), paths
    return {"/" + path: e for path, e in zip(paths, entries, strict=True)}


def text_of(entry: Entry) -> str:
    assert entry.content is not None
    return "\n".join(s.text for s in parse_document(entry.parse_name, entry.content).sections)


# --- what a listing holds ------------------------------------------------------------------


async def test_first_listing_reads_the_pages_and_files_under_the_prefix(site: WebSite) -> None:
    web = connector(site)
    entries = await listing(web)

    assert set(entries) == DOCUMENTS
    requested = {hit.path for hit in site.hits}
    # robots.txt's Disallow, another prefix, an image by its name: never asked for
    assert not requested & {"/handbook/secret/salaries", "/outside", "/handbook/logo.png"}
    assert {"/handbook/missing", "/handbook/chart"} <= requested  # a 404, an image by its type
    assert all(hit.user_agent == "expertbot" for hit in site.hits)

    # the redirect's target, once, cited by its final URL
    expenses = entries["/handbook/expenses"]
    assert expenses.uri == f"{site.url}/handbook/expenses"
    assert expenses.doc_id == f"{site.url.split('://')[1]}/handbook/expenses"
    assert "Ledgerly within thirty days" in text_of(expenses)

    travel = entries["/handbook/travel"]
    assert (travel.title, travel.uri) == ("Travel policy", f"{site.url}/handbook/travel")
    assert travel.modified == 1_700_000_000.0  # Last-Modified
    assert travel.content is not None
    parsed = parse_document(travel.parse_name, travel.content)
    assert parsed.title == "Travel policy"
    sections = {s.heading_path: s.text for s in parsed.sections}
    assert ("Travel policy", "Booking flights", "Long-haul flights") in sections
    assert "180 euros" in sections[("Travel policy", "Hotels")]
    every_text = "\n".join(text_of(e) for e in entries.values() if e.content is not None)
    for boilerplate in ("cookies", "Copyright 2024", "Northwind Intranet", "Terms of use"):
        assert boilerplate not in every_text

    pdf = entries["/handbook/forms/claim.pdf"]
    assert pdf.content is not None and pdf.content.startswith(b"%PDF")
    assert parse_document(pdf.parse_name, pdf.content).title == "Travel and Expense Policy"

    huge = entries["/handbook/huge"]
    assert huge.content is None and huge.size > LIMIT


async def test_a_linked_word_document_is_read(site: WebSite) -> None:
    site.files["/handbook/forms/leave-request.docx"] = Resource(
        docx_file("Leave request", "Approval", "Your manager approves leave within five days."),
        DOCX,
    )
    site.files["/handbook/leave"].body = page(
        "Leave", '<h1>Leave</h1><p><a href="forms/leave-request.docx">Request form</a></p>'
    )
    entries = await listing(connector(site))
    form = entries["/handbook/forms/leave-request.docx"]
    assert form.content is not None
    parsed = parse_document(form.parse_name, form.content)
    assert any(s.heading_path[-1:] == ("Approval",) for s in parsed.sections)
    assert "within five days" in text_of(form)

    without_files = await listing(connector(site, follow_files=False))
    assert not {p for p in without_files if p.startswith("/handbook/forms/")}


async def test_noindex_pages_are_not_listed_but_their_links_are_followed(site: WebSite) -> None:
    site.files["/handbook/"].body = page(
        "Handbook", '<h1>Handbook</h1><p><a href="travel">Travel</a> <a href="leave">Leave</a>'
    )
    site.files["/handbook/leave"].body = page(
        "Leave",
        '<h1>Leave</h1><p><a href="leave/parental">Parental leave</a></p>',
        head='<meta name="robots" content="noindex">',
    )
    site.files["/handbook/travel"].body = page(
        "Travel",
        '<h1>Travel</h1><p>Book early.</p><p><a href="expenses">Claims</a></p>',
        head='<meta name="expertbot" content="nofollow">',
    )
    entries = await listing(connector(site))
    assert set(entries) == {"/handbook/", "/handbook/travel", "/handbook/leave/parental"}
    assert not site.requested("/handbook/expenses")


# --- incremental ---------------------------------------------------------------------------


async def test_an_unchanged_site_costs_only_conditional_requests(site: WebSite) -> None:
    web = connector(site)
    state: dict[str, Any] = {}
    first = await listing(web, state)
    known = {e.doc_id for path, e in first.items() if path != "/handbook/huge"}
    site.forget()

    again = await listing(web, state, known)

    assert set(again) == DOCUMENTS  # parental is linked from leave: stored links followed
    assert all(
        e.unchanged and e.content is None
        for p, e in again.items()
        if p in DOCUMENTS - {"/handbook/huge"}
    )
    documents = [h for h in site.hits if h.path in DOCUMENTS - {"/handbook/huge"}]
    assert documents and all(h.conditional for h in documents)
    leave = site.requested("/handbook/leave")  # served without an ETag: Last-Modified only
    assert leave[0].if_modified_since and not leave[0].if_none_match
    assert site.requested("/handbook/travel")[0].if_none_match
    # the image without an extension, asked for again; the huge page, cut short
    assert sum(h.sent for h in site.hits if h.path != "/handbook/huge") < 1_000
    assert again["/handbook/travel"].title == "Travel policy"

    # a document the index does not hold whole is read in full
    site.forget()
    partly = await listing(web, state, known - {first["/handbook/travel"].doc_id})
    assert not site.requested("/handbook/travel")[0].conditional
    assert not partly["/handbook/travel"].unchanged
    assert "180 euros" in text_of(partly["/handbook/travel"])


async def test_a_changed_page_is_read_again_and_a_removed_one_is_no_longer_listed(
    site: WebSite,
) -> None:
    web = connector(site)
    state: dict[str, Any] = {}
    first = await listing(web, state)
    known = {e.doc_id for e in first.values()}
    travel = site.files["/handbook/travel"]
    travel.body = travel.body.replace(b"180 euros", b"210 euros")
    site.status["/handbook/leave/parental"] = 410
    del site.files["/handbook/expenses"]  # the redirect now leads to a 404

    again = await listing(web, state, known)

    assert set(again) == DOCUMENTS - {"/handbook/leave/parental", "/handbook/expenses"}
    assert not again["/handbook/travel"].unchanged
    assert "210 euros" in text_of(again["/handbook/travel"])
    assert again["/handbook/leave"].unchanged
    assert not any("parental" in url or "expenses" in url for url in state["pages"])


async def test_a_page_failing_for_now_is_kept_and_so_are_the_pages_under_it(
    site: WebSite,
) -> None:
    web = connector(site)
    state: dict[str, Any] = {}
    first = await listing(web, state)
    site.status["/handbook/leave"] = 503

    again = await listing(web, state, {e.doc_id for e in first.values()})

    assert set(again) == DOCUMENTS
    leave = again["/handbook/leave"]
    assert not leave.unchanged and leave.content is None
    with pytest.raises(SourceError, match="HTTP 503"):
        await web.read(leave)
    assert again["/handbook/leave/parental"].unchanged
    assert len(site.requested("/handbook/leave")) == 1 + 4  # first listing, then 4 tries


# --- politeness ----------------------------------------------------------------------------


async def test_the_page_budget_stops_the_crawl(site: WebSite) -> None:
    entries = await listing(connector(site, max_pages=3))
    assert list(entries) == ["/handbook/", "/handbook/travel", "/handbook/leave"]
    assert not site.requested("/handbook/leave/parental")


async def test_the_link_depth_is_bounded(site: WebSite) -> None:
    entries = await listing(connector(site, max_depth=1))
    assert "/handbook/leave/parental" not in entries and "/handbook/leave" in entries


def test_robots_rules_longest_match_wins_and_our_group_comes_first() -> None:
    text = """
    User-agent: *
    Disallow: /
    Allow: /handbook/

    User-agent: ExpertBot/2.0
    User-agent: otherbot
    Disallow: /handbook/private   # ours
    Allow: /handbook/private/ok$
    Disallow: /*.pdf$
    Crawl-delay: 1.5
    """
    ours = parse_robots(text, "expertbot")
    assert ours.allows("https://x.org/handbook/travel")
    assert not ours.allows("https://x.org/handbook/private/x")
    assert ours.allows("https://x.org/handbook/private/ok")
    assert not ours.allows("https://x.org/handbook/private/ok?page=2")
    assert not ours.allows("https://x.org/handbook/forms/claim.pdf")
    assert ours.allows("https://x.org/handbook/forms/claim.pdf?download=1")
    assert ours.delay_s == 1.5
    theirs = parse_robots(text, "somebot")
    assert theirs.allows("https://x.org/handbook/private/x")
    assert not theirs.allows("https://x.org/about")
    assert theirs.allows("https://x.org/robots.txt")
    assert theirs.delay_s == 0


async def test_robots_crawl_delay_paces_the_requests(site: WebSite) -> None:
    site.files[
        "/robots.txt"
    ].body = b"User-agent: *\nCrawl-delay: 0.3\nDisallow: /handbook/secret/\n"
    await listing(connector(site, concurrency=4, max_pages=4))
    # (a redirect's second request follows its first at once)
    times = [hit.at for hit in site.page_hits() if hit.path != "/handbook/expenses"]
    assert len(times) >= 4
    assert all(b - a > 0.2 for a, b in itertools.pairwise(times))


async def test_robots_missing_allows_everything(site: WebSite) -> None:
    del site.files["/robots.txt"]
    entries = await listing(connector(site))
    assert "/handbook/secret/salaries" in entries


async def test_robots_unavailable_disallows_everything_and_the_listing_fails(
    site: WebSite,
) -> None:
    site.status["/robots.txt"] = 503
    with pytest.raises(SourceError, match=r"robots.txt unavailable.*503"):
        await listing(connector(site))
    assert {hit.path for hit in site.hits} == {"/robots.txt"}


async def test_a_throttled_page_is_asked_again_after_retry_after(site: WebSite) -> None:
    site.throttle["/handbook/travel"] = 1
    entries = await listing(connector(site))
    assert "180 euros" in text_of(entries["/handbook/travel"])
    first, second = site.requested("/handbook/travel")
    assert second.at - first.at >= 0.9  # Retry-After: 1


# --- failures of the whole site ------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 404, 401])
async def test_a_failing_start_url_fails_the_listing(site: WebSite, status: int) -> None:
    site.status["/handbook/"] = status
    with pytest.raises(SourceError, match=f"HTTP {status}"):
        await listing(connector(site))


async def test_an_unreachable_site_fails_the_listing(site: WebSite) -> None:
    web = connector(site)
    await site.stop()
    with pytest.raises(SourceError, match=r"robots\.txt unavailable"):
        await listing(web)


async def test_a_start_url_redirected_out_of_the_prefix_fails_the_listing(site: WebSite) -> None:
    site.redirects["/handbook/"] = "/login?next=/handbook/"
    site.files["/login?next=/handbook/"] = Resource(page("Sign in", "<h1>Sign in</h1>"))
    with pytest.raises(SourceError, match="outside"):
        await listing(connector(site))


# --- sitemaps ------------------------------------------------------------------------------


async def test_a_sitemap_index_lists_its_pages_and_the_files_they_link(site: WebSite) -> None:
    pages = sitemap(
        site.url, ["/handbook/", "/handbook/travel", "/outside", "/handbook/secret/salaries"]
    )
    site.files["/sitemap-pages.xml.gz"] = Resource(gzip.compress(pages), "application/gzip")
    site.files["/sitemap.xml"] = Resource(
        (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<sitemap><loc>{site.url}/sitemap-pages.xml.gz</loc></sitemap></sitemapindex>"
        ).encode(),
        "application/xml",
    )
    web = WebConnector(
        WebSource(type="web", sitemap=f"{site.url}/sitemap.xml", prefix=f"{site.url}/handbook/"),
        max_bytes=LIMIT,
    )
    state: dict[str, Any] = {}
    entries = await listing(web, state)
    # the sitemap's pages under the prefix and the PDF the index page links to; not the
    # pages they link to
    assert set(entries) == {"/handbook/", "/handbook/travel", "/handbook/forms/claim.pdf"}

    site.forget()
    again = await listing(web, state, {e.doc_id for e in entries.values()})
    assert all(e.unchanged for e in again.values()) and set(again) == set(entries)
    assert all(hit.conditional for hit in site.hits if hit.path != "/robots.txt")


async def test_a_broken_sitemap_fails_the_listing(site: WebSite) -> None:
    web = WebConnector(WebSource(type="web", sitemap=f"{site.url}/sitemap.xml"), max_bytes=LIMIT)
    with pytest.raises(SourceError, match="HTTP 404"):
        await listing(web)
    site.files["/sitemap.xml"] = Resource(b"<html>not xml", "application/xml")
    with pytest.raises(SourceError, match="not valid XML"):
        await listing(web)


# --- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["token_env", "token_file"])
async def test_the_bearer_token_is_sent_and_never_logged(
    site: WebSite, tmp_path: Path, given: str
) -> None:
    token = "s3cr3t-intranet-token"
    site.token = token
    if given == "token_file":
        (tmp_path / "token").write_text(token + "\n")
        auth = SecretReference(token_file=tmp_path / "token")
    else:
        auth = SecretReference(token_env="INTRANET_TOKEN")
        auth.bind_environment({"INTRANET_TOKEN": token})
    site.status["/handbook/leave"] = 500  # a failure, logged with its reason
    with capture_logs() as logs:
        entries = await listing(connector(site, auth=auth))
    assert "/handbook/travel" in entries
    assert all(hit.authorization == f"Bearer {token}" for hit in site.hits)
    assert any(event["event"] == "web.page_failed" for event in logs)
    assert token not in repr(logs)

    with pytest.raises(SourceError, match="HTTP 401"):
        await listing(connector(site))


# --- end to end ----------------------------------------------------------------------------


@pytest.fixture
async def kb(
    site: WebSite, engine: Any, embedder: Any, clean_environ: Path
) -> AsyncIterator[Knowledge]:
    config = KnowledgeConfig(sources=[source(site, name="intranet")], max_file_bytes=LIMIT)
    knowledge = Knowledge.build(config, data_dir=clean_environ, engine=engine, embedder=embedder)
    await knowledge.open(index=False)
    yield knowledge
    await knowledge.close()


async def found(knowledge: Knowledge, question: str) -> list[tuple[str, str]]:
    hits = await knowledge.search.search(question, k=3)
    return [(h.doc_id.split("/", 1)[1], h.heading) for h in hits]


async def test_a_web_source_syncs_then_resyncs_for_the_price_of_conditional_requests(
    site: WebSite, kb: Knowledge
) -> None:
    report = await kb.syncer.run()
    assert (report.status, report.added, report.skipped, report.failed) == ("ok", 6, 1, 0)
    (skipped,) = [i for i in report.items if i.action == "skipped"]
    assert skipped.doc_id.endswith("/handbook/huge") and "too large" in (skipped.reason or "")
    hits = await kb.search.search("What is the nightly hotel limit in London?", k=3)
    assert hits[0].doc_id.endswith("/handbook/travel")
    assert (hits[0].heading, hits[0].title) == ("Hotels", "Travel policy")
    assert hits[0].uri == f"{site.url}/handbook/travel"

    site.forget()
    report = await kb.syncer.run()
    assert (report.unchanged, report.added, report.updated, report.deleted) == (6, 0, 0, 0)
    assert report.chunks_embedded == 0
    assert all(h.conditional for h in site.hits if h.path in DOCUMENTS - {"/handbook/huge"})

    travel = site.files["/handbook/travel"]
    travel.body = travel.body.replace(b"180 euros", b"210 euros")
    site.status["/handbook/leave/parental"] = 410
    report = await kb.syncer.run()
    assert (report.updated, report.deleted, report.unchanged) == (1, 1, 4)
    changed = {(i.doc_id.split("/", 1)[1], i.action) for i in report.items}
    assert {("handbook/travel", "updated"), ("handbook/leave/parental", "deleted")} <= changed
    hits = await kb.search.search("nightly hotel limit", k=1)
    assert "210 euros" in hits[0].text
    assert ("handbook/leave/parental", "Telling your manager") not in await found(
        kb, "How many weeks of parental leave do birth parents get?"
    )
    assert not any(
        h.doc_id.endswith("parental") for h in await kb.search.search("parental leave weeks", k=10)
    )


async def test_an_unreachable_site_keeps_its_documents(site: WebSite, kb: Knowledge) -> None:
    await kb.syncer.run()
    site.status["/handbook/"] = 404  # the intranet's home moved: nothing is deleted
    report = await kb.syncer.run()
    assert report.failed_sources == ["intranet"] and report.deleted == 0
    hits = await kb.search.search("What is the nightly hotel limit in London?", k=1)
    assert hits[0].doc_id.endswith("/handbook/travel")
