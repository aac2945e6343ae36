"""The agent as an OCPP 1.6-J charge point of a CSMS nobody here wrote: the ``ocpp``
package's ChargePoint (PyPI) on a TLS WebSocket with Basic auth (security profile 2).

The agent runs in-process against a real Modbus TCP peer (meter + coil relay). It boots,
reports status, asks the CSMS about a tag it does not know, starts on RemoteStartTransaction
(the relay closes on the peer), sends MeterValues, stops on RemoteStopTransaction with meter
start/stop equal to the meter's delta, and answers GetConfiguration, ChangeConfiguration
(a new AuthorizationKey: it reconnects with it), TriggerMessage, the local-list calls and
Reset. Every frame it sent validates against the official OCPP 1.6 schemas.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from ocpp.v16 import call

from edge_agent.app import Agent
from edge_agent.config import load_config
from edge_agent.tech.checks import Level
from edge_agent.tech.csms import check_csms, probe_csms
from edge_agent.testing import ChargingMeter, ModbusPeer
from tests.support.certs import Certs, make_certs

from .agent_rig import control, rows, write_config
from .ocpp_csms import Csms, check_frames, eventually, ocpp_config, running_csms

pytestmark = [pytest.mark.integration]

KEY = "first-key-0123456789"
NEW_KEY = "second-key-987654321"
REQUIRED_CORE_KEYS = {
    "AuthorizeRemoteTxRequests",
    "ClockAlignedDataInterval",
    "ConnectionTimeOut",
    "ConnectorPhaseRotation",
    "GetConfigurationMaxKeys",
    "HeartbeatInterval",
    "LocalAuthorizeOffline",
    "LocalPreAuthorize",
    "MeterValuesAlignedData",
    "MeterValuesSampledData",
    "MeterValueSampleInterval",
    "NumberOfConnectors",
    "ResetRetries",
    "StopTransactionOnEVSideDisconnect",
    "StopTransactionOnInvalidId",
    "StopTxnAlignedData",
    "StopTxnSampledData",
    "SupportedFeatureProfiles",
    "TransactionMessageAttempts",
    "TransactionMessageRetryInterval",
    "UnlockConnectorOnEVSideDisconnect",
    "LocalAuthListEnabled",
    "LocalAuthListMaxLength",
    "SendLocalListMaxLength",
}


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    (tmp_path / "certs").mkdir()
    return make_certs(tmp_path / "certs")


@asynccontextmanager
async def agent_with_csms(
    tmp: Path, certs: Certs
) -> AsyncIterator[tuple[Csms, ModbusPeer, ChargingMeter, Agent]]:
    async with (
        running_csms(certs, password=KEY) as csms,
        ModbusPeer({1: ("sdm630", {})}, coil_units=(9,)) as peer,
    ):
        meter = ChargingMeter(peer, meter_unit=1, relay_unit=9, tick_s=0.2)
        path = write_config(
            tmp, port=peer.port, extra=ocpp_config(tmp, csms.url, certs.ca, key=KEY)
        )
        agent = Agent(load_config(path))
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            physics = tasks.create_task(meter.run(), name="meter-physics")
            run = tasks.create_task(agent.run(stop), name="agent")
            await asyncio.wait_for(agent.ready.wait(), 10)
            try:
                yield csms, peer, meter, agent
            finally:
                stop.set()
                await run
                physics.cancel()


async def test_a_remote_session_from_boot_to_stop_against_the_ocpp_package_csms(
    tmp_path: Path, certs: Certs
) -> None:
    async with agent_with_csms(tmp_path, certs) as (csms, peer, meter, agent):
        rec = csms.record
        await eventually(lambda: rec.boots == 1 and len(rec.statuses) >= 2)
        assert rec.connections == ["CM-TEST-1"]
        assert {(s["connector_id"], s["status"]) for s in rec.statuses} == {
            (0, "Available"),
            (1, "Available"),
        }

        # Every required Core key, and the LocalAuthListManagement ones.
        conf = await csms.call(call.GetConfiguration())
        keys = {k["key"]: k for k in conf.configuration_key}
        assert keys.keys() >= REQUIRED_CORE_KEYS
        assert keys["NumberOfConnectors"] == {
            "key": "NumberOfConnectors",
            "readonly": True,
            "value": "1",
        }
        assert "AuthorizationKey" not in keys  # write-only
        conf = await csms.call(call.GetConfiguration(key=["HeartbeatInterval", "NoSuchKey"]))
        assert [k["value"] for k in conf.configuration_key] == ["300"]
        assert conf.unknown_key == ["NoSuchKey"]
        changed = await csms.call(call.ChangeConfiguration(key="NumberOfConnectors", value="4"))
        assert changed.status == "Rejected"
        changed = await csms.call(call.ChangeConfiguration(key="NoSuchKey", value="1"))
        assert changed.status == "NotSupported"
        changed = await csms.call(call.ChangeConfiguration(key="HeartbeatInterval", value="x"))
        assert changed.status == "Rejected"

        # A remote start for a tag the agent does not know: it asks the CSMS (Authorize).
        csms.accepted_tags.add("REMOTE-TAG-1")
        start_wh = meter.energy_wh
        answer = await csms.call(call.RemoteStartTransaction(id_tag="REMOTE-TAG-1", connector_id=1))
        assert answer.status == "Accepted"
        await eventually(lambda: len(rec.transactions) >= 1)
        assert peer.coil(9) is True
        assert rec.authorized == ["REMOTE-TAG-1"]
        action, started = rec.transactions[0]
        assert action == "StartTransaction"
        assert started["id_tag"] == "REMOTE-TAG-1"
        assert started["connector_id"] == 1
        transaction_id = csms.next_transaction_id
        # Charging: MeterValues of the transaction (progress every 5 s in this config).
        await eventually(lambda: any(a == "MeterValues" for a, _ in rec.transactions))
        _, sample = next(t for t in rec.transactions if t[0] == "MeterValues")
        assert sample["transaction_id"] == transaction_id
        assert any(s["status"] == "Charging" and s["connector_id"] == 1 for s in rec.statuses)
        busy = await csms.call(call.RemoteStartTransaction(id_tag="REMOTE-TAG-1", connector_id=1))
        assert busy.status == "Rejected"
        wrong = await csms.call(call.RemoteStopTransaction(transaction_id=transaction_id + 7))
        assert wrong.status == "Rejected"
        stopped = await csms.call(call.RemoteStopTransaction(transaction_id=transaction_id))
        assert stopped.status == "Accepted"
        assert peer.coil(9) is False
        await eventually(lambda: rec.transactions[-1][0] == "StopTransaction")
        _, stop = rec.transactions[-1]
        assert stop["transaction_id"] == transaction_id
        assert stop["reason"] == "Remote"
        assert stop["id_tag"] == "REMOTE-TAG-1"
        ((meter_start, meter_stop, energy),) = rows(
            tmp_path / "agent.db", "SELECT meter_start_wh, meter_stop_wh, energy_wh FROM sessions"
        )
        assert started["meter_start"] == meter_start == start_wh
        assert stop["meter_stop"] == meter_stop
        assert stop["meter_stop"] - started["meter_start"] == energy > 0

        # An unknown tag the CSMS refuses starts nothing.
        await eventually(
            lambda: (
                rec.statuses[-1] == {**rec.statuses[-1], "connector_id": 1, "status": "Available"}
            )
        )
        status = await control(
            tmp_path / "agent.sock", cmd="start", connector=1, id_tag="STRANGER01"
        )
        assert status["ok"] is False
        assert status["status"] == "Invalid"
        assert rec.authorized[-1] == "STRANGER01"

        # TriggerMessage, the local list, the cache, DataTransfer, UnlockConnector.
        before = len(rec.statuses)
        trigger = await csms.call(
            call.TriggerMessage(requested_message="StatusNotification", connector_id=1)
        )
        assert trigger.status == "Accepted"
        await eventually(lambda: len(rec.statuses) > before)
        trigger = await csms.call(call.TriggerMessage(requested_message="MeterValues"))
        assert trigger.status == "Accepted"
        await eventually(lambda: len(rec.meter_values) == 1)
        trigger = await csms.call(call.TriggerMessage(requested_message="Heartbeat"))
        await eventually(lambda: rec.heartbeats >= 1)
        version = await csms.call(call.GetLocalListVersion())
        sent = await csms.call(
            call.SendLocalList(
                list_version=version.list_version + 1,
                update_type="Full",
                local_authorization_list=[
                    {"id_tag": "LISTED-TAG", "id_tag_info": {"status": "Accepted"}}
                ],
            )
        )
        assert sent.status == "Accepted"
        stale = await csms.call(
            call.SendLocalList(
                list_version=1, update_type="Differential", local_authorization_list=[]
            )
        )
        assert stale.status == "VersionMismatch"
        assert (
            await csms.call(call.GetLocalListVersion())
        ).list_version == version.list_version + 1
        assert (await csms.call(call.ClearCache())).status == "Accepted"
        assert rows(tmp_path / "agent.db", "SELECT count(*) FROM auth_cache") == [(0,)]
        unlock = await csms.call(call.UnlockConnector(connector_id=1))
        assert unlock.status == "NotSupported"
        data = await csms.call(call.DataTransfer(vendor_id="com.example"))
        assert data.status == "UnknownVendorId"
        # A listed tag starts offline-capable, without asking the CSMS.
        asked = len(rec.authorized)
        status = await control(
            tmp_path / "agent.sock", cmd="start", connector=1, id_tag="LISTED-TAG"
        )
        assert status["ok"], status
        assert len(rec.authorized) == asked
        assert (await control(tmp_path / "agent.sock", cmd="stop", connector=1))["ok"]
        await eventually(
            lambda: (
                rec.transactions[-1][0] == "StopTransaction"
                and rec.transactions[-1][1]["id_tag"] == "LISTED-TAG"
            )
        )
        await eventually(lambda: rec.statuses[-1]["status"] == "Available")

        # ChangeAvailability: Inoperative holds the connector (Unavailable), Operative frees it.
        avail = await csms.call(call.ChangeAvailability(connector_id=1, type="Inoperative"))
        assert avail.status == "Accepted"
        await eventually(lambda: rec.statuses[-1]["status"] == "Unavailable")
        refused = await control(
            tmp_path / "agent.sock", cmd="start", connector=1, id_tag="LISTED-TAG"
        )
        assert refused["ok"] is False
        avail = await csms.call(call.ChangeAvailability(connector_id=1, type="Operative"))
        assert avail.status == "Accepted"
        await eventually(lambda: rec.statuses[-1]["status"] == "Available")

        # A new AuthorizationKey: accepted, and the agent reconnects with it (no second
        # BootNotification: it did not reboot; its statuses are sent again).
        csms.password = NEW_KEY
        before = len(rec.statuses)
        changed = await csms.call(call.ChangeConfiguration(key="AuthorizationKey", value=NEW_KEY))
        assert changed.status == "Accepted"
        await eventually(lambda: len(rec.statuses) >= before + 2)
        assert rec.connections == ["CM-TEST-1", "CM-TEST-1"]
        assert rec.boots == 1

        # Reset: the agent ends its sessions and stops (to be started again by its service).
        received, sent_frames = list(csms.received), list(csms.sent)
        reset = await csms.call(call.Reset(type="Soft"))
        assert reset.status == "Accepted"
        await asyncio.wait_for(_stopped(agent), 10)
        await eventually(lambda: agent.restart_requested)  # its run is over
        assert check_frames(list(csms.received), list(csms.sent)) >= len(received) > 20
        del sent_frames
        # `doctor` with the agent stopped: one test connection with the stored key, then the
        # same with a key the CSMS refuses.
        settings = load_config(tmp_path / "agent.toml")
        facts = await probe_csms(settings)
        assert facts.connected, facts
        assert check_csms(facts).level is Level.PASS
        csms.password = "not-this-one-at-all"
        refused = check_csms(await probe_csms(settings))
        assert refused.level is Level.FAIL
        assert "credentials" in refused.remedy


async def _stopped(agent: Agent) -> None:
    assert agent.runtime.restart is not None
    await agent.runtime.restart.wait()
