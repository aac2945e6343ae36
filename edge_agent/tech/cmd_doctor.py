"""``chargemitra-agent doctor``: the checklist a technician runs first."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from edge_agent.config import AgentSettings, config_path, load_config
from edge_agent.errors import ConfigError
from edge_agent.tech import acks, checks, csms, daemon, probes
from edge_agent.tech.checks import Level, Report
from edge_agent.tech.output import boundary, console, emit, json_option

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML file (default: $CHARGEMITRA_AGENT_CONFIG or /etc/chargemitra/agent.toml).",
)

_STYLE = {Level.PASS: "green", Level.WARN: "yellow", Level.FAIL: "bold red", Level.SKIP: "dim"}


async def _gather(settings: AgentSettings, report: Report, min_free_bytes: int) -> None:
    status = await daemon.astatus(settings.control.socket_path)
    running = status is not None
    if not running:
        report.notes.append(
            "the agent is not running: the bus, relay and broker were used "
            "directly (relays commanded open)"
        )
    store = probes.store_facts(settings)
    report.add(checks.check_store(store))
    where, free, total = probes.disk_usage(settings)
    report.add(checks.check_disk(where, free, total, min_free_bytes))

    ports = [probes.port_facts(p, agent_running=running) for p in probes.serial_ports_of(settings)]
    for port in ports:
        report.add(checks.check_port(port))
    bad_ports = {p.port for p in ports if p.problem is not None}

    if running:
        meters = probes.meters_from_agent(
            settings, await daemon.acall(settings.control.socket_path, {"cmd": "meter_read"})
        )
    else:
        meters = await probes.meters_direct(settings, bad_ports)
    for meter in meters:
        report.add(checks.check_meter(meter))

    if running:
        assert status is not None
        states = await daemon.acall(settings.control.socket_path, {"cmd": "relay_state"})
        relays = probes.relays_from_agent(settings, status, states, meters)
    else:
        relays = await probes.relays_direct(settings, meters)
    for relay in relays:
        report.add(checks.check_relay(relay))

    synced, source = probes.clock_state()
    report.add(checks.check_clock(synced, settings.clock.trust, source))

    if running:
        sync = await daemon.aask(settings.control.socket_path, {"cmd": "sync_status"})
        broker = probes.broker_from_agent(settings, sync if isinstance(sync, dict) else None)
    else:
        broker = await probes.probe_broker(settings)
    report.add(checks.check_broker(broker))
    if settings.ocpp is not None:  # the OCPP uplink is rare: no line at all without it
        if running:
            answer = await daemon.aask(settings.control.socket_path, {"cmd": "ocpp_status"})
            csms_link = csms.csms_from_agent(settings, answer if isinstance(answer, dict) else None)
        else:
            csms_link = await csms.probe_csms(settings)
        report.add(csms.check_csms(csms_link))

    backlog = probes.backlog_facts(settings)
    if backlog is not None:
        report.add(checks.check_backlog(*backlog))
    if running and backlog is not None:
        # Only the running agent knows when it last heard an ack (edge_agent/tech/acks.py).
        warn_after_s = None if settings.mqtt is None else settings.mqtt.ack_warn_after_s
        ack_facts = acks.facts_from(
            warn_after_s, sync if isinstance(sync, dict) else None, backlog[0], backlog[1]
        )
        if ack_facts is not None:
            report.add(acks.check_acks(ack_facts))
    report.add(checks.check_daemon(probes.daemon_facts(settings, status)))
    report.add(checks.check_versions(probes.versions(store.schema_version or None)))


def _print(report: Report) -> None:
    from rich.markup import escape  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    out = console()
    table = Table(title="chargemitra-agent doctor", show_lines=False, expand=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("detail", overflow="fold")
    table.add_column("remedy", overflow="fold")
    for check in report.checks:
        table.add_row(
            f"[{_STYLE[check.level]}]{check.level.value}[/]",
            escape(check.name),
            escape(check.detail),
            escape(check.remedy),
        )
    out.print(table)
    for note in report.notes:
        out.print(f"note: {escape(note)}")
    result = report.to_json()["result"]
    out.print(f"result: {result}")


@click.command()
@config_option
@click.option(
    "--min-free-mb",
    type=click.FloatRange(min=0),
    default=100.0,
    show_default=True,
    help="Fail when the store's filesystem has less free space than this.",
)
@json_option
@boundary
def doctor(config_file: Path | None, min_free_mb: float, as_json: bool) -> None:
    """Check everything a charger needs; PASS/WARN/FAIL with a remedy for each.

    Exit 0 when all pass, 1 with warnings only, 2 on any failure.
    """
    path = config_path(config_file)
    report = Report()
    try:
        settings = load_config(path)
    except ConfigError as exc:
        report.add(checks.check_config(str(path), str(exc), ""))
    else:
        report.add(
            checks.check_config(
                str(path),
                None,
                f"device {settings.device_id}, {len(settings.meters)} meter(s), "
                f"{len(settings.connectors)} connector(s)",
            )
        )
        asyncio.run(_gather(settings, report, int(min_free_mb * 2**20)))
    data: dict[str, Any] = report.to_json()
    emit(as_json, data, lambda: _print(report))
    raise SystemExit(checks.exit_code(report.checks))
