"""Readings in the store: written in groups (whatever :mod:`~edge_agent.store.writer` has
waiting when it commits), each group also queued as one ``TelemetryBatch``; and the size cap.

The cap thins telemetry oldest first: the oldest readings rows and the oldest unsent telemetry
batches go; sessions, session events, decisions and every other outbox row stay. What was
thinned is counted (``counters``) so the status message can report it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from edge_agent.sessions.machine import Session
from edge_agent.store import outbox
from edge_agent.store.db import iso, transaction, used_bytes
from edge_agent.store.sessions import update_meter
from protocols.enums import MessageKind
from protocols.ids import new_ulid
from protocols.messages import MAX_PAYLOAD_BYTES, MeterReading, TelemetryBatch, to_json

#: TelemetryBatch holds at most 2000 readings (protocols.messages).
MAX_READINGS_PER_BATCH = 2000
#: Readings' JSON per batch; the envelope's few hundred bytes fit in the rest of the cap.
MAX_BATCH_BYTES = MAX_PAYLOAD_BYTES - 8 * 1024
#: Thin down to this fraction of the cap, so the next batches do not thin again at once.
THIN_TARGET = 0.9


@dataclass(frozen=True, slots=True)
class Thinned:
    readings: int
    batches: int


def add_batch(
    conn: sqlite3.Connection,
    readings: Sequence[MeterReading],
    *,
    device_id: str,
    now: datetime,
    clock_synced: bool,
    open_sessions: Sequence[Session] = (),
    max_bytes: int | None = None,
    mono: float | None = None,
) -> Thinned:
    """Store ``readings``, queue them, bring open sessions' last meter value up to date and
    enforce the size cap — one transaction."""
    with transaction(conn):
        conn.executemany(
            "INSERT INTO readings (meter_id, ts, clock_synced, values_json) VALUES (?, ?, ?, ?)",
            [
                (
                    r.meter_id,
                    iso(r.ts),
                    int(r.clock_synced),
                    json.dumps({q.value: v for q, v in r.values.items()}),
                )
                for r in readings
            ],
        )
        for chunk in _chunks(readings):
            outbox.enqueue(conn, _batch_builder(chunk, device_id, now, clock_synced), now=now)
        for session in open_sessions:
            update_meter(conn, session, now=now, mono=mono)
        if max_bytes is None:
            return Thinned(0, 0)
        return thin(conn, max_bytes)


def _chunks(readings: Sequence[MeterReading]) -> list[list[MeterReading]]:
    """Split into batches a receiver accepts: at most 2000 readings and well under the
    payload cap (a full SDM630 reading is ~500 bytes of JSON, so 2000 of them are ~1 MB)."""
    chunks: list[list[MeterReading]] = [[]]
    size = 0
    for reading in readings:
        reading_bytes = len(to_json(reading)) + 1
        full = len(chunks[-1]) >= MAX_READINGS_PER_BATCH
        if chunks[-1] and (full or size + reading_bytes > MAX_BATCH_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(reading)
        size += reading_bytes
    return [c for c in chunks if c]


def _batch_builder(
    chunk: list[MeterReading], device_id: str, now: datetime, clock_synced: bool
) -> Callable[[int], TelemetryBatch]:
    def build(seq: int) -> TelemetryBatch:
        return TelemetryBatch(
            msg_id=new_ulid(),
            device_id=device_id,
            seq=seq,
            ts=now,
            clock_synced=clock_synced,
            readings=chunk,
        )

    return build


def thin(conn: sqlite3.Connection, max_bytes: int, *, fraction: float = 0.1) -> Thinned:
    """Delete the oldest telemetry until the file's used size is under the cap (to 90 %).

    Each round drops the oldest ``fraction`` of the readings rows and of the queued telemetry
    batches alike, so neither copy of the telemetry is emptied while the other stays whole.
    """
    if used_bytes(conn) <= max_bytes:
        return Thinned(0, 0)
    target = int(max_bytes * THIN_TARGET)
    total_readings = total_batches = 0
    with transaction(conn):
        while used_bytes(conn) > target:
            n_readings = int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
            n_batches = int(
                conn.execute(
                    "SELECT count(*) FROM outbox WHERE kind = ?", (MessageKind.TELEMETRY.value,)
                ).fetchone()[0]
            )
            if n_readings == 0 and n_batches == 0:
                break  # nothing thinnable left: sessions alone exceed the cap; keep them
            readings = conn.execute(
                "DELETE FROM readings WHERE id IN (SELECT id FROM readings ORDER BY id LIMIT ?)",
                (max(1, int(n_readings * fraction)),),
            ).rowcount
            batches = conn.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE kind = ? "
                "ORDER BY seq LIMIT ?)",
                (MessageKind.TELEMETRY.value, max(1, int(n_batches * fraction))),
            ).rowcount
            total_readings += readings
            total_batches += batches
        conn.execute(
            "UPDATE counters SET value = value + ? WHERE name = 'thinned_readings'",
            (total_readings,),
        )
        conn.execute(
            "UPDATE counters SET value = value + ? WHERE name = 'thinned_batches'",
            (total_batches,),
        )
    return Thinned(total_readings, total_batches)


def thinned_total(conn: sqlite3.Connection) -> Thinned:
    rows = dict(
        conn.execute(
            "SELECT name, value FROM counters WHERE name IN ('thinned_readings', 'thinned_batches')"
        ).fetchall()
    )
    return Thinned(int(rows["thinned_readings"]), int(rows["thinned_batches"]))


def latest(conn: sqlite3.Connection, meter_id: str) -> tuple[str, dict[str, float]] | None:
    """The newest stored reading of ``meter_id`` (timestamp, values)."""
    row = conn.execute(
        "SELECT ts, values_json FROM readings WHERE meter_id = ? ORDER BY id DESC LIMIT 1",
        (meter_id,),
    ).fetchone()
    return None if row is None else (str(row[0]), json.loads(row[1]))
