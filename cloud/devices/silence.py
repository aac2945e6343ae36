"""Devices that fell silent are marked offline: the ingest workers' ``presence`` job.

A device counts as online while its last status said so **and** it was heard from within
``marketplace.device_offline_after_s`` (the rule, :mod:`cloud.devices.presence`). Readers
apply the age half themselves, so nobody is told a silent charger is available; but the
``online`` flag alone could stay true for ever when the Last Will never reaches the
database:

* a will published while no ingest worker is subscribed: the broker keeps it (retained),
  but MQTT 5 §4.8.2 sends no retained message to a shared subscription made later — EMQX,
  the clustered broker of docs/scale.md, follows that; Mosquitto 2.0 does send it (checked);
* a broker that crashes or is restarted publishes no will for the connections it lost;
* a device whose connection stays up but whose statuses stop.

Then its host was never told the charger went offline, and every "available now" search
walked the silent chargers' entries in the index of chargers whose device is online
(migration 0022; ``search_available_now_none_silent_p95_ms`` in docs/scale.md). Every
``ingest.presence_sweep_s`` each worker turns the flag of the devices silent past the limit
off — the triggers of migration 0022 update their chargers — and queues each host's "charger
offline" notification, offline since the device's last status, as the will would have.

Workers sweep concurrently without waiting on each other or on ingest: rows another
transaction holds (a status being applied) are skipped, and swept on the next round if they
are still silent then. A status newer than the last one applied turns the device back online
(cloud/ingest/writer.py ``APPLY_STATUS``): the sweep does not touch ``last_status_seq``.
"""

from __future__ import annotations

from cloud.notifications.events import INSERT_OFFLINE_EVENTS
from cloud.pg import PgConnection

#: No index serves this: a scan of the devices table every sweep (about 10 ms per 100,000
#: devices) costs less than an index on ``last_seen_at``, which every status (each device,
#: every minute) would have to update. A device never heard from (no ``last_seen_at``) is
#: silent too, as the rule says.
MARK_SILENT_OFFLINE = """
WITH silent AS (
    SELECT id FROM devices
    WHERE online
      AND (last_seen_at IS NULL OR last_seen_at < now() - make_interval(secs => $1))
    ORDER BY id
    FOR UPDATE SKIP LOCKED
)
UPDATE devices d SET online = false, updated_at = now()
FROM silent WHERE d.id = silent.id
RETURNING d.id, d.last_seen_at"""


async def mark_silent_offline(
    conn: PgConnection, *, offline_after_s: int, offline_grace_s: int
) -> list[str]:
    """One sweep, in one transaction: the devices it turned offline, by id."""
    async with conn.transaction():
        rows = await conn.fetch(MARK_SILENT_OFFLINE, offline_after_s)
        if rows:
            await conn.execute(
                INSERT_OFFLINE_EVENTS,
                [r["id"] for r in rows],
                offline_grace_s,
                [r["last_seen_at"] for r in rows],
            )
    return sorted(r["id"] for r in rows)
