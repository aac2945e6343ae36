"""``chargemitra-agent meter read|watch|raw|scan``."""

from __future__ import annotations

import asyncio
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

import click

from edge_agent.config import (
    AgentSettings,
    BusTiming,
    MeterSettings,
    SerialLink,
    TcpLink,
    build,
    register_map_of,
)
from edge_agent.errors import AgentError, ConfigError, InputError, MeterError, PortBusy
from edge_agent.meters.registers import check_register_range
from edge_agent.tech import daemon
from edge_agent.tech.direct import DirectSite, check_port, open_bus
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
from edge_agent.tech.quantities import name_of, unit_of
from edge_agent.tech.selection import config_option, pick_meters, settings_from
from protocols.meters import decode_registers

DIRECT_NOTE = "the agent is not running: reading the bus directly"


@click.group()
def meter() -> None:
    """Read the energy meters: once, live, raw registers, or scan a line for them."""


# --- reading ----------------------------------------------------------------------------------


async def _read_direct(
    settings: AgentSettings, meters: list[MeterSettings]
) -> list[dict[str, Any]]:
    out = []
    async with DirectSite(settings) as site:
        for m in meters:
            entry: dict[str, Any] = {"meter_id": m.id, "model": m.model, "unit": m.unit_id}
            try:
                values = await site.read(m.id)
                entry.update(values={q.value: v for q, v in values.items()}, error=None)
            except MeterError as exc:  # the port's own problems (InputError) end the command
                entry.update(values=None, error=str(exc), kind=getattr(exc, "kind", "garbage"))
            out.append(entry)
    return out


def _read(settings: AgentSettings, meters: list[MeterSettings]) -> tuple[str, list[dict[str, Any]]]:
    socket = settings.control.socket_path
    status = daemon.status(socket)
    if status is not None:
        wanted = {m.id for m in meters}
        answer = daemon.call(socket, {"cmd": "meter_read"})
        return "agent", [r for r in answer["meters"] if r["meter_id"] in wanted]
    return "bus", asyncio.run(_read_direct(settings, meters))


def _fmt(value: float, quantity: str) -> str:
    if quantity.endswith("_wh"):
        return f"{value / 1000:,.3f} kWh"
    unit = unit_of(quantity)
    digits = 3 if "factor" in quantity else (2 if unit == "Hz" else 1)
    return f"{value:,.{digits}f} {unit}".rstrip()


def _table(readings: list[dict[str, Any]], title: str, caption: str | None = None) -> Any:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=title, caption=caption)
    table.add_column("quantity", no_wrap=True)
    for r in readings:
        table.add_column(f"{r['meter_id']} ({r.get('model', '?')})", justify="right")
    quantities: list[str] = []
    for r in readings:
        for q in r.get("values") or {}:
            if q not in quantities:
                quantities.append(q)
    for q in quantities:
        table.add_row(
            name_of(q),
            *[
                _fmt(r["values"][q], q) if r.get("values") and q in r["values"] else "-"
                for r in readings
            ],
        )
    errors = [r for r in readings if r.get("error")]
    if errors:
        table.add_row(
            "[red]error[/]", *[f"[red]{escape(r.get('error') or '')}[/]" for r in readings]
        )
    return table


@meter.command("read")
@config_option
@click.option("--meter", "meter_id", help="Only this meter (its id in the config).")
@json_option
@boundary
def meter_read(config_file: Path | None, meter_id: str | None, as_json: bool) -> None:
    """One decoded reading of each meter, with units. Exit 2 if a meter does not answer."""
    settings = settings_from(config_file)
    meters = pick_meters(settings, meter_id)
    via, readings = _read(settings, meters)
    if via == "bus":
        note(DIRECT_NOTE)
    emit(
        as_json,
        {"via": via, "meters": readings},
        lambda: console().print(_table(readings, f"meter read (via {via})")),
    )
    raise SystemExit(EXIT_FAIL if any(r.get("error") for r in readings) else EXIT_OK)


@meter.command("watch")
@config_option
@click.option("--meter", "meter_id", help="Only this meter.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many refreshes.")
@json_option
@boundary
def meter_watch(
    *,
    config_file: Path | None,
    meter_id: str | None,
    interval: float,
    count: int | None,
    as_json: bool,
) -> None:
    """A live table of the meters, refreshed every --interval s, until Ctrl-C.

    With --json: one JSON document per refresh, one per line.
    """
    settings = settings_from(config_file)
    meters = pick_meters(settings, meter_id)
    direct = daemon.status(settings.control.socket_path) is None
    n = 0
    try:
        if as_json:
            while count is None or n < count:
                via, readings = _read(settings, meters)
                if direct and n == 0:
                    note(DIRECT_NOTE)  # after the first read: a busy port is the one line
                click.echo(dumps({"via": via, "at": time.time(), "meters": readings}))
                n += 1
                if count is None or n < count:
                    time.sleep(interval)
            return
        from rich.live import Live  # noqa: PLC0415

        via, readings = _read(settings, meters)
        if direct:
            note(DIRECT_NOTE)
        title = f"meter watch (via {via})"
        caption = f"every {interval:g} s; Ctrl-C to stop"
        table = _table(readings, title, caption)
        with Live(table, console=console(), auto_refresh=False) as live:
            n = 1
            while count is None or n < count:
                time.sleep(interval)
                via, readings = _read(settings, meters)
                live.update(_table(readings, title, caption), refresh=True)
                n += 1
    except KeyboardInterrupt:
        pass


