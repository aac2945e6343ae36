"""Read-only queries of the agent's SQLite store for the technician's commands.

The CLI opens the file read-only (``mode=ro``), so it can never write beside the running
agent, never migrate a file the agent has not migrated, and never take the write lock. WAL
lets it read while the agent writes.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edge_agent.errors import InputError, StoreError
from edge_agent.store.db import translated


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open the store read-only; :class:`StoreError` when it is missing or unreadable."""
    if not path.exists():
        raise StoreError(
            f"no store at {path} (the agent creates it at its first start)", path=str(path)
        )
    with translated(f"cannot read store {path}", path=path):
        # Quoted: a `?`, `#` or `%` in the path would otherwise end or garble the URI (and a
        # lost `mode=ro` would open the file read-write).
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=5.0)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return conn


def _query(conn: sqlite3.Connection, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
    with translated("store query failed"):
        return list(conn.execute(sql, args))


# --- health -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreStats:
    file_bytes: int
    used_bytes: int
    integrity: str
    schema_version: int


def stats(conn: sqlite3.Connection, path: Path) -> StoreStats:
    """Size on disk, bytes in use, ``PRAGMA quick_check`` and the schema version.

    ``quick_check`` is ``integrity_check`` without the index cross-checks: O(N) instead of
    O(N log N), seconds rather than minutes on a full 256 MiB store on an SD card.
    """
    page_size = int(_query(conn, "PRAGMA page_size")[0][0])
    pages = int(_query(conn, "PRAGMA page_count")[0][0])
    free = int(_query(conn, "PRAGMA freelist_count")[0][0])
    rows = [str(r[0]) for r in _query(conn, "PRAGMA quick_check")]
    version = int(_query(conn, "PRAGMA user_version")[0][0])
    size = path.stat().st_size
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        size += wal.stat().st_size
    return StoreStats(size, (pages - free) * page_size, "; ".join(rows[:3]), version)


# --- outbox -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backlog:
    rows: int
    oldest: datetime | None
    thinned_readings: int
    thinned_batches: int


def backlog(conn: sqlite3.Connection) -> Backlog:
    count, oldest = _query(conn, "SELECT count(*), min(created_at) FROM outbox")[0]
    counters = dict(_query(conn, "SELECT name, value FROM counters"))
    return Backlog(
        int(count),
        None if oldest is None else datetime.fromisoformat(str(oldest)),
        int(counters.get("thinned_readings", 0)),
        int(counters.get("thinned_batches", 0)),
    )


# --- sessions ---------------------------------------------------------------------------------

_SESSION_COLUMNS = (
    "session_id",
    "connector",
    "credential_kind",
    "credential_ref",
    "booking_id",
    "started_at",
    "meter_start_wh",
    "last_meter_wh",
    "last_meter_at",
    "stopped_at",
    "meter_stop_wh",
    "energy_wh",
    "stop_reason",
    "meter_went_backwards",
    "event_seq",
)


def _session_row(row: tuple[Any, ...]) -> dict[str, Any]:
    data = dict(zip(_SESSION_COLUMNS, row, strict=True))
    data["open"] = data["stopped_at"] is None
    data["meter_went_backwards"] = bool(data["meter_went_backwards"])
    if data["open"]:
        data["energy_wh"] = int(data["last_meter_wh"]) - int(data["meter_start_wh"])
    return data


def sessions(conn: sqlite3.Connection, *, limit: int, open_only: bool) -> list[dict[str, Any]]:
    """Newest first."""
    where = "WHERE stopped_at IS NULL" if open_only else ""
    rows = _query(
        conn,
        f"SELECT {', '.join(_SESSION_COLUMNS)} FROM sessions {where} "  # noqa: S608 -- constant columns and clause
        "ORDER BY started_at DESC LIMIT ?",
        (limit,),
    )
    return [_session_row(tuple(r)) for r in rows]


def session(conn: sqlite3.Connection, session_id: str) -> dict[str, Any]:
    """One session with its events; :class:`InputError` when there is no such session."""
    rows = _query(
        conn,
        f"SELECT {', '.join(_SESSION_COLUMNS)} FROM sessions WHERE session_id = ?",  # noqa: S608 -- constant columns
        (session_id,),
    )
    if not rows:
        raise InputError(f"no session {session_id!r} in the store", field="session_id")
    data = _session_row(tuple(rows[0]))
    data["events"] = [
        {"event_seq": int(seq), "event": str(event), "outbox_seq": int(outbox_seq)}
        for seq, event, outbox_seq in _query(
            conn,
            "SELECT event_seq, event, outbox_seq FROM session_events WHERE session_id = ? "
            "ORDER BY event_seq",
            (session_id,),
        )
    ]
    return data


def open_session_on(conn: sqlite3.Connection, connector: int) -> str | None:
    rows = _query(
        conn,
        "SELECT session_id FROM sessions WHERE connector = ? AND stopped_at IS NULL",
        (connector,),
    )
    return None if not rows else str(rows[0][0])


# --- authorization ----------------------------------------------------------------------------


def auth_list_version(conn: sqlite3.Connection) -> int:
    rows = _query(conn, "SELECT value FROM kv WHERE key = 'auth_list_version'")
    return 0 if not rows else int(rows[0][0])


def auth_list(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [
        {"id_tag_hash": str(h), "status": str(s), "expires_at": e}
        for h, s, e in _query(
            conn, "SELECT id_tag_hash, status, expires_at FROM auth_list ORDER BY id_tag_hash"
        )
    ]


def cache_size(conn: sqlite3.Connection) -> int:
    return int(_query(conn, "SELECT count(*) FROM auth_cache")[0][0])


# --- readings ---------------------------------------------------------------------------------


def latest_reading(conn: sqlite3.Connection, meter_id: str) -> tuple[str, str] | None:
    """(ts, values_json) of the newest stored reading of ``meter_id``."""
    rows = _query(
        conn,
        "SELECT ts, values_json FROM readings WHERE meter_id = ? ORDER BY id DESC LIMIT 1",
        (meter_id,),
    )
    return None if not rows else (str(rows[0][0]), str(rows[0][1]))
