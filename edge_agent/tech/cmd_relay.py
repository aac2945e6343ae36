"""``chargemitra-agent relay on|off|test``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from edge_agent.config import AgentSettings
from edge_agent.errors import ControlError, MeterError, StoreError
from edge_agent.plausible import implausible
from edge_agent.relay.check import RelayTestResult, Verdict, open_relay, run_relay_test
from edge_agent.relay.manual_close import DEFAULT_HOLD_S, MAX_HOLD_S, safety_limits
from edge_agent.tech import daemon, storeview
from edge_agent.tech.direct import DirectSite
from edge_agent.tech.handhold import HoldResult, hold_closed, stop_signals_set
from edge_agent.tech.output import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_WARN,
    boundary,
    console,
    emit,
    escape,
    json_option,
    note,
)
from edge_agent.tech.selection import config_option, pick_connector, settings_from
from protocols.meters import Quantity

connector_option = click.option(
    "--connector", type=int, help="The connector [default: the only one]."
)
force_option = click.option(
    "--force",
    is_flag=True,
    help="Even while a session is active (the agent ends it first, reason Local).",
)


@click.group()
def relay() -> None:
    """Switch or test a connector's relay (contactor)."""


def _stored_session(settings: AgentSettings, connector: int) -> str | None:
    try:
        conn = storeview.open_readonly(settings.store.path)
    except StoreError:
        return None  # no store yet: no session either
    try:
        return storeview.open_session_on(conn, connector)
    finally:
        conn.close()


def _refuse_if_session(settings: AgentSettings, connector: int, force: bool) -> None:
    session = _stored_session(settings, connector)
    if session is not None and not force:
        raise ControlError(
            f"connector {connector} has an open session {session} (the agent closes or "
            "resumes it at its next start): use --force to switch the relay anyway"
        )


async def _open_direct(settings: AgentSettings, connector: int) -> bool | None:
    async with DirectSite(settings) as site:
        driver = site.relay(connector)
        await open_relay(driver)
        return await driver.is_closed()


def _switch(
    connector: int | None,
    *,
    force: bool,
    config_file: Path | None,
    as_json: bool,
    closed: bool,
    hold_s: float = DEFAULT_HOLD_S,
) -> None:
    settings = settings_from(config_file)
    cid = pick_connector(settings, connector)
    socket = settings.control.socket_path
    word = "closed" if closed else "open"
    hold: float | None = None
    held: HoldResult | None = None
    if daemon.status(socket) is not None:
        answer = daemon.call(
            socket,
            {"cmd": "relay", "connector": cid, "closed": closed, "force": force, "hold_s": hold_s},
        )
        via, read, hold = "agent", answer.get("read_closed"), answer.get("hold_s")
    elif closed:
        _refuse_if_session(settings, cid, force)
        # Said on stderr, so a --json caller is told too.
        note(
            f"the agent is not running: this command holds the relay closed on its bus and "
            f"watches it (overcurrent, meter silence) for up to {hold_s:.0f} s; Ctrl-C "
            f"opens it"
        )
        held = asyncio.run(_hold_direct(settings, cid, hold_s))
        via, read, hold = "bus", held.read_closed, hold_s
    else:
        read = asyncio.run(_open_direct(settings, cid))
        via = "bus"
        note("the agent is not running: the relay was switched directly on its bus")
    data = {
        "via": via,
        "connector": cid,
        "commanded": word,
        "read_closed": read,
        "hold_s": hold,
        **(held.to_json() if held is not None else {}),
    }
    mismatch = read is not None and read != closed
    if held is not None and held.open_read is True:
        mismatch = True  # commanded open at the end, and it does not read back open

    def human() -> None:
        back = "?" if read is None else ("closed" if read else "open")
        console().print(f"relay {cid}: commanded {word}, reads back {back} (via {via})")
        if held is not None:
            after = "?" if held.open_read is None else ("closed" if held.open_read else "open")
            colour = "bold red" if held.tripped else "green"
            console().print(
                f"held {held.held_s:.0f} s, then opened: [{colour}]"
                f"{escape(held.opened_because)}[/]; reads back {after}"
            )
        elif hold is not None:
            console().print(
                f"the agent watches it (overcurrent, meter silence) and opens it "
                f"after {hold:.0f} s at the latest"
            )

    emit(as_json, data, human)
    raise SystemExit(EXIT_FAIL if mismatch or (held is not None and held.tripped) else EXIT_OK)


