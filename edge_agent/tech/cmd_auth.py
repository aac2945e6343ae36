"""``chargemitra-agent auth check|list``: the local authorization list, and whether an
id would be let in."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from edge_agent.tech import daemon, storeview
from edge_agent.tech.authcheck import KINDS, check, guess_kind
from edge_agent.tech.output import EXIT_OK, EXIT_WARN, boundary, console, emit, escape, json_option
from edge_agent.tech.selection import config_option, pick_connector, settings_from
from protocols.enums import AuthorizationStatus


@click.group()
def auth() -> None:
    """Authorization: what would be decided for a credential; the local list."""


@auth.command("check")
@config_option
@click.argument("credential")
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="auto",
    show_default=True,
    help="What CREDENTIAL is (auto: v4.public.… token, 8 digits PIN, else id tag).",
)
@click.option("--connector", type=int, help="The connector [default: the only one].")
@json_option
@boundary
def auth_check(
    config_file: Path | None, credential: str, kind: str, connector: int | None, as_json: bool
) -> None:
    """The decision the agent would take for CREDENTIAL now, and why. Nothing is recorded
    and a token is not used up. Exit 0 Accepted, 1 any other status."""
    settings = settings_from(config_file)
    cid = pick_connector(settings, connector)
    status = daemon.status(settings.control.socket_path)
    busy = False
    if status is not None:
        for c in status.get("connectors", []):
            if c.get("connector") == cid:
                busy = c.get("status") != "Available"
    from edge_agent.tech.probes import clock_state  # noqa: PLC0415

    synced, _ = clock_state()
    if settings.clock.trust == "always":
        synced = True
    conn = storeview.open_readonly(settings.store.path)
    try:
        if status is None:
            busy = storeview.open_session_on(conn, cid) is not None
        decision = check(
            conn,
            settings,
            credential,
            kind=kind,
            connector=cid,
            now=datetime.now(UTC),
            clock_synced=bool(synced),
            connector_busy=busy,
        )
    finally:
        conn.close()
    resolved = guess_kind(credential) if kind == "auto" else kind
    data = {
        "status": decision.status.value,
        "reason": decision.reason,
        "kind": decision.kind.value,
        "ref": decision.ref,
        "connector": cid,
        "recorded": False,
        "expires_at": decision.expires_at,
    }
    if resolved == "pin" and status is not None:
        data["note"] = "the keypad lockout lives in the agent and is not reflected here"

    def human() -> None:
        colour = "green" if decision.accepted else "red"
        console().print(f"[{colour}]{decision.status.value}[/]: {escape(decision.reason)}")
        console().print(
            f"{decision.kind.value} {decision.ref[:24]} on connector {cid} "
            "(nothing recorded, nothing used up)"
        )

    emit(as_json, data, human)
    raise SystemExit(EXIT_OK if decision.status is AuthorizationStatus.ACCEPTED else EXIT_WARN)


@auth.command("list")
@config_option
@click.option("--version", "version_only", is_flag=True, help="Only the list's version.")
@json_option
@boundary
def auth_list(config_file: Path | None, version_only: bool, as_json: bool) -> None:
    """The local authorization list (id tags are shown as their hashes)."""
    settings = settings_from(config_file)
    conn = storeview.open_readonly(settings.store.path)
    try:
        version = storeview.auth_list_version(conn)
        entries = [] if version_only else storeview.auth_list(conn)
        cached = storeview.cache_size(conn)
    finally:
        conn.close()
    data: dict[str, Any] = {"version": version, "cache_entries": cached}
    if not version_only:
        data["entries"] = entries

    def human() -> None:
        out = console()
        out.print(f"local list version {version}, {cached} cache entries")
        if version_only:
            return
        from rich.table import Table  # noqa: PLC0415

        table = Table()
        for col in ("id tag hash", "status", "expires"):
            table.add_column(col)
        for e in entries:
            table.add_row(e["id_tag_hash"][:16] + "…", e["status"], e["expires_at"] or "never")
        out.print(table)

    emit(as_json, data, human)
