"""GST invoices: hosts' GST registration, invoices and credit notes, their gap-free counters.

* ``hosts.gstin`` (nullable, unique, format-checked; its checksum is checked in Python by
  ``cloud.invoices.gstin``), ``hosts.legal_name``, ``hosts.address``, ``hosts.pincode``: a
  registered host is the supplier of record and their invoices carry these (CGST Rule 46).
* ``invoice_counters``: one row per (supplier, financial year, kind); the issuing
  transaction raises ``last_number`` with ``UPDATE ... RETURNING`` and inserts the document,
  so numbers are gap-free (a sequence would skip the numbers of rolled-back transactions).
* ``invoices``: tax invoices (one per session) and credit notes (one per refund), frozen as
  issued; ``invoices_frozen`` refuses UPDATE and DELETE.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 22:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: cloud.accounts.models.GSTIN_PATTERN, frozen here as of this revision.
GSTIN_PATTERN = "^[0-9]{2}[A-Z]{5}[0-9]{4}[A-Z][1-9A-Z]Z[0-9A-Z]$"

FROZEN = (
    """
CREATE FUNCTION invoices_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'invoices are frozen once issued: % refused on %', TG_OP, OLD.serial
    USING ERRCODE = 'integrity_constraint_violation';
END $$
""",
    """
CREATE TRIGGER invoices_frozen BEFORE UPDATE OR DELETE ON invoices
  FOR EACH ROW EXECUTE FUNCTION invoices_refuse_change()
