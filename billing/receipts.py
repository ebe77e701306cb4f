"""Receipts for top-ups: a printable page and the same content as a PDF (fpdf2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import formats, timezone
from django.utils.translation import gettext as _
from fpdf import FPDF

from accounts.organizations import billing_email
from lib.money import usd_text

from .accounts import profile_of
from .models import Payment

FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu")]


def customer(payment: Payment) -> dict[str, str]:
    """The billing details as they were when the payment was credited (or, for a payment
    made before any were entered, as they are now)."""
    details = payment.billing_details or {}
    if not any(details.values()):
        details = profile_of(payment.account).details()
    return {**details, "email": billing_email(payment.account)}


def company() -> dict[str, Any]:
    return {
        "name": settings.TP_COMPANY_NAME,
        "address": [line for line in settings.TP_COMPANY_ADDRESS.splitlines() if line.strip()],
        "vat_id": settings.TP_COMPANY_VAT_ID,
        "email": settings.TP_COMPANY_EMAIL,
        "registration": settings.TP_COMPANY_REGISTRATION,
    }


def context(payment: Payment) -> dict[str, Any]:
    lines = [
        {"label": _("Account credit"), "amount": payment.credited or payment.amount},
    ]
    if payment.fee:
        lines.append({"label": _("Processing fee"), "amount": payment.fee})
    return {
        "payment": payment,
        "company": company(),
        "customer": customer(payment),
        "lines": lines,
        "paid": payment.amount_received or payment.total,
        "adjustments": list(payment.adjustments.order_by("created_at")),
        "issued": payment.confirmed_at or timezone.now(),
    }


def _address(details: dict[str, str]) -> list[str]:
    city = " ".join(p for p in (details.get("postal_code", ""), details.get("city", "")) if p)
    lines = [
        details.get("name", ""),
        details.get("company", ""),
        details.get("address_line1", ""),
        details.get("address_line2", ""),
        city,
        details.get("country", ""),
    ]
    if details.get("vat_id"):
        lines.append(_("VAT ID: %(id)s") % {"id": details["vat_id"]})
    if details.get("email"):
        lines.append(details["email"])
    return [line for line in lines if line]


class _Receipt(FPDF):
    def __init__(self) -> None:
        super().__init__(format="A4")
        self.family = "Helvetica"
        for folder in FONT_DIRS:
            regular, bold = folder / "DejaVuSans.ttf", folder / "DejaVuSans-Bold.ttf"
            if regular.exists() and bold.exists():
                self.add_font("DejaVu", "", str(regular))
                self.add_font("DejaVu", "B", str(bold))
                self.family = "DejaVu"
                break

    def text_of(self, value: str) -> str:
        if self.family == "Helvetica":  # the core fonts know Latin-1 only
            return value.encode("latin-1", "replace").decode("latin-1")
        return value

    def line_text(self, value: str, *, size: float = 10, bold: bool = False, h: float = 5) -> None:
        self.set_font(self.family, "B" if bold else "", size)
        self.cell(0, h, self.text_of(value), new_x="LMARGIN", new_y="NEXT")


def pdf(payment: Payment) -> bytes:
    data = context(payment)
    doc = _Receipt()
    doc.set_title(f"Receipt {payment.receipt_number}")
    doc.set_author(data["company"]["name"])
    doc.add_page()
    doc.set_auto_page_break(auto=True, margin=15)

    doc.line_text(data["company"]["name"], size=16, bold=True, h=8)
    for line in data["company"]["address"]:
        doc.line_text(line)
    if data["company"]["vat_id"]:
        doc.line_text(_("VAT ID: %(id)s") % {"id": data["company"]["vat_id"]})
    if data["company"]["registration"]:
        doc.line_text(data["company"]["registration"])
    if data["company"]["email"]:
        doc.line_text(data["company"]["email"])
    doc.ln(6)
    doc.line_text(
        _("Receipt %(number)s") % {"number": payment.receipt_number}, size=14, bold=True, h=8
    )
    doc.line_text(
        _("Date: %(date)s")
        % {"date": formats.date_format(data["issued"], "SHORT_DATETIME_FORMAT") + " UTC"}
    )
    doc.line_text(_("Payment method: %(method)s") % {"method": payment.get_provider_display()})
    doc.line_text(_("Provider reference: %(ref)s") % {"ref": payment.provider_payment_id or "-"})
    doc.ln(4)
    doc.line_text(_("Billed to"), bold=True)
    for line in _address(data["customer"]):
        doc.line_text(line)
    doc.ln(6)

    width = doc.w - doc.l_margin - doc.r_margin
    doc.set_font(doc.family, "B", 10)
    doc.cell(width - 40, 7, doc.text_of(_("Description")), border="B")
    doc.cell(
        40, 7, doc.text_of(_("Amount (USD)")), border="B", align="R", new_x="LMARGIN", new_y="NEXT"
    )
    doc.set_font(doc.family, "", 10)
    for line in data["lines"]:
        doc.cell(width - 40, 7, doc.text_of(str(line["label"])))
        doc.cell(40, 7, usd_text(line["amount"]), align="R", new_x="LMARGIN", new_y="NEXT")
    doc.set_font(doc.family, "B", 10)
    doc.cell(width - 40, 8, doc.text_of(_("Total paid")), border="T")
    doc.cell(40, 8, usd_text(data["paid"]), border="T", align="R", new_x="LMARGIN", new_y="NEXT")
    if data["adjustments"]:
        doc.ln(4)
        doc.line_text(_("Later changes"), bold=True)
        for adj in data["adjustments"]:
            day = formats.date_format(adj.created_at, "SHORT_DATE_FORMAT")
            doc.line_text(f"{day}  {adj.get_kind_display()}  {usd_text(adj.amount)} USD")
    doc.ln(8)
    doc.set_font(doc.family, "", 8)
    doc.multi_cell(
        0,
        4,
        doc.text_of(
            _(
                "Prepaid credit for API usage, in US dollars. The processing fee is charged by "
                "the payment provider and is not refundable."
            )
        ),
    )
    return bytes(doc.output())
