"""What a technician's command works on: the ``--config`` option, the settings it loads, and
the meter or connector picked by id (an unknown id is bad input, exit 2)."""

from __future__ import annotations

from pathlib import Path

import click

from edge_agent.config import AgentSettings, MeterSettings, config_path, load_config
from edge_agent.errors import InputError

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML file (default: $CHARGEMITRA_AGENT_CONFIG or /etc/chargemitra/agent.toml).",
)


def settings_from(config_file: Path | None) -> AgentSettings:
    """The validated settings (ConfigError, exit 2, when the file is bad)."""
    return load_config(config_path(config_file))


def pick_meters(settings: AgentSettings, meter_id: str | None) -> list[MeterSettings]:
    if meter_id is None:
        return list(settings.meters)
    for meter in settings.meters:
        if meter.id == meter_id:
            return [meter]
    known = ", ".join(m.id for m in settings.meters)
    raise InputError(f"unknown meter id {meter_id!r}; configured: {known}", field="meter")


def pick_connector(settings: AgentSettings, connector: int | None) -> int:
    ids = [c.id for c in settings.connectors]
    if connector is None:
        if len(ids) == 1:
            return ids[0]
        raise InputError(
            f"this site has connectors {ids}: say which with --connector", field="connector"
        )
    if connector not in ids:
        raise InputError(f"unknown connector {connector}; configured: {ids}", field="connector")
    return connector
