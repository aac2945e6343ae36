"""Host KYC, the append-only audit log and admin user state (issue 18).

* ``audit_log`` gains ``before``/``after`` (the audited fields, JSON), ``request_id`` and
  indexes for the admin's filters (time, actor, action); ``audit_log_append_only``, a row
  trigger, refuses UPDATE and DELETE from any role, the application's included: history is
  never edited. (TRUNCATE is a statement an operator or the test harness runs on purpose,
  not a row change, and stays possible, as for ``ledger_entries``.)
* ``kyc_submissions`` — a host's PAN (format-checked), an Aadhaar number only masked
  (``XXXX-XXXX-1234``, checked: no full number can be stored), status, the admin's decision;
  one submission awaiting a decision per host (``uq_kyc_submissions_open``).
* ``kyc_documents`` — the encrypted files of a submission (PAN card, proof of address).

Admin user state needs no new column: ``users.disabled_at`` and migration 0007's triggers
(token version bump, ``NOTIFY cm_principal``) already end a disabled user's access at once.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 00:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = (
    """
CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only: % refused on entry %', TG_OP, OLD.id
    USING ERRCODE = 'insufficient_privilege';
END $$
""",
    """
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change()
""",
)


def upgrade() -> None:
    op.create_table(
        "kyc_submissions",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("host_id", sa.String(length=26), nullable=False),
        sa.Column("pan", sa.String(length=10), nullable=False),
        sa.Column("aadhaar_masked", sa.String(length=14), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "submitted",
                "verified",
                "rejected",
                name="kyc_submission_status",
                native_enum=False,
                create_constraint=True,
            ),
            server_default="submitted",
            nullable=False,
        ),
        sa.Column(
            "submitted_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=26), nullable=True),
        sa.Column("rejection_reason", sa.String(length=500), nullable=True),
        sa.CheckConstraint(
            "aadhaar_masked ~ '^XXXX-XXXX-[0-9]{4}$'",
            name=op.f("ck_kyc_submissions_aadhaar_masked"),
        ),
        sa.CheckConstraint(
            "pan ~ '^[A-Z]{5}[0-9]{4}[A-Z]$'", name=op.f("ck_kyc_submissions_pan_format")
        ),
        sa.ForeignKeyConstraint(
            ["decided_by"], ["users.id"], name=op.f("fk_kyc_submissions_decided_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_kyc_submissions_host_id_hosts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kyc_submissions")),
    )
    op.create_index(
        op.f("ix_kyc_submissions_host_id"), "kyc_submissions", ["host_id"], unique=False
    )
    op.create_index(
        "ix_kyc_submissions_queue", "kyc_submissions", ["status", "submitted_at"], unique=False
    )
    op.create_index(
        "uq_kyc_submissions_open",
        "kyc_submissions",
        ["host_id"],
        unique=True,
        postgresql_where=sa.text("status = 'submitted'"),
    )
    op.create_table(
        "kyc_documents",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("submission_id", sa.String(length=26), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "pan_card",
                "address_proof",
                name="kyc_document_kind",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("storage_key", sa.String(length=40), nullable=False),
        sa.Column("content_type", sa.String(length=40), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["submission_id"],
            ["kyc_submissions.id"],
            name=op.f("fk_kyc_documents_submission_id_kyc_submissions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kyc_documents")),
        sa.UniqueConstraint("storage_key", name=op.f("uq_kyc_documents_storage_key")),
        sa.UniqueConstraint(
            "submission_id", "kind", name=op.f("uq_kyc_documents_submission_id_kind")
        ),
    )
    op.add_column("audit_log", sa.Column("before", postgresql.JSONB(), nullable=True))
    op.add_column("audit_log", sa.Column("after", postgresql.JSONB(), nullable=True))
    op.add_column("audit_log", sa.Column("request_id", sa.String(length=64), nullable=True))
    op.create_index("ix_audit_log_action", "audit_log", ["action", "at"], unique=False)
    op.create_index(
        "ix_audit_log_actor_user_id", "audit_log", ["actor_user_id", "at"], unique=False
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"], unique=False)
    # One statement per execute: asyncpg prepares each, and a prepared statement is one.
    for statement in APPEND_ONLY:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
    op.execute("DROP FUNCTION audit_log_refuse_change()")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_index("ix_audit_log_actor_user_id", table_name="audit_log")
    op.drop_index("ix_audit_log_action", table_name="audit_log")
    op.drop_column("audit_log", "request_id")
    op.drop_column("audit_log", "after")
    op.drop_column("audit_log", "before")
    op.drop_table("kyc_documents")
    op.drop_index(
        "uq_kyc_submissions_open",
        table_name="kyc_submissions",
        postgresql_where=sa.text("status = 'submitted'"),
    )
    op.drop_index("ix_kyc_submissions_queue", table_name="kyc_submissions")
    op.drop_index(op.f("ix_kyc_submissions_host_id"), table_name="kyc_submissions")
    op.drop_table("kyc_submissions")
