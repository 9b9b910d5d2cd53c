"""A web site (an intranet, a documentation site): crawled from a start URL or read from a
sitemap, within a URL prefix, honouring robots.txt.

Listing
- Crawl: breadth first from `url`, following `<a href>`, `<area href>` and `<link rel=next>`
  under the prefix (`WebSource.scope`) up to `max_depth` links away. With a `sitemap` only:
  the sitemap's pages (a sitemap index's sitemaps too, gzipped or not) and, if `follow_files`,
  the Office and PDF files they link to; with both, the sitemap's pages join the crawl.
- Budget: the listing stops after `max_pages` documents.
- URLs: fragments and user info dropped, scheme and host lower-cased, default ports dropped,
  queries kept. A document's id is its final URL (after redirects) without the scheme,
  `host[:port]/path[?query]`: stable across syncs, one document however many URLs redirect to
  it. A redirect out of the prefix is not read.
- Content: an HTML page's main text, extracted by trafilatura (navigation, banners and
  footers left out) as Markdown with its headings, under front matter giving the page's title
  (`og:title`, else `<title>`) and its `expertbot-access` / `expertbot-allowed` meta tags.
  Where trafilatura finds no text, or loses the page's headings (a short page), the page's
  whole text as `knowledge/parsing.py` reads HTML. PDF and Office files (`follow_files`),
  plain text and Markdown are handed over as they are, in any format `knowledge/parsing.py`
  knows; anything else (images, archives) is not listed. A page over the size limit is listed
  with its size and no content: the sync reports it skipped as too large.
- `noindex` (`<meta name="robots">`, `X-Robots-Tag`): not listed; `nofollow`: its links are
  not followed.

robots.txt, as RFC 9309 and Google read it
- Fetched once per host and listing. The rules of the groups naming our user agent's product
  token (else of the `*` groups) apply: the longest matching Allow / Disallow pattern wins,
  Allow on a tie; `*` and a final `$` are wildcards.
- 2xx: its rules. 4xx other than 429: no robots.txt, everything allowed. 429, 5xx or
  unreachable: everything disallowed, the start URL included, so the listing fails.
- `Crawl-delay` (seconds) paces the requests to the host; `delay_s` is the least pause.

Incremental
- `state["pages"]` maps each URL read to its final URL, document id, ETag, Last-Modified and
  the links found on it. A page whose document the index holds whole (`known`) is asked for
  with If-None-Match / If-Modified-Since; on a 304 it is listed unchanged and its stored links
  are followed, so an unchanged site costs one small request per page. The state keeps only
  the URLs reached by this listing.

Errors
- The start URL or a sitemap failing (unreachable, 5xx after the retries, any 4xx, disallowed
  by robots.txt, redirected out of the prefix): `SourceError` from `entries`; the sync keeps
  the site's documents as they were.
- A page answering 404, 410 or another 4xx (401 and 403 too: the crawler may no longer see
  it) but 408 and 429 is gone: not listed, so the sync deletes it.
- A page failing otherwise (5xx or 429 after the retries, 408, a network error or time-out) is
  listed without content and `read` raises its error: the sync reports it failed and keeps
  what it had indexed; its stored links are followed, so the pages under it stay as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import xml.etree.ElementTree as ET
import zlib
from collections import deque
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import structlog
import yaml

from base.errors import DocumentError, DocumentSkipped, SourceError
from knowledge.config import WebSource
from knowledge.connectors.base import Entry
from knowledge.connectors.http import HttpClient, Response, http_date
from knowledge.parsing import decode_text, format_of, parse_document

log = structlog.get_logger(__name__)

PAGE_TYPES = frozenset({"text/html", "application/xhtml+xml"})
FILE_TYPES = {
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "text/csv": ".csv",
}
TEXT_TYPES = {
    "text/plain": ".txt",
    "text/markdown": ".md",
    "text/x-markdown": ".md",
    "text/x-rst": ".rst",
}
UNTYPED = frozenset({"", "application/octet-stream", "binary/octet-stream"})
# Linked files read only when `follow_files`, and only in a format knowledge/parsing.py knows.
FILE_EXTENSIONS = frozenset(
    {".pdf", ".docx", ".pptx", ".xlsx", ".csv", ".doc", ".ppt", ".xls", ".odt", ".odp", ".ods"}
)
TEXT_EXTENSIONS = frozenset({".txt", ".text", ".md", ".markdown", ".rst"})
# Never documents: not even asked for.
SKIPPED_EXTENSIONS = frozenset(
    [
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".svg",
        ".webp",
        ".ico",
        ".bmp",
        ".tif",
        ".tiff",
        ".avif",
        ".heic",
        ".mp3",
        ".mp4",
        ".m4a",
        ".avi",
        ".mov",
        ".webm",
        ".wav",
        ".ogg",
        ".flac",
        ".mkv",
        ".zip",
        ".gz",
        ".tgz",
        ".bz2",
        ".xz",
        ".tar",
        ".rar",
        ".7z",
        ".exe",
        ".msi",
        ".dmg",
        ".iso",
        ".bin",
        ".apk",
        ".jar",
        ".css",
        ".js",
        ".mjs",
        ".map",
        ".woff",
        ".woff2",
        ".ttf",
        ".otf",
        ".eot",
        ".rss",
        ".atom",
        ".ics",
    ]
)
DEFAULT_PORTS = {"http": 80, "https": 443}
EXTRACT_MAX_CHARS = 3_000_000  # trafilatura's input; beyond it the HTML parser reads the page
ROBOTS_MAX_BYTES = 500 * 1024  # RFC 9309: at least 500 KiB are parsed
SITEMAP_MAX_BYTES = 50 * 1024 * 1024  # the sitemap protocol's limit, uncompressed
MAX_SITEMAPS = 200  # sitemaps read from an index (and its indexes), all together


def is_gone(status: int) -> bool:
    """A page answering this is no longer there (or no longer ours to read)."""
    return 400 <= status < 500 and status not in (408, 429)


def normalize(url: str, base: str | None = None) -> str | None:
    """`url` (resolved against `base`) as one spelling per page, or None if not http(s)."""
    try:
        parts = urlsplit(urljoin(base, url.strip()) if base else url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if scheme not in DEFAULT_PORTS or not host:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    query = quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
    return urlunsplit((scheme, netloc, path, query, ""))


def doc_id_of(url: str) -> str:
    """A page's document id: its URL without the scheme."""
    return url.split("://", 1)[-1]


