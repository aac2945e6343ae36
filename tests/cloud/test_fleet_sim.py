"""The fleet simulator (firmware_sim/fleet.py) against the real broker, ingest and PostgreSQL:
a few sites with their own provisioned credentials, sessions, a command, every site going
offline once (its Last Will) and draining its backlog — and nothing lost."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import multiprocessing
import threading
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cloud.pg import PgConnection
from cloud.settings import Settings
from cloud.workers.ingest import open_ingest_worker
from edge_agent.config import MqttSettings
from edge_agent.sync.uplink import UplinkSettings
from edge_agent.testing import close_threaded
from firmware_sim.errors import FleetError
from firmware_sim.fleet import (
    UNACKED_MAX,
    FleetConfig,
    provision,
    run_fleet,
    run_sites,
    site_ids,
)
from protocols.enums import MessageKind
from protocols.ids import new_ulid
from protocols.messages import Command, StartSession, encode_message
from protocols.tokens import PrivateKey, UnlockClaims, sign_unlock_token
from protocols.topics import topic
from tests.support.mosquitto import Broker, free_port

pytestmark = pytest.mark.integration

SITES = 4


async def _seed_devices(pg: PgConnection, device_ids: list[str]) -> None:
    await pg.execute("INSERT INTO users (id, name) VALUES ('U1', 'Host')")
    await pg.execute("INSERT INTO hosts (id, user_id, display_name) VALUES ('H1', 'U1', 'H')")
    for device_id in device_ids:
        await pg.execute("INSERT INTO devices (id, host_id) VALUES ($1, 'H1')", device_id)


def _send_command(
    broker: Broker, device_id: str, cmd_id: str, token: str = "fleet-test-token"
) -> None:
    """Publish a StartSession as the API does (its own identity, QoS 1, on ``cmd``)."""
    now = datetime.now(UTC)
    command = Command(
        msg_id=new_ulid(),
        device_id=device_id,
        seq=1,
        ts=now,
        clock_synced=True,
        cmd_id=cmd_id,
        expires_at=now + timedelta(seconds=60),
        action=StartSession(connector=1, token=token),
    )
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="cloud-api-test", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.username_pw_set("cloud-api", broker.users["cloud-api"])
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.publish(
            topic(device_id, MessageKind.CMD), encode_message(command), qos=1
        ).wait_for_publish(10)
    finally:
        close_threaded(client)


async def test_a_small_fleet_loses_nothing(
    settings: Settings, broker: Broker, pg: PgConnection
) -> None:
    device_ids = site_ids(SITES, "fleet-t")
    passwords = await asyncio.to_thread(provision, broker.admin(), device_ids)
    await _seed_devices(pg, device_ids)
    config = FleetConfig(
        port=broker.port,
        duration_s=6.0,
        rate_hz=2.0,
        readings=2,
        session_every_s=1.0,
        session_s=2.0,
        update_every_s=1.0,
        offline_fraction=1.0,
        offline_s=1.5,
        drain_timeout_s=15.0,
    )
    cmd_id = new_ulid()
    await pg.execute(
        "INSERT INTO device_commands (cmd_id, device_id, name, payload, sent_at, expires_at) "
        "VALUES ($1, $2, 'start_session', '{}'::jsonb, now(), now() + interval '1 minute')",
        cmd_id,
        device_ids[0],
    )
    async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
        ingest = tg.create_task(worker.run(), name="ingest")
        fleet = asyncio.create_task(run_sites(sorted(passwords.items()), config, start_at=0))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(_send_command, broker, device_ids[0], cmd_id)
        report = await fleet
        ingest.cancel()

    # Every site connected with its own credentials, went offline once and came back.
    assert report.sites == SITES
    assert report.went_offline == SITES
    assert report.connects >= 2 * SITES
    assert report.sessions_started >= 1
    assert report.sessions_stopped >= 1
    assert report.commands_answered == 1
    # Nothing went out before ingest's subscription was granted (open_ingest_worker waits
    # for its SUBACK): the broker drops such uplink (PUBACK 0x10), and a site whose first
    # status was dropped goes offline unseen, its Will then finding a device the cloud never
    # saw online (the Wills missing under load, before that wait).
    assert report.no_subscribers == 0
    # Nothing lost: every message acked, every telemetry batch stored exactly once.
    assert report.unacked == 0
    assert report.messages_acked == report.messages_sent
    stored = await pg.fetch("SELECT device_id, seq FROM telemetry_batches ORDER BY device_id, seq")
    by_device: dict[str, list[int]] = {}
    for row in stored:
        by_device.setdefault(row["device_id"], []).append(row["seq"])
    assert by_device == report.telemetry_seqs
    readings = await pg.fetchval("SELECT count(*) FROM telemetry")
    assert readings == report.telemetry_sent * 2 * 4  # 2 readings x 4 quantities per batch
    # The command's answer and the session it started are stored.
    (row,) = await pg.fetch(
        "SELECT result_status, result FROM device_commands WHERE cmd_id = $1", cmd_id
    )
    assert row["result_status"] == "Accepted"
    session_id = json.loads(row["result"])["session_id"]
    assert (
        await pg.fetchval("SELECT count(*) FROM sessions WHERE device_session_id = $1", session_id)
        == 1
    )
    # Sessions that stopped are stopped in the cloud too; the Last Will reached the devices.
    stopped = await pg.fetchval("SELECT count(*) FROM sessions WHERE stopped_at IS NOT NULL")
    assert stopped == report.sessions_stopped
    wills = await pg.fetchval(
        "SELECT count(DISTINCT subject_id) FROM notification_events WHERE kind = 'charger_offline'"
    )
    assert wills == SITES
    assert await pg.fetchval("SELECT count(*) FROM devices WHERE online") == SITES


async def test_a_site_sends_a_status_every_interval_and_stops_when_asked(
    settings: Settings, broker: Broker, pg: PgConnection
) -> None:
    """A site repeats its status as the agent does (so the cloud keeps it online past
    ``device_offline_after_s``), and a run ends when its ``stop`` event is set, long before
    its duration (bench.fleet's unlock sites live exactly as long as the unlocks need)."""
    device_ids = site_ids(1, "fleet-s")
    passwords = await asyncio.to_thread(provision, broker.admin(), device_ids)
    await _seed_devices(pg, device_ids)
    config = FleetConfig(
        port=broker.port,
        duration_s=600.0,
        session_every_s=0,
        offline_fraction=0.0,
        status_every_s=1.0,
        drain_timeout_s=15.0,
    )
    stop = asyncio.Event()
    async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
        ingest = tg.create_task(worker.run(), name="ingest")
        fleet = asyncio.create_task(
            run_sites(sorted(passwords.items()), config, start_at=0, stop=stop)
        )
        await asyncio.sleep(4.0)
        stop.set()
        report = await asyncio.wait_for(fleet, 20)
        ingest.cancel()

    statuses = report.messages_sent - report.telemetry_sent
    assert statuses >= 3  # the one at connect, then one a second
    assert report.unacked == 0
    (row,) = await pg.fetch(
        "SELECT online, last_status_seq FROM devices WHERE id = $1", device_ids[0]
    )
    assert row["online"]
    # The last status stored is a periodic one, not the connect's (seq 1).
    assert row["last_status_seq"] > 1


def _token(key: PrivateKey, device_id: str) -> tuple[str, str]:
    now = datetime.now(UTC)
    jti = new_ulid()
    claims = UnlockClaims(
        charger_id=device_id,
        connector=1,
        user_ref="U1",
        jti=jti,
        nbf=now,
        exp=now + timedelta(seconds=60),
        session_intent_id=new_ulid(),
    )
    return sign_unlock_token(key, claims), jti


async def test_a_site_given_the_token_key_checks_unlock_tokens_as_the_agent_does(
    settings: Settings, broker: Broker, pg: PgConnection
) -> None:
    """With the cloud's token key (a claim's), a site refuses a token for another charger
    and starts a session for its own, reporting the token's jti as the credential (the
    cloud's join from a session to its driver)."""
    device_ids = site_ids(1, "fleet-k")
    passwords = await asyncio.to_thread(provision, broker.admin(), device_ids)
    await _seed_devices(pg, device_ids)
    key = PrivateKey.generate()
    config = FleetConfig(
        port=broker.port,
        duration_s=600.0,
        session_every_s=0,
        offline_fraction=0.0,
        drain_timeout_s=15.0,
        token_public_key_pem=key.public_key().to_pem().decode(),
    )
    wrong, _ = _token(key, "fleet-elsewhere")
    right, jti = _token(key, device_ids[0])
    stop = asyncio.Event()
    async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
        ingest = tg.create_task(worker.run(), name="ingest")
        fleet = asyncio.create_task(
            run_sites(sorted(passwords.items()), config, start_at=0, stop=stop)
        )
        await asyncio.sleep(1.0)
        await asyncio.to_thread(_send_command, broker, device_ids[0], new_ulid(), wrong)
        await asyncio.to_thread(_send_command, broker, device_ids[0], new_ulid(), right)
        await asyncio.sleep(1.5)
        stop.set()
        report = await asyncio.wait_for(fleet, 20)
        ingest.cancel()

    assert report.commands_answered == 2
    assert report.sessions_started == 1
    assert report.unacked == 0
    refs = await pg.fetch("SELECT credential_kind, credential_ref FROM sessions")
    assert [(r["credential_kind"], r["credential_ref"]) for r in refs] == [("Token", jti)]


async def test_a_site_counts_uplink_the_broker_dropped_for_want_of_a_subscriber(
    broker: Broker,
) -> None:
    """With no ingest worker subscribed the broker PUBACKs every uplink with 0x10 ("no
    matching subscribers") and drops it — what a site meets right after a broker restart,
    before ingest's shared subscription is back (docs/fleet.md). The site counts them, keeps
    them in its outbox, and resends them after a backoff from ``no_subscribers_resend_s`` (as
    the agent does; 0: it waits for its ack timeout)."""
    device_ids = site_ids(1, "fleet-n")
    passwords = await asyncio.to_thread(provision, broker.admin(), device_ids)
    reports = []
    for resend_s in (0.0, 0.5):
        config = FleetConfig(
            port=broker.port,
            duration_s=3.0,
            session_every_s=0,
            offline_fraction=0.0,
            drain_timeout_s=1.0,
            no_subscribers_resend_s=resend_s,
        )
        reports.append(await run_sites(sorted(passwords.items()), config, start_at=0))
    waiting, resending = reports
    assert waiting.no_subscribers == waiting.publishes == waiting.messages_sent > 0
    assert waiting.unacked == waiting.messages_sent
    assert resending.publishes > resending.messages_sent
    assert resending.no_subscribers == resending.publishes


def test_a_site_resends_dropped_uplink_on_the_agents_schedule_by_default() -> None:
    """The simulator's defaults are the agent's: a message PUBACKed 0x10 is resent after a
    backoff from ``mqtt.no_subscribers_resend_s``, anything unacked after ``ack_timeout_s``,
    a backlog paced by ``mqtt.backlog_target_rtt_s`` (docs/fleet.md) — so the storm it
    measures is the fleet's as shipped."""
    agent = MqttSettings(host="127.0.0.1")
    sim = FleetConfig()
    assert sim.no_subscribers_resend_s == agent.no_subscribers_resend_s > 0
    assert sim.resend_after_s == agent.ack_timeout_s
    assert sim.backlog_target_rtt_s == agent.backlog_target_rtt_s > 0
    assert UplinkSettings().max_unacked == UNACKED_MAX


def test_a_run_whose_processes_die_ends_at_once_with_a_clear_error() -> None:
    """Simulator processes killed mid-run (a Ctrl-C reaches the whole process group) leave no
    report: ``run_fleet`` says so within seconds, instead of holding its thread — and the
    bench's executor, so the bench itself — for the run's whole limit (here over 5 minutes)."""
    config = FleetConfig(port=free_port(), duration_s=120.0, offline_fraction=0.0)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_fleet, dict.fromkeys(site_ids(4, "dying"), "x"), config, processes=2)
        deadline = time.monotonic() + 30
        while len(multiprocessing.active_children()) < 2:
            assert time.monotonic() < deadline, "the simulator processes never started"
            time.sleep(0.05)
        children = multiprocessing.active_children()
        assert all(child.is_alive() for child in children)
        for child in children:
            child.kill()
        # The run's own limit is over 5 minutes: an answer within this guard is the poll's.
        with pytest.raises(FleetError, match="ended without a report"):
            run.result(timeout=60)


