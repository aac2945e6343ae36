"""Chargers carry their device's online flag, so "available now" reads only those that can be.

``chargers.device_online`` is ``devices.online AND devices.status = 'active'`` of the
charger's device (false without one), and ``ix_chargers_earth_online`` is the GiST of the
approved, listed chargers where it is true. The "available now" search scans that index
nearest first instead of the whole radius: with a city's devices offline it read every
charger within the radius, checking each one's device, before it could answer "none"
(docs/scale.md). The search still checks the device itself (online, active, heard from
recently): the column only narrows the scan, so the answer is the same.

The database keeps the column true to the device, whatever writes (the API, ingest, the
demo, a test's SQL): a trigger on ``devices`` copies a change of ``online`` or ``status``
to its chargers, and one on ``chargers`` computes the flag whenever ``device_id`` (or the
flag itself) is written. That one reads the device ``FOR SHARE``: a device whose online
change is not yet committed makes it wait and read the outcome, where a plain read would
keep the old value while the device trigger, which cannot see the uncommitted charger, left
it alone.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05 10:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEVICE_TRIGGER = (
    """
CREATE FUNCTION devices_online_to_chargers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE chargers SET device_online = (NEW.online AND NEW.status = 'active')
  WHERE device_id = NEW.id
    AND device_online IS DISTINCT FROM (NEW.online AND NEW.status = 'active');
  RETURN NULL;
END $$
""",
    """
CREATE TRIGGER tg_devices_online_to_chargers AFTER UPDATE OF online, status ON devices
  FOR EACH ROW
  WHEN (OLD.online IS DISTINCT FROM NEW.online OR OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION devices_online_to_chargers()
""",
)

CHARGER_TRIGGER = (
    """
CREATE FUNCTION chargers_device_online() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.device_online := coalesce(
    (SELECT d.online AND d.status = 'active' FROM devices d
     WHERE d.id = NEW.device_id FOR SHARE),
    false);
  RETURN NEW;
END $$
""",
    """
CREATE TRIGGER tg_chargers_device_online
  BEFORE INSERT OR UPDATE OF device_id, device_online ON chargers
  FOR EACH ROW EXECUTE FUNCTION chargers_device_online()
""",
)


def upgrade() -> None:
    op.add_column(
        "chargers",
        sa.Column("device_online", sa.Boolean(), server_default="false", nullable=False),
    )
    # The device trigger first: creating it locks devices against writes until this
    # migration commits, so no device changes between the fill below and the triggers.
    # One statement per execute: asyncpg prepares each, and a prepared statement is one.
    for statement in DEVICE_TRIGGER:
        op.execute(statement)
    op.execute(
        "UPDATE chargers c SET device_online = true FROM devices d "
        "WHERE d.id = c.device_id AND d.online AND d.status = 'active'"
    )
    for statement in CHARGER_TRIGGER:
        op.execute(statement)
    op.create_index(
        "ix_chargers_earth_online",
        "chargers",
        [sa.literal_column("ll_to_earth(latitude, longitude)")],
        unique=False,
        postgresql_using="gist",
        postgresql_where=sa.text("device_online AND moderation_status = 'approved' AND is_listed"),
    )
    # A charger whose device goes offline leaves its entry in that index until a vacuum
    # (a KNN scan, unlike a plain one, does not mark dead entries as it passes them), and
    # "available now" visits each such entry's row: vacuumed once 2 % of the table has
    # changed rather than the default 20 %, an outage's entries are gone after some 20,000
    # changed rows per million chargers, not 200,000.
    op.execute("ALTER TABLE chargers SET (autovacuum_vacuum_scale_factor = 0.02)")


def downgrade() -> None:
    op.execute("ALTER TABLE chargers RESET (autovacuum_vacuum_scale_factor)")
    op.drop_index("ix_chargers_earth_online", table_name="chargers", postgresql_using="gist")
    op.execute("DROP TRIGGER tg_chargers_device_online ON chargers")
    op.execute("DROP FUNCTION chargers_device_online()")
    op.execute("DROP TRIGGER tg_devices_online_to_chargers ON devices")
    op.execute("DROP FUNCTION devices_online_to_chargers()")
    op.drop_column("chargers", "device_online")
