"""``doctor``'s I/O: gather the facts its pure checks (:mod:`edge_agent.tech.checks`) judge.

Beside a running agent everything live is asked of the agent (it owns the bus, the relay and
the cloud link); with the agent stopped the CLI uses the hardware itself — reading meters,
commanding relays *open* (the safe state) and reading them back, and making a test
connection to the broker under its own client id (``<device>-doctor``, so the agent's
persistent session and queued commands are left alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.config import AgentSettings, ModbusCoilRelay, SerialLink
from edge_agent.errors import (
    BusError,
    BusFault,
    InputError,
    MeterError,
    PortBusy,
    RelayError,
    StoreError,
)
from edge_agent.heartbeat import HEARTBEAT_STALE_S, heartbeat_path, pid_alive, read_heartbeat
from edge_agent.tech import storeview
from edge_agent.tech.checks import (
    BrokerFacts,
    DaemonFacts,
    MeterFacts,
    PortFacts,
    RelayFacts,
    StoreFacts,
)
from edge_agent.tech.direct import (
    check_port,
    port_of,
    read_meter,
    read_meter_blocks,
    serial_ports,
)
from protocols.meters import Quantity

#: Overrides the kernel's answer to "is the clock synchronised?" ("1" or "0"): for tests, and
#: for containers where adjtimex says nothing useful. Only doctor reads it.
CLOCK_ENV = "CHARGEMITRA_CLOCK_SYNCED"


def clock_state() -> tuple[bool | None, str]:
    forced = os.environ.get(CLOCK_ENV)
    if forced in ("0", "1"):
        return forced == "1", f"{CLOCK_ENV}={forced}"
    from edge_agent.clock import KernelClockState  # noqa: PLC0415

    return KernelClockState()(), "kernel adjtimex"


def store_facts(settings: AgentSettings) -> StoreFacts:
    path = settings.store.path
    try:
        conn = storeview.open_readonly(path)
    except StoreError as exc:
        return StoreFacts(str(path), error=str(exc), max_bytes=settings.store.max_bytes)
    try:
        stats = storeview.stats(conn, path)
    except (StoreError, OSError) as exc:
        return StoreFacts(str(path), error=str(exc), max_bytes=settings.store.max_bytes)
    finally:
        conn.close()
    return StoreFacts(
        str(path),
        None,
        stats.integrity,
        stats.file_bytes,
        stats.used_bytes,
        settings.store.max_bytes,
        stats.schema_version,
    )


def disk_usage(settings: AgentSettings) -> tuple[str, int, int]:
    """(directory, free bytes, total bytes) of the filesystem holding the store."""
    directory = settings.store.path.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    usage = shutil.disk_usage(directory)
    return str(directory), usage.free, usage.total


def port_facts(port: str, *, agent_running: bool) -> PortFacts:
    if agent_running:
        # The agent has it open: opening it too would steal its bytes. Look, do not touch.
        if not Path(port).exists():
            return PortFacts(port, "missing", f"{port} does not exist")
        if not os.access(port, os.R_OK | os.W_OK):
            from edge_agent.tech.direct import dialout_hint  # noqa: PLC0415

            return PortFacts(
                port, "permission", f"no read/write permission on {port}", dialout_hint(port)
            )
        return PortFacts(port, checked_by_stat_only=True)
    try:
        check_port(port)
    except PortBusy as exc:
        return PortFacts(port, "busy", str(exc))
    except InputError as exc:
        text = str(exc)
        kind = (
            "missing"
            if "does not exist" in text
            else ("permission" if "permission" in text else "other")
        )
        return PortFacts(port, kind, text, text.split(": ", 1)[-1] if kind == "permission" else "")
    return PortFacts(port)


def _serial_of(link: object) -> tuple[int, str] | None:
    return (link.baud, link.parity) if isinstance(link, SerialLink) else None


async def meters_direct(settings: AgentSettings, bad_ports: set[str]) -> list[MeterFacts]:
    """Read each meter from the bus; a silent one on a serial line is looked for at the
    other speeds (a meter set to another baud is the commonest commissioning mistake)."""
    from edge_agent.tech.scan import PARITIES, STANDARD_BAUDS, find_meter  # noqa: PLC0415

    facts = []
    for meter in settings.meters:
        base: dict[str, Any] = {
            "meter_id": meter.id,
            "model": meter.model,
            "unit": meter.unit_id,
            "link": port_of(meter.link),
            "configured_serial": _serial_of(meter.link),
        }
        if isinstance(meter.link, SerialLink) and meter.link.port in bad_ports:
            facts.append(MeterFacts(**base, error="serial port unusable", port_problem=True))
            continue
        try:
            values, refused = await read_meter_blocks(meter, settings.bus)
        except BusError as exc:
            found = None
            if isinstance(meter.link, SerialLink) and exc.kind is BusFault.TIMEOUT:
                link = meter.link
                others = [
                    (b, p)
                    for b in STANDARD_BAUDS
                    for p in PARITIES
                    if (b, p) != (link.baud, link.parity)
                ]
                bauds = list(dict.fromkeys(b for b, _ in others))
                found = await find_meter(
                    link.port, meter.unit_id, bauds=bauds, parities=[link.parity, *PARITIES]
                )
            facts.append(MeterFacts(**base, error=str(exc), error_kind=exc.kind, found_at=found))
            continue
        except MeterError as exc:
            facts.append(MeterFacts(**base, error=str(exc), error_kind=BusFault.GARBAGE))
            continue
        facts.append(MeterFacts(**base, values=values, unavailable=tuple(refused)))
    return facts


def _unavailable(entries: object) -> tuple[tuple[str, tuple[str, ...], int], ...]:
    """The agent's ``unavailable_blocks`` (``meter_read`` answer) as MeterFacts holds them."""
    if not isinstance(entries, list):
        return ()
    return tuple(
        (
            str(e.get("block")),
            tuple(str(q) for q in e.get("quantities", [])),
            int(e.get("exception_code") or 0),
        )
        for e in entries
        if isinstance(e, dict)
    )


