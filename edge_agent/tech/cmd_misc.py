"""``chargemitra-agent auth|session|sync|config show|logs``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from edge_agent.config import AgentSettings, settings_to_dict
from edge_agent.errors import ControlError, InputError
from edge_agent.tech import LOG_ENV, csms, daemon, storeview
from edge_agent.tech.acks import describe, facts_from, stalled
from edge_agent.tech.authcheck import KINDS, check, guess_kind
from edge_agent.tech.common import config_option, pick_connector, settings_from
from edge_agent.tech.output import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_WARN,
    boundary,
    console,
    dumps,
    emit,
    escape,
    json_option,
    note,
)
from protocols.enums import AuthorizationStatus

# --- auth -------------------------------------------------------------------------------------


@click.group()
def auth() -> None:
    """Authorization: what would be decided for a credential; the local list."""


@auth.command("check")
@config_option
@click.argument("credential")
@click.option(
    "--kind", type=click.Choice(KINDS), default="auto", show_default=True,
    help="What CREDENTIAL is (auto: v4.public.… token, 8 digits PIN, else id tag).",
)  # fmt: skip
@click.option("--connector", type=int, help="The connector [default: the only one].")
@json_option
@boundary
def auth_check(
    config_file: Path | None, credential: str, kind: str, connector: int | None, as_json: bool
) -> None:  # fmt: skip
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
            conn, settings, credential, kind=kind, connector=cid, now=datetime.now(UTC),
            clock_synced=bool(synced), connector_busy=busy,
        )  # fmt: skip
    finally:
        conn.close()
    resolved = guess_kind(credential) if kind == "auto" else kind
    data = {
        "status": decision.status.value, "reason": decision.reason, "kind": decision.kind.value,
        "ref": decision.ref, "connector": cid, "recorded": False,
        "expires_at": decision.expires_at,
    }  # fmt: skip
    if resolved == "pin" and status is not None:
        data["note"] = "the keypad lockout lives in the agent and is not reflected here"

    def human() -> None:
        colour = "green" if decision.accepted else "red"
        console().print(f"[{colour}]{decision.status.value}[/]: {escape(decision.reason)}")
        console().print(f"{decision.kind.value} {decision.ref[:24]} on connector {cid} "
                        "(nothing recorded, nothing used up)")  # fmt: skip

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


# --- sessions ---------------------------------------------------------------------------------


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
            table.add_row(r["session_id"], str(r["connector"]), str(r["started_at"])[:19],
                          "open" if r["open"] else str(r["stopped_at"])[:19],
                          f"{r['energy_wh']} Wh", r["stop_reason"] or "")  # fmt: skip
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
        raise InputError(f"session {session_id} already stopped ({row['stop_reason']})",
                         field="session_id")  # fmt: skip
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


# --- sync -------------------------------------------------------------------------------------


@click.group()
def sync() -> None:
    """The cloud link: its state and the outbox backlog."""


def _backlog(settings: AgentSettings) -> dict[str, Any]:
    conn = storeview.open_readonly(settings.store.path)
    try:
        backlog = storeview.backlog(conn)
        ocpp_queue = csms.ocpp_queue(conn)
    finally:
        conn.close()
    age = None
    if backlog.oldest is not None:
        age = max(0.0, (datetime.now(UTC) - backlog.oldest).total_seconds())
    return {"rows": backlog.rows, "oldest_age_s": age, "thinned_readings":
            backlog.thinned_readings, "thinned_batches": backlog.thinned_batches,
            "ocpp_queue": ocpp_queue.to_json()}  # fmt: skip


@sync.command("status")
@config_option
@json_option
@boundary
def sync_status(config_file: Path | None, as_json: bool) -> None:
    """Connected or not, backlog, acks pending, last ack; the OCPP link and its queue. Exit 1
    when a configured link is down, or when messages wait and the cloud has acknowledged
    nothing for ``mqtt.ack_warn_after_s``."""
    settings = settings_from(config_file)
    data: dict[str, Any] = {"configured": settings.mqtt is not None,
                            "backlog": _backlog(settings)}  # fmt: skip
    data["ocpp"] = _ocpp(settings, data["backlog"].pop("ocpp_queue"))
    answer = daemon.ask(settings.control.socket_path, {"cmd": "sync_status"})
    if answer is None:
        note("the agent is not running: backlog from the store only")
        data.update(agent_running=False, connected=False)
    else:
        data.update(agent_running=True, **{k: v for k, v in answer.items() if k != "ok"})
    b = data["backlog"]
    warn_after_s = None if settings.mqtt is None else settings.mqtt.ack_warn_after_s
    acks = facts_from(warn_after_s, answer, b["rows"], b["oldest_age_s"])
    data["ack_stalled"] = acks is not None and stalled(acks)

    def human() -> None:
        out = console()
        if not data["configured"]:
            out.print("no [mqtt] table: standalone, nothing is sent")
        state = "[green]connected[/]" if data.get("connected") else "[red]not connected[/]"
        out.print(f"cloud link: {state}" + (f" ({data['last_error']})" if data.get(
            "last_error") else ""))  # fmt: skip
        b = data["backlog"]
        age = "" if b["oldest_age_s"] is None else f", oldest {b['oldest_age_s']:.0f} s"
        out.print(f"backlog: {b['rows']} message(s){age}")
        if data.get("agent_running"):
            last = data.get("last_ack_at") or "never"
            out.print(
                f"acks pending: {data.get('awaiting_ack', 0)}, last ack: {last}, "
                f"published {data.get('published')}"
            )
        if acks is not None and data["ack_stalled"]:
            out.print(f"[yellow]WARN[/]: {escape(describe(acks))}")
        o = data["ocpp"]
        if o["configured"]:
            state = "[green]connected[/]" if o["connected"] else "[red]not connected[/]"
            error = f" ({escape(o['last_error'])})" if o.get("last_error") else ""
            registration = f", {o['registration']}" if o.get("registration") else ""
            out.print(f"OCPP link: {state}{registration} to {escape(o['url'])}{error}")
            q = o["queue"]
            age = "" if q["oldest_age_s"] is None else f", oldest {q['oldest_age_s']:.0f} s"
            parts = ", ".join(f"{n} {a}" for a, n in sorted(q["by_action"].items()))
            out.print(f"OCPP queue: {q['rows']} transaction message(s){age}"
                      + (f" ({parts})" if parts else ""))  # fmt: skip

    emit(as_json, data, human)
    ocpp_ok = data["ocpp"]["connected"] or not data["ocpp"]["configured"]
    linked = (data.get("connected") or not data["configured"]) and ocpp_ok
    raise SystemExit(EXIT_OK if linked and not data["ack_stalled"] else EXIT_WARN)


def _ocpp(settings: AgentSettings, queue: dict[str, Any]) -> dict[str, Any]:
    """The OCPP uplink as ``sync status`` shows it: the agent's link state, the store's
    queue."""
    if settings.ocpp is None:
        return {"configured": False, "connected": False, "queue": queue}
    answer = daemon.ask(settings.control.socket_path, {"cmd": "ocpp_status"})
    live = {k: v for k, v in (answer or {}).items() if k not in {"ok", "queued"}}
    return {"configured": True, "connected": False, "url": settings.ocpp.url, **live,
            "queue": queue}  # fmt: skip


@sync.command("flush")
@config_option
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.5), default=30.0,
              show_default=True, help="Seconds to wait for the outbox to empty.")  # fmt: skip
@json_option
@boundary
def sync_flush(config_file: Path | None, timeout_s: float, as_json: bool) -> None:
    """Drain the outbox now and wait until it is empty (exit 0), still draining at the
    timeout (1), or impossible: agent stopped or link down (2)."""
    settings = settings_from(config_file)
    socket = settings.control.socket_path
    answer = daemon.call(socket, {"cmd": "sync_flush"})
    if not answer.get("connected"):
        why = answer.get("last_error") or "not connected"
        raise ControlError(
            f"the cloud link is down ({why}): nothing can be sent; see `sync status`",
            cmd="sync_flush",
        )
    deadline = time.monotonic() + timeout_s
    start_rows = _backlog(settings)["rows"]
    rows = start_rows
    while rows and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = _backlog(settings)["rows"]
    data = {"drained": rows == 0, "rows_before": start_rows, "rows_left": rows}
    emit(
        as_json,
        data,
        lambda: console().print(
            f"outbox: {start_rows} → {rows} message(s)" + ("" if rows == 0 else " (still draining)")
        ),
    )
    raise SystemExit(EXIT_OK if rows == 0 else EXIT_WARN)


# --- config show ------------------------------------------------------------------------------

#: A key names a secret when its last word is one of these (``password``, ``api_token``,
#: ``pin_secret``, ``private_key``): the noun says what the value *is*. A key that merely
#: mentions one (``token_leeway_s`` is seconds, ``pin_secret_file`` a path) is not a secret,
#: and the technician needs to see it.
_SECRET_WORDS = frozenset(
    {"password", "passwd", "passphrase", "secret", "token", "credential", "credentials",
     "apikey"}
)  # fmt: skip
_SECRET_KEYS = re.compile(r"(^|_)(private|secret|api|access|signing)_key$")
REDACTED = "***"


def is_secret_name(key: str) -> bool:
    """Whether a setting called ``key`` holds a secret value (pure)."""
    name = key.lower().replace("-", "_")
    return name.rsplit("_", 1)[-1] in _SECRET_WORDS or _SECRET_KEYS.search(name) is not None


def redact(data: Any, key: str = "") -> Any:
    """Secrets replaced by ``***`` (pure), by :func:`is_secret_name`. A *path* to a secret
    file is not a secret and stays visible: the technician needs to know which file to
    check."""
    if isinstance(data, dict):
        return {k: redact(v, k) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [redact(v, key) for v in data]
    if key and is_secret_name(key) and data is not None:
        return REDACTED
    return data


def show_config(config_file: Path | None, as_json: bool) -> None:
    """Print the effective configuration (cloud.toml merged, defaults filled in)."""
    settings = settings_from(config_file)
    data = redact(settings_to_dict(settings))

    emit(as_json, data, lambda: console().print_json(dumps(data)))


# --- logs -------------------------------------------------------------------------------------

UNIT = "chargemitra-agent"


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        raise InputError(f"cannot read log file {path}: {exc.strerror}", field="file") from exc
    return text.splitlines()[-lines:]


def _follow(path: Path, as_json: bool) -> None:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        while True:
            line = f.readline()
            if not line:
                time.sleep(0.2)
                continue
            text = line.decode("utf-8", "replace").rstrip("\n")
            click.echo(dumps({"line": text}) if as_json else text)


def show_logs(file: Path | None, lines: int, follow: bool, as_json: bool) -> None:
    path = file or (Path(os.environ[LOG_ENV]) if os.environ.get(LOG_ENV) else None)
    if path is not None:
        tail = _tail(path, lines)
        if as_json:
            for line in tail:
                click.echo(dumps({"line": line}))
        else:
            for line in tail:
                click.echo(line)
        if follow:
            try:
                _follow(path, as_json)
            except KeyboardInterrupt:
                return
        return
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        raise InputError(
            f"no systemd journal here: give the agent's log file with --file or ${LOG_ENV}",
            field="file",
        )
    argv = [journalctl, "-u", UNIT, "-n", str(lines), "--no-pager"]
    if follow:
        argv.append("-f")
    if as_json:
        argv += ["-o", "json"]
    try:
        code = subprocess.call(argv)  # noqa: S603 -- fixed argv, no shell
    except KeyboardInterrupt:
        return
    raise SystemExit(EXIT_OK if code == 0 else EXIT_FAIL)
