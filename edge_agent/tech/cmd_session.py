"""``chargemitra-agent session list|show|stop``: the store's charging sessions."""

from __future__ import annotations

from pathlib import Path

import click

from edge_agent.errors import ControlError, InputError
from edge_agent.tech import daemon, storeview
from edge_agent.tech.output import boundary, console, emit, json_option
from edge_agent.tech.selection import config_option, settings_from


@click.group()
def session() -> None:
    """Charging sessions recorded in the store."""


@session.command("list")
@config_option
@click.option("--open", "open_only", is_flag=True, help="Only sessions not yet stopped.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@json_option
@boundary
def session_list(config_file: Path | None, open_only: bool, limit: int, as_json: bool) -> None:
    """The latest sessions, newest first."""
    settings = settings_from(config_file)
    conn = storeview.open_readonly(settings.store.path)
    try:
        rows = storeview.sessions(conn, limit=limit, open_only=open_only)
    finally:
        conn.close()

    def human() -> None:
        from rich.table import Table  # noqa: PLC0415

        table = Table(title="sessions")
        for col in ("session", "conn", "started", "stopped", "energy", "reason"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                r["session_id"],
                str(r["connector"]),
                str(r["started_at"])[:19],
                "open" if r["open"] else str(r["stopped_at"])[:19],
                f"{r['energy_wh']} Wh",
                r["stop_reason"] or "",
            )
        console().print(table)

    emit(as_json, {"sessions": rows}, human)


@session.command("show")
@config_option
@click.argument("session_id")
@json_option
@boundary
def session_show(config_file: Path | None, session_id: str, as_json: bool) -> None:
    """One session and its events. Exit 2 when there is no such session."""
    settings = settings_from(config_file)
    conn = storeview.open_readonly(settings.store.path)
    try:
        data = storeview.session(conn, session_id)
    finally:
        conn.close()

    def human() -> None:
        out = console()
        for key, value in data.items():
            if key != "events":
                out.print(f"{key:22} {value}")
        out.print("events: " + ", ".join(f"{e['event_seq']} {e['event']}" for e in data["events"]))

    emit(as_json, data, human)


@session.command("stop")
@config_option
@click.argument("session_id")
@json_option
@boundary
def session_stop(config_file: Path | None, session_id: str, as_json: bool) -> None:
    """Stop an open session (reason Local) through the running agent."""
    settings = settings_from(config_file)
    conn = storeview.open_readonly(settings.store.path)
    try:
        row = storeview.session(conn, session_id)
    finally:
        conn.close()
    if not row["open"]:
        raise InputError(
            f"session {session_id} already stopped ({row['stop_reason']})", field="session_id"
        )
    socket = settings.control.socket_path
    if daemon.status(socket) is None:
        raise ControlError(
            "the agent is not running, so nothing is charging: it closes or resumes the "
            "session at its next start (recovery.on_restart)",
            cmd="stop",
        )
    daemon.call(socket, {"cmd": "stop", "connector": row["connector"], "reason": "Local"})
    data = {"session_id": session_id, "connector": row["connector"], "stopped": True}
    emit(as_json, data, lambda: console().print(f"session {session_id} stopped (Local)"))
