"""Generate the example PDF document of the Northwind Labs knowledge base.

Writes examples/knowledge/finance/travel-and-expense-policy.pdf, a short
multi-page "Travel and Expense Policy" used to exercise PDF ingestion in
expertbot. The output is deterministic (fixed creation date), so re-running
the script produces the same file.

Requires fpdf2 (https://py-pdf.github.io/fpdf2/), which is *not* a dependency
of expertbot itself. Install it into a throwaway virtual environment, e.g.:

    python3.11 -m venv /tmp/pdfvenv
    /tmp/pdfvenv/bin/pip install fpdf2
    /tmp/pdfvenv/bin/python scripts/make_example_pdf.py

Only the PDF core font (Helvetica) is used, so the text must stay within
Latin-1; amounts are therefore written as "EUR 45" rather than with the euro
sign.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from fpdf import FPDF
from fpdf.fonts import FontFace

REPO_ROOT = Path(__file__).resolve().parent.parent
OUTPUT = REPO_ROOT / "examples" / "knowledge" / "finance" / "travel-and-expense-policy.pdf"

TITLE = "Travel and Expense Policy"

# The document, as a list of blocks: (kind, payload).
# kinds: h1, h2, h3, p, bullets (list of str), table (list of rows, first row = header),
#        pagebreak
CONTENT: list[tuple[str, object]] = [
    ("h1", TITLE),
    (
        "p",
        "Northwind Labs - Finance. Policy owner: Daniel Okafor, CFO. "
        "Applies to all employees in Portugal and Canada and to contractors travelling at Northwind's request.",
    ),
    ("h2", "1. Purpose and principles"),
    (
        "p",
        "This policy explains how to book business travel, what Northwind pays for while you are away, "
        "and how to claim your expenses back. Spend company money as if it were your own, and when "
        "something is not covered here, ask your manager before you spend.",
    ),
    ("h2", "2. Before you travel"),
    ("h3", "2.1 Approval"),
    (
        "p",
        "Every trip needs your manager's approval before anything is booked. Approval is requested in "
        "TripNest, our travel booking tool, when you create the trip.",
    ),
    ("h3", "2.2 Booking with TripNest"),
    (
        "bullets",
        [
            "Book flights, trains, hotels and rental cars in TripNest at https://trips.northwind.example. "
            "Bookings made outside TripNest are only reimbursed with a written reason.",
            "Book flights at least 21 days before departure where possible; late bookings need a reason in TripNest.",
            "Economy class for all flights. Premium economy is allowed when the scheduled flight time of a "
            "single leg is over 7 hours. Business class requires written approval from the CFO.",
            "Trains: first class is allowed on the Alfa Pendular between Lisbon and Porto and on VIA Rail "
            "between Toronto and Montreal or Ottawa.",
            "The TripNest agency support line for changes while travelling is +351 21 555 0178, available 24/7.",
        ],
    ),
    ("h2", "3. Hotels and per-diem allowances"),
    (
        "p",
        "Hotels must be booked through TripNest and must not exceed the nightly cap for the city, "
        "including taxes. The per diem is a daily allowance for meals, local transport within the city "
        "and small incidentals; it is paid as a flat amount, so you do not need meal receipts. On the "
        "first and last day of a trip you receive 75% of the per diem. Meals provided by a conference, "
        "client or airline are not deducted.",
    ),
    (
        "table",
        [
            ["City", "Hotel cap per night", "Per diem per day"],
            ["Lisbon", "EUR 150", "EUR 47"],
            ["Porto", "EUR 125", "EUR 42"],
            ["Madrid", "EUR 165", "EUR 52"],
            ["Berlin", "EUR 170", "EUR 58"],
            ["London", "GBP 230", "GBP 65"],
            ["Toronto", "CAD 275", "CAD 85"],
            ["Montreal", "CAD 245", "CAD 76"],
            ["New York", "USD 340", "USD 95"],
            ["San Francisco", "USD 355", "USD 98"],
            ["Any other city", "EUR 145", "EUR 49"],
        ],
    ),
    (
        "p",
        "If no hotel is available under the cap, book the cheapest reasonable option in TripNest and "
        "add a note. Staying with friends or family instead of a hotel earns a flat EUR 38 (CAD 56) per night.",
    ),
    ("h2", "4. Getting around"),
    (
        "bullets",
        [
            "Use public transport where practical. Taxis are fine late at night or with heavy luggage.",
            "Rental cars: compact category, booked in TripNest. Decline the extra insurance offered at the counter.",
            "Private car: mileage is reimbursed at EUR 0.36 per km in Portugal and CAD 0.68 per km in Canada. "
            "Tolls and parking at the destination are reimbursed separately with receipts. Commuting between "
            "home and your usual office is never reimbursed.",
        ],
    ),
    ("h2", "5. Claiming expenses in Ledgerly"),
    ("h3", "5.1 Submitting a claim"),
    (
        "bullets",
        [
            "All expenses are claimed in Ledgerly at https://expenses.northwind.example or in the Ledgerly "
            "mobile app, where you can photograph receipts on the spot.",
            "Submit your claim with all receipts within 30 days of the end of the trip (or of the purchase, "
            "for expenses not related to travel). Claims submitted later than 90 days are rejected.",
            "A receipt is required for every expense above EUR 12 (CAD 18). For smaller amounts, a description "
            "is enough. A lost receipt can be replaced once per quarter by a signed missing-receipt declaration.",
        ],
    ),
    ("h3", "5.2 Approval chain"),
    (
        "table",
        [
            ["Claim total", "Approved by"],
            ["Up to EUR 2,000 (CAD 2,900)", "Your manager"],
            ["EUR 2,000 to 7,500 (CAD 2,900 to 10,900)", "Your manager, then your department head"],
            ["Above EUR 7,500 (CAD 10,900)", "Manager, department head, then the CFO"],
        ],
    ),
    (
        "p",
        "Finance checks every claim after approval. Claims fully approved by the 23rd of a month are "
        "reimbursed with that month's salary; later claims are paid with the next month's salary.",
    ),
    ("h3", "5.3 Corporate cards"),
    (
        "p",
        "Employees who travel more than four times a year can request a Northwind corporate Visa card in "
        "Ledgerly. Card transactions appear in Ledgerly automatically; you must add the receipt and a "
        "category to each one by the 5th of the following month. Cash withdrawals are not allowed.",
    ),
    ("h2", "6. Client entertainment and team events"),
    (
        "bullets",
        [
            "Client meals: up to EUR 92 (CAD 135) per person, including drinks and tip. List every attendee "
            "and their company in Ledgerly.",
            "Team dinners during offsites: up to EUR 55 (CAD 82) per person.",
            "Gifts to clients or partners must not exceed EUR 75 (CAD 110) per person per year.",
        ],
    ),
    ("h2", "7. What Northwind does not pay for"),
    (
        "bullets",
        [
            "Minibar, in-room films, spa services, seat upgrades and airport lounge access.",
            "Traffic and parking fines, and penalties for avoidable missed flights.",
            "Travel costs for partners or family members.",
            "Extra hotel nights and fare differences when you extend a trip for personal reasons.",
        ],
    ),
    ("h2", "8. Safety and travel insurance"),
    (
        "p",
        "All business trips are covered by Northwind's travel insurance with Atlas Assistance, policy "
        "number NWL-TRV-2291, including medical care, repatriation and lost luggage. The 24-hour Atlas "
        "emergency line is +44 20 7946 0811.",
    ),
    ("p", "Questions about this policy: travel@northwind.example."),
]


class PolicyPDF(FPDF):
    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("Helvetica", "", 8)
        self.set_text_color(110, 110, 110)
        self.cell(0, 10, f"Northwind Labs - {TITLE} - page {self.page_no()}/{{nb}}", align="C")
        self.set_text_color(0, 0, 0)


def build(output: Path = OUTPUT) -> Path:
    pdf = PolicyPDF(format="A4")
    pdf.set_title(TITLE)
    pdf.set_author("Northwind Labs Finance")
    pdf.set_subject("Business travel booking, per diems, hotel caps and expense claims")
    pdf.set_keywords("travel, expenses, per diem, TripNest, Ledgerly, Northwind Labs")
    pdf.set_creator("scripts/make_example_pdf.py")
    pdf.set_creation_date(_dt.datetime(2025, 1, 15, 9, 0, 0, tzinfo=_dt.UTC))
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.add_page()

    width = pdf.epw
    for kind, payload in CONTENT:
        if kind == "h1":
            pdf.set_font("Helvetica", "B", 20)
            pdf.multi_cell(width, 10, str(payload), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
        elif kind == "h2":
            pdf.ln(3)
            pdf.set_font("Helvetica", "B", 14)
            pdf.multi_cell(width, 8, str(payload), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        elif kind == "h3":
            pdf.ln(1)
            pdf.set_font("Helvetica", "B", 11.5)
            pdf.multi_cell(width, 6.5, str(payload), new_x="LMARGIN", new_y="NEXT")
        elif kind == "p":
            pdf.set_font("Helvetica", "", 10.5)
            pdf.multi_cell(width, 5.5, str(payload), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
        elif kind == "bullets":
            pdf.set_font("Helvetica", "", 10.5)
            for item in payload:  # type: ignore[union-attr]
                pdf.set_x(pdf.l_margin + 4)
                pdf.cell(5, 5.5, "-")
                pdf.multi_cell(width - 9, 5.5, item, new_x="LMARGIN", new_y="NEXT")
                pdf.ln(0.8)
            pdf.ln(1.5)
        elif kind == "table":
            rows = payload  # type: ignore[assignment]
            pdf.set_font("Helvetica", "", 10)
            headings = FontFace(emphasis="BOLD", fill_color=(225, 230, 240))
            with pdf.table(headings_style=headings, line_height=5.4, text_align="LEFT") as table:
                for row in rows:  # type: ignore[union-attr]
                    r = table.row()
                    for value in row:
                        r.cell(value)
            pdf.ln(3)
        else:
            raise ValueError(f"unknown block kind: {kind}")

    output.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(output))
    return output


if __name__ == "__main__":
    path = build()
    print(f"wrote {path.relative_to(REPO_ROOT)}")
