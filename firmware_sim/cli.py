"""``chargemitra-sim``: simulated charger hardware for tests, demos and training.

``meter`` and ``site`` run a simulator and print one JSON line saying where everything is
once it is ready; ``fault``, ``plug``, ``unplug``, ``relay``, ``tap``, ``keys``, ``state``
and ``advance`` drive a running one through its control interface. Every error is one line
on stderr and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from firmware_sim import __version__
from firmware_sim.clock import Clock, ManualClock, SystemClock
from firmware_sim.control import ControlClient
from firmware_sim.errors import ConfigError, SimError
from firmware_sim.ev import Profile
from firmware_sim.faults import FaultKind, parse_duration_s
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec, check_unit
from protocols.meters import load_map

DEFAULT_CONTROL = "127.0.0.1:8765"
CONTROL_ENV = "CHARGEMITRA_SIM_CONTROL"


def _address(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not host or not 0 <= number <= 65535:
        raise ConfigError(f"bad {what} address {text!r}; expected HOST:PORT", field=what)
    return host, number


def _default_state_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "chargemitra-sim" / "site.json"


def _fail(exc: SimError) -> click.ClickException:
    return click.ClickException(str(exc))


async def _serve(config: SimConfig, clock: Clock) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with SimSite(config, clock=clock) as sim:
        click.echo(json.dumps(sim.endpoints()))
        await stop.wait()


def _run(config: SimConfig, manual_clock: bool) -> None:
    clock: Clock = ManualClock() if manual_clock else SystemClock()
    try:
        asyncio.run(_serve(config, clock))
    except SimError as exc:
        raise _fail(exc) from exc


def _serving_options(func: Any) -> Any:
    """Options shared by ``meter`` and ``site``."""
    options = [
        click.option(
            "--tcp", metavar="HOST:PORT", help="Serve Modbus TCP here (port 0: a free one)."
        ),
        click.option(
            "--turnaround-ms",
            type=float,
            default=20.0,
            show_default=True,
            help="Meter turnaround on the RTU line.",
        ),
        click.option(
            "--relay-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="GPIO stand-in: the agent writes 1 (close) or 0 (open) to this file.",
        ),
        click.option(
            "--state",
            "state_path",
            type=click.Path(dir_okay=False, path_type=Path),
            help="State file (energy, EV) kept across restarts. "
            "[default: $XDG_STATE_HOME/chargemitra-sim/site.json]",
        ),
        click.option(
            "--control",
            "control",
            default=DEFAULT_CONTROL,
            show_default=True,
            metavar="HOST:PORT",
            help="Control interface listen address (port 0: free).",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Noise seed."),
        click.option(
            "--manual-clock",
            is_flag=True,
            help="Simulated time moves only on `advance` (tests, demos).",
        ),
        click.option(
            "--plugged",
            metavar="PROFILE",
            help="Start with an EV plugged in (3.3kw, 7.4kw, 11kw, 22kw).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class _OneLineErrors(click.Group):
    """Every error is one line on stderr, usage errors included (no usage banner): scripts
    and the agent's tests read it, and a technician sees what was wrong at once."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.Abort:
            click.echo("Error: aborted", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            hint = " (see --help)" if isinstance(exc, click.UsageError) else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chargemitra-sim")
def main() -> None:
    """Simulated meters, relay and EV for a ChargeMitra site."""


@main.command()
@click.option(
    "--model",
    required=True,
    help=(
        "Meter model: sdm120, sdm630, sdm72d, abb_b23, iem3155, mfm383a, em6400ng, lgplus, "
        "em2m, em4m."
    ),
)
@click.option("--serial", is_flag=True, help="Serve Modbus RTU on a new pseudo-terminal.")
@click.option("--baud", type=int, help="RTU baud rate. [default: the model's factory setting]")
@click.option("--parity", help="RTU parity N, E or O. [default: the model's factory setting]")
@click.option("--unit", type=int, help="Unit id. [default: the model's factory setting]")
@click.option("--relay-unit", type=int, help="Also put a Modbus coil relay on the bus at this id.")
@_serving_options
def meter(
    *,
    model: str,
    serial: bool,
    baud: int | None,
    parity: str | None,
    unit: int | None,
    relay_unit: int | None,
    tcp: str | None,
    turnaround_ms: float,
    relay_file: Path | None,
    state_path: Path | None,
    control: str,
    seed: int,
    manual_clock: bool,
    plugged: str | None,
) -> None:
    """One meter over Modbus TCP and/or RTU (power flows once an EV is plugged)."""
    try:
        spec = MeterSpec.checked(model, check_unit(unit) if unit is not None else 1)
        factory = load_map(spec.model).serial
        if unit is None:
            spec = MeterSpec(spec.model, factory.unit_id)
        if tcp is None and not serial:
            raise ConfigError(
                "say where to serve the meter: --tcp HOST:PORT and/or --serial", field="tcp"
            )
        config = SimConfig(
            meters=(spec,),
            relay_unit=relay_unit,
            # Without a relay the meter just watches the circuit: nothing to switch.
            relay_closed=relay_unit is None and relay_file is None,
            relay_file=relay_file,
            tcp=None if tcp is None else _address(tcp, "tcp"),
            serial=serial,
            baud=factory.baud if baud is None else baud,
            parity=(factory.parity if parity is None else parity).upper(),
            turnaround_s=turnaround_ms / 1000,
            control=_address(control, "control"),
            state_path=state_path or _default_state_path(),
            seed=seed,
            plugged=None if plugged is None else Profile.parse(plugged),
        )
    except SimError as exc:
        raise _fail(exc) from exc
    _run(config, manual_clock)


@main.command()
@click.option(
    "--meter",
    "meters",
    multiple=True,
    metavar="MODEL[:UNIT[@BAUD]]",
    help="A meter on the bus (repeatable); @BAUD sets its own speed. [default: sdm630:1]",
)
@click.option(
    "--relay-unit", type=int, help="Unit id of the coil relay. [default: after the meters]"
)
@click.option(
    "--serial/--no-serial",
    default=True,
    show_default=True,
    help="Serve the bus as Modbus RTU on a pseudo-terminal.",
)
@click.option("--baud", type=int, default=9600, show_default=True)
@click.option("--parity", default="N", show_default=True)
@click.option(
    "--check-baud",
    is_flag=True,
    help="Devices answer only at their own speed (on when a meter has @BAUD).",
)
@click.option("--rfid/--no-rfid", default=True, show_default=True, help="RDM6300 reader pty.")
@click.option("--keys/--no-keys", default=True, show_default=True, help="Keypad/QR input pty.")
@_serving_options
def site(
    *,
    meters: tuple[str, ...],
    relay_unit: int | None,
    serial: bool,
    baud: int,
    parity: str,
    check_baud: bool,
    rfid: bool,
    keys: bool,
    tcp: str | None,
    turnaround_ms: float,
    relay_file: Path | None,
    state_path: Path | None,
    control: str,
    seed: int,
    manual_clock: bool,
    plugged: str | None,
) -> None:
    """Meter(s) + coil relay + EV on one bus, with RFID reader and keypad."""
    try:
        specs = tuple(MeterSpec.parse(m) for m in meters) or (MeterSpec("sdm630", 1),)
        if relay_unit is None:
            relay_unit = max(m.unit for m in specs) + 1
        if tcp is None and not serial:
            raise ConfigError(
                "nothing to serve: give --tcp HOST:PORT or keep --serial", field="tcp"
            )
        config = SimConfig(
            meters=specs,
            relay_unit=relay_unit,
            relay_file=relay_file,
            tcp=None if tcp is None else _address(tcp, "tcp"),
            serial=serial,
            baud=baud,
            parity=parity.upper(),
            check_baud=check_baud,
            turnaround_s=turnaround_ms / 1000,
            rfid=rfid,
            keys=keys,
            control=_address(control, "control"),
            state_path=state_path or _default_state_path(),
            seed=seed,
            plugged=None if plugged is None else Profile.parse(plugged),
        )
    except SimError as exc:
        raise _fail(exc) from exc
    _run(config, manual_clock)


# --- commands that drive a running simulator --------------------------------------------

_control_url = click.option(
    "--control",
    "control_url",
    envvar=CONTROL_ENV,
    default=f"http://{DEFAULT_CONTROL}",
    show_default=True,
    help=f"The simulator's control URL (or ${CONTROL_ENV}).",
)


def _call(control_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    try:
        return ControlClient(control_url).call(method, path, body)
    except SimError as exc:
        raise _fail(exc) from exc


@main.command()
@click.argument("kind", metavar="KIND")
@click.option("--unit", type=int, help="Only this unit id. [default: the whole bus]")
@click.option("--for", "duration", metavar="DURATION", help="Switch off after e.g. 10s, 500ms, 2m.")
@click.option("--code", type=int, help="Exception code for `exception`. [default: 4]")
@click.option("--turnaround-ms", type=float, help="Turnaround for `slow`. [default: 700]")
@click.option("--drop-ratio", type=float, help="Share of frames `flapping` drops. [default: 0.5]")
@click.option("--ratio", type=float, help="Current multiple for `overcurrent`. [default: 1.5]")
@click.option(
    "--first",
    "first_address",
    type=int,
    help="First register (zero-based) `refuse` takes away. [default: 0]",
)
@click.option(
    "--last",
    "last_address",
    type=int,
    help="Last register (zero-based) `refuse` takes away. [default: 65535]",
)
@click.option("--off", is_flag=True, help="Switch the fault off instead (KIND `all`: every fault).")
@_control_url
def fault(
    *,
    kind: str,
    unit: int | None,
    duration: str | None,
    code: int | None,
    turnaround_ms: float | None,
    drop_ratio: float | None,
    ratio: float | None,
    first_address: int | None,
    last_address: int | None,
    off: bool,
    control_url: str,
) -> None:
    """Inject a fault: timeout, crc, exception, frozen, reset, overcurrent, flapping, slow,
    welded, refuse."""
    try:
        path = "/faults" if off and kind == "all" else f"/faults/{FaultKind.parse(kind).value}"
        body: dict[str, Any] = {"kind": FaultKind.parse(kind).value} if not off else {}
        if not off:
            body.update(
                {
                    "unit": unit,
                    "for_s": None if duration is None else parse_duration_s(duration),
                    "exception_code": code,
                    "turnaround_s": None if turnaround_ms is None else turnaround_ms / 1000,
                    "drop_ratio": drop_ratio,
                    "overcurrent_ratio": ratio,
                    "first_address": first_address,
                    "last_address": last_address,
                }
            )
            body = {k: v for k, v in body.items() if v is not None}
    except SimError as exc:
        raise _fail(exc) from exc
    if off:
        query = "" if unit is None else f"?unit={unit}"
        result = _call(control_url, "DELETE", path + query)
    else:
        result = _call(control_url, "POST", "/faults", body)
    click.echo(json.dumps(result))


@main.command()
@click.option("--profile", default="7.4kw", show_default=True, help="3.3kw, 7.4kw, 11kw or 22kw.")
@click.option("--soc", type=float, default=0.2, show_default=True, help="Battery state of charge.")
@click.option("--capacity-kwh", type=float, default=40.0, show_default=True)
@_control_url
def plug(profile: str, soc: float, capacity_kwh: float, control_url: str) -> None:
    """Plug an EV in."""
    body = {"profile": profile, "soc": soc, "capacity_wh": capacity_kwh * 1000}
    click.echo(json.dumps(_call(control_url, "POST", "/plug", body)))


@main.command()
@_control_url
def unplug(control_url: str) -> None:
    """Unplug the EV."""
    click.echo(json.dumps(_call(control_url, "POST", "/unplug")))


@main.command()
@click.argument("action", type=click.Choice(["open", "close"]))
@_control_url
def relay(action: str, control_url: str) -> None:
    """Force the relay open or closed (as if the coil were written)."""
    click.echo(json.dumps(_call(control_url, "POST", "/relay", {"closed": action == "close"})))


@main.command()
@click.argument("tag")
@_control_url
def tap(tag: str, control_url: str) -> None:
    """Hold an RFID tag (10 hex characters) to the reader."""
    click.echo(json.dumps(_call(control_url, "POST", "/tap", {"tag": tag})))


@main.command()
@click.argument("text")
@_control_url
def keys(text: str, control_url: str) -> None:
    """Type TEXT on the keypad / QR scanner (e.g. 123456#)."""
    click.echo(json.dumps(_call(control_url, "POST", "/keys", {"keys": text})))


@main.command()
@_control_url
def state(control_url: str) -> None:
    """Print the simulator's state (meter values, relay, EV, faults) as JSON."""
    click.echo(json.dumps(_call(control_url, "GET", "/state"), indent=2))


@main.command()
@click.argument("duration")
@_control_url
def advance(duration: str, control_url: str) -> None:
    """Step simulated time (simulator started with --manual-clock)."""
    try:
        seconds = parse_duration_s(duration)
    except SimError as exc:
        raise _fail(exc) from exc
    click.echo(json.dumps(_call(control_url, "POST", "/clock/advance", {"seconds": seconds})))
