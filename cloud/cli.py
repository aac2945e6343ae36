"""``chargemitra-cloud``: run and administer the cloud platform."""

from __future__ import annotations

import click

from cloud import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chargemitra-cloud")
def main() -> None:
    """ChargeMitra cloud platform: API server, MQTT ingest, database migrations.

    Subcommands (serve, ingest, db upgrade) arrive with the cloud platform issue.
    """
