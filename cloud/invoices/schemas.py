"""Requests and answers of the invoice routes and of a host's GST registration."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from cloud.accounts.models import Host
from cloud.invoices.gstin import state_name
from cloud.invoices.models import Invoice
from cloud.schemas import NOT_BLANK_PATTERN, RequestModel


class StateOut(BaseModel):
    #: The GST state code (``27``) and the state's name (``Maharashtra``).
    code: str
    name: str

    @classmethod
    def of(cls, code: str) -> StateOut:
        return cls(code=code, name=state_name(code))


class SupplierOut(BaseModel):
    name: str
    address: str
    #: Absent only on documents of a supplier without one (never today: see docs/cloud.md).
    gstin: str | None
    state: StateOut


class RecipientOut(BaseModel):
    name: str
    state: StateOut


class LineOut(BaseModel):
    #: ``energy``, ``time``, ``session_fee``, ``minimum_charge``, ``idle_fee``,
    #: ``cancellation_fee`` (an invoice's,
    #: as cloud/billing/quote.py prices them) or ``refund`` (a credit note's).
    kind: str
    amount_paise: int
    #: How much was priced, in ``unit`` (``Wh``, ``ms``, ``min``, ``session``, ``booking``,
    #: ``paise``, ``refund``).
    quantity: int
    unit: str


class InvoiceOut(BaseModel):
    """A GST tax invoice or credit note, as issued (CGST Rules 46 and 53)."""

    id: str
    kind: Literal["invoice", "credit_note"]
    #: At most 16 characters, unique and gap-free per supplier, kind and financial year.
    serial: str
    #: ``2026-27``: April to March.
    financial_year: str
    issue_date: date
    issued_at: datetime
    #: The session billed (its id in this API: GET /sessions/{id}); null for a booking's
    #: cancellation fee.
    session_id: str | None
    #: The booking whose late cancellation fee this invoice bills (null for a session's).
    booking_id: str | None
    #: A credit note's invoice.
    original_id: str | None
    supplier: SupplierOut
    recipient: RecipientOut
    place_of_supply: StateOut
    sac: str
    description: str
    lines: list[LineOut]
    taxable_paise: int
    cgst_paise: int
    sgst_paise: int
    igst_paise: int
    total_paise: int
    #: The GST rate in basis points (1800 = 18 %).
    gst_rate_bp: int
    reason: str | None
    #: Where the PDF is: GET /invoices/{id}.pdf.
    pdf_url: str

    @classmethod
    def of(cls, invoice: Invoice, *, session_id: str | None) -> InvoiceOut:
        return cls(
            id=invoice.id,
            kind=invoice.kind.value,
            serial=invoice.serial,
            financial_year=f"{invoice.fy}-{(invoice.fy + 1) % 100:02d}",
            issue_date=invoice.issue_date,
            issued_at=invoice.issued_at,
            session_id=session_id,
            booking_id=invoice.booking_id,
            original_id=invoice.original_id,
            supplier=SupplierOut(
                name=invoice.supplier_name,
                address=invoice.supplier_address,
                gstin=invoice.supplier_gstin,
                state=StateOut.of(invoice.supplier_state_code),
            ),
            recipient=RecipientOut(
                name=invoice.recipient_name, state=StateOut.of(invoice.recipient_state_code)
            ),
            place_of_supply=StateOut.of(invoice.place_of_supply_code),
            sac=invoice.sac,
            description=invoice.description,
            lines=[LineOut.model_validate(line) for line in invoice.lines],
            taxable_paise=invoice.taxable_paise,
            cgst_paise=invoice.cgst_paise,
            sgst_paise=invoice.sgst_paise,
            igst_paise=invoice.igst_paise,
            total_paise=invoice.total_paise,
            gst_rate_bp=invoice.gst_bp,
            reason=invoice.reason,
            pdf_url=f"/invoices/{invoice.id}.pdf",
        )


class InvoiceList(BaseModel):
    items: list[InvoiceOut]
    limit: int
    offset: int


class GstRegistrationIn(RequestModel):
    """A host's GST registration: they become the supplier of record of their sessions."""

    #: 15 characters; its check character is verified too (a mistyped GSTIN is a 422).
    gstin: str = Field(pattern=r"^[0-9]{2}[A-Z]{5}[0-9]{4}[A-Z][1-9A-Z]Z[0-9A-Z]$")
    #: The legal name registered with the GSTIN, printed on the invoices.
    legal_name: str = Field(min_length=1, max_length=200, pattern=NOT_BLANK_PATTERN)
    #: The principal place of business, printed on the invoices.
    address: str = Field(min_length=1, max_length=300, pattern=NOT_BLANK_PATTERN)
    pincode: str = Field(pattern=r"^[1-9][0-9]{5}$")


class GstRegistrationOut(BaseModel):
    host_id: str
    #: Whether the host is GST-registered (the ledger's ``host_gst_registered``).
    gst_registered: bool
    gstin: str | None
    legal_name: str | None
    address: str | None
    pincode: str | None
    #: The GSTIN's state: an invoice is IGST where the charger is in another state.
    state: StateOut | None

    @classmethod
    def of(cls, host: Host) -> GstRegistrationOut:
        return cls(
            host_id=host.id,
            gst_registered=host.host_gst_registered,
            gstin=host.gstin,
            legal_name=host.legal_name,
            address=host.address,
            pincode=host.pincode,
            state=StateOut.of(host.gstin[:2]) if host.gstin else None,
        )