async def _hold_direct(settings: AgentSettings, connector: int, hold_s: float) -> HoldResult:
    meter_id = settings.connector(connector).meter
    async with DirectSite(settings) as site:

        async def trusted() -> dict[Quantity, float] | None:
            try:
                values = await site.read(meter_id)
            except MeterError:
                return None
            return None if implausible(values) else values

        return await hold_closed(
            site.relay(connector),
            trusted,
            limits=safety_limits(settings, connector),
            hold_s=hold_s,
        )


@relay.command("on")
@config_option
@connector_option
@force_option
@click.option(
    "--hold-s",
    type=click.FloatRange(1, MAX_HOLD_S),
    default=DEFAULT_HOLD_S,
    show_default=True,
    help="Open the relay after this many seconds (the agent's or this command's watch).",
)
@json_option
@boundary
def relay_on(
    config_file: Path | None, connector: int | None, force: bool, hold_s: float, as_json: bool
) -> None:
    """Close the relay (power may flow). Refused while a session is active unless --force.

    Beside the running agent the connector is Unavailable while closed, and the agent opens
    the relay on overcurrent, meter silence, or after --hold-s. With the agent stopped this
    command holds it instead: it stays in the foreground watching the meter by the same
    rules, and opens the relay when one trips, after --hold-s, or on Ctrl-C. Exit 2 when a
    rule tripped or the relay did not read back as commanded.
    """
    _switch(
        connector, force=force, config_file=config_file, as_json=as_json, closed=True, hold_s=hold_s
    )


@relay.command("off")
@config_option
@connector_option
@json_option
@boundary
def relay_off(config_file: Path | None, connector: int | None, as_json: bool) -> None:
    """Open the relay (always allowed: it is the safe state; a running session is stopped)."""
    _switch(connector, force=True, config_file=config_file, as_json=as_json, closed=False)


async def _test_direct(settings: AgentSettings, connector: int) -> RelayTestResult:
    meter_id = settings.connector(connector).meter
    stop = asyncio.Event()
    async with DirectSite(settings) as site:
        driver = site.relay(connector)

        async def power() -> float | None:
            try:
                return (await site.read(meter_id)).get(Quantity.POWER_W)
            except MeterError:
                return None

        # Ctrl-C, SIGTERM or SIGHUP end the test through `stop`, the relay opened first.
        with stop_signals_set(stop):
            return await run_relay_test(
                driver,
                power,
                charging_power_w=settings.limits.charging_power_w,
                stuck_power_w=settings.limits.stuck_relay_power_w,
                settle_s=settings.limits.stuck_relay_check_s + 1.0,
                stop=stop,
            )


@relay.command("test")
@config_option
@connector_option
@force_option
@json_option
@boundary
def relay_test(config_file: Path | None, connector: int | None, force: bool, as_json: bool) -> None:
    """Close, confirm power on the meter, open, confirm it stops.

    Exit 0 passed, 1 closed but no power flowed (no EV asking?), 2 failed (no read-back,
    power after opening: stuck contactor, meter silent) or interrupted (Ctrl-C: the relay is
    opened first). Refused while a session is active unless --force.
    """
    settings = settings_from(config_file)
    cid = pick_connector(settings, connector)
    socket = settings.control.socket_path
    if daemon.status(socket) is not None:
        answer = daemon.call(
            socket, {"cmd": "relay_check", "connector": cid, "force": force}, timeout_s=30.0
        )
        data: dict[str, Any] = {"via": "agent", "connector": cid, **_result_fields(answer)}
    else:
        _refuse_if_session(settings, cid, force)
        result = asyncio.run(_test_direct(settings, cid))
        note("the agent is not running: the relay was tested directly on its bus")
        data = {"via": "bus", "connector": cid, **result.to_json()}
    verdict = Verdict(data["verdict"])

    def human() -> None:
        colour = {Verdict.PASS: "green", Verdict.NO_POWER: "yellow"}.get(verdict, "bold red")
        console().print(
            f"relay {cid} test: [{colour}]{verdict.value}[/] — {escape(data['detail'])}"
        )

    emit(as_json, data, human)
    code = {Verdict.PASS: EXIT_OK, Verdict.NO_POWER: EXIT_WARN}.get(verdict, EXIT_FAIL)
    raise SystemExit(code)


def _result_fields(answer: dict[str, Any]) -> dict[str, Any]:
    keys = ("verdict", "detail", "closed_read", "open_read", "power_closed_w", "power_open_w")
    return {k: answer.get(k) for k in keys}
