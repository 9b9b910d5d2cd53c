"""Syncing a web site: a generated intranet of N pages served on 127.0.0.1, crawled into a
fresh LanceDB data dir with the offline embedder, then re-synced unchanged.

The site (tests/web_site.py's server): a home page linking 20 section pages, each linking its
share of the N pages; every page 1-3 KB of text under an h1 and h2 / h3 headings, inside a
header, navigation and footer, linking its neighbours; ETag and Last-Modified on every
response, a robots.txt and a sitemap (not used by the crawl).

Prints: documents, first sync wall time and pages/s, requests and bytes served; then the
unchanged re-sync's wall time, requests (how many conditional), bytes, and its cost as a share
of the first sync's (the aim: under 5 % of the time).

    python bench/web_sync.py [--pages 1000] [--concurrency 4] [--work .bench/web]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

from _common import ROOT, git_rev, machine

from base.database import make_engine, sqlite_url
from knowledge.config import KnowledgeConfig, WebSource
from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.runtime import Knowledge
from tests.web_site import Resource, WebSite, page, sitemap

SECTIONS = 20
WORDS = [
    "policy",
    "employee",
    "manager",
    "approval",
    "request",
    "travel",
    "expense",
    "budget",
    "laptop",
    "access",
    "account",
    "password",
    "network",
    "office",
    "desk",
    "meeting",
    "holiday",
    "leave",
    "contract",
    "invoice",
    "supplier",
    "customer",
    "release",
    "deploy",
    "service",
    "incident",
    "review",
    "report",
    "quarter",
    "team",
    "project",
    "training",
    "security",
    "badge",
    "printer",
    "benefit",
    "pension",
    "payroll",
    "schedule",
    "shift",
    "rota",
    "onboarding",
    "handbook",
    "form",
]


def sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(8, 16))
    return " ".join(words).capitalize() + "."


def paragraph(rng: random.Random) -> str:
    return "<p>" + " ".join(sentence(rng) for _ in range(rng.randint(3, 6))) + "</p>"


def generated_site(pages: int, seed: int = 7) -> WebSite:
    """The intranet: /intranet/ → /intranet/section-K/ → /intranet/page-I."""
    rng = random.Random(seed)
    site = WebSite()
    files: dict[str, Resource] = {
        "/robots.txt": Resource(b"User-agent: *\nDisallow: /intranet/private/\n", "text/plain")
    }
    sections = [f"/intranet/section-{k}/" for k in range(SECTIONS)]
    files["/intranet/"] = Resource(
        page(
            "Intranet",
            "<h1>Intranet</h1><ul>"
            + "".join(f'<li><a href="{s}">Section {k}</a></li>' for k, s in enumerate(sections))
            + "</ul>",
        )
    )
    for k, path in enumerate(sections):
        members = range(k, pages, SECTIONS)
        files[path] = Resource(
            page(
                f"Section {k}",
                f"<h1>Section {k}</h1>{paragraph(rng)}<ul>"
                + "".join(f'<li><a href="/intranet/page-{i}">Page {i}</a></li>' for i in members)
                + "</ul>",
            )
        )
    for i in range(pages):
        body = [f"<h1>Page {i}: {rng.choice(WORDS)} {rng.choice(WORDS)}</h1>", paragraph(rng)]
        for h in range(rng.randint(1, 3)):
            body.append(f"<h2>Part {h + 1}: {rng.choice(WORDS)}</h2>{paragraph(rng)}")
            if rng.random() < 0.3:
                body.append(f"<h3>Detail {rng.choice(WORDS)}</h3>{paragraph(rng)}")
        neighbours = [(i - 1) % pages, (i + 1) % pages, rng.randrange(pages)]
        body.append(
            "<p>See also "
            + ", ".join(f'<a href="page-{n}">page {n}</a>' for n in neighbours)
            + ".</p>"
        )
        files[f"/intranet/page-{i}"] = Resource(page(f"Page {i}", "".join(body)))
    site.files = files
    return site


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work: Path = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    site = generated_site(args.pages)
    await site.start()
    page_paths = [p for p in site.files if p.startswith("/intranet/")]
    site.files["/sitemap.xml"] = Resource(sitemap(site.url, page_paths), "application/xml")
    html_bytes = [len(site.files[p].body) for p in page_paths]
    embedder = SentenceTransformerEmbedder(KnowledgeConfig().embedding)
    engine = make_engine(sqlite_url(work / "expertbot.db"))
    source = WebSource(
        type="web",
        name="intranet",
        url=f"{site.url}/intranet/",
        max_pages=args.pages + SECTIONS + 1,
        concurrency=args.concurrency,
    )
    knowledge = Knowledge.build(
        KnowledgeConfig(sources=[source]), data_dir=work / "data", engine=engine, embedder=embedder
    )
    await knowledge.open(index=False)
    results: dict[str, Any] = {
        "machine": machine(),
        "commit": git_rev(),
        "site_pages": len(page_paths),
        "html_kb_per_page": round(sum(html_bytes) / len(html_bytes) / 1024, 1),
    }
    try:
        for run in ("first", "unchanged"):
            site.forget()
            started = time.perf_counter()
            report = await knowledge.syncer.run()
            seconds = time.perf_counter() - started
            results[run] = {
                "seconds": round(seconds, 2),
                "added": report.added,
                "updated": report.updated,
                "unchanged": report.unchanged,
                "failed": report.failed,
                "chunks_embedded": report.chunks_embedded,
                "requests": len(site.hits),
                "conditional": sum(hit.conditional for hit in site.hits),
                "bytes": site.bytes_sent,
            }
    finally:
        await knowledge.close()
        await site.stop()
    first, again = results["first"], results["unchanged"]
    results["documents"] = first["added"]
    results["first"]["pages_per_s"] = round(first["added"] / first["seconds"], 1)
    results["cost_pct"] = {
        key: round(100 * again[key] / first[key], 1) if first[key] else 0.0
        for key in ("seconds", "requests", "bytes")
    }
    return results


def report(results: dict[str, Any]) -> None:
    first, again, cost = results["first"], results["unchanged"], results["cost_pct"]
    print(f"machine: {results['machine']}  commit {results['commit']}")
    print(
        f"site: {results['site_pages']} pages ({results['html_kb_per_page']} KB of HTML each on "
        f"average), {results['documents']} documents indexed"
    )
    print(
        f"{'sync':<10} {'wall s':>8} {'pages/s':>8} {'requests':>9} {'conditional':>12} "
        f"{'KB served':>10} {'embedded':>9} {'unchanged':>10}"
    )
    for name, r in (("first", first), ("unchanged", again)):
        print(
            f"{name:<10} {r['seconds']:>8} {r['added'] / r['seconds'] if r['added'] else 0:>8.1f} "
            f"{r['requests']:>9} {r['conditional']:>12} {r['bytes'] / 1024:>10.1f} "
            f"{r['chunks_embedded']:>9} {r['unchanged']:>10}"
        )
    print(
        f"unchanged re-sync vs first: {cost['seconds']} % of the time, {cost['requests']} % of "
        f"the requests, {cost['bytes']} % of the bytes"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "web")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()
    out = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps(out, indent=2))
    else:
        report(out)
