"""``chargemitra-agent``: the edge daemon and the field technician's CLI."""

from __future__ import annotations

import click

from edge_agent import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chargemitra-agent")
def main() -> None:
    """ChargeMitra edge agent: runs beside a charger and diagnoses it.

    The daemon and the technician commands (doctor, meter, relay, auth, session, sync,
    provision, config) arrive with their issues; see docs/ for the plan.
    """
