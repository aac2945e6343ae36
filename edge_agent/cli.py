"""``chargemitra-agent``: the edge daemon and the field technician's CLI.

Exit codes: 0 success, 2 invalid input (a bad configuration file), 1 anything else.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from edge_agent import __version__
from edge_agent.config import config_path, load_config
from edge_agent.errors import AgentError, ConfigError

EXIT_INVALID = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chargemitra-agent")
def main() -> None:
    """ChargeMitra edge agent: runs beside a charger and diagnoses it.

    `run` is the daemon, `provision` claims the device with a pairing code, `config validate`
    checks a configuration file (docs/edge.md). The technician's diagnostics (doctor, meter,
    relay, auth, session, sync) are still to come.
    """


@main.command()
@click.option(
    "--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
    help="TOML file (default: $CHARGEMITRA_AGENT_CONFIG or /etc/chargemitra/agent.toml).",
)  # fmt: skip
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))  # fmt: skip
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
        asyncio.run(run_agent(settings))
    except AgentError as exc:
        click.echo(f"chargemitra-agent: {exc}", err=True)
        raise SystemExit(1) from None


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


@main.command()
@click.option("--code", required=True, help="The one-time pairing code the host was given.")
@click.option("--cloud", "cloud_url", required=True, help="The cloud's base URL (https://…).")
@click.option(
    "--dir", "directory", type=click.Path(path_type=Path, file_okay=False),
    default=None, help="Where to write cloud.toml [default: beside the config file].",
)  # fmt: skip
@click.option(
    "--ca-file", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
    help="CA certificate of the broker (when it is not in the system store).",
)  # fmt: skip
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False))
def provision(
    code: str, cloud_url: str, directory: Path | None, ca_file: Path | None,
    config_file: Path | None,
) -> None:  # fmt: skip
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
