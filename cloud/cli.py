"""``chargemitra-cloud``: run and administer the cloud platform.

Settings come from the environment (``CHARGEMITRA_*``, see ``docs/cloud.md``); a bad value
stops the command with the variable, the value and what was expected (exit code 2).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from cloud import __version__
from cloud.errors import CloudError, ConfigError
from cloud.logs import configure_logging
from cloud.settings import Environment, Settings, load_settings


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise click.UsageError(f"bad configuration: {exc}") from exc
    configure_logging(settings.app.log_level)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chargemitra-cloud")
def main() -> None:
    """ChargeMitra cloud platform: API server, MQTT ingest, database migrations."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run the HTTP API."""
    import uvicorn  # noqa: PLC0415 -- only this command needs the server

    from cloud.app import create_app  # noqa: PLC0415 -- keeps `db` and `ingest` light

    settings = _settings()
    # X-Forwarded-For is believed only from the proxies named in APP_FORWARDED_ALLOW_IPS:
    # uvicorn's own default trusts any loopback peer, and rate limits key on the address
    # this yields (cloud/ratelimit.py), so a rotated header would have reset them.
    trusted = settings.app.forwarded_allow_ips.strip()
    uvicorn.run(
        create_app(settings, freeze_gc=True),
        host=host,
        port=port,
        log_config=None,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
    )


