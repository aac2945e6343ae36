"""Dead letters are stored once per distinct message: a redelivery counts, it adds no row.

A device resends what was not acked, and the broker redelivers what a crashed worker had not
acked, so one malformed message used to land once per delivery. Each row now carries the
SHA-256 of the full payload, is unique by ``(topic, payload_sha256)``, and counts its
``deliveries`` with the time of the last one.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 08:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("dead_letters", sa.Column("payload_sha256", sa.LargeBinary(), nullable=True))
    op.add_column(
        "dead_letters",
        sa.Column("deliveries", sa.Integer(), server_default=sa.text("1"), nullable=False),
    )
    op.add_column(
        "dead_letters",
        sa.Column(
            "last_received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )
    # Rows from before this revision: the hash of the stored payload when it is whole. A
    # payload cut to the size limit is not the message (two long ones may share the stored
    # prefix): such a row gets a hash of its own (with its id), so it is never merged away.
    op.execute(
        """UPDATE dead_letters SET last_received_at = received_at,
               payload_sha256 = CASE WHEN length(payload) = payload_bytes THEN sha256(payload)
                   ELSE sha256(payload || convert_to('|cut|' || id::text, 'UTF8')) END"""
    )
    # Merge the copies already stored: the first row keeps the sum and the last time.
    op.execute(
        """WITH groups AS (
               SELECT min(id) AS keep, count(*) AS n, max(received_at) AS last
               FROM dead_letters GROUP BY topic, payload_sha256 HAVING count(*) > 1)
           UPDATE dead_letters d SET deliveries = g.n, last_received_at = g.last
           FROM groups g WHERE d.id = g.keep"""
    )
    op.execute(
        """DELETE FROM dead_letters d USING dead_letters k
           WHERE d.topic = k.topic AND d.payload_sha256 = k.payload_sha256 AND d.id > k.id"""
    )
    op.alter_column("dead_letters", "payload_sha256", nullable=False)
    op.create_unique_constraint(
        op.f("uq_dead_letters_topic_payload_sha256"), "dead_letters", ["topic", "payload_sha256"]
    )


def downgrade() -> None:
    op.drop_constraint(op.f("uq_dead_letters_topic_payload_sha256"), "dead_letters", type_="unique")
    op.drop_column("dead_letters", "last_received_at")
    op.drop_column("dead_letters", "deliveries")
    op.drop_column("dead_letters", "payload_sha256")
