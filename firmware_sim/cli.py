"""``chargemitra-sim``: simulated charger hardware for tests, demos and training."""

from __future__ import annotations

import click

from firmware_sim import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chargemitra-sim")
def main() -> None:
    """Simulated meters, relay and EV for a ChargeMitra site."""
