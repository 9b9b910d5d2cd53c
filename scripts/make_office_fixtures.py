"""Write the Office and CSV test fixtures into tests/assets/office/ (re-runnable).

    python scripts/make_office_fixtures.py

Made with python-docx, python-pptx and openpyxl, then each of those round-tripped through
LibreOffice (`soffice --headless`: .docx → .odt → .docx and so on), so the LibreOffice-made
files are LibreOffice's own output (the .xlsx with the formulas' cached values that LibreOffice
computed). Also: a legacy .doc and .xls (LibreOffice), a password-protected .docx (needs
msoffcrypto-tool, which is no dependency: without it the committed file is kept), a truncated
.docx, a .pptx missing its main part, and a zip bomb .xlsx.

The files are committed, so the tests need neither LibreOffice nor msoffcrypto-tool.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from datetime import date, datetime
from pathlib import Path

import docx
import openpyxl
import pptx
from docx.oxml.ns import qn
from docx.shared import Pt
from pptx.slide import Slide
from pptx.util import Inches

OUT = Path(__file__).resolve().parent.parent / "tests" / "assets" / "office"
PASSWORD = "Kickoff-2025"


def expense_policy(path: Path) -> None:
    document = docx.Document()
    document.core_properties.title = "Travel and Expense Policy"
    document.core_properties.author = "Finance"
    document.add_paragraph("Travel and Expense Policy 2025", style="Title")
    document.add_paragraph(
        "This policy applies to every employee who travels for work or spends company money."
    )
    document.add_heading("Travel", level=1)
    document.add_paragraph("Book all trips through the TravelDesk portal at least 14 days ahead.")
    document.add_heading("Hotels", level=2)
    document.add_paragraph(
        "Hotel stays in Lisbon are reimbursed up to 165 EUR per night, breakfast included."
    )
    document.add_paragraph("Choose a hotel from the preferred list when one is available.")
    document.add_paragraph("Keep the itemised hotel invoice.", style="List Bullet")
    document.add_paragraph("Upload it within 30 days of your return.", style="List Bullet")
    document.add_heading("Flights", level=2)
    document.add_paragraph("Economy class for flights under six hours; premium economy above.")
    document.add_heading("Meals and limits", level=1)
    document.add_paragraph("Daily limits per category (receipts required above 25 EUR):")
    table = document.add_table(rows=1, cols=3)
    table.style = "Table Grid"
    for cell, text in zip(
        table.rows[0].cells, ["Category", "Daily limit", "Approver"], strict=True
    ):
        cell.text = text
    for row in [
        ("Meals", "60 EUR", "Team lead"),
        ("Client dinner", "95 EUR per guest", "Department head"),
        ("Taxi", "40 EUR", "Team lead"),
    ]:
        cells = table.add_row().cells
        for cell, text in zip(cells, row, strict=True):
            cell.text = text
    paragraph = document.add_paragraph("Exceptions")
    paragraph.style = document.styles["Normal"]
    paragraph.runs[0].font.size = Pt(13)
    # A heading made by an outline level set on the paragraph itself, not by a heading style.
    properties = paragraph._p.get_or_add_pPr()
    properties.append(properties.makeelement(qn("w:outlineLvl"), {qn("w:val"): "1"}))
    document.add_paragraph("The CFO approves any exception to these limits in writing.")
    document.save(path)


def sales_kickoff(path: Path) -> None:
    deck = pptx.Presentation()
    deck.core_properties.title = "Sales Kickoff 2025"
    layout = deck.slide_layouts[5]  # "Title Only": one layout keeps LibreOffice's copy small

    def slide_with_text(title: str | None, *paragraphs: str) -> Slide:
        slide = deck.slides.add_slide(layout)
        if title is None:
            element = slide.shapes.title._element
            element.getparent().remove(element)
        else:
            slide.shapes.title.text = title
        if paragraphs:
            frame = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(8), Inches(3)).text_frame
            frame.text = paragraphs[0]
            for text in paragraphs[1:]:
                frame.add_paragraph().text = text
        return slide

    slide_with_text("Sales Kickoff 2025", "Lisbon, 3 to 5 February")
    slide = slide_with_text(
        "Targets",
        "New annual recurring revenue target: 4.2 million EUR",
        "Win rate goal: 28 percent",
    )
    notes = slide.notes_slide.notes_text_frame
    notes.text = "Only for the speaker: the stretch bonus pays out at 4.8 million EUR."

    slide = slide_with_text("Regional quotas")
    shape = slide.shapes.add_table(4, 3, Inches(1), Inches(2), Inches(8), Inches(2))
    for r, row in enumerate(
        [
            ("Region", "Quota", "Lead"),
            ("Iberia", "1.1 million EUR", "Marta Ruiz"),
            ("DACH", "1.6 million EUR", "Jonas Weber"),
            ("Nordics", "0.9 million EUR", "Sofia Lind"),
        ]
    ):
        for c, text in enumerate(row):
            shape.table.cell(r, c).text = text

    slide = slide_with_text(None)  # no title
    group = slide.shapes.add_group_shape()
    box = group.shapes.add_textbox(Inches(1), Inches(1), Inches(6), Inches(1))
    box.text_frame.text = "Team dinner at Cervejaria Ramiro on 4 February at 20:00."
    box = group.shapes.add_textbox(Inches(1), Inches(2), Inches(6), Inches(1))
    box.text_frame.text = "Dress code: smart casual."
    deck.save(path)


def on_call_roster(path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.properties.title = "On-call roster Q1"
    sheet = workbook.active
    sheet.title = "Roster"
    sheet.append(["Week starting", "Engineer", "Team", "Phone", "Hours"])
    rows = [
        (date(2025, 1, 6), "Alice Martin", "Billing", "+351 912 345 001", 42.5),
        (date(2025, 1, 13), "Bruno Costa", "Payments", "+351 912 345 002", 40),
        (date(2025, 1, 20), "Chen Wei", "Billing", "+351 912 345 003", 0.1 + 0.2),
    ]
    for row in rows:
        sheet.append(list(row))
    for cell in sheet["A"][1:]:
        cell.number_format = "yyyy-mm-dd"
    sheet.append([])  # an empty row, skipped
    sheet.append(["Total hours", None, None, None, "=SUM(E2:E4)"])

    sheet = workbook.create_sheet("Escalation")
    sheet.append(["Level", "Contact", "Reachable", "Share of pages", "Last review"])
    sheet.append([1, "Team on-call", "24/7", 0.85, datetime(2024, 12, 2, 9, 30)])
    sheet.append([2, "Engineering manager Dana Okafor", "07:00 to 23:00", 0.15, None])
    sheet["D2"].number_format = sheet["D3"].number_format = "0%"
    sheet.append(["Escalate after", '=CONCATENATE(15," minutes")'])
    workbook.save(path)


def price_lists(out: Path) -> None:
    with (out / "price-list.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Product", "SKU", "Price (EUR)", "Notes"])
        writer.writerow(["Standing desk", "DSK-200", "649.00", "Delivery in 10 working days"])
        writer.writerow(["Monitor arm", "ARM-12", "89.90", "Fits VESA 75 and 100,\nsingle screen"])
        writer.writerow(["Ergonomic chair", "CHR-7", "412.50", ""])
    (out / "preisliste.csv").write_bytes(
        "Artikel;Preis;Lieferzeit\n"
        "Headset;119,00 €;3 Tage\n"
        "Dockingstation;229,00 €;5 Tage\n".encode("cp1252")
    )
    (out / "meeting-rooms.tsv").write_text(
        "Room\tFloor\tSeats\tEquipment\nTagus\t3\t12\tVideo bar, whiteboard\nDouro\t5\t6\tScreen\n",
        encoding="utf-8",
    )


def soffice(source: Path, fmt: str, outdir: Path) -> Path:
    """Convert with LibreOffice; returns the file it wrote."""
    binary = shutil.which("soffice") or shutil.which("libreoffice")
    if binary is None:
        sys.exit("LibreOffice (soffice) is needed: apt-get install libreoffice-nogui")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                binary,
                f"-env:UserInstallation=file://{profile}",
                "--headless",
                "--convert-to",
                fmt,
                "--outdir",
                str(outdir),
                str(source),
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
    made = outdir / f"{source.stem}.{fmt.split(':')[0]}"
    if not made.exists():
        sys.exit(f"LibreOffice did not convert {source.name} to {fmt}")
    return made


def round_trip(source: Path, via: str, back: str, dest: Path, work: Path) -> None:
    """`source` opened by LibreOffice, saved as `via`, that opened again and saved as `back`."""
    step = work / via
    step.mkdir(exist_ok=True)
    middle = soffice(source, via, step)
    final = work / f"{via}-{back}"
    final.mkdir(exist_ok=True)
    shutil.move(soffice(middle, back, final), dest)


def encrypted(source: Path, dest: Path) -> None:
    try:
        from msoffcrypto.format.ooxml import OOXMLFile  # type: ignore[import-not-found]
    except ImportError:
        print(f"msoffcrypto-tool is not installed: keeping {dest.name}")
        return
    out = io.BytesIO()
    OOXMLFile(io.BytesIO(source.read_bytes())).encrypt(PASSWORD, out)
    dest.write_bytes(out.getvalue())


def zip_bomb(dest: Path) -> None:
    """A valid-looking .xlsx whose one sheet unpacks to 16 MB of identical rows (400 times its
    size: the most deflate packs such rows)."""
    row = b"<row><c><v>1</v></c></row>"
    sheet = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        + row * (16 * 1024 * 1024 // len(row))
        + b"</sheetData></worksheet>"
    )
    template = io.BytesIO()
    openpyxl.Workbook().save(template)
    with (
        zipfile.ZipFile(template) as source,
        zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bomb,
    ):
        for info in source.infolist():
            data = sheet if info.filename == "xl/worksheets/sheet1.xml" else source.read(info)
            bomb.writestr(info.filename, data)


def damaged(out: Path) -> None:
    policy = (out / "expense-policy.docx").read_bytes()
    (out / "truncated.docx").write_bytes(policy[: len(policy) // 2])
    with (
        zipfile.ZipFile(out / "sales-kickoff.pptx") as source,
        zipfile.ZipFile(out / "missing-part.pptx", "w", zipfile.ZIP_DEFLATED) as broken,
    ):
        for info in source.infolist():
            if info.filename != "ppt/presentation.xml":
                broken.writestr(info.filename, source.read(info))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    expense_policy(OUT / "expense-policy.docx")
    sales_kickoff(OUT / "sales-kickoff.pptx")
    on_call_roster(OUT / "on-call-roster.xlsx")
    price_lists(OUT)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        round_trip(OUT / "expense-policy.docx", "odt", "docx", OUT / "expense-policy-lo.docx", work)
        round_trip(OUT / "sales-kickoff.pptx", "odp", "pptx", OUT / "sales-kickoff-lo.pptx", work)
        round_trip(OUT / "on-call-roster.xlsx", "ods", "xlsx", OUT / "on-call-roster-lo.xlsx", work)
        shutil.move(soffice(OUT / "expense-policy.docx", "doc", work), OUT / "legacy-policy.doc")
        shutil.move(soffice(OUT / "on-call-roster.xlsx", "xls", work), OUT / "legacy-roster.xls")
    encrypted(OUT / "expense-policy-lo.docx", OUT / "locked-policy.docx")
    damaged(OUT)
    zip_bomb(OUT / "zip-bomb.xlsx")
    for path in sorted(OUT.iterdir()):
        print(f"{path.stat().st_size:>8}  {path.relative_to(OUT.parent.parent.parent)}")


if __name__ == "__main__":
    main()