@main.command()
@click.option("--index", default=0, show_default=True, type=int, help="Worker index (client id).")
@click.option(
    "--metrics-port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Serve this worker's Prometheus /metrics on this port + --index (0: not served).",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
def ingest(index: int, metrics_port: int, metrics_host: str) -> None:
    """Run one MQTT ingest worker (start several: they share the load)."""
    from cloud.workers.ingest import run_ingest  # noqa: PLC0415 -- the worker's imports only for this command

    settings = _settings()
    if metrics_port:
        # The ingest figures live in this process, not the API's: Prometheus scrapes each
        # worker (deploy/cloud/prometheus.yml). A daemon thread of prometheus_client's.
        from prometheus_client import start_http_server  # noqa: PLC0415

        start_http_server(metrics_port + index, addr=metrics_host)
    try:
        # asyncio's own loop, not uvloop: tried twice on bench.fleet, uvloop saved the
        # workers no CPU and twice let ingest fall seconds behind (docs/fleet.md).
        asyncio.run(run_ingest(settings, index=index))
    except (KeyboardInterrupt, asyncio.CancelledError):
        # SIGTERM cancels the worker: whatever was not committed stays unacknowledged at the
        # broker and is redelivered to this worker's session when it starts again.
        logging.getLogger(__name__).info("ingest worker stopped")


@main.command("env-example")
def env_example() -> None:
    """Print every CHARGEMITRA_* setting with its default and what it does (the file
    deploy/cloud/cloud.env.example is this output)."""
    from cloud.env_example import render  # noqa: PLC0415 -- reads the settings' source

    click.echo(render(), nl=False)


@main.group()
def db() -> None:
    """Database migrations (Alembic)."""


@db.command()
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    from cloud import migrate  # noqa: PLC0415 -- alembic only for this command

    migrate.upgrade(_settings().db.url, revision)


@db.command()
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Downgrade the schema to REVISION (``base`` removes everything)."""
    from cloud import migrate  # noqa: PLC0415 -- alembic only for this command

    migrate.downgrade(_settings().db.url, revision)


@db.command()
def current() -> None:
    """Show the schema revision the database is at."""
    from cloud import migrate  # noqa: PLC0415 -- alembic only for this command

    migrate.current(_settings().db.url)


@main.group()
def device() -> None:
    """Device provisioning for operators (hosts get the same through the API)."""


async def _issue_code(settings: Settings, host_id: str, charger_id: str | None) -> str:
    from cloud.db import open_engine, session_factory  # noqa: PLC0415 -- keeps startup light
    from cloud.devices.service import issue_pairing_code  # noqa: PLC0415

    async with open_engine(settings.db) as engine, session_factory(engine)() as db, db.begin():
        issued = await issue_pairing_code(
            db, settings, host_id=host_id, charger_id=charger_id, now=datetime.now(UTC)
        )
    return f"{issued.code}  (expires {issued.expires_at.isoformat()})"


async def _revoke(settings: Settings, device_id: str) -> None:
    from cloud.broker import BrokerLogin  # noqa: PLC0415
    from cloud.db import open_engine, session_factory  # noqa: PLC0415 -- keeps startup light
    from cloud.devices.broker_auth import DynsecCredentials  # noqa: PLC0415
    from cloud.devices.service import revoke_device  # noqa: PLC0415

    # As the API's broker identity (CHARGEMITRA_MQTT_*): it alone may manage credentials.
    credentials = DynsecCredentials(BrokerLogin.from_settings(settings.mqtt))
    async with open_engine(settings.db) as engine, session_factory(engine)() as db, db.begin():
        await revoke_device(db, credentials, device_id=device_id, now=datetime.now(UTC))


@device.command("issue-code")
@click.option("--host-id", required=True, help="The host the device will belong to.")
@click.option("--charger-id", default=None, help="Bind the device to this charger.")
def issue_code(host_id: str, charger_id: str | None) -> None:
    """Print a one-time pairing code for `chargemitra-agent provision`."""
    settings = _settings()
    try:
        click.echo(asyncio.run(_issue_code(settings, host_id, charger_id)))
    except CloudError as exc:
        raise click.ClickException(str(exc)) from exc


@device.command()
@click.argument("device_id")
def revoke(device_id: str) -> None:
    """Revoke DEVICE_ID: its broker client is deleted, which disconnects it at once."""
    settings = _settings()
    try:
        asyncio.run(_revoke(settings, device_id))
    except CloudError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"revoked {device_id}")


@main.group()
def payouts() -> None:
    """Host payouts (cloud/payouts/)."""


async def _run_payouts(settings: Settings) -> dict[str, object]:
    from datetime import timedelta  # noqa: PLC0415

    from cloud.db import open_engine, session_factory  # noqa: PLC0415 -- keeps startup light
    from cloud.kyc.storage import Sealer, load_key  # noqa: PLC0415
    from cloud.payments.factory import open_provider  # noqa: PLC0415
    from cloud.payouts.service import run_weekly  # noqa: PLC0415

    # The KYC key also seals the hosts' bank account numbers (cloud/payouts/accounts.py).
    key_file = settings.kyc.key_file
    sealer = None if key_file is None else Sealer(load_key(key_file))

    async with open_engine(settings.db) as engine, open_provider(settings) as provider:
        run = await run_weekly(
            session_factory(engine),
            provider,
            now=datetime.now(UTC),
            hold=timedelta(days=settings.billing.hold_days),
            sealer=sealer,
        )
    return {
        "paid": run.paid,
        "failed": run.failed,
        "processing": run.processing,
        "skipped": run.skipped,
    }


@payouts.command("run")
def payouts_run() -> None:
    """Pay out every host with weekly payouts on (and a verified KYC) their payable balance,
    once per week however often it runs; retry payouts left processing. A weekly timer
    calls it (docs/cloud.md, Payouts). Prints what it did as JSON."""
    import json  # noqa: PLC0415

    settings = _settings()
    try:
        click.echo(json.dumps(asyncio.run(_run_payouts(settings))))
    except CloudError as exc:
        raise click.ClickException(str(exc)) from exc


@main.group()
def notifications() -> None:
    """Notification delivery (cloud/notifications/)."""


async def _deliver(settings: Settings, *, once: bool) -> int:
    from redis.asyncio import Redis  # noqa: PLC0415 -- keeps startup light

    from cloud.db import open_engine, session_factory  # noqa: PLC0415
    from cloud.notifications.channels import open_channels  # noqa: PLC0415
    from cloud.notifications.delivery import Notifier  # noqa: PLC0415

    redis = Redis.from_url(settings.redis.url)
    try:
        async with open_engine(settings.db) as engine, open_channels(settings, redis) as channels:
            notifier = Notifier(session_factory(engine), channels, settings)
            if once:
                return await notifier.round()
            await notifier.run()
    finally:
        await redis.aclose()
    return notifier.handled


@notifications.command("deliver")
@click.option("--once", is_flag=True, help="One round (expand, then send what is due), then exit.")
def notifications_deliver(once: bool) -> None:
    """Run the notification delivery job on its own (the API runs it too, unless
    NOTIFICATIONS_DELIVER_INTERVAL_S is 0 there). Several may run: they share the work."""
    settings = _settings()
    if settings.notifications.deliver_interval_s <= 0 and not once:
        raise click.UsageError("CHARGEMITRA_NOTIFICATIONS_DELIVER_INTERVAL_S is 0: use --once")
    try:
        handled = asyncio.run(_deliver(settings, once=once))
    except (KeyboardInterrupt, asyncio.CancelledError):
        # A message being sent when the job stops is sent again by the next run.
        logging.getLogger(__name__).info("notification delivery stopped")
        return
    except CloudError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{handled} messages handled")


async def _seed_demo(
    settings: Settings, password: str, site: tuple[str, bytes] | None
) -> str | None:
    from cloud.accounts.service import seed_demo_accounts  # noqa: PLC0415 -- argon2 only here
    from cloud.db import open_engine, session_factory  # noqa: PLC0415 -- keeps startup light
    from cloud.demo import seed_demo_site  # noqa: PLC0415

    now = datetime.now(UTC)
    async with open_engine(settings.db) as engine, session_factory(engine)() as db, db.begin():
        await seed_demo_accounts(db, password=password, now=now)
        if site is None:
            return None
        device_id, pin_secret = site
        return await seed_demo_site(db, device_id=device_id, pin_secret=pin_secret, now=now)


@main.command("seed-demo")
@click.option(
    "--password",
    default=None,
    help="The demo accounts' password (default: a new random one, printed).",
)
@click.option(
    "--device",
    "device_id",
    default=None,
    help="Also give the demo host this device and a listed charger on it (the demo site).",
)
@click.option(
    "--pin-secret-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --device: the device's booking-PIN secret (the file the agent reads).",
)
def seed_demo(password: str | None, device_id: str | None, pin_secret_file: Path | None) -> None:
    """Create demo driver, host, admin and technician accounts (development only).

    Running it again resets their password. Refused unless CHARGEMITRA_APP_ENV=development:
    the accounts share a password that is printed on the terminal. With --device, the demo
    host also owns that device and an approved, listed charger on it.
    """
    import secrets  # noqa: PLC0415

    from cloud.accounts.passwords import MIN_PASSWORD_LENGTH  # noqa: PLC0415
    from cloud.accounts.service import DEMO_ACCOUNTS  # noqa: PLC0415
    from protocols.pins import MIN_SECRET_BYTES  # noqa: PLC0415

    settings = _settings()
    if settings.app.env is not Environment.DEVELOPMENT:
        raise click.ClickException(
            f"seed-demo runs only with CHARGEMITRA_APP_ENV=development "
            f"(this is {settings.app.env.value!r})"
        )
    password = password or secrets.token_urlsafe(12)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise click.UsageError(f"--password needs at least {MIN_PASSWORD_LENGTH} characters")
    if (device_id is None) != (pin_secret_file is None):
        raise click.UsageError("--device and --pin-secret-file go together")
    site = None
    if device_id is not None and pin_secret_file is not None:
        secret = pin_secret_file.read_bytes()
        if len(secret) < MIN_SECRET_BYTES:
            raise click.UsageError(f"{pin_secret_file}: fewer than {MIN_SECRET_BYTES} bytes")
        site = (device_id, secret)
    try:
        charger_id = asyncio.run(_seed_demo(settings, password, site))
    except CloudError as exc:
        raise click.ClickException(str(exc)) from exc
    for demo in DEMO_ACCOUNTS:
        click.echo(f"{demo.role.value:<11} {demo.email:<32} {demo.phone}")
    click.echo(f"password    {password}")
    if charger_id is not None:
        click.echo(f"charger     {charger_id} (device {device_id})")


async def _seed_city(settings: Settings) -> dict[str, Any]:
    import dataclasses  # noqa: PLC0415

    from cloud.db import open_engine, session_factory  # noqa: PLC0415 -- keeps startup light
    from cloud.demo.city import seed_city  # noqa: PLC0415

    async with open_engine(settings.db) as engine, session_factory(engine)() as db, db.begin():
        return dataclasses.asdict(await seed_city(db, now=datetime.now(UTC)))


@main.command("seed-city")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def seed_city_command(as_json: bool) -> None:
    """Seed the brief's demo world (development only): its accounts, 10 hosts, 50 chargers
    across Indian metros, 100 drivers, 200 past bookings with sessions, telemetry, payments
    through the ledger and reviews (cloud/demo/city.py). A second run adds nothing."""
    import json  # noqa: PLC0415

    settings = _settings()
    if settings.app.env is not Environment.DEVELOPMENT:
        raise click.ClickException(
            f"seed-city runs only with CHARGEMITRA_APP_ENV=development "
            f"(this is {settings.app.env.value!r})"
        )
    try:
        fields = asyncio.run(_seed_city(settings))
    except CloudError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(fields))
        return
    verb = "seeded" if fields["created"] else "already there, nothing added"
    click.echo(
        f"city {verb}: {fields['hosts']} hosts, {fields['chargers']} chargers, "
        f"{fields['drivers']} drivers, {fields['bookings']} past bookings"
    )


@main.group()
def broker() -> None:
    """The cloud broker's identities (Mosquitto's dynamic-security plugin)."""


@broker.command("init-config")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def broker_init_config(path: Path) -> None:
    """Write the plugin's starting file at PATH: default deny, the service roles of
    deploy/mosquitto/cloud/dynamic-security.json, and the cloud-ingest and cloud-api
    identities with the passwords asked for. Refuses to overwrite: the file holds every
    device's credentials once the broker runs."""
    import json  # noqa: PLC0415

    from cloud.devices.broker_auth import initial_config  # noqa: PLC0415

    if path.exists():
        raise click.ClickException(f"{path} exists: it holds the devices' credentials")
    passwords = {
        name: click.prompt(f"{name} password", hide_input=True, confirmation_prompt=True)
        for name in ("cloud-ingest", "cloud-api")
    }
    path.write_text(json.dumps(initial_config(passwords), indent=1))
    path.chmod(0o600)
    click.echo(f"wrote {path}; the broker must own it (it rewrites it after every change)")
