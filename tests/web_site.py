"""A small intranet served on 127.0.0.1 for the web connector's tests and benchmark.

`WebSite` serves `files` (path with query → `Resource`), which a test may change between
syncs, and `redirects`; answers conditional GETs (ETag from the content, Last-Modified) with
304; can answer some paths with a status (`status`), a run of 429s with `Retry-After`
(`throttle`) or only with a bearer token (`token`); and records every request it gets
(`hits`) so a test can assert what was sent. `intranet()` is a site with what a crawler
meets: navigation and footers around the text, a robots.txt, a sitemap, a redirect, a dead
link, an image, a PDF, a page too big to read.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import io
from dataclasses import dataclass, field

from aiohttp import web

from tests.helpers import HANDBOOK
from tests.local_server import serve_locally

HTML = "text/html; charset=utf-8"
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MODIFIED = 1_700_000_000.0  # the pages' Last-Modified (2023-11-14)


@dataclass(slots=True)
class Resource:
    body: bytes
    content_type: str = HTML
    modified: float = MODIFIED
    etag: bool = True  # send an ETag (else Last-Modified only)


@dataclass(slots=True)
class Hit:
    """One request the site got."""

    path: str  # with the query
    if_none_match: str | None
    if_modified_since: str | None
    authorization: str | None
    user_agent: str | None
    at: float  # the event loop's clock
    sent: int = 0  # body bytes answered

    @property
    def conditional(self) -> bool:
        return bool(self.if_none_match or self.if_modified_since)


@dataclass
class WebSite:
    files: dict[str, Resource] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)  # path → status it answers
    throttle: dict[str, int] = field(default_factory=dict)  # path → 429s before it answers
    token: str | None = None  # bearer token every request must carry
    hits: list[Hit] = field(default_factory=list)
    bytes_sent: int = 0
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner, self.url = await serve_locally(app)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> WebSite:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def requested(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    def page_hits(self) -> list[Hit]:
        """The requests for pages and files (robots.txt and sitemaps left out)."""
        return [
            hit
            for hit in self.hits
            if hit.path != "/robots.txt" and not hit.path.split("?")[0].endswith(".xml")
        ]

    def forget(self) -> None:
        self.hits.clear()
        self.bytes_sent = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path_qs
        headers = request.headers
        hit = Hit(
            path,
            headers.get("If-None-Match"),
            headers.get("If-Modified-Since"),
            headers.get("Authorization"),
            headers.get("User-Agent"),
            asyncio.get_running_loop().time(),
        )
        self.hits.append(hit)
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="sign in")
        if self.throttle.get(path, 0) > 0:
            self.throttle[path] -= 1
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down")
        if path in self.status:
            return web.Response(status=self.status[path], text="status")
        if path in self.redirects:
            raise web.HTTPMovedPermanently(self.redirects[path])
        resource = self.files.get(path)
        if resource is None:
            return web.Response(status=404, text="not found")
        etag = '"' + hashlib.sha256(resource.body).hexdigest()[:16] + '"'
        last_modified = email.utils.formatdate(resource.modified, usegmt=True)
        validators = {"Last-Modified": last_modified}
        if resource.etag:
            validators["ETag"] = etag
        since = headers.get("If-Modified-Since")
        if resource.etag and headers.get("If-None-Match"):
            fresh = headers["If-None-Match"] == etag
        elif since:
            fresh = _http_time(since) >= int(resource.modified)
        else:
            fresh = False
        if fresh:
            return web.Response(status=304, headers=validators)
        hit.sent = len(resource.body)
        self.bytes_sent += hit.sent
        return web.Response(
            body=resource.body, headers={**validators, "Content-Type": resource.content_type}
        )


def _http_time(value: str) -> float:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return 0.0


# --- the intranet ---------------------------------------------------------------------------

BOILERPLATE_HEAD = """<header class="site-header"><div class="logo">Northwind Intranet</div>
<nav><a href="/handbook/">Handbook</a> <a href="/handbook/travel">Travel</a>
<a href="/handbook/leave">Leave</a> <a href="/news/">News</a></nav></header>
<div id="cookie-banner" class="cookie-consent">We use cookies to improve your experience.
Accept all cookies or manage your cookie preferences.</div>"""
BOILERPLATE_FOOT = """<footer class="site-footer"><p>Copyright 2024 Northwind Labs. All rights
reserved.</p><p><a href="/privacy">Privacy</a> · <a href="/terms">Terms of use</a></p></footer>"""


def page(title: str, body: str, *, head: str = "") -> bytes:
    """An HTML page with the intranet's header, cookie banner and footer around `body`."""
    return (
        f"<!doctype html><html><head><title>{title} | Northwind Intranet</title>{head}</head>"
        f"<body>{BOILERPLATE_HEAD}<main><article>{body}</article></main>{BOILERPLATE_FOOT}"
        "</body></html>"
    ).encode()


