"""``chargemitra-agent``: the edge daemon and the field technician's CLI.

The Click root: ``run``, ``config``, ``provision`` live here; the technician's commands
(doctor, meter, relay, auth, session, sync, logs) live in :mod:`edge_agent.tech` and are
registered below. Exit codes of the technician's commands: 0 ok, 1 warning, 2 failure or
bad input (docs/cli.md); ``run`` exits 2 on a bad configuration, 1 on any other error, 75
after an OCPP Reset (to be started again).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from pathlib import Path

import click

from edge_agent import __version__
from edge_agent.config import config_path, load_config
from edge_agent.errors import AgentError, ConfigError
from edge_agent.tech import LOG_ENV
from edge_agent.tech.output import boundary, json_option

EXIT_INVALID = 2
#: `run` after an OCPP Reset: EX_TEMPFAIL (sysexits.h), "try again" — the service restarts it.
EXIT_RESTART = 75

#: The technician's command groups, imported only when one of them is invoked (or listed by
#: --help): the daemon (`run`) then carries none of their modules in memory on the Pi.
LAZY_COMMANDS = {
    "doctor": "edge_agent.tech.cmd_doctor:doctor",
    "meter": "edge_agent.tech.cmd_meter:meter",
    "relay": "edge_agent.tech.cmd_relay:relay",
    "auth": "edge_agent.tech.cmd_auth:auth",
    "session": "edge_agent.tech.cmd_session:session",
    "sync": "edge_agent.tech.cmd_sync:sync",
}


class LazyGroup(click.Group):
    """A group whose commands in LAZY_COMMANDS are imported on first use (Click's documented
    lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = target.split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chargemitra-agent")
def main() -> None:
    """ChargeMitra edge agent: runs beside a charger and diagnoses it.

    `run` is the daemon, `provision` claims the device with a pairing code. A technician
    starts with `doctor`; `meter`, `relay`, `auth`, `session`, `sync`, `config` and `logs`
    look closer. Every command takes --help and --json; exit 0 ok, 1 warning, 2 failure or
    bad input. Beside the running agent live actions go through its control socket; with
    the agent stopped the bus is used directly (and the command says so).
    """
    # pymodbus logs every unanswered request (a scan is mostly unanswered requests); the
    # commands report what went wrong themselves. `run` sets its own levels.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML file (default: $CHARGEMITRA_AGENT_CONFIG or /etc/chargemitra/agent.toml).",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
)
def run(config_file: Path | None, log_level: str) -> None:
    """Run the agent daemon until SIGTERM or SIGINT."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = config_path(config_file)
    try:
        settings = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"{path}: {problem}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    # Imported here: `config validate` must work on a machine without the edge extras.
    from edge_agent.app import run_agent  # noqa: PLC0415

    try:
        restart = asyncio.run(run_agent(settings))
    except AgentError as exc:
        click.echo(f"chargemitra-agent: {exc}", err=True)
        raise SystemExit(1) from None
    if restart:
        # An OCPP Reset: a non-zero status, so a service manager restarts it
        # (systemd Restart=on-failure as well as Restart=always).
        raise SystemExit(EXIT_RESTART)


@main.group()
def config() -> None:
    """Inspect the agent's configuration file."""


@config.command("validate")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
def config_validate(file: Path | None) -> None:
    """Check FILE (default: $CHARGEMITRA_AGENT_CONFIG or /etc/chargemitra/agent.toml).

    Prints one line per problem (field: got VALUE, expected WHAT) and exits 2 when invalid.
    """
    path = config_path(file)
    try:
        settings = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"{path}: {problem}", err=True)
        raise SystemExit(EXIT_INVALID) from None
    click.echo(
        f"{path}: valid (device {settings.device_id}, {len(settings.meters)} meter(s), "
        f"{len(settings.connectors)} connector(s))"
    )


@config.command("show")
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML file (default: $CHARGEMITRA_AGENT_CONFIG or /etc/chargemitra/agent.toml).",
)
@json_option
@boundary
def config_show(config_file: Path | None, as_json: bool) -> None:
    """Print the effective configuration (cloud.toml merged, defaults filled in), secrets
    redacted (paths to secret files are shown: they are not secrets)."""
    from edge_agent.tech import cmd_config  # noqa: PLC0415 -- see LAZY_COMMANDS

    cmd_config.show_config(config_file, as_json)


@main.command()
@click.option(
    "--file",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"The agent's log file [default: ${LOG_ENV}, else the journal].",
)
@click.option("--lines", "-n", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@json_option
@boundary
def logs(file: Path | None, lines: int, follow: bool, as_json: bool) -> None:
    """The agent's log: its log file (--file or $CHARGEMITRA_AGENT_LOG) if given, else the
    systemd journal of the chargemitra-agent unit."""
    from edge_agent.tech import cmd_logs  # noqa: PLC0415 -- see LAZY_COMMANDS

    cmd_logs.show_logs(file, lines, follow, as_json)


@main.command()
@click.option("--code", required=True, help="The one-time pairing code the host was given.")
@click.option("--cloud", "cloud_url", required=True, help="The cloud's base URL (https://…).")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where to write cloud.toml [default: beside the config file].",
)
@click.option(
    "--ca-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="CA certificate of the broker (when it is not in the system store).",
)
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False))
def provision(
    code: str,
    cloud_url: str,
    directory: Path | None,
    ca_file: Path | None,
    config_file: Path | None,
) -> None:
    """Claim this device with a pairing code: writes cloud.toml, mqtt.password and the token
    key beside the configuration; the agent merges cloud.toml over agent.toml at start."""
    from edge_agent.provision import ProvisionError, claim, write_claim  # noqa: PLC0415

    target = directory if directory is not None else config_path(config_file).parent
    try:
        result = claim(cloud_url, code)
    except ProvisionError as exc:
        click.echo(f"chargemitra-agent provision: {exc}", err=True)
        raise SystemExit(1) from None
    overlay = write_claim(result, target, ca_file=ca_file)
    click.echo(f"provisioned as {result.device_id}: wrote {overlay}")


if __name__ == "__main__":
    main()