""",
)


def _kind() -> sa.Enum:
    return sa.Enum(
        "invoice",
        "credit_note",
        name="document_kind",
        native_enum=False,
        create_constraint=True,
        length=11,
    )


def upgrade() -> None:
    op.add_column("hosts", sa.Column("gstin", sa.String(length=15), nullable=True))
    op.add_column("hosts", sa.Column("legal_name", sa.String(length=200), nullable=True))
    op.add_column("hosts", sa.Column("address", sa.String(length=300), nullable=True))
    op.add_column("hosts", sa.Column("pincode", sa.String(length=6), nullable=True))
    op.create_unique_constraint(op.f("uq_hosts_gstin"), "hosts", ["gstin"])
    op.create_check_constraint(op.f("ck_hosts_gstin_format"), "hosts", f"gstin ~ '{GSTIN_PATTERN}'")
    op.create_check_constraint(
        op.f("ck_hosts_gstin_has_address"),
        "hosts",
        "gstin IS NULL OR (legal_name IS NOT NULL AND address IS NOT NULL)",
    )
    op.create_table(
        "invoice_counters",
        sa.Column("supplier", sa.String(length=80), nullable=False),
        sa.Column("fy", sa.SmallInteger(), nullable=False),
        sa.Column("kind", _kind(), nullable=False),
        sa.Column("last_number", sa.Integer(), server_default="0", nullable=False),
        sa.CheckConstraint(
            "last_number >= 0", name=op.f("ck_invoice_counters_last_number_non_negative")
        ),
        sa.PrimaryKeyConstraint("supplier", "fy", "kind", name=op.f("pk_invoice_counters")),
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("kind", _kind(), nullable=False),
        sa.Column("supplier", sa.String(length=80), nullable=False),
        sa.Column("fy", sa.SmallInteger(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(length=16), nullable=False),
        sa.Column("session_id", sa.BigInteger(), nullable=False),
        sa.Column("original_id", sa.String(length=26), nullable=True),
        sa.Column("refund_id", sa.String(length=26), nullable=True),
        sa.Column("host_id", sa.String(length=26), nullable=False),
        sa.Column("driver_id", sa.String(length=26), nullable=False),
        sa.Column(
            "issued_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("issue_date", sa.Date(), nullable=False),
        sa.Column("supplier_name", sa.String(length=200), nullable=False),
        sa.Column("supplier_address", sa.String(length=400), nullable=False),
        sa.Column("supplier_gstin", sa.String(length=15), nullable=True),
        sa.Column("supplier_state_code", sa.String(length=2), nullable=False),
        sa.Column("recipient_name", sa.String(length=120), nullable=False),
        sa.Column("recipient_state_code", sa.String(length=2), nullable=False),
        sa.Column("place_of_supply_code", sa.String(length=2), nullable=False),
        sa.Column("sac", sa.String(length=6), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("taxable_paise", sa.BigInteger(), nullable=False),
        sa.Column("cgst_paise", sa.BigInteger(), nullable=False),
        sa.Column("sgst_paise", sa.BigInteger(), nullable=False),
        sa.Column("igst_paise", sa.BigInteger(), nullable=False),
        sa.Column("total_paise", sa.BigInteger(), nullable=False),
        sa.Column("gst_bp", sa.Integer(), nullable=False),
        sa.Column("lines", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.CheckConstraint("number > 0", name=op.f("ck_invoices_number_positive")),
        sa.CheckConstraint("char_length(serial) <= 16", name=op.f("ck_invoices_serial_length")),
        sa.CheckConstraint(
            "taxable_paise >= 0", name=op.f("ck_invoices_taxable_paise_non_negative")
        ),
        sa.CheckConstraint(
            "cgst_paise >= 0 AND sgst_paise >= 0 AND igst_paise >= 0",
            name=op.f("ck_invoices_tax_non_negative"),
        ),
        sa.CheckConstraint(
            "igst_paise = 0 OR (cgst_paise = 0 AND sgst_paise = 0)",
            name=op.f("ck_invoices_one_tax"),
        ),
        sa.CheckConstraint(
            "total_paise = taxable_paise + cgst_paise + sgst_paise + igst_paise",
            name=op.f("ck_invoices_total_adds_up"),
        ),
        sa.CheckConstraint(
            "(kind = 'invoice') = (original_id IS NULL)",
            name=op.f("ck_invoices_credit_note_has_original"),
        ),
        sa.ForeignKeyConstraint(
            ["driver_id"], ["users.id"], name=op.f("fk_invoices_driver_id_users")
        ),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], name=op.f("fk_invoices_host_id_hosts")),
        sa.ForeignKeyConstraint(
            ["original_id"], ["invoices.id"], name=op.f("fk_invoices_original_id_invoices")
        ),
        sa.ForeignKeyConstraint(
            ["refund_id"], ["refunds.id"], name=op.f("fk_invoices_refund_id_refunds")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_invoices_session_id_sessions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoices")),
        sa.UniqueConstraint("refund_id", name=op.f("uq_invoices_refund_id")),
        sa.UniqueConstraint(
            "supplier", "fy", "kind", "number", name=op.f("uq_invoices_supplier_fy_kind_number")
        ),
        sa.UniqueConstraint("supplier", "serial", name=op.f("uq_invoices_supplier_serial")),
    )
    op.create_index(op.f("ix_invoices_driver_id"), "invoices", ["driver_id"], unique=False)
    op.create_index(op.f("ix_invoices_host_id"), "invoices", ["host_id"], unique=False)
    op.create_index(op.f("ix_invoices_original_id"), "invoices", ["original_id"], unique=False)
    op.create_index(op.f("ix_invoices_session_id"), "invoices", ["session_id"], unique=False)
    op.create_index(
        "uq_invoices_session_id_invoice",
        "invoices",
        ["session_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'invoice'"),
    )
    for statement in FROZEN:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER invoices_frozen ON invoices")
    op.execute("DROP FUNCTION invoices_refuse_change()")
    op.drop_table("invoices")
    op.drop_table("invoice_counters")
    op.drop_constraint(op.f("ck_hosts_gstin_has_address"), "hosts", type_="check")
    op.drop_constraint(op.f("ck_hosts_gstin_format"), "hosts", type_="check")
    op.drop_constraint(op.f("uq_hosts_gstin"), "hosts", type_="unique")
    op.drop_column("hosts", "pincode")
    op.drop_column("hosts", "address")
    op.drop_column("hosts", "legal_name")
    op.drop_column("hosts", "gstin")
