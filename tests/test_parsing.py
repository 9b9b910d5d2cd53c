"""Documents in every supported format become titled sections with an access label."""

from __future__ import annotations

import pytest

from base.errors import DocumentError, DocumentSkipped
from knowledge.models import Access
from knowledge.parsing import decode_text, parse_document
from tests.helpers import HANDBOOK


def test_markdown_headings_front_matter_and_code_fences():
    doc = parse_document(
        "it/vpn.md",
        b"---\ntitle: VPN Guide\n---\n# VPN\nIntro.\n## Install\nGet NetGate.\n```bash\n# not a heading\n```\n"
        b"### On Linux\nUse the .deb.\nSetext heading\n--------------\nUnder setext.\n",
    )
    assert doc.title == "VPN Guide" and doc.access is None
    assert [s.heading_path for s in doc.sections] == [
        ("VPN",),
        ("VPN", "Install"),
        ("VPN", "Install", "On Linux"),
        ("VPN", "Setext heading"),
    ]
    assert "# not a heading" in doc.sections[1].text


def test_markdown_title_falls_back_to_h1_then_file_name():
    assert parse_document("a.md", b"# Real Title\n\nBody").title == "Real Title"
    assert parse_document("travel/per-diem_rates.md", b"Body only").title == "Per diem rates"


@pytest.mark.parametrize(
    ("meta", "access", "allowed"),
    [
        ("access: private", Access.PRIVATE, None),
        (
            "access: restricted\nallowed: [C0FINANCE, finance-team]",
            Access.RESTRICTED,
            ("C0FINANCE", "finance-team"),
        ),
        ("allowed: C1, C2", Access.RESTRICTED, ("C1", "C2")),
        ("access: PUBLIC", Access.PUBLIC, None),
    ],
)
def test_front_matter_access_labels(meta, access, allowed):
    doc = parse_document("x.md", f"---\n{meta}\n---\n# T\nbody\n".encode())
    assert (doc.access, doc.allowed) == (access, allowed)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ("access: secret", "not one of public, restricted, private"),
        ("access: restricted", "needs a non-empty 'allowed'"),
        ("title: [unclosed", "not valid YAML"),
        ("- a list", "must be a mapping"),
    ],
)
def test_bad_front_matter_is_a_document_error(meta, message):
    with pytest.raises(DocumentError, match=message):
        parse_document("x.md", f"---\n{meta}\n---\nbody\n".encode())


def test_restructured_text_heading_levels_and_directives():
    doc = parse_document(
        "r.rst",
        b"=========\nRunbook\n=========\n\nIntro :ref:`sev <severity>` text.\n\n.. index:: secret-term\n   another\n\n"
        b"Triage\n------\nCall the on-call.\n\nPaging\n~~~~~~\nUse PagerLine.\n\nClosure\n-------\nWrite a review.\n",
    )
    assert doc.title == "Runbook"
    assert [s.heading_path for s in doc.sections] == [
        ("Runbook",),
        ("Runbook", "Triage"),
        ("Runbook", "Triage", "Paging"),
        ("Runbook", "Closure"),
    ]
    assert "secret-term" not in " ".join(s.text for s in doc.sections)


def test_html_sections_tables_lists_and_meta_access():
    doc = parse_document(
        "p.html",
        b"<html><head><title>Leave</title><meta name='expertbot-access' content='private'>"
        b"<style>.x{}</style></head><body><nav>menu</nav><h1>Leave</h1><p>Intro <b>bold</b> text.</p>"
        b"<h2>Days</h2><table><tr><th>Country</th><th>Days</th></tr><tr><td>Portugal</td><td>25</td></tr></table>"
        b"<ul><li>Carry over 5 days</li></ul><script>alert(1)</script></body></html>",
    )
    assert doc.title == "Leave" and doc.access is Access.PRIVATE
    assert [s.heading_path for s in doc.sections] == [("Leave",), ("Leave", "Days")]
    assert "Intro bold text." in doc.sections[0].text
    days = doc.sections[1].text
    assert "Portugal | 25" in days and "- Carry over 5 days" in days
    assert "alert" not in days and "menu" not in doc.sections[0].text


def test_pdf_pages_become_sections_with_the_metadata_title():
    pdf = HANDBOOK / "finance" / "travel-and-expense-policy.pdf"
    doc = parse_document("travel.pdf", pdf.read_bytes())
    assert doc.title == "Travel and Expense Policy"
    assert [s.heading_path for s in doc.sections][:2] == [("Page 1",), ("Page 2",)]
    assert "Ledgerly" in " ".join(s.text for s in doc.sections)


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.4\ngarbage", b"not a pdf at all", b"%PDF-1.7\n" + bytes(range(256)) * 20],
)
def test_corrupt_pdfs_fail_with_a_reason(data):
    with pytest.raises(DocumentError, match="corrupt PDF"):
        parse_document("bad.pdf", data)


def test_skips_have_reasons():
    with pytest.raises(DocumentSkipped, match="empty file"):
        parse_document("e.md", b" \n\t\n")
    with pytest.raises(DocumentSkipped, match="binary file"):
        parse_document("b.txt", b"abc\x00def")
    with pytest.raises(DocumentSkipped, match=r"unsupported file type \.odt"):
        parse_document("w.odt", b"PK...")
    with pytest.raises(DocumentSkipped, match="no text"):
        parse_document("h.html", b"<html><body><script>x()</script></body></html>")


def test_non_utf8_text_is_decoded_sensibly():
    assert (
        decode_text("Prémio de férias: 1.º trimestre".encode("cp1252"))
        == "Prémio de férias: 1.º trimestre"
    )
    assert decode_text("BOM first".encode("utf-8-sig")) == "BOM first"
    assert decode_text(b"a\r\nb\rc") == "a\nb\nc"


def test_every_handbook_document_parses():
    for path in sorted(p for p in HANDBOOK.rglob("*") if p.is_file()):
        doc = parse_document(path.relative_to(HANDBOOK).as_posix(), path.read_bytes())
        assert doc.title and doc.sections, path
    private = parse_document(
        "people/compensation-bands.md", (HANDBOOK / "people" / "compensation-bands.md").read_bytes()
    )
    assert private.access is Access.PRIVATE
