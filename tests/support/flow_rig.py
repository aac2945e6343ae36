"""The whole marketplace, running: the API (uvicorn, as ``cloud-api``), an ingest worker, the
project's broker (TLS for devices), the simulated charger and a real edge agent provisioned
through ``POST /devices/claim`` — used by the flow tests and by ``bench.unlock``.

Between the agent and the broker sits :class:`LinkCutter`, a TCP relay that can cut the
agent's link (and refuse reconnects) without touching the broker or the cloud's services:
the broker sees an unclean disconnect and publishes the agent's Last Will, as in the field.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import uvicorn

from cloud.accounts.models import Role
from cloud.app import create_app
from cloud.demo.link import LinkRelay
from cloud.devices.service import issue_pairing_code
from cloud.pg import PgConnection
from cloud.settings import Settings
from cloud.workers.ingest import IngestWorker, open_ingest_worker
from edge_agent.app import Agent
from edge_agent.config import load_config
from edge_agent.provision import claim, write_claim
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec
from protocols.ids import new_ulid
from protocols.meters import Quantity, decode_registers, encode_registers, load_map
from tests.support.bookings_fixtures import insert_booking
from tests.support.certs import Certs
from tests.support.cloud_env import make_settings
from tests.support.market import ApiUser, add_user
from tests.support.mosquitto import Broker, free_port

SDM630 = load_map("sdm630")
PRICE_PER_KWH_PAISE = 1800
SESSION_FEE_PAISE = 500


class LinkCutter(LinkRelay):
    """A relay from ``port`` to the broker's TLS port that can be cut and restored: the demo's
    own site uplink (:class:`cloud.demo.link.LinkRelay`), which the flow tests cut."""

    async def cut(self) -> None:
        """Drop every connection now and stop listening until :meth:`restore`: a reconnect
        is refused at TCP level, like a site whose uplink is down."""
        await self.drop()


def relay_closed(sim: SimSite) -> bool:
    """Whether the simulated contactor is closed now."""
    return bool(sim.site.relay_closed)


def register_wh(sim: SimSite) -> int:
    """The meter's import register now, as any Modbus client would decode it."""
    image = encode_registers(SDM630, sim.site.values(1))
    reg = SDM630.by_quantity[Quantity.ENERGY_IMPORT_WH]
    words = [image[reg.address + i] for i in range(reg.width)]
    return round(decode_registers(SDM630, reg.address, words)[Quantity.ENERGY_IMPORT_WH])