def test_a_run_says_when_every_site_is_online_while_the_fleet_still_runs(broker: Broker) -> None:
    """``run_fleet``'s ``online`` event: what bench.fleet waits for before timing unlocks and
    searches against the running fleet (past the connect ramp). It comes from the simulator
    processes once every one of their sites is connected, before the fleet's time is up."""
    device_ids = site_ids(4, "fleet-on")
    passwords = provision(broker.admin(), device_ids)
    config = FleetConfig(
        port=broker.port, duration_s=20.0, offline_fraction=0.0, drain_timeout_s=1.0
    )
    online = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_fleet, passwords, config, processes=2, online=online)
        assert online.wait(timeout=60), "every site connected, yet no online event"
        # Set while the sites meter, not at the end: the run has its window still to go.
        assert not run.done()
        report = run.result(timeout=120)
    assert report.sites == 4
    assert report.connects >= 4


async def test_sites_that_lose_the_broker_reconnect_by_themselves_and_drain_their_backlog(
    settings: Settings, broker: Broker, pg: PgConnection
) -> None:
    """The broker restarts under a running fleet: each site notices its link closing (it
    waits for that, it does not poll), queues its backlog, reconnects with backoff once the
    broker is back, and drains it — the reconnect storm of bench.fleet, in small."""
    device_ids = site_ids(SITES, "fleet-r")
    passwords = await asyncio.to_thread(provision, broker.admin(), device_ids)
    await _seed_devices(pg, device_ids)
    config = FleetConfig(
        port=broker.port,
        duration_s=8.0,
        session_every_s=0,
        offline_fraction=0.0,
        backlog_batches_on_loss=5,
        drain_timeout_s=20.0,
    )
    async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
        ingest = tg.create_task(worker.run(), name="ingest")
        fleet = asyncio.create_task(run_sites(sorted(passwords.items()), config, start_at=0))
        await asyncio.sleep(2.0)
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(broker.start)
        report = await fleet
        ingest.cancel()

    assert report.went_offline == 0  # no site chose to leave: the broker went away
    assert report.connects >= 2 * SITES
    assert len(report.drained_at) == SITES  # every site's backlog acked
    assert report.unacked == 0
    assert report.messages_acked == report.messages_sent
    stored = await pg.fetchval("SELECT count(*) FROM telemetry_batches")
    assert stored == report.telemetry_sent