TRAVEL = """<h1>Travel policy</h1>
<p>This policy explains how employees of Northwind Labs book and pay for business travel,
and what the company reimburses after a trip.</p>
<h2>Booking flights</h2>
<p>Book every flight through the travel desk at least fourteen days before departure.
Economy class is the default for flights shorter than six hours.</p>
<h3>Long-haul flights</h3>
<p>For flights longer than six hours, premium economy may be booked with the written approval
of your manager.</p>
<h2>Hotels</h2>
<p>The nightly hotel limit is 180 euros in most cities and 250 euros in London, Paris and
New York. Breakfast is included in the limit.</p>
<p>See also <a href="leave">the leave policy</a> and <a href="/handbook/">the handbook</a>.</p>"""

LEAVE = """<h1>Leave and holidays</h1>
<p>Every employee has twenty-eight days of paid annual leave per calendar year, on top of
public holidays.</p>
<h2>Carrying leave over</h2>
<p>Up to five unused days may be carried over into the first quarter of the next year; the
rest lapses on the first of January.</p>
<p>Parents should read <a href="leave/parental">the parental leave page</a>.</p>"""

PARENTAL = """<h1>Parental leave</h1>
<p>Birth parents receive twenty weeks of fully paid parental leave and the other parent
receives ten weeks, to be taken within the child's first year.</p>
<h2>Telling your manager</h2>
<p>Tell your manager and the people team at least eight weeks before your leave starts.</p>"""

EXPENSES = """<h1>Expense claims</h1>
<p>Submit expense claims in Ledgerly within thirty days of the expense, with a photo of every
receipt. Claims are paid with the next monthly salary.</p>
<h2>Meals</h2>
<p>Meals while travelling are reimbursed up to 45 euros a day.</p>"""

SALARIES = """<h1>Salary bands</h1><p>The engineering salary bands for 2024 are confidential and
must not be crawled by any bot.</p>"""

INDEX = """<h1>Employee handbook</h1>
<p>Everything you need to know about working at Northwind Labs: travel, leave, expenses and
the forms that go with them.</p>
<ul>
<li><a href="travel">Travel policy</a></li>
<li><a href="leave#top">Leave and holidays</a></li>
<li><a href="old-expenses">Expense claims</a></li>
<li><a href="missing">Company cars</a></li>
<li><a href="secret/salaries">Salary bands</a></li>
<li><a href="huge">The full archive</a></li>
<li><a href="forms/claim.pdf">Expense claim form (PDF)</a></li>
<li><a href="logo.png">Our logo</a></li>
<li><a href="chart">Org chart</a></li>
<li><a href="/outside">Outside the handbook</a></li>
<li><a href="mailto:people@example.com">Write to the people team</a></li>
<li><a href="https://example.invalid/elsewhere">Another site</a></li>
</ul>"""

ROBOTS = """User-agent: *
Disallow: /handbook/secret/
"""


def sitemap(base: str, paths: list[str]) -> bytes:
    urls = "".join(
        f"<url><loc>{base}{path}</loc><lastmod>2024-03-01</lastmod></url>" for path in paths
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'
    ).encode()


def docx_file(title: str, heading: str, text: str) -> bytes:
    """A Word document with a title, one heading and a paragraph (python-docx)."""
    import docx

    document = docx.Document()
    document.core_properties.title = title
    document.add_heading(title, level=1)
    document.add_heading(heading, level=2)
    document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def intranet(huge_bytes: int = 300_000) -> WebSite:
    """The intranet under /handbook/ (see the module's docstring)."""
    site = WebSite()
    site.files = {
        "/robots.txt": Resource(ROBOTS.encode(), "text/plain"),
        "/handbook/": Resource(page("Employee handbook", INDEX)),
        "/handbook/travel": Resource(page("Travel policy", TRAVEL)),
        "/handbook/leave": Resource(page("Leave and holidays", LEAVE), etag=False),
        "/handbook/leave/parental": Resource(page("Parental leave", PARENTAL)),
        "/handbook/expenses": Resource(page("Expense claims", EXPENSES)),
        "/handbook/secret/salaries": Resource(page("Salary bands", SALARIES)),
        "/handbook/huge": Resource(page("Archive", "<p>archive entry</p>" * (huge_bytes // 20))),
        "/handbook/forms/claim.pdf": Resource(
            (HANDBOOK / "finance" / "travel-and-expense-policy.pdf").read_bytes(), PDF
        ),
        "/handbook/logo.png": Resource(b"\x89PNG\r\n\x1a\n" + bytes(200), "image/png"),
        "/handbook/chart": Resource(b"\x89PNG\r\n\x1a\n" + bytes(200), "image/png"),
        "/outside": Resource(page("Outside", "<h1>Outside</h1><p>Not in the handbook.</p>")),
    }
    site.redirects = {"/handbook/old-expenses": "/handbook/expenses"}
    return site