def values_from_json(data: dict[str, Any] | None) -> dict[Quantity, float] | None:
    if data is None:
        return None
    known = {q.value for q in Quantity}
    return {Quantity(k): float(v) for k, v in data.items() if k in known}


def meters_from_agent(settings: AgentSettings, answer: dict[str, Any]) -> list[MeterFacts]:
    by_id = {m["meter_id"]: m for m in answer.get("meters", [])}
    facts = []
    for meter in settings.meters:
        got = by_id.get(meter.id, {})
        facts.append(
            MeterFacts(
                meter.id,
                meter.model,
                meter.unit_id,
                port_of(meter.link),
                values=values_from_json(got.get("values")),
                error=got.get("error"),
                error_kind=got.get("kind"),
                configured_serial=_serial_of(meter.link),
                unavailable=_unavailable(got.get("unavailable_blocks")),
            )
        )
    return facts


def _power(settings: AgentSettings, meters: list[MeterFacts], connector: int) -> float | None:
    meter_id = settings.connector(connector).meter
    for m in meters:
        if m.meter_id == meter_id and m.values is not None:
            return m.values.get(Quantity.POWER_W)
    return None


async def relays_direct(settings: AgentSettings, meters: list[MeterFacts]) -> list[RelayFacts]:
    """Command each relay open (the safe state: no agent, no session), read it back, and
    re-read the meter: power through an open relay is a welded contactor."""
    from edge_agent.relay.drivers import make_driver  # noqa: PLC0415
    from edge_agent.tech.direct import open_bus  # noqa: PLC0415

    facts = []
    limit = settings.limits.stuck_relay_power_w
    for c in settings.connectors:
        driver = c.relay.driver
        if driver == "none":
            facts.append(RelayFacts(c.id, driver))
            continue
        buses = {}
        try:
            if isinstance(c.relay, ModbusCoilRelay):
                buses[c.relay.link.bus_key] = open_bus(c.relay.link, settings.bus)
            relay = make_driver(c.relay, connector=c.id, buses=buses)
            await relay.set_closed(False)
            read = await relay.is_closed()
        except (RelayError, InputError) as exc:
            facts.append(RelayFacts(c.id, driver, error=str(exc)))
            continue
        finally:
            for bus in buses.values():
                bus.close()
        power = _power(settings, meters, c.id)
        if power is not None and power > limit:
            # Re-read after the open command settled (a contactor takes tens of ms).
            await asyncio.sleep(settings.limits.stuck_relay_check_s / 4)
            meter = settings.meter(c.meter)
            with contextlib.suppress(MeterError):
                power = (await read_meter(meter, settings.bus)).get(Quantity.POWER_W, power)
        facts.append(
            RelayFacts(
                c.id,
                driver,
                read_closed=read,
                expected_closed=False,
                power_w=power,
                stuck_power_w=limit,
            )
        )
    return facts


def relays_from_agent(
    settings: AgentSettings,
    status: dict[str, Any],
    states: dict[str, Any],
    meters: list[MeterFacts],
) -> list[RelayFacts]:
    by_conn = {c["connector"]: c for c in status.get("connectors", [])}
    read = {c["connector"]: c for c in states.get("connectors", [])}
    facts = []
    for c in settings.connectors:
        s = by_conn.get(c.id, {})
        r = read.get(c.id, {})
        facts.append(
            RelayFacts(
                c.id,
                c.relay.driver,
                read_closed=r.get("read_closed"),
                error=r.get("error"),
                expected_closed=bool(s.get("relay_closed")),
                power_w=_power(settings, meters, c.id),
                stuck_power_w=settings.limits.stuck_relay_power_w,
                fault=s.get("fault"),
            )
        )
    return facts


