"""Booking PINs die with their booking: a nonce and a reference per booking PIN, and the
``revoke_pins`` command.

``bookings.pin_nonce`` tells a booking's PIN from those of earlier bookings of the same
connector and window (protocols.pins v2), so a slot booked again after a cancellation gets
another PIN; ``bookings.pin_ref`` (unique) is the PIN's reference, by which a session the
PIN starts finds its booking and driver and by which a cancellation revokes it at the
charger. ``device_commands.name`` admits ``revoke_pins``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 22:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMMANDS_BEFORE = (
    "start_session",
    "stop_session",
    "auth_list_update",
    "config_update",
    "diagnostics",
    "relay_test",
)
COMMANDS_AFTER = (*COMMANDS_BEFORE, "revoke_pins")


def _command_check(names: tuple[str, ...]) -> None:
    listed = ", ".join(f"'{n}'" for n in names)
    name = op.f("ck_device_commands_command_name")
    op.drop_constraint(name, "device_commands", type_="check")
    op.create_check_constraint(name, "device_commands", f"name IN ({listed})")


def upgrade() -> None:
    op.add_column("bookings", sa.Column("pin_nonce", sa.SmallInteger(), nullable=True))
    op.add_column("bookings", sa.Column("pin_ref", sa.String(length=36), nullable=True))
    op.create_unique_constraint(op.f("uq_bookings_pin_ref"), "bookings", ["pin_ref"])
    _command_check(COMMANDS_AFTER)


def downgrade() -> None:
    op.execute("DELETE FROM device_commands WHERE name = 'revoke_pins'")
    _command_check(COMMANDS_BEFORE)
    op.drop_constraint(op.f("uq_bookings_pin_ref"), "bookings", type_="unique")
    op.drop_column("bookings", "pin_ref")
    op.drop_column("bookings", "pin_nonce")
