"""Word, PowerPoint, Excel and CSV files become titled sections of searchable text.

The fixtures (tests/assets/office/, made by scripts/make_office_fixtures.py) are written by
python-docx, python-pptx and openpyxl, and the same files again by LibreOffice.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import docx
import openpyxl
import pytest

from base.errors import DocumentError, DocumentSkipped
from knowledge import office
from knowledge.config import FolderSource, KnowledgeConfig
from knowledge.parsing import ParsedDocument, parse_document
from knowledge.runtime import Knowledge
from tests.helpers import ROOT

ASSETS = ROOT / "tests" / "assets" / "office"
BOTH_MAKERS = pytest.mark.parametrize("maker", ["", "-lo"], ids=["library", "libreoffice"])


def parse(name: str) -> ParsedDocument:
    return parse_document(name, (ASSETS / name).read_bytes())


def section(doc: ParsedDocument, *path: str) -> str:
    [text] = [s.text for s in doc.sections if s.heading_path == path]
    return text


# -- Word ------------------------------------------------------------------------------------


@BOTH_MAKERS
def test_word_heading_styles_and_outline_levels_become_the_heading_path(maker: str) -> None:
    doc = parse(f"expense-policy{maker}.docx")
    assert doc.title == "Travel and Expense Policy" and doc.access is None
    assert [s.heading_path for s in doc.sections] == [
        (),
        ("Travel",),
        ("Travel", "Hotels"),
        ("Travel", "Flights"),
        ("Meals and limits",),
        ("Meals and limits", "Exceptions"),  # an outline level on the paragraph itself
    ]
    hotels = section(doc, "Travel", "Hotels")
    assert "reimbursed up to 165 EUR per night" in hotels
    assert "- Keep the itemised hotel invoice.\n- Upload it within 30 days" in hotels
    assert "CFO approves" in section(doc, "Meals and limits", "Exceptions")


@BOTH_MAKERS
def test_a_word_table_keeps_each_rows_values_with_their_column_names(maker: str) -> None:
    text = section(parse(f"expense-policy{maker}.docx"), "Meals and limits")
    assert "Category: Client dinner; Daily limit: 95 EUR per guest; Approver: Department head" in (
        text.split("\n\n")
    )
    assert text.count("Category: ") == 3


def word_file(*paragraphs: tuple[str, str], title: str = "") -> bytes:
    document = docx.Document()
    document.core_properties.title = title
    for text, style in paragraphs:
        document.add_paragraph(text, style=style)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_a_word_title_is_the_core_title_else_the_title_style_else_the_file_name() -> None:
    body = ("Submit expenses by the 5th.", "Normal")
    styled = ("Expense Rules", "Title")
    assert parse_document("a.docx", word_file(styled, body, title="Rules 2025")).title == (
        "Rules 2025"
    )
    assert parse_document("a.docx", word_file(styled, body)).title == "Expense Rules"
    heading_only = word_file(("Deadlines", "Heading 1"), body)
    assert parse_document("finance/expense_rules.docx", heading_only).title == "Expense rules"


# -- PowerPoint ------------------------------------------------------------------------------


@BOTH_MAKERS
def test_each_slide_is_a_section_under_its_title_with_its_speaker_notes(maker: str) -> None:
    doc = parse(f"sales-kickoff{maker}.pptx")
    assert doc.title == "Sales Kickoff 2025"
    assert [s.heading_path for s in doc.sections] == [
        ("Sales Kickoff 2025",),
        ("Targets",),
        ("Regional quotas",),
        ("Slide 4",),  # untitled
    ]
    targets = section(doc, "Targets")
    assert targets.startswith("New annual recurring revenue target: 4.2 million EUR")
    assert targets.endswith(
        "\n\nNotes: Only for the speaker: the stretch bonus pays out at 4.8 million EUR."
    )
    grouped = section(doc, "Slide 4")
    assert "Cervejaria Ramiro" in grouped and "Dress code: smart casual." in grouped


@BOTH_MAKERS
def test_a_table_on_a_slide_keeps_each_rows_values_with_their_column_names(maker: str) -> None:
    assert section(parse(f"sales-kickoff{maker}.pptx"), "Regional quotas").split("\n\n") == [
        "Region: Iberia; Quota: 1.1 million EUR; Lead: Marta Ruiz",
        "Region: DACH; Quota: 1.6 million EUR; Lead: Jonas Weber",
        "Region: Nordics; Quota: 0.9 million EUR; Lead: Sofia Lind",
    ]


# -- Excel -----------------------------------------------------------------------------------


@BOTH_MAKERS
def test_each_sheet_is_a_section_of_records_with_dates_and_numbers_as_people_write_them(
    maker: str,
) -> None:
    doc = parse(f"on-call-roster{maker}.xlsx")
    assert doc.title == "On-call roster Q1"
    assert [s.heading_path for s in doc.sections] == [("Roster",), ("Escalation",)]
    roster = section(doc, "Roster").split("\n\n")
    assert roster[:3] == [
        "Week starting: 2025-01-06; Engineer: Alice Martin; Team: Billing;"
        " Phone: +351 912 345 001; Hours: 42.5",
        "Week starting: 2025-01-13; Engineer: Bruno Costa; Team: Payments;"
        " Phone: +351 912 345 002; Hours: 40",
        "Week starting: 2025-01-20; Engineer: Chen Wei; Team: Billing;"
        " Phone: +351 912 345 003; Hours: 0.3",  # 0.1 + 0.2, without the float noise
    ]
    assert section(doc, "Escalation").split("\n\n")[:2] == [
        "Level: 1; Contact: Team on-call; Reachable: 24/7; Share of pages: 85%;"
        " Last review: 2024-12-02 09:30",
        "Level: 2; Contact: Engineering manager Dana Okafor; Reachable: 07:00 to 23:00;"
        " Share of pages: 15%",
    ]


def test_formulas_give_the_values_libreoffice_computed_and_nothing_where_none_was() -> None:
    computed = parse("on-call-roster-lo.xlsx")
    assert section(computed, "Roster").endswith("Week starting: Total hours; Hours: 82.8")
    assert section(computed, "Escalation").endswith("Level: Escalate after; Contact: 15 minutes")
    # openpyxl writes formulas without values: the cell reads as empty, the formula is not run.
    never_computed = parse("on-call-roster.xlsx")
    assert section(never_computed, "Roster").endswith("Week starting: Total hours")
    assert "SUM" not in section(never_computed, "Roster")
    assert section(never_computed, "Escalation").endswith("Level: Escalate after")


def test_a_sheet_over_the_cell_limit_keeps_its_first_rows_and_says_it_was_truncated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(office, "MAX_SHEET_CELLS", 100)
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Desk", "Owner"])
    for n in range(1, 200):
        sheet.append([f"D-{n}", f"Person {n}"])
    out = io.BytesIO()
    workbook.save(out)
    [only] = parse_document("desks.xlsx", out.getvalue()).sections
    records = only.text.split("\n\n")
    assert (
        records[0] == "Desk: D-1; Owner: Person 1" and records[48] == "Desk: D-49; Owner: Person 49"
    )
    assert records[-1] == (
        "(Truncated: only the first 50 rows of this sheet are indexed; the limit is 100 cells.)"
    )
    assert len(records) == 50


# -- CSV -------------------------------------------------------------------------------------


def test_csv_rows_are_records_and_a_quoted_newline_stays_in_its_field() -> None:
    doc = parse("price-list.csv")
    assert doc.title == "Price list"
    [only] = doc.sections
    assert only.heading_path == ()
    assert only.text.split("\n\n") == [
        "Product: Standing desk; SKU: DSK-200; Price (EUR): 649.00; Notes: Delivery in 10 working days",
        "Product: Monitor arm; SKU: ARM-12; Price (EUR): 89.90; Notes: Fits VESA 75 and 100, single screen",
        "Product: Ergonomic chair; SKU: CHR-7; Price (EUR): 412.50",
    ]


def test_a_semicolon_delimited_csv_in_a_windows_code_page_and_a_tsv_are_read() -> None:
    [german] = parse("preisliste.csv").sections
    assert german.text.split("\n\n") == [
        "Artikel: Headset; Preis: 119,00 €; Lieferzeit: 3 Tage",
        "Artikel: Dockingstation; Preis: 229,00 €; Lieferzeit: 5 Tage",
    ]
    [rooms] = parse("meeting-rooms.tsv").sections
    assert rooms.text.split("\n\n")[0] == (
        "Room: Tagus; Floor: 3; Seats: 12; Equipment: Video bar, whiteboard"
    )


def test_a_one_column_csv_falls_back_to_commas() -> None:
    [only] = parse_document("codes.csv", b"Code\nA-1\nB 2\n").sections
    assert only.text.split("\n\n") == ["Code: A-1", "Code: B 2"]


# -- refused files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "error", "reason"),
    [
        (
            "legacy-policy.doc",
            DocumentSkipped,
            "legacy Word .doc format is not supported: save it as .docx",
        ),
        (
            "legacy-roster.xls",
            DocumentSkipped,
            "legacy Excel .xls format is not supported: save it as .xlsx",
        ),
        ("zip-bomb.xlsx", DocumentSkipped, "too large unpacked: 16.0 MB in a 44 KB file"),
        ("locked-policy.docx", DocumentError, "encrypted (password-protected) file"),
        ("truncated.docx", DocumentError, "corrupt .docx file (not a zip archive, or truncated)"),
        ("missing-part.pptx", DocumentError, "corrupt .pptx file (KeyError: "),
    ],
)
def test_legacy_encrypted_damaged_and_zip_bomb_files_are_refused_with_their_reason(
    name: str, error: type[DocumentError], reason: str
) -> None:
    with pytest.raises(DocumentError) as refused:
        parse(name)
    assert type(refused.value) is error and str(refused.value).startswith(reason)


def test_a_legacy_file_under_a_new_extension_is_skipped_naming_the_format() -> None:
    with pytest.raises(
        DocumentSkipped, match=r"legacy Office file named \.xlsx .*\(it looks like a \.xls\)"
    ):
        parse_document("roster.xlsx", (ASSETS / "legacy-roster.xls").read_bytes())


def test_the_unpacked_size_bound_is_a_ratio_between_a_floor_and_a_ceiling() -> None:
    mb = 1024 * 1024
    assert office.max_unpacked_bytes(20 * 1024) == 10 * mb
    assert office.max_unpacked_bytes(1 * mb) == 100 * mb
    assert office.max_unpacked_bytes(20 * mb) == 200 * mb


# -- a sync --------------------------------------------------------------------------------

FACTS = [
    (
        "How much is a hotel night in Lisbon reimbursed?",
        "expense-policy",
        "Travel > Hotels",
        "165 EUR per night",
    ),
    ("When does the stretch bonus pay out?", "sales-kickoff", "Targets", "4.8 million EUR"),
    ("Who is on call the week of 13 January 2025?", "on-call-roster", "Roster", "Bruno Costa"),
    ("What does the monitor arm cost?", "price-list", "", "89.90"),
]


async def test_a_sync_finds_each_formats_facts_under_their_heading_and_counts_the_refused(
    tmp_path: Path, engine, embedder, clean_environ: Path
) -> None:
    source = tmp_path / "shared-drive"
    shutil.copytree(ASSETS, source)
    config = KnowledgeConfig(sources=[FolderSource(path=source, name="drive")])
    knowledge = Knowledge.build(config, data_dir=clean_environ, engine=engine, embedder=embedder)
    await knowledge.open(index=False)
    try:
        report = await knowledge.syncer.run()
        refused = {i.doc_id: (i.action, i.reason) for i in report.items if i.reason}
        assert (report.added, report.skipped, report.failed) == (9, 3, 3)
        assert refused["legacy-policy.doc"] == (
            "skipped",
            "legacy Word .doc format is not supported: save it as .docx",
        )
        assert refused["zip-bomb.xlsx"][0] == "skipped"
        assert refused["locked-policy.docx"] == ("failed", "encrypted (password-protected) file")
        assert refused["truncated.docx"][0] == refused["missing-part.pptx"][0] == "failed"
        for question, stem, heading, fact in FACTS:
            [hit, *_] = await knowledge.search.search(question, k=3)
            assert hit.doc_id.startswith(stem), (question, hit.doc_id)
            assert (hit.heading, fact in hit.text) == (heading, True), question
    finally:
        await knowledge.close()
