"""Tax invoices and credit notes, and the counters that number them.

One table holds both documents (``kind``): a credit note points at the invoice it reduces.
An invoice bills a session's charging, or a booking's kept cancellation fee (a supply with
no session): exactly one of ``session_id`` and ``booking_id``.
Rows are never changed once written (a trigger of migration 0010 refuses UPDATE and DELETE):
a mistake on an invoice is corrected by a credit note, as GST law wants.

``invoice_counters`` holds one row per (supplier, financial year, kind): its ``last_number``
is raised by ``UPDATE ... RETURNING`` in the transaction that inserts the document, so a
rolled-back insert gives its number back (a PostgreSQL sequence would not: gaps).
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cloud.columns import ULID_LEN, Paise, text_enum, ulid_pk
from cloud.db import Base


class DocumentKind(StrEnum):
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"


class InvoiceCounter(Base):
    __tablename__ = "invoice_counters"
    __table_args__ = (CheckConstraint("last_number >= 0", name="last_number_non_negative"),)

    #: Whose series: the supplier's GSTIN (a series is per registration, cloud.invoices.supply).
    supplier: Mapped[str] = mapped_column(String(80), primary_key=True)
    #: The financial year by the calendar year it starts in (April 2026 - March 2027: 2026).
    fy: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    kind: Mapped[DocumentKind] = mapped_column(
        text_enum(DocumentKind, "document_kind"), primary_key=True
    )
    last_number: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Invoice(Base):
    """A GST tax invoice (one per billed session) or a credit note (one per refund after
    invoicing), with the CGST Rule 46 / Rule 53 particulars frozen as issued."""

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("supplier", "fy", "kind", "number"),
        UniqueConstraint("supplier", "serial"),
        # One invoice per session: issue_invoice is idempotent on it.
        Index(
            "uq_invoices_session_id_invoice",
            "session_id",
            unique=True,
            postgresql_where=text("kind = 'invoice'"),
        ),
        CheckConstraint("number > 0", name="number_positive"),
        CheckConstraint("char_length(serial) <= 16", name="serial_length"),
        CheckConstraint("taxable_paise >= 0", name="taxable_paise_non_negative"),
        CheckConstraint(
            "cgst_paise >= 0 AND sgst_paise >= 0 AND igst_paise >= 0", name="tax_non_negative"
        ),
        CheckConstraint("igst_paise = 0 OR (cgst_paise = 0 AND sgst_paise = 0)", name="one_tax"),
        CheckConstraint(
            "total_paise = taxable_paise + cgst_paise + sgst_paise + igst_paise",
            name="total_adds_up",
        ),
        CheckConstraint(
            "(kind = 'invoice') = (original_id IS NULL)", name="credit_note_has_original"
        ),
        # A session's supply, or a booking's kept cancellation fee (migration 0016).
        CheckConstraint("(session_id IS NULL) <> (booking_id IS NULL)", name="one_supply"),
        Index(
            "uq_invoices_booking_id_invoice",
            "booking_id",
            unique=True,
            postgresql_where=text("kind = 'invoice'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    kind: Mapped[DocumentKind] = mapped_column(text_enum(DocumentKind, "document_kind"))
    supplier: Mapped[str] = mapped_column(String(80))
    fy: Mapped[int] = mapped_column(SmallInteger)
    number: Mapped[int] = mapped_column(Integer)
    #: What the document shows: ``INV/2627/000001`` (at most 16 characters, Rule 46(b)).
    serial: Mapped[str] = mapped_column(String(16))
    #: The session billed; None for a booking's cancellation fee (``booking_id``).
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"), index=True)
    #: The booking whose late cancellation fee was kept (no session: cloud/payments/
    #: cancellation.py).
    booking_id: Mapped[str | None] = mapped_column(ForeignKey("bookings.id"), index=True)
    #: The invoice a credit note reduces.
    original_id: Mapped[str | None] = mapped_column(ForeignKey("invoices.id"), index=True)
    #: The refund a credit note records (one credit note per refund).
    refund_id: Mapped[str | None] = mapped_column(ForeignKey("refunds.id"), unique=True)
    #: The charger's host (who may read it) and the driver (the recipient).
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"), index=True)
    driver_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    #: The date printed: ``issued_at`` in Asia/Kolkata.
    issue_date: Mapped[date] = mapped_column(Date)
    supplier_name: Mapped[str] = mapped_column(String(200))
    supplier_address: Mapped[str] = mapped_column(String(400))
    supplier_gstin: Mapped[str | None] = mapped_column(String(15))
    supplier_state_code: Mapped[str] = mapped_column(String(2))
    recipient_name: Mapped[str] = mapped_column(String(120))
    recipient_state_code: Mapped[str] = mapped_column(String(2))
    place_of_supply_code: Mapped[str] = mapped_column(String(2))
    sac: Mapped[str] = mapped_column(String(6))
    description: Mapped[str] = mapped_column(String(200))
    taxable_paise: Mapped[int] = mapped_column(Paise)
    cgst_paise: Mapped[int] = mapped_column(Paise)
    sgst_paise: Mapped[int] = mapped_column(Paise)
    igst_paise: Mapped[int] = mapped_column(Paise)
    total_paise: Mapped[int] = mapped_column(Paise)
    #: The GST rate in basis points (1800 = 18 %).
    gst_bp: Mapped[int] = mapped_column(Integer)
    #: The bill's lines as priced by cloud.billing.quote: kind, amount, quantity, unit.
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    #: Why a credit note was issued.
    reason: Mapped[str | None] = mapped_column(String(200))
