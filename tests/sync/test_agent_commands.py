"""The agent with its sync task, end to end: a real broker (TLS, the project's ACL), the
simulated charger, and cloud commands — a signed start closes the relay and is answered
Accepted, a replayed token and a stale command are refused, session events say online, and
each decision is reported on the auth topic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import paho.mqtt.client as paho
import pytest

from edge_agent.app import Agent
from edge_agent.config import load_config
from edge_agent.testing import Acker
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec
from protocols.enums import AuthorizationStatus, CommandStatus, MessageKind, StopReason
from protocols.ids import new_ulid
from protocols.messages import (
    AuthDecision,
    Command,
    CommandResult,
    SessionEvent,
    StartSession,
    StopSession,
    encode_message,
)
from protocols.tokens import PrivateKey, UnlockClaims, sign_unlock_token
from protocols.topics import topic
from tests.support.certs import Certs
from tests.support.mosquitto import Broker
from tests.sync.rig import API_PASSWORD, INGEST_PASSWORD, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICE = "site-cmd"
PASSWORD = "device-secret-cmd"
KEY = PrivateKey.generate()


@pytest.fixture
def broker_users() -> dict[str, str]:
    return {DEVICE: PASSWORD, "cloud-ingest": INGEST_PASSWORD, "cloud-api": API_PASSWORD}


def agent_config(tmp: Path, sim: SimSite, broker: Broker, certs: Certs) -> Path:
    public = tmp / "cloud.pub"
    public.write_bytes(KEY.public_key().to_pem())
    (tmp / "mqtt.password").write_text(PASSWORD + "\n")
    host, port = sim.endpoints()["tcp"].rsplit(":", 1)
    path = tmp / "agent.toml"
    path.write_text(
        f"""
device_id = "{DEVICE}"

[[meters]]
id = "m1"
model = "sdm630"
unit_id = 1
poll_interval_s = 0.25
link = {{ transport = "tcp", host = "{host}", port = {port} }}

[[connectors]]
id = 1
meter = "m1"
max_current_a = 32

[connectors.relay]
driver = "modbus-coil"
unit_id = 2
coil = 0
link = {{ transport = "tcp", host = "{host}", port = {port} }}

[bus]
frame_gap_s = 0.0
timeout_s = 0.3
retries = 0

[store]
path = "{tmp / "agent.db"}"

[clock]
trust = "always"

[auth]
public_key_files = ["{public}"]

[control]
socket_path = "{tmp / "agent.sock"}"

[mqtt]
host = "127.0.0.1"
port = {broker.tls_port}
ca_file = "{certs.ca}"
password_file = "{tmp / "mqtt.password"}"
keepalive_s = 5
status_interval_s = 1
"""
    )
    return path


def command(action: object, *, expires_in: timedelta = timedelta(seconds=30)) -> Command:
    now = datetime.now(UTC)
    return msgspec.convert(
        {
            "msg_id": new_ulid(),
            "device_id": DEVICE,
            "seq": 1,
            "ts": now,
            "clock_synced": True,
            "cmd_id": new_ulid(),
            "expires_at": now + expires_in,
            "action": action,
        },
        Command,
    )


def token() -> str:
    now = datetime.now(UTC)
    claims = UnlockClaims(
        charger_id=DEVICE,
        connector=1,
        user_ref="u-1",
        jti=new_ulid(),
        nbf=now - timedelta(minutes=1),
        exp=now + timedelta(hours=1),
        booking_id="bk-1",
    )
    return sign_unlock_token(KEY, claims)


def result_of(acker: Acker, cmd: Command) -> CommandResult | None:
    for message in list(acker.received[DEVICE].by_seq.values()):
        if isinstance(message, CommandResult) and message.cmd_id == cmd.cmd_id:
            return message
    return None


async def answer(acker: Acker, cmd: Command) -> CommandResult:
    await wait_until(lambda: result_of(acker, cmd) is not None, 20, f"the answer to {cmd.cmd_id}")
    result = result_of(acker, cmd)
    assert result is not None
    return result


async def test_signed_start_closes_the_relay_replays_and_stale_commands_are_refused(
    tmp_path: Path, broker: Broker, certs: Certs, acker: Acker, api: paho.Client
) -> None:
    sim_config = SimConfig(
        meters=(MeterSpec("sdm630", 1),),
        relay_unit=2,
        tcp=("127.0.0.1", 0),
        serial=False,
        turnaround_s=0.0,
        rfid=False,
        keys=False,
        control=None,
        state_path=None,
    )

    def send(cmd: Command) -> None:
        api.publish(topic(DEVICE, MessageKind.CMD), encode_message(cmd), qos=1).wait_for_publish(5)

    async with SimSite(sim_config) as sim:
        sim.plug("7.4kw")
        agent = Agent(load_config(agent_config(tmp_path, sim, broker, certs)))
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(agent.run(stop), name="agent")
            try:
                await asyncio.wait_for(agent.ready.wait(), 20)
                sync = agent.runtime.sync
                assert sync is not None
                await wait_until(lambda: sync.stats.connected, 20, "the cloud link")

                signed = token()
                start = command(StartSession(connector=1, token=signed))
                send(start)
                started = await answer(acker, start)
                assert started.status is CommandStatus.ACCEPTED, started.detail
                assert started.auth_status is AuthorizationStatus.ACCEPTED
                assert started.session_id is not None
                await wait_until(lambda: sim.site.relay_closed, 10, "the relay to close")

                stop_cmd = command(
                    StopSession(session_id=started.session_id, reason=StopReason.REMOTE)
                )
                send(stop_cmd)
                assert (await answer(acker, stop_cmd)).status is CommandStatus.ACCEPTED
                await wait_until(lambda: not sim.site.relay_closed, 10, "the relay to open")
                sim.unplug()  # Finishing -> Available: the connector is free again
                controller = agent.runtime.controllers[1]
                await wait_until(lambda: not controller.busy, 10, "the connector to be free")

                replay = command(StartSession(connector=1, token=signed))
                send(replay)
                replayed = await answer(acker, replay)
                assert replayed.status is CommandStatus.REJECTED
                assert replayed.auth_status is AuthorizationStatus.REPLAYED

                stale = command(
                    StartSession(connector=1, token=token()), expires_in=timedelta(seconds=-5)
                )
                send(stale)
                assert (await answer(acker, stale)).status is CommandStatus.EXPIRED
                await asyncio.sleep(0.5)
                assert not sim.site.relay_closed
            finally:
                stop.set()
    events = [m for m in acker.received[DEVICE].by_seq.values() if isinstance(m, SessionEvent)]
    assert {e.session_id for e in events} == {started.session_id}
    first = min(events, key=lambda e: e.event_seq)
    assert first.event.value == "started"
    assert not any(e.offline for e in events)  # the link was up: online events
    # Each decision went up on the auth topic: the start names its session, the replay none
    # (the stale command was never executed, so never decided).
    decisions = sorted(
        (m for m in acker.received[DEVICE].by_seq.values() if isinstance(m, AuthDecision)),
        key=lambda d: d.seq,
    )
    assert [(d.status, d.session_id) for d in decisions] == [
        (AuthorizationStatus.ACCEPTED, started.session_id),
        (AuthorizationStatus.REPLAYED, None),
    ]
    assert decisions[0].credential.ref == decisions[1].credential.ref  # the token's jti
    assert signed not in str(decisions)
