"""The agent against a strict CSMS nobody here wrote: the npm package ``ocpp-rpc`` in strict
mode (every call the agent makes and every answer it gives validated by ocpp-rpc's own
OCPP 1.6 schemas), over TLS with Basic auth — scripted in JavaScript
(``ocpp_rpc_csms.js``), installed pinned under ``.cache/npm`` by deploy/dev/bootstrap.sh.

The agent (in-process, a real Modbus TCP peer for meter and relay) boots, reports status,
answers GetConfiguration, starts on RemoteStartTransaction after asking the CSMS about the
tag (the relay closes on the peer), sends MeterValues, stops on RemoteStopTransaction with
meter start/stop equal to the meter's delta, refuses to start for a tag the CSMS blocks,
answers ChangeConfiguration, TriggerMessage and Reset — and ocpp-rpc found nothing to refuse.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from edge_agent.app import Agent
from edge_agent.config import load_config
from edge_agent.testing import ChargingMeter, ModbusPeer
from tests.support.certs import Certs, make_certs

from .agent_rig import rows, write_config
from .ocpp_csms import eventually, ocpp_config

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
NPM_PREFIX = ROOT / ".cache" / "npm"
SCRIPT = Path(__file__).with_name("ocpp_rpc_csms.js")
KEY = "rpc-csms-key-0123456789"


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    (tmp_path / "certs").mkdir()
    return make_certs(tmp_path / "certs")


class RpcCsms:
    """The JavaScript CSMS as a child process: its events, and calls to the charge point."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.port: int | None = None
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self.listening = asyncio.Event()

    async def read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            if "reply" in message:
                self._replies.pop(message["reply"]).set_result(message)
                continue
            self.events.append(message)
            if message["event"] == "listening":
                self.port = message["port"]
                self.listening.set()

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [e["params"] for e in self.events if e["event"] == "call" and e["method"] == method]

    def count(self, event: str) -> int:
        return sum(1 for e in self.events if e["event"] == event)

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self._next += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[self._next] = future
        line = json.dumps({"id": self._next, "method": method, "params": params})
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        reply = await asyncio.wait_for(future, 25)
        assert "error" not in reply, reply
        result: dict[str, Any] = reply["result"]
        return result


@asynccontextmanager
async def rpc_csms(certs: Certs) -> AsyncIterator[RpcCsms]:
    node = shutil.which("node")
    assert node is not None, "node is missing: run deploy/dev/bootstrap.sh"
    assert (NPM_PREFIX / "node_modules" / "ocpp-rpc").is_dir(), (
        "ocpp-rpc is missing under .cache/npm: run deploy/dev/bootstrap.sh"
    )
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        str(NPM_PREFIX),
        str(certs.cert),
        str(certs.key),
        KEY,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    csms = RpcCsms(proc)
    async with asyncio.TaskGroup() as tasks:
        reader = tasks.create_task(csms.read(), name="rpc-csms-reader")
        try:
            await asyncio.wait_for(csms.listening.wait(), 15)
            yield csms
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            await proc.wait()
            await reader


async def test_the_agent_against_the_strict_ocpp_rpc_csms(tmp_path: Path, certs: Certs) -> None:
    async with rpc_csms(certs) as csms, ModbusPeer({1: ("sdm630", {})}, coil_units=(9,)) as peer:
        meter = ChargingMeter(peer, meter_unit=1, relay_unit=9, tick_s=0.2)
        url = f"wss://127.0.0.1:{csms.port}/ocpp16"
        path = write_config(
            tmp_path, port=peer.port, extra=ocpp_config(tmp_path, url, certs.ca, key=KEY)
        )
        agent = Agent(load_config(path))
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            physics = tasks.create_task(meter.run(), name="meter-physics")
            run = tasks.create_task(agent.run(stop), name="agent")
            try:
                await _session(csms, peer, meter, tmp_path)
                reset = await csms.call("Reset", {"type": "Soft"})
                assert reset == {"status": "Accepted"}
                await asyncio.wait_for(run, 15)
                assert agent.restart_requested
            finally:
                stop.set()
                await run
                physics.cancel()
    assert [e for e in csms.events if e["event"] in {"strict", "bad", "refused"}] == []
    assert csms.count("client") == 1


async def _session(csms: RpcCsms, peer: ModbusPeer, meter: ChargingMeter, tmp: Path) -> None:
    await eventually(lambda: len(csms.calls("StatusNotification")) >= 2)
    (boot,) = csms.calls("BootNotification")
    assert boot["chargePointVendor"] == "ChargeMitra"
    assert {(s["connectorId"], s["status"]) for s in csms.calls("StatusNotification")} == {
        (0, "Available"),
        (1, "Available"),
    }
    conf = await csms.call("GetConfiguration", {})
    assert len(conf["configurationKey"]) >= 21

    start_wh = meter.energy_wh
    answer = await csms.call("RemoteStartTransaction", {"idTag": "OK-TAG-1", "connectorId": 1})
    assert answer == {"status": "Accepted"}
    await eventually(lambda: len(csms.calls("StartTransaction")) == 1)
    assert peer.coil(9) is True
    assert [a["idTag"] for a in csms.calls("Authorize")] == ["OK-TAG-1"]
    (start,) = csms.calls("StartTransaction")
    assert start["meterStart"] == start_wh
    await eventually(lambda: len(csms.calls("MeterValues")) >= 1)
    assert csms.calls("MeterValues")[0]["transactionId"] == 2001
    answer = await csms.call("RemoteStopTransaction", {"transactionId": 2001})
    assert answer == {"status": "Accepted"}
    assert peer.coil(9) is False
    await eventually(lambda: len(csms.calls("StopTransaction")) == 1)
    (stop,) = csms.calls("StopTransaction")
    assert stop["transactionId"] == 2001
    ((energy,),) = rows(tmp / "agent.db", "SELECT energy_wh FROM sessions")
    assert stop["meterStop"] - start["meterStart"] == energy == meter.energy_wh - start_wh > 0

    # A tag the CSMS blocks: the remote start is accepted (the connector is free), then the
    # one decision path refuses it after asking; no transaction.
    await eventually(lambda: csms.calls("StatusNotification")[-1]["status"] == "Available")
    answer = await csms.call("RemoteStartTransaction", {"idTag": "NO-TAG-2", "connectorId": 1})
    assert answer == {"status": "Accepted"}
    await eventually(lambda: len(csms.calls("Authorize")) == 2)
    assert len(csms.calls("StartTransaction")) == 1
    assert peer.coil(9) is False

    changed = await csms.call(
        "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "30"}
    )
    assert changed == {"status": "Accepted"}
    for message in ("StatusNotification", "MeterValues", "Heartbeat", "BootNotification"):
        answer = await csms.call("TriggerMessage", {"requestedMessage": message})
        assert answer == {"status": "Accepted"}
    answer = await csms.call("TriggerMessage", {"requestedMessage": "FirmwareStatusNotification"})
    assert answer == {"status": "NotImplemented"}
    await eventually(lambda: len(csms.calls("BootNotification")) == 2)
    assert len(csms.calls("Heartbeat")) >= 1