# --- raw registers ----------------------------------------------------------------------------


def _decode_words(words: list[int], address: int) -> list[dict[str, Any]]:
    rows = []
    for i, word in enumerate(words):
        row: dict[str, Any] = {
            "address": address + i,
            "hex": f"0x{word:04X}",
            "uint16": word,
            "int16": word - 0x10000 if word & 0x8000 else word,
        }
        if i + 1 < len(words):
            pair = struct.pack(">HH", word, words[i + 1])
            row["float32"] = struct.unpack(">f", pair)[0]
            row["uint32"] = struct.unpack(">I", pair)[0]
        rows.append(row)
    return rows


def _raw_link(
    settings: AgentSettings | None,
    meter_id: str | None,
    port: str | None,
    baud: int | None,
    parity: str | None,
) -> tuple[SerialLink | TcpLink, MeterSettings | None]:
    if port is not None:
        # build, not SerialLink(...): only decoding checks what the technician typed.
        link = build(
            SerialLink,
            {"port": port, "baud": baud or 9600, "parity": parity or "N"},
            source="--port/--baud/--parity",
        )
        return link, None
    if settings is None:
        raise InputError(
            "give --port (no usable configuration to take the link from)", field="port"
        )
    chosen = pick_meters(settings, meter_id)[0]
    return chosen.link, chosen


@meter.command("raw")
@config_option
@click.option(
    "--meter", "meter_id", help="Use this meter's link (and unit, map) [default: the first]."
)
@click.option("--unit", type=click.IntRange(1, 247), help="Unit id [default: the meter's].")
@click.option("--fc", type=int, default=4, show_default=True, help="3 holding, 4 input registers.")
@click.option("--addr", type=int, required=True, help="First register address (0-based).")
@click.option("--count", type=int, default=2, show_default=True, help="Registers (1-125).")
@click.option("--port", help="Another serial port instead of the meter's link.")
@click.option(
    "--baud",
    type=click.Choice(["1200", "2400", "4800", "9600", "19200", "38400", "57600", "115200"]),
    help="With --port [default: 9600].",
)
@click.option("--parity", type=click.Choice(["N", "E", "O"]), help="With --port [default: N].")
@json_option
@boundary
def meter_raw(
    *,
    config_file: Path | None,
    meter_id: str | None,
    unit: int | None,
    fc: int,
    addr: int,
    count: int,
    port: str | None,
    baud: str | None,
    parity: str | None,
    as_json: bool,
) -> None:
    """Read registers as they are: hex, uint16/int16, float32/uint32 pairs, and the quantities
    the meter's register map puts there."""
    check_register_range(fc, addr, count)
    settings: AgentSettings | None
    try:
        settings = settings_from(config_file)
    except ConfigError:
        if port is None:
            raise
        settings = None
    link, chosen = _raw_link(settings, meter_id, port, int(baud) if baud else None, parity)
    unit_id = unit if unit is not None else (chosen.unit_id if chosen else 1)
    via = "bus"
    status = None if settings is None else daemon.status(settings.control.socket_path)
    if status is not None and settings is not None:
        agent_keys = {m.link.bus_key for m in settings.meters}
        if link.bus_key in agent_keys:
            answer = daemon.call(
                settings.control.socket_path,
                {
                    "cmd": "meter_raw",
                    "bus": link.bus_key,
                    "unit": unit_id,
                    "fc": fc,
                    "addr": addr,
                    "count": count,
                },
            )
            words, via = [int(w) for w in answer["registers"]], "agent"
        else:
            words = asyncio.run(
                _raw_direct(link, settings.bus, unit=unit_id, fc=fc, addr=addr, count=count)
            )
    else:
        timing = settings.bus if settings is not None else BusTiming(timeout_s=1.0)
        words = asyncio.run(_raw_direct(link, timing, unit=unit_id, fc=fc, addr=addr, count=count))
        if settings is not None:
            note(DIRECT_NOTE)
    named: dict[str, float] = {}
    if chosen is not None and chosen.unit_id == unit_id:
        register_map = register_map_of(chosen)  # the site's own map_file too
        if register_map.function.code == fc:
            named = {q.value: v for q, v in decode_registers(register_map, addr, words).items()}
    data = {
        "via": via,
        "unit": unit_id,
        "fc": fc,
        "addr": addr,
        "count": count,
        "registers": words,
        "hex": " ".join(f"{w:04X}" for w in words),
        "words": _decode_words(words, addr),
        "quantities": named,
    }
    emit(as_json, data, lambda: _print_raw(data))


async def _raw_direct(
    link: SerialLink | TcpLink, timing: BusTiming, *, unit: int, fc: int, addr: int, count: int
) -> list[int]:
    async with open_bus(link, timing) as bus:
        return list(await bus.read_registers(unit, fc, addr, count))


