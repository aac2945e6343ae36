"""``doctor`` turns FAIL, with the right remedy, for each fault a technician meets — with the
agent stopped (the CLI uses the bus, the relay and the broker itself) — and passes a healthy
site beside the running agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_sim.site import MeterSpec
from tests.cli.rig import BAUD, cli, mqtt_table, sim_site, write_config
from tests.support.certs import Certs
from tests.support.mosquitto import Broker, free_port

#: fault -> (the check that must FAIL, words its remedy must contain)
FAULTS = {
    "meter_silent": ("meter m1", "A/B wires"),
    "wrong_baud": ("meter m1", f"link.baud = {BAUD}"),
    "relay_stuck": ("relay 1", "welded"),
    "broker_down": ("cloud link", "broker unreachable"),
    "bad_credentials": ("cloud link", "refused our credentials"),
    "clock_unsynced": ("clock", "NTP"),
    "disk_nearly_full": ("disk", "free space"),
}


@pytest.mark.integration
@pytest.mark.fault
@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_doctor_fails_with_the_right_remedy_for_each_injected_fault(
    fault: str, tmp_path: Path, broker: Broker, certs: Certs
) -> None:
    assert broker.tls_port is not None
    port = free_port() if fault == "broker_down" else broker.tls_port
    password = "wrong-password" if fault == "bad_credentials" else None
    mqtt = mqtt_table(
        tmp_path, port=port, ca=certs.ca, **({"password": password} if password else {})
    )
    async with sim_site(MeterSpec("sdm630", 1)) as sim:
        baud = 19200 if fault == "wrong_baud" else BAUD
        clock = "kernel" if fault == "clock_unsynced" else "always"
        config = write_config(tmp_path, sim, baud=baud, mqtt=mqtt, clock=clock)
        env = {"CHARGEMITRA_CLOCK_SYNCED": "0" if fault == "clock_unsynced" else "1"}
        args = ["doctor", "--json"]
        if fault == "disk_nearly_full":
            args += ["--min-free-mb", str(10**12)]  # more than any disk has: "nearly full"
        if fault == "meter_silent":
            sim.set_fault("timeout", unit=1)
        if fault == "relay_stuck":
            sim.set_relay(True)
            sim.set_fault("welded")  # the contacts stay closed whatever the coil says
        result = await cli(*args, config=config, env=env)

    assert result.code == 2, result
    name, remedy = FAULTS[fault]
    check = result.check(name)
    assert check["level"] == "FAIL", check
    assert remedy in check["remedy"], check
    # Only the injected fault (and the stopped agent) fail: the diagnosis points at one cause.
    failed = {c["name"] for c in result.json()["checks"] if c["level"] == "FAIL"}
    expected = {name, "agent"}
    if fault == "wrong_baud":
        expected.add("relay 1")  # the relay shares the line: silent at the wrong speed too
    assert failed == expected, result.stdout
    assert "not running" in " ".join(result.json()["notes"])