def _where(settings: AgentSettings) -> str:
    mqtt = settings.mqtt
    return "" if mqtt is None else f"{mqtt.host}:{mqtt.port}"


def broker_from_agent(settings: AgentSettings, answer: dict[str, Any] | None) -> BrokerFacts:
    mqtt = settings.mqtt
    if mqtt is None:
        return BrokerFacts(configured=False)
    if answer is None:
        return BrokerFacts(
            configured=True,
            where=_where(settings),
            tls=mqtt.tls,
            error="the agent did not say",
            via="agent",
        )
    return BrokerFacts(
        configured=True,
        where=_where(settings),
        tls=mqtt.tls,
        connected=bool(answer.get("connected")),
        error=answer.get("last_error"),
        via="agent",
    )


async def probe_broker(settings: AgentSettings, *, timeout_s: float = 5.0) -> BrokerFacts:
    """Connect once as the stopped agent: its credentials and its client id (the cloud broker
    binds a device's client id to it and refuses any other), resuming its session with the
    agent's own session expiry and acknowledging nothing, so queued commands stay queued."""
    mqtt = settings.mqtt
    if mqtt is None:
        return BrokerFacts(configured=False)
    from edge_agent.errors import LinkError  # noqa: PLC0415
    from edge_agent.sync.link import LinkSettings, MqttLink, Will  # noqa: PLC0415
    from protocols.enums import MessageKind  # noqa: PLC0415
    from protocols.messages import encode_message, last_will  # noqa: PLC0415
    from protocols.topics import topic  # noqa: PLC0415

    where = _where(settings)
    password = None
    if mqtt.password_file is not None:
        try:
            password = mqtt.password_file.read_text("utf-8").strip()
        except OSError as exc:
            return BrokerFacts(
                configured=True,
                where=where,
                tls=mqtt.tls,
                error=f"cannot read mqtt.password_file: {exc}",
            )
    device = settings.device_id
    # The broker's ACL refuses a connection whose will it may not publish: the will is the
    # agent's own "offline" status, which is true while the agent is stopped.
    will = last_will(device, ts=datetime.now(UTC), clock_synced=False)
    try:
        link = MqttLink(
            LinkSettings(
                device_id=device,
                host=mqtt.host,
                port=mqtt.port,
                username=mqtt.username or device,
                password=password,
                tls=mqtt.tls,
                ca_file=mqtt.ca_file,
                cert_file=mqtt.cert_file,
                key_file=mqtt.key_file,
                keepalive_s=30,
                session_expiry_s=mqtt.session_expiry_s,
                connect_timeout_s=timeout_s,
                manual_ack=True,
            ),
            will=Will(topic(device, MessageKind.STATUS), encode_message(will)),
            on_message=lambda _t, _p: None,
            on_puback=lambda _mids: None,
            on_disconnect=lambda _r: None,
        )
        await link.connect()
    except (LinkError, TimeoutError) as exc:
        return BrokerFacts(
            configured=True, where=where, tls=mqtt.tls, error=str(exc) or "timed out"
        )
    await link.close()
    return BrokerFacts(configured=True, where=where, tls=mqtt.tls, connected=True)


def backlog_facts(settings: AgentSettings) -> tuple[int, float | None, int] | None:
    try:
        conn = storeview.open_readonly(settings.store.path)
    except StoreError:
        return None
    try:
        backlog = storeview.backlog(conn)
    except StoreError:
        return None
    finally:
        conn.close()
    age = None
    if backlog.oldest is not None:
        age = max(0.0, (datetime.now(UTC) - backlog.oldest).total_seconds())
    return backlog.rows, age, backlog.thinned_readings


def daemon_facts(settings: AgentSettings, status: dict[str, Any] | None) -> DaemonFacts:
    beat = read_heartbeat(heartbeat_path(settings.control.socket_path))
    age = None if beat is None else max(0.0, time.monotonic() - beat.mono)
    return DaemonFacts(
        answering=status is not None,
        heartbeat_age_s=age,
        heartbeat_pid=None if beat is None else beat.pid,
        heartbeat_pid_alive=beat is not None and pid_alive(beat.pid),
        version=None if status is None else status.get("version"),
        stale_after_s=HEARTBEAT_STALE_S,
    )


def versions(schema_version: int | None) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    found = {"agent": __version__, "python": platform.python_version()}
    for dist in ("pymodbus", "paho-mqtt", "msgspec"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "missing"
    if schema_version is not None:
        found["store schema"] = str(schema_version)
    return found


def serial_ports_of(settings: AgentSettings) -> list[str]:
    links = [m.link for m in settings.meters] + [
        c.relay.link for c in settings.connectors if isinstance(c.relay, ModbusCoilRelay)
    ]
    return serial_ports(links)