def _print_raw(data: dict[str, Any]) -> None:
    from rich.table import Table  # noqa: PLC0415

    out = console()
    out.print(
        f"unit {data['unit']} fc {data['fc']} @ {data['addr']} x{data['count']} "
        f"(via {data['via']}): {data['hex']}"
    )
    table = Table()
    for col in ("address", "hex", "uint16", "int16", "float32 (with next)", "uint32"):
        table.add_column(col, justify="right")
    for row in data["words"]:
        f32 = row.get("float32")
        table.add_row(
            str(row["address"]),
            row["hex"],
            str(row["uint16"]),
            str(row["int16"]),
            "" if f32 is None else f"{f32:.6g}",
            str(row.get("uint32", "")),
        )
    out.print(table)
    for q, v in data["quantities"].items():
        out.print(f"{q} = {v:.6g}")


# --- scanning ---------------------------------------------------------------------------------


@meter.command("scan")
@config_option
@click.option("--port", required=True, help="The serial port, e.g. /dev/ttyUSB0.")
@click.option(
    "--bauds",
    default="9600,19200,2400,4800,38400,1200,57600,115200",
    show_default=True,
    help="Baud rates to try, in order.",
)
@click.option("--parities", default="N,E,O", show_default=True, help="Parities to try.")
@click.option("--units", default="1-247", show_default=True, help="Unit ids, e.g. 1-10,20.")
@click.option(
    "--timeout-ms",
    type=click.FloatRange(min=5, max=5000),
    help="Probe timeout per unit [default: from the baud rate].",
)
@json_option
@boundary
def meter_scan(
    *,
    config_file: Path | None,
    port: str,
    bauds: str,
    parities: str,
    units: str,
    timeout_ms: float | None,
    as_json: bool,
) -> None:
    """Find meters on a serial line: every baud rate, parity and unit id, then name each
    device's model from the register maps. Needs the port to itself (stop the agent).

    Exit 0 when a meter was identified, 1 when none was.
    """
    from edge_agent.tech.scan import parse_bauds, parse_parities, parse_units, scan  # noqa: PLC0415

    baud_list, parity_list, unit_list = (
        parse_bauds(bauds),
        parse_parities(parities),
        parse_units(units),
    )
    _refuse_agent_port(config_file, port)
    check_port(port)
    total = len(baud_list) * len(parity_list) * len(unit_list)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415

    progress = Progress(
        TextColumn("scanning {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=_stderr_console(),
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    with progress:
        task = progress.add_task(port, total=total)

        probed = [0]

        def step(what: str) -> None:
            probed[0] += 1
            progress.update(task, advance=1, description=what)

        found = asyncio.run(
            scan(
                port,
                bauds=baud_list,
                parities=parity_list,
                units=unit_list,
                timeout_s=None if timeout_ms is None else timeout_ms / 1000,
                progress=step,
            )
        )
    data = {"port": port, "probed": probed[0], "found": [f.to_json() for f in found]}
    emit(as_json, data, lambda: _print_scan(data))
    raise SystemExit(EXIT_OK if any(f.model for f in found) else EXIT_WARN)


def _stderr_console() -> Any:
    from rich.console import Console  # noqa: PLC0415

    return Console(stderr=True)


def _refuse_agent_port(config_file: Path | None, port: str) -> None:
    try:
        settings = settings_from(config_file)
    except ConfigError:
        return  # scanning needs no configuration
    from edge_agent.tech.probes import serial_ports_of  # noqa: PLC0415

    # By the device itself: /dev/serial/by-id/… and /dev/ttyUSB0 are one port.
    agent_ports = {os.path.realpath(p) for p in serial_ports_of(settings)}
    if os.path.realpath(port) not in agent_ports:
        return
    try:
        status = daemon.status(settings.control.socket_path)
    except AgentError:
        status = None
    if status is not None:
        raise PortBusy(
            port,
            "in use by the running agent: stop it first (sudo systemctl stop chargemitra-agent)",
        )


def _print_scan(data: dict[str, Any]) -> None:
    from rich.table import Table  # noqa: PLC0415

    out = console()
    found = data["found"]
    if not found:
        out.print(f"no device answered on {data['port']} ({data['probed']} probes)")
        return
    table = Table(title=f"meter scan {data['port']}")
    for col in ("unit", "baud", "parity", "model", "voltage", "power", "energy"):
        table.add_column(col)
    for f in found:
        s = f["summary"]
        model = f["model"] or (
            " or ".join(f["candidates"]) + "?"
            if f["candidates"]
            else "[dim]unknown device (not a known meter)[/]"
        )
        table.add_row(
            str(f["unit"]),
            str(f["baud"]),
            f["parity"],
            model,
            f"{s['voltage_l1_v']:.1f} V" if "voltage_l1_v" in s else "",
            f"{s['power_w']:.0f} W" if "power_w" in s else "",
            f"{s['energy_import_wh'] / 1000:.3f} kWh" if "energy_import_wh" in s else "",
        )
    out.print(table)