def _suffix(url: str) -> str:
    return PurePosixPath(unquote(urlsplit(url).path)).suffix.lower()


def _w3c_time(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return 0.0
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


# --- robots.txt -------------------------------------------------------------------------------


@dataclass(slots=True)
class Robots:
    """What robots.txt lets our user agent read on one host."""

    rules: list[tuple[re.Pattern[str], int, bool]] = field(default_factory=list)
    delay_s: float = 0.0
    disallow_all: bool = False
    error: str = ""  # why it could not be read (then everything is disallowed)

    def allows(self, url: str) -> bool:
        parts = urlsplit(url)
        target = unquote(parts.path or "/") + (f"?{unquote(parts.query)}" if parts.query else "")
        if target == "/robots.txt":
            return True
        if self.disallow_all:
            return False
        best, allowed = -1, True
        for pattern, length, allow in self.rules:
            if (length > best or (length == best and allow)) and pattern.match(target):
                best, allowed = length, allow
        return allowed


def parse_robots(text: str, user_agent: str) -> Robots:
    """The rules of `text` (a robots.txt) for `user_agent`, as RFC 9309 reads them."""
    token = user_agent.split("/")[0].strip().lower()
    groups: list[tuple[set[str], list[tuple[str, bool]], list[float]]] = []
    agents: set[str] | None = None
    in_rules = False
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "user-agent":
            if agents is None or in_rules:
                agents, in_rules = set(), False
                groups.append((agents, [], []))
            agents.add(value.split("/")[0].strip().lower())
        elif key in ("allow", "disallow") and agents is not None:
            in_rules = True
            if value:
                groups[-1][1].append((value, key == "allow"))
        elif key == "crawl-delay" and agents is not None:
            in_rules = True
            with contextlib.suppress(ValueError):
                groups[-1][2].append(max(float(value), 0.0))
    chosen = [g for g in groups if token and token in g[0]] or [g for g in groups if "*" in g[0]]
    robots = Robots()
    for _, rules, delays in chosen:
        for pattern, allow in rules:
            robots.rules.append((_robots_pattern(pattern), len(pattern), allow))
        robots.delay_s = max([robots.delay_s, *delays])
    return robots


def _robots_pattern(pattern: str) -> re.Pattern[str]:
    anchored = pattern.endswith("$")
    body = unquote(pattern[:-1] if anchored else pattern)
    return re.compile(".*".join(re.escape(p) for p in body.split("*")) + ("$" if anchored else ""))


class _Pace:
    """At least `interval_s` between the starts of two requests to one host."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._lock = asyncio.Lock()
        self._next = 0.0

    async def wait(self) -> None:
        if self.interval_s <= 0:
            return
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._next > loop.time():
                await asyncio.sleep(self._next - loop.time())
            self._next = loop.time() + self.interval_s


# --- pages ------------------------------------------------------------------------------------


class _PageParser(HTMLParser):
    """The links, title and robots directives of an HTML page."""

    def __init__(self, agent: str) -> None:
        super().__init__(convert_charrefs=True)
        self.agent = agent
        self.links: list[str] = []
        self.base: str | None = None
        self.title = ""
        self.og_title = ""
        self.index = True
        self.follow = True
        self.meta: dict[str, str] = {}
        self.headings = 0
        self.h1 = ""
        self._in_title = False
        self._in_h1 = False
        self._title_seen = False
        self._in_svg = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "svg":
            self._in_svg += 1
        elif (tag in ("a", "area") and attr.get("href")) or (
            tag == "link" and "next" in attr.get("rel", "").lower().split() and attr.get("href")
        ):
            self.links.append(attr["href"])
        elif tag == "base" and attr.get("href") and self.base is None:
            self.base = attr["href"]
        elif tag == "title" and not self._title_seen and not self._in_svg:
            self._in_title = self._title_seen = True
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.headings += 1
            self._in_h1 = tag == "h1" and not self.h1
        elif tag == "meta":
            name = attr.get("name", "").strip().lower()
            content = attr.get("content", "")
            if attr.get("property", "").strip().lower() == "og:title":
                self.og_title = content.strip()
            elif name in ("robots", self.agent):
                self.directives(content)
            elif name in ("expertbot-access", "access"):
                self.meta["access"] = content
            elif name in ("expertbot-allowed", "allowed"):
                self.meta["allowed"] = content

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "h1":
            self._in_h1 = False
        elif tag == "svg" and self._in_svg:
            self._in_svg -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif self._in_h1:
            self.h1 += data

    def directives(self, value: str) -> None:
        for part in value.lower().split(","):
            agent, sep, directive = part.rpartition(":")
            if sep and agent.strip() not in (self.agent, "robots"):
                continue
            directive = directive.strip()
            if directive in ("noindex", "none"):
                self.index = False
            if directive in ("nofollow", "none"):
                self.follow = False


@dataclass(slots=True)
class Page:
    """An HTML page as the connector reads it."""

    title: str
    links: list[str]
    index: bool  # not `noindex`
    content: bytes  # Markdown with front matter


def read_page(body: bytes, url: str, agent: str, robots_header: str = "") -> Page:
    """Links, title and main text of an HTML page (CPU-bound: run it in a thread)."""
    text = decode_text(body)
    parser = _PageParser(agent)
    try:
        parser.feed(text)
        parser.close()
    except Exception:  # html.parser copes with nearly anything; keep what it found
        log.debug("web.html_unparsed", url=url)
    if robots_header:
        parser.directives(robots_header)
    base = normalize(parser.base, url) if parser.base else url
    links: list[str] = []
    if parser.follow:
        for href in parser.links:
            link = normalize(href, base or url)
            if link and link not in links:
                links.append(link)
    title = _title(parser)
    content = b""
    if parser.index:
        meta: dict[str, str] = {"title": title} if title else {}
        meta.update(parser.meta)
        front = yaml.safe_dump(meta, allow_unicode=True, sort_keys=False, width=1_000_000)
        markdown = _main_text(text, url, parser.headings) or _whole_text(text)
        content = f"---\n{front}---\n\n{markdown}\n".encode()
    return Page(title, links, parser.index, content)


_CHROME = re.compile(r"cookie|consent|banner|breadcrumb|skip-link|site-header|site-footer", re.I)


def _is_chrome(tag: Any) -> bool:
    """Navigation, a header or footer, a cookie banner: around a page's text, not of it."""
    if tag.name in ("header", "footer", "nav", "aside", "form"):
        return True
    classes = tag.get("class") or []
    names = [str(tag.get("id") or ""), *(classes if isinstance(classes, list) else [classes])]
    return any(_CHROME.search(str(name)) for name in names)


def _title(parser: _PageParser) -> str:
    """`og:title`, else `<title>` less the site's name after the page's heading
    ("Travel policy | Intranet" → "Travel policy" on a page headed "Travel policy")."""
    if parser.og_title.strip():
        return " ".join(parser.og_title.split())
    title, h1 = " ".join(parser.title.split()), " ".join(parser.h1.split())
    if h1 and re.match(re.escape(h1) + r"\s*[|\-–—·:»]\s*\S", title):
        return h1
    return title


def _main_text(text: str, url: str, headings: int) -> str:
    """trafilatura's Markdown of the page's main text; "" if it finds none, or drops every
    heading of a page that has some (it does on short pages)."""
    if len(text) > EXTRACT_MAX_CHARS:
        return ""
    import trafilatura

    try:
        markdown = trafilatura.extract(
            text,
            url=url,
            output_format="markdown",
            include_tables=True,
            include_links=False,
            include_images=False,
            include_comments=False,
            with_metadata=False,
        )
    except Exception as exc:  # a page it cannot read is read by the HTML parser instead
        log.debug("web.extract_failed", url=url, error=type(exc).__name__)
        return ""
    if not markdown or not markdown.strip():
        return ""
    if headings and not re.search(r"^#{1,6} ", markdown, re.MULTILINE):
        return ""
    return str(markdown).strip()


def _whole_text(text: str) -> str:
    """The page's main element (`<main>`, `<article>`, else `<body>`) less its navigation,
    headers, footers and banners, as knowledge/parsing.py reads HTML, back in Markdown."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    main = soup.find("main") or soup.find(True, {"role": "main"}) or soup.find("article")
    root = main or soup.body or soup
    for tag in root.find_all(_is_chrome):  # but a header holding the page's heading
        if not tag.decomposed and (tag.name == "nav" or not tag.find(["h1", "h2", "h3"])):
            tag.decompose()
    try:
        parsed = parse_document("page.html", str(root).encode())
    except DocumentError:
        return ""
    out: list[str] = []
    path: tuple[str, ...] = ()
    for section in parsed.sections:
        shared = 0
        while (
            shared < min(len(path), len(section.heading_path))
            and path[shared] == section.heading_path[shared]
        ):
            shared += 1
        for level in range(shared, len(section.heading_path)):
            out.append(f"{'#' * min(level + 1, 6)} {section.heading_path[level]}")
        path = section.heading_path
        out.append(re.sub(r"^(\s*)#", r"\1\\#", section.text, flags=re.MULTILINE))
    return "\n\n".join(out)


# --- the connector ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    url: str
    depth: int
    lastmod: float = 0.0  # the sitemap's <lastmod>
    start: bool = False


@dataclass(slots=True)
class _Visit:
    item: _Item
    entry: Entry | None = None
    record: dict[str, Any] | None = None  # the state kept for the URL
    links: list[str] = field(default_factory=list)
    final: str | None = None
    error: str | None = None  # why the page could not be read


class WebConnector:
    full_listing = True
    expected: int | None = None  # a crawl does not know how many pages it will find

    def __init__(self, source: WebSource, *, max_bytes: int, backoff_s: float = 0.5) -> None:
        self.source = source
        self.name = source.source_name
        self.max_bytes = max_bytes
        self.backoff_s = backoff_s
        self.scope = normalize(source.scope) or source.scope
        self.agent = source.user_agent.split("/")[0].strip().lower()
        self._http: HttpClient | None = None
        self._robots: dict[str, Robots] = {}
        self._pace: dict[str, _Pace] = {}
        self._failed: dict[str, str] = {}  # doc id → why it could not be read while listing

    @property
    def requests(self) -> int:
        return self._http.requests if self._http else 0

    @property
    def bytes_read(self) -> int:
        return self._http.bytes_read if self._http else 0

    def _client(self) -> HttpClient:
        if self._http is None:
            token = self.source.auth.token() if self.source.auth else None
            self._http = HttpClient(
                source=self.name,
                user_agent=self.source.user_agent,
                timeout_s=self.source.timeout_s,
                max_bytes=self.max_bytes,
                token=token,
                backoff_s=self.backoff_s,
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    # --- listing ---

    async def entries(self, state: dict[str, Any], known: Collection[str]) -> AsyncIterator[Entry]:
        self._client()
        self._robots.clear()
        self._pace.clear()
        self._failed.clear()
        old_pages = _mapping(state.get("pages"))
        sitemaps: dict[str, Any] = {}
        queue: deque[_Item] = deque()
        if self.source.url:
            start = normalize(self.source.url)
            if start is None or not start.startswith(self.scope):
                raise SourceError(f"the start URL {self.source.url} is not under {self.scope}")
            robots = await self._robots_for(start)
            if robots.error:
                raise SourceError(f"{robots.error}: the site is not read")
            if not robots.allows(start):
                raise SourceError(f"robots.txt does not let {self.agent!r} read {start}")
            queue.append(_Item(start, 0, start=True))
        if self.source.sitemap:
            listed = await self._sitemap_pages(_mapping(state.get("sitemaps")), sitemaps)
            if not listed:
                raise SourceError(f"the sitemap lists no page under {self.scope}")
            queue.extend(_Item(url, 0, lastmod) for url, lastmod in listed)
        seen = {item.url for item in queue}
        pages: dict[str, Any] = {}
        listed_ids: set[str] = set()
        in_flight: deque[asyncio.Task[_Visit]] = deque()
        budget = self.source.max_pages
        counts = {"pages": 0, "unchanged": 0, "failed": 0}
        try:
            while queue or in_flight:
                while (
                    queue
                    and len(in_flight) < self.source.concurrency
                    and len(listed_ids) + len(in_flight) < budget
                ):
                    item = queue.popleft()
                    visit = self._visit(item, _mapping(old_pages.get(item.url)), known)
                    in_flight.append(asyncio.create_task(visit))
                if not in_flight:
                    break
                done = await in_flight.popleft()
                if done.item.start and done.error:
                    raise SourceError(done.error)
                if done.final:
                    seen.add(done.final)
                for link in done.links:
                    if link not in seen and await self._follows(link, done.item.depth + 1):
                        seen.add(link)
                        queue.append(_Item(link, done.item.depth + 1))
                if done.record is not None:
                    pages[done.item.url] = done.record
                entry = done.entry
                if entry is None or entry.doc_id in listed_ids:
                    continue
                listed_ids.add(entry.doc_id)
                counts["pages"] += 1
                counts["unchanged"] += entry.unchanged
                counts["failed"] += done.error is not None
                yield entry
                if len(listed_ids) >= budget:
                    if queue or in_flight:
                        log.info("web.budget_reached", source=self.name, max_pages=budget)
                    break
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
        state["pages"] = pages
        state["sitemaps"] = sitemaps
        log.info(
            "web.listed",
            source=self.name,
            **counts,
            requests=self.requests,
            bytes=self.bytes_read,
        )

    async def _follows(self, url: str, depth: int) -> bool:
        """Whether a link found at `depth` is read."""
        if not url.startswith(self.scope):
            return False
        suffix = _suffix(url)
        if suffix in SKIPPED_EXTENSIONS:
            return False
        if suffix in FILE_EXTENSIONS and not (
            self.source.follow_files and format_of(f"file{suffix}")
        ):
            return False
        if not self.source.url:  # a sitemap's pages: only the files they link to
            if suffix not in FILE_EXTENSIONS:
                return False
        elif depth > self.source.max_depth:
            return False
        return await self._allowed(url)

    async def _visit(self, item: _Item, prev: dict[str, Any], known: Collection[str]) -> _Visit:
        """Fetch one URL: what it lists, the links to follow and the state to keep."""
        conditional = bool(prev) and prev.get("doc_id") in known
        await self._paced(item.url)
        try:
            response = await self._client().get(
                item.url,
                etag=prev.get("etag") if conditional else None,
                last_modified=prev.get("last_modified") if conditional else None,
            )
        except SourceError as exc:
            return self._failure(item, prev, str(exc))
        final = normalize(response.url) or item.url
        log.debug("web.page", source=self.name, url=item.url, status=response.status)
        if response.not_modified and conditional:
            return _Visit(
                item,
                self._entry(prev, unchanged=True),
                prev,
                _links(prev),
                final=final,
            )
        if is_gone(response.status):
            if item.start:
                return _Visit(item, error=f"{item.url}: HTTP {response.status}")
            log.info("web.page_gone", source=self.name, url=item.url, status=response.status)
            return _Visit(item, final=final)
        if not response.ok:
            return self._failure(item, prev, f"{item.url}: HTTP {response.status}")
        if not final.startswith(self.scope) or not await self._allowed(final):
            if item.start:
                return _Visit(item, error=f"{item.url} leads to {final}, outside {self.scope}")
            return _Visit(item, final=final)
        record: dict[str, Any] = {
            "final": final,
            "doc_id": doc_id_of(final),
            "etag": response.headers.get("etag"),
            "last_modified": response.headers.get("last-modified"),
            "links": [],
            "modified": http_date(response.headers.get("last-modified")) or item.lastmod,
        }
        if response.too_large:
            declared = response.headers.get("content-length", "")
            size = int(declared) if declared.isdigit() else self.max_bytes + 1
            record.update(filename=_filename(final, ".md"), title=None, etag=None)
            record.update(last_modified=None)
            return _Visit(item, Entry(**self._fields(record), size=size), None, final=final)
        kind = self._kind(response, final)
        if kind is None:
            return _Visit(item, final=final)
        if kind != "page":
            record.update(filename=_filename(final, kind), title=None)
            entry = Entry(**self._fields(record), size=len(response.body), content=response.body)
            return _Visit(item, entry, record, final=final)
        page = await self._page(response, final)
        if not page.index:
            return _Visit(item, links=page.links, final=final)
        record.update(filename=_filename(final, ".md"), title=page.title or None, links=page.links)
        entry = Entry(**self._fields(record), size=len(page.content), content=page.content)
        return _Visit(item, entry, record, page.links, final=final)

    def _failure(self, item: _Item, prev: dict[str, Any], error: str) -> _Visit:
        """A page that could not be read now: listed (to be reported failed, its document
        kept), its stored links still followed."""
        if item.start:
            return _Visit(item, error=error)
        log.warning("web.page_failed", source=self.name, url=item.url, error=error)
        record = prev or {
            "final": item.url,
            "doc_id": doc_id_of(item.url),
            "filename": _filename(item.url, ".md"),
            "links": [],
        }
        entry = self._entry(record, unchanged=False)
        self._failed[entry.doc_id] = error
        return _Visit(item, entry, record if prev else None, _links(record), error=error)

    def _fields(self, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "doc_id": str(record["doc_id"]),
            "uri": str(record["final"]),
            "title": record.get("title") or None,
            "modified": float(record.get("modified") or 0.0),
            "filename": record.get("filename") or None,
        }

    def _entry(self, record: dict[str, Any], *, unchanged: bool) -> Entry:
        return Entry(**self._fields(record), unchanged=unchanged)

    def _kind(self, response: Response, url: str) -> str | None:
        """ "page" for HTML, the extension a file is parsed by, or None: not a document."""
        ctype = response.content_type
        suffix = _suffix(url)
        if ctype in PAGE_TYPES:
            return "page"
        if ctype in FILE_TYPES:
            ext: str | None = FILE_TYPES[ctype]
        elif ctype in TEXT_TYPES:
            ext = suffix if suffix in TEXT_EXTENSIONS else TEXT_TYPES[ctype]
        elif ctype in UNTYPED and suffix in FILE_EXTENSIONS | TEXT_EXTENSIONS:
            ext = suffix
        else:
            return None
        if ext is None or format_of(f"file{ext}") is None:
            return None
        if ext in FILE_EXTENSIONS and not self.source.follow_files:
            return None
        return ext

    # --- robots.txt and pace ---

    async def _page(self, response: Response, url: str) -> Page:
        """A fetched HTML page read (in a thread: extracting its main text is CPU work)."""
        return await asyncio.to_thread(
            read_page, response.body, url, self.agent, response.headers.get("x-robots-tag", "")
        )

    async def _allowed(self, url: str) -> bool:
        return (await self._robots_for(url)).allows(url)

    async def _robots_for(self, url: str) -> Robots:
        parts = urlsplit(url)
        host = f"{parts.scheme}://{parts.netloc}"
        robots = self._robots.get(host)
        if robots is not None:
            return robots
        robots_url = f"{host}/robots.txt"
        try:
            response: Response | None = await self._client().get(robots_url)
            error = ""
        except SourceError as exc:
            response, error = None, str(exc)
        if response is not None and response.ok and not response.too_large:
            robots = parse_robots(
                decode_text(response.body[:ROBOTS_MAX_BYTES]), self.source.user_agent
            )
        elif response is not None and (response.too_large or is_gone(response.status)):
            robots = Robots()  # none (or none we can read): everything allowed
        else:
            error = error or f"{robots_url}: HTTP {response.status if response else '?'}"
            log.warning("web.robots_unavailable", source=self.name, error=error)
            robots = Robots(disallow_all=True, error=f"robots.txt unavailable ({error})")
        self._robots[host] = robots
        delay = max(self.source.delay_s, robots.delay_s)
        self._pace[host] = _Pace(delay)
        if robots.delay_s:
            log.info("web.crawl_delay", source=self.name, host=parts.netloc, delay_s=delay)
        return robots

    async def _paced(self, url: str) -> None:
        parts = urlsplit(url)
        pace = self._pace.get(f"{parts.scheme}://{parts.netloc}")
        if pace is not None:
            await pace.wait()

    # --- sitemaps ---

    async def _sitemap_pages(
        self, old: dict[str, Any], new: dict[str, Any]
    ) -> list[tuple[str, float]]:
        """The pages under the prefix that the sitemap (and its sitemaps) list, in order."""
        assert self.source.sitemap
        root = normalize(self.source.sitemap)
        if root is None:
            raise SourceError(f"{self.source.sitemap} is not an http(s) URL")
        pages: dict[str, float] = {}
        todo, done = [root], set()
        while todo:
            url = todo.pop(0)
            if url in done:
                continue
            done.add(url)
            if len(done) > MAX_SITEMAPS:
                raise SourceError(f"{root} leads to more than {MAX_SITEMAPS} sitemaps")
            urls, children = await self._sitemap(url, _mapping(old.get(url)), new)
            todo.extend(children)
            for loc, lastmod in urls:
                page = normalize(loc)
                if (
                    page
                    and page not in pages
                    and page.startswith(self.scope)
                    and _suffix(page) not in SKIPPED_EXTENSIONS
                    and await self._allowed(page)
                ):
                    pages[page] = lastmod
        return list(pages.items())

    async def _sitemap(
        self, url: str, prev: dict[str, Any], new: dict[str, Any]
    ) -> tuple[list[tuple[str, float]], list[str]]:
        if not await self._allowed(url):
            raise SourceError(f"robots.txt does not let {self.agent!r} read {url}")
        await self._paced(url)
        response = await self._client().get(
            url, etag=prev.get("etag"), last_modified=prev.get("last_modified")
        )
        if response.not_modified and prev:
            new[url] = prev
            return [(str(u), float(m)) for u, m in prev.get("urls", [])], list(
                prev.get("sitemaps", [])
            )
        if not response.ok:
            raise SourceError(f"sitemap {url}: HTTP {response.status}")
        if response.too_large:
            raise SourceError(f"sitemap {url} is larger than {self.max_bytes} bytes")
        urls, children = parse_sitemap(response.body, url)
        new[url] = {
            "etag": response.headers.get("etag"),
            "last_modified": response.headers.get("last-modified"),
            "urls": [[u, m] for u, m in urls],
            "sitemaps": children,
        }
        return urls, children

    # --- reading ---

    async def read(self, entry: Entry) -> bytes:
        error = self._failed.get(entry.doc_id)
        if error is not None:
            raise SourceError(error)
        response = await self._client().get(entry.uri)
        if not response.ok:
            raise DocumentError(f"{entry.uri}: HTTP {response.status}")
        if response.too_large:
            raise DocumentSkipped(f"too large (over {self.max_bytes / 1e6:.1f} MB)")
        url = normalize(response.url) or entry.uri
        kind = self._kind(response, url)
        if kind is None:
            raise DocumentSkipped(f"not a document ({response.content_type or 'no type'})")
        if kind != "page":
            return response.body
        return (await self._page(response, url)).content


def parse_sitemap(data: bytes, url: str) -> tuple[list[tuple[str, float]], list[str]]:
    """A sitemap's pages (URL, lastmod) and a sitemap index's sitemaps; gzip or not."""
    if data[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(data, SITEMAP_MAX_BYTES)
        except zlib.error:
            raise SourceError(f"sitemap {url}: not valid gzip") from None
        if inflater.unconsumed_tail:
            raise SourceError(f"sitemap {url} is over {SITEMAP_MAX_BYTES} bytes uncompressed")
    if b"<!DOCTYPE" in data[:4096] or b"<!ENTITY" in data:
        raise SourceError(f"sitemap {url}: a DOCTYPE or entity is not allowed in a sitemap")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise SourceError(f"sitemap {url} is not valid XML: {exc}") from None

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    def child_text(element: ET.Element, name: str) -> str:
        for child in element:
            if local(child.tag) == name and child.text:
                return child.text.strip()
        return ""

    kind = local(root.tag)
    if kind == "urlset":
        pages = [
            (child_text(node, "loc"), _w3c_time(child_text(node, "lastmod")))
            for node in root
            if local(node.tag) == "url"
        ]
        return [(loc, lastmod) for loc, lastmod in pages if loc], []
    if kind == "sitemapindex":
        children = (normalize(child_text(node, "loc")) for node in root)
        return [], [c for c in children if c]
    raise SourceError(f"{url} is not a sitemap (<{kind}>)")


def _filename(url: str, ext: str) -> str:
    """A name ending in `ext` for the parser: the URL's last segment."""
    parts = urlsplit(url)
    name = PurePosixPath(unquote(parts.path)).name
    if name.lower().endswith(ext):
        return name
    stem = PurePosixPath(name).stem if _suffix(url) in FILE_EXTENSIONS | {".html", ".htm"} else name
    return f"{stem or 'index'}{ext}"


def _links(record: dict[str, Any]) -> list[str]:
    links = record.get("links")
    return [str(link) for link in links] if isinstance(links, list) else []


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
