"""Acceptance (issue 15): a simulated meter that refuses one block of its map. The configured
agent (``chargemitra-agent run`` as a process, over RTU) keeps delivering the other quantities
to the broker, its status message names the missing block, and ``doctor`` names it — beside
the running agent and with the agent stopped (reading the bus itself).

The refusal is the simulator's ``refuse`` fault on the SDM630's energy-totals window
(0x0156..0x017F): reads touching it are answered with Modbus exception 2, as an SDM630 with
an older firmware does. Before issue 15 such a meter gave no readings at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.testing import Acker
from firmware_sim.site import MeterSpec
from protocols.messages import Status, TelemetryBatch
from protocols.meters import Quantity
from tests.cli.rig import DEVICE, agent_process, cli, mqtt_table, sim_site, write_config
from tests.edge.agent_rig import control, wait_until
from tests.support.certs import Certs
from tests.support.mosquitto import Broker

pytestmark = [pytest.mark.integration, pytest.mark.fault]

FIRST, LAST = 0x0156, 0x017F
BLOCK = "input 342-351"
REFUSED = {"energy_total_wh", "energy_import_l1_wh", "energy_import_l2_wh", "energy_import_l3_wh"}


def _readings(acker: Acker) -> list[dict[str, float]]:
    batches = acker.received[DEVICE].by_seq.values()
    return [
        {q.value: v for q, v in r.values.items()}
        for batch in batches
        if isinstance(batch, TelemetryBatch)
        for r in batch.readings
    ]


def _statuses(acker: Acker) -> list[Status]:
    return [s for s in acker.statuses if isinstance(s, Status) and s.meters]


async def test_a_meter_refusing_one_block_keeps_reporting_the_rest(
    tmp_path: Path, broker: Broker, certs: Certs, acker: Acker
) -> None:
    assert broker.tls_port is not None
    mqtt = mqtt_table(tmp_path, port=broker.tls_port, ca=certs.ca)
    async with sim_site(MeterSpec("sdm630", 1)) as sim:
        sim.set_relay(True)  # power flows: readings carry non-zero power and energy
        sim.set_fault("refuse", unit=1, first_address=FIRST, last_address=LAST)
        config = write_config(tmp_path, sim, mqtt=mqtt)

        # The agent stopped: doctor reads the bus itself.
        stopped = await cli("doctor", "--json", config=config)
        meter = stopped.check("meter m1")
        assert meter["level"] == "WARN", meter
        assert BLOCK in meter["detail"], meter
        assert "exception 2" in meter["detail"], meter
        assert "energy_total_wh" in meter["detail"]
        assert "quantities" in meter["remedy"]
        assert "map_file" in meter["remedy"]

        async with agent_process(config, tmp_path):

            async def delivered() -> bool:
                return len(_readings(acker)) >= 3 and bool(_statuses(acker))

            await wait_until(delivered, timeout_s=30, every_s=0.2)
            readings = _readings(acker)
            for values in readings:
                assert not REFUSED & set(values), values
            last = readings[-1]
            assert {"voltage_l1_v", "current_l1_a", "power_w", "energy_import_wh"} <= set(last)
            assert 200 < last["voltage_l1_v"] < 260
            assert last[Quantity.ENERGY_IMPORT_WH.value] > 0

            [health] = _statuses(acker)[-1].meters
            assert (health.meter_id, health.available) == ("m1", True)
            assert health.unavailable_blocks == [BLOCK]

            running = await cli("doctor", "--json", config=config)
            meter = running.check("meter m1")
            assert meter["level"] == "WARN", meter
            assert BLOCK in meter["detail"], meter
            assert "exception 2" in meter["detail"], meter
            assert running.code == 1, running.stdout  # warnings only: the site works

            # The control socket's status, and `meter read`, carry the block with its quantities.
            answer = await control(tmp_path / "agent.sock", cmd="status")
            [m1] = answer["meters"]
            [block] = m1["unavailable_blocks"]
            assert (block["block"], set(block["quantities"])) == (BLOCK, REFUSED)
            assert block["exception_code"] == 2
            assert 0 < block["retry_in_s"] <= 600
            read = await cli("meter", "read", "--json", config=config)
            assert read.code == 0, read
            [entry] = read.json()["meters"]
            assert [b["block"] for b in entry["unavailable_blocks"]] == [BLOCK]
            assert not REFUSED & set(entry["values"])