def site_config(tmp: Path, sim: SimSite) -> Path:
    """The installer's agent.toml (no identity yet: provisioning adds cloud.toml)."""
    ends = sim.endpoints()
    host, port = ends["tcp"].rsplit(":", 1)
    link = f'{{ transport = "tcp", host = "{host}", port = {port} }}'
    path = tmp / "agent.toml"
    path.write_text(f"""
device_id = "unprovisioned"

[[meters]]
id = "m1"
model = "sdm630"
unit_id = 1
poll_interval_s = 0.25
link = {link}

[[connectors]]
id = 1
meter = "m1"
max_current_a = 32
relay = {{ driver = "modbus-coil", unit_id = 2, coil = 0, link = {link} }}

[bus]
retries = 0
timeout_s = 0.3
frame_gap_s = 0.0

[store]
path = "{tmp / "agent.db"}"

[sessions]
progress_interval_s = 5

[clock]
trust = "always"

[control]
socket_path = "{tmp / "agent.sock"}"

[[inputs.hid]]
device = "{ends["keys"]}"
kind = "keypad"
connector = 1

[mqtt]
keepalive_s = 5
status_interval_s = 1
ack_timeout_s = 5
""")
    return path


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], what: str, *, timeout_s: float = 30.0
) -> None:
    """Poll state held by another process (nothing to await); fail naming ``what``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Market:
    settings: Settings
    api_url: str
    http: httpx.AsyncClient
    pg: PgConnection
    sim: SimSite
    agent: Agent
    link: LinkCutter
    ingest: IngestWorker
    host: ApiUser
    driver: ApiUser
    admin: ApiUser
    charger_id: str
    connector_id: str
    device_id: str
    site: Path
    extra: dict[str, object] = field(default_factory=dict)

    def ws_url(self, path: str, user: ApiUser) -> str:
        token = user.headers["Authorization"].removeprefix("Bearer ")
        return f"ws://{self.api_url.removeprefix('http://')}{path}?access_token={token}"

    async def book(
        self, user: ApiUser, *, start: datetime, end: datetime, status: str = "confirmed"
    ) -> str:
        return await insert_booking(
            self.pg,
            user,
            charger_id=self.charger_id,
            connector_id=self.connector_id,
            start=start,
            end=end,
            status=status,
        )

    async def device_online(self) -> bool:
        return bool(
            await self.pg.fetchval("SELECT online FROM devices WHERE id = $1", self.device_id)
        )


async def list_charger(pg: PgConnection, host: ApiUser, admin: ApiUser) -> tuple[str, str]:
    """The host lists a charger with one connector; the admin approves it (SQL: the listing
    routes are tested on their own)."""
    charger_id, connector_id = new_ulid(), new_ulid()
    await pg.execute(
        "INSERT INTO chargers (id, host_id, name, address, city, state, pincode, latitude, "
        "longitude, price_per_kwh_paise, session_fee_paise, qr_code) VALUES "
        "($1, $2, 'Asha''s garage', '12 MG Road', 'Pune', 'Maharashtra', '411001', 18.52, "
        "73.85, $3, $4, $5)",
        charger_id,
        host.host_id,
        PRICE_PER_KWH_PAISE,
        SESSION_FEE_PAISE,
        charger_id[-10:],
    )
    await pg.execute(
        "INSERT INTO connectors (id, charger_id, number, type, max_power_w) "
        "VALUES ($1, $2, 1, 'Type2', 7400)",
        connector_id,
        charger_id,
    )
    await pg.execute(
        "UPDATE chargers SET moderation_status = 'approved', is_listed = true, "
        "moderation_note = $2 WHERE id = $1",
        charger_id,
        f"approved by {admin.id}",
    )
    return charger_id, connector_id


@asynccontextmanager
async def running_market(
    *,
    db_url: str,
    broker: Broker,
    certs: Certs,
    service_passwords: dict[str, str],
    pg: PgConnection,
    tmp: Path,
    **env: str,
) -> AsyncIterator[Market]:
    """Everything up, the agent provisioned and online; torn down in reverse on exit."""
    assert broker.tls_port is not None
    async with AsyncExitStack() as stack:
        link = await stack.enter_async_context(LinkCutter(broker.tls_port))
        ingest_settings = make_settings(db_url, broker, service_passwords["cloud-ingest"])
        worker = await stack.enter_async_context(open_ingest_worker(ingest_settings))
        tasks = await stack.enter_async_context(asyncio.TaskGroup())
        stop_tasks: list[Callable[[], object]] = []

        async def stop_all() -> None:
            for stop in reversed(stop_tasks):
                stop()

        stack.push_async_callback(stop_all)
        ingest_task = tasks.create_task(worker.run(), name="ingest")
        stop_tasks.append(ingest_task.cancel)

        settings = make_settings(
            db_url,
            broker,
            service_passwords["cloud-api"],
            username="cloud-api",
            CHARGEMITRA_MQTT_PUBLIC_URL=f"mqtts://127.0.0.1:{link.port}",
            **env,
        )
        app = create_app(settings)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        api_task = tasks.create_task(server.serve(), name="api")

        def stop_api() -> None:
            server.should_exit = True

        stop_tasks.append(stop_api)

        async def api_started() -> bool:
            return bool(server.started)

        await wait_for(api_started, "the API")
        api_url = f"http://127.0.0.1:{port}"
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=api_url, timeout=30))

        host = await add_user(pg, settings, Role.HOST)
        driver = await add_user(pg, settings, Role.DRIVER)
        admin = await add_user(pg, settings, Role.ADMIN)
        charger_id, connector_id = await list_charger(pg, host, admin)

        sim = await stack.enter_async_context(
            SimSite(
                SimConfig(
                    meters=(MeterSpec("sdm630", 1),),
                    relay_unit=2,
                    tcp=("127.0.0.1", 0),
                    turnaround_s=0.0,
                    rfid=False,
                    keys=True,
                    control=None,
                    state_path=None,
                )
            )
        )
        sim.plug("7.4kw")
        site = tmp / "site"
        site.mkdir()
        config = site_config(site, sim)
        async with app.state.cloud.sessions() as db, db.begin():
            issued = await issue_pairing_code(
                db,
                settings,
                host_id=host.host_id or "",
                charger_id=charger_id,
                now=datetime.now(UTC),
            )
        claimed = await asyncio.to_thread(claim, api_url, issued.code)
        write_claim(claimed, site, ca_file=certs.ca)
        agent = Agent(load_config(config))
        stop_agent = asyncio.Event()
        agent_task = tasks.create_task(agent.run(stop_agent), name="agent")
        stop_tasks.append(stop_agent.set)
        await asyncio.wait_for(agent.ready.wait(), 20)
        market = Market(
            settings=settings,
            api_url=api_url,
            http=http,
            pg=pg,
            sim=sim,
            agent=agent,
            link=link,
            ingest=worker,
            host=host,
            driver=driver,
            admin=admin,
            charger_id=charger_id,
            connector_id=connector_id,
            device_id=claimed.device_id,
            site=site,
            extra={"state": app.state.cloud},
        )
        await wait_for(market.device_online, "the device online in the cloud")
        try:
            yield market
        finally:
            # The agent stops first (it opens its relay, ends its session), while the
            # simulator and the broker are still there.
            stop_agent.set()
            await asyncio.wait({agent_task}, timeout=30)
            await stop_all()
            stop_tasks.clear()
            await asyncio.wait({api_task, ingest_task}, timeout=30)


def booking_window(minutes_before: int = 5, hours_after: int = 1) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(minutes=minutes_before), now + timedelta(hours=hours_after)


async def cancel_quietly(task: asyncio.Task[object]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
