"""``chargemitra-agent sync status|flush``: what waits in the outbox and the OCPP queue,
and sending it now."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from edge_agent.config import AgentSettings
from edge_agent.errors import ControlError
from edge_agent.tech import csms, daemon, storeview
from edge_agent.tech.acks import describe, facts_from, stalled
from edge_agent.tech.output import (
    EXIT_OK,
    EXIT_WARN,
    boundary,
    console,
    emit,
    escape,
    json_option,
    note,
)
from edge_agent.tech.selection import config_option, settings_from


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
    return {
        "rows": backlog.rows,
        "oldest_age_s": age,
        "thinned_readings": backlog.thinned_readings,
        "thinned_batches": backlog.thinned_batches,
        "ocpp_queue": ocpp_queue.to_json(),
    }


@sync.command("status")
@config_option
@json_option
@boundary
def sync_status(config_file: Path | None, as_json: bool) -> None:
    """Connected or not, backlog, acks pending, last ack; the OCPP link and its queue. Exit 1
    when a configured link is down, or when messages wait and the cloud has acknowledged
    nothing for ``mqtt.ack_warn_after_s``."""
    settings = settings_from(config_file)
    data: dict[str, Any] = {"configured": settings.mqtt is not None, "backlog": _backlog(settings)}
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
        out.print(
            f"cloud link: {state}" + (f" ({data['last_error']})" if data.get("last_error") else "")
        )
        b = data["backlog"]
        age = "" if b["oldest_age_s"] is None else f", oldest {b['oldest_age_s']:.0f} s"
        out.print(f"backlog: {b['rows']} message(s){age}")
        if data.get("agent_running"):
            last = data.get("last_ack_at") or "never"
            out.print(
                f"acks pending: {data.get('awaiting_ack', 0)}, last ack: {last}, "
                f"published {data.get('published')}"
            )
            if dropped := data.get("dropped_no_subscribers"):
                # Resent, so nothing is lost; but many mean cloud ingest is not subscribed.
                out.print(
                    f"dropped by the broker, no cloud subscriber: {dropped} message(s), "
                    "each resent (is cloud ingest running?)"
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
            out.print(
                f"OCPP queue: {q['rows']} transaction message(s){age}"
                + (f" ({parts})" if parts else "")
            )

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
    return {
        "configured": True,
        "connected": False,
        "url": settings.ocpp.url,
        **live,
        "queue": queue,
    }


@sync.command("flush")
@config_option
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.5),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the outbox to empty.",
)
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
