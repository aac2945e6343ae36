"""The EV load model and the energy register: gating, profiles, taper, exact integration,
monotonic, kept across a simulator restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from firmware_sim.clock import ManualClock
from firmware_sim.errors import ConfigError
from firmware_sim.ev import Circuit, Ev, Profile
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec, Site
from firmware_sim.state import load_state
from protocols.meters import Quantity, load_map
from tests.sim.conftest import read_meter


async def test_ten_simulated_minutes_at_7_4_kw_add_1233_wh(
    sim: SimSite, clock: ManualClock, tcp_client: AsyncModbusTcpClient
) -> None:
    """Acceptance: the import register advances by 1233 Wh ± 1% (read over Modbus)."""
    sdm120 = load_map("sdm120")
    start = (await read_meter(tcp_client, sdm120, 1))[Quantity.ENERGY_IMPORT_WH]
    sim.plug("7.4kw")
    sim.set_relay(True)
    clock.advance(600)
    end = (await read_meter(tcp_client, sdm120, 1))[Quantity.ENERGY_IMPORT_WH]
    assert end - start == pytest.approx(1233.3, rel=0.01)


def test_nothing_flows_without_relay_and_ev() -> None:
    clock = ManualClock()
    site = Site([MeterSpec("sdm630", 1)], clock=clock)
    clock.advance(100)
    assert site.values(1)[Quantity.POWER_W] == 0
    site.plug(Profile.AC_11KW)
    clock.advance(100)
    assert site.values(1)[Quantity.ENERGY_IMPORT_WH] == 0  # relay open
    site.set_relay(True)
    clock.advance(100)
    assert site.values(1)[Quantity.ENERGY_IMPORT_WH] == pytest.approx(11000 * 100 / 3600)
    site.unplug()
    clock.advance(100)
    assert site.values(1)[Quantity.POWER_W] == 0
    assert site.values(1)[Quantity.ENERGY_IMPORT_WH] == pytest.approx(11000 * 100 / 3600)


@pytest.mark.parametrize(
    ("profile", "power_w", "phases"),
    [("3.3kw", 3300, 1), ("7.4kw", 7400, 1), ("11kw", 11000, 3), ("22kw", 22000, 3)],
)
def test_profiles_draw_their_power_on_their_phases(
    profile: str, power_w: float, phases: int
) -> None:
    circuit = Circuit(relay_closed=True, ev=Ev(Profile.parse(profile)))
    powers = circuit.phase_power_w()
    assert sum(powers) == pytest.approx(power_w)
    assert sum(1 for p in powers if p > 0) == phases


def test_current_follows_power_and_voltage() -> None:
    clock = ManualClock()
    site = Site([MeterSpec("sdm120", 1)], clock=clock, relay_closed=True)
    site.plug(Profile.AC_7_4KW)
    values = site.values(1)
    expected_a = 7400 / values[Quantity.POWER_FACTOR] / values[Quantity.VOLTAGE_L1_V]
    assert values[Quantity.CURRENT_L1_A] == pytest.approx(expected_a)
    assert 220 < values[Quantity.VOLTAGE_L1_V] < 240
    assert 49.9 < values[Quantity.FREQUENCY_HZ] < 50.1


def test_power_tapers_near_full_and_stops() -> None:
    ev = Ev(Profile.AC_7_4KW, capacity_wh=10_000, soc=0.5)
    circuit = Circuit(relay_closed=True, ev=ev)
    assert circuit.phase_power_w()[0] == 7400
    circuit.advance(3600 * 0.35 * 10_000 / 7400)  # to about 85 %
    assert ev.soc > 0.8
    tapering = sum(circuit.phase_power_w())
    assert 0 < tapering < 7400
    energy = list(circuit.energy_wh)
    circuit.advance(6 * 3600)
    assert ev.full
    assert sum(circuit.phase_power_w()) == 0
    assert circuit.energy_wh[0] > energy[0]
    assert circuit.energy_wh[0] <= 10_000 * 0.5 + 1  # never more than the battery took


def test_energy_is_monotonic_through_everything() -> None:
    clock = ManualClock()
    site = Site([MeterSpec("sdm630", 1)], clock=clock, relay_closed=True)
    readings = []
    for profile in ("3.3kw", "22kw", "7.4kw", "11kw"):
        site.plug(Profile.parse(profile), soc=0.7, capacity_wh=5_000)
        for _ in range(20):
            clock.advance(37)
            readings.append(site.values(1)[Quantity.ENERGY_IMPORT_WH])
        site.set_relay(not site.relay_closed)
    assert readings == sorted(readings)
    assert readings[-1] > readings[0]


async def test_energy_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    clock = ManualClock()
    config = SimConfig(meters=(MeterSpec("iem3155", 1),), relay_closed=True, state_path=state)
    async with SimSite(config, clock=clock) as first:
        first.plug("22kw")
        clock.advance(1800)
        energy = first.site.values(1)[Quantity.ENERGY_IMPORT_WH]
    assert energy == pytest.approx(11000)
    assert sum(load_state(state).energy_wh) == pytest.approx(energy)
    async with SimSite(config, clock=ManualClock()) as second:
        again = second.site.values(1)
        assert again[Quantity.ENERGY_IMPORT_WH] == pytest.approx(energy)
        assert again[Quantity.POWER_W] == pytest.approx(22000)  # the EV is still plugged


def test_a_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"version": 1, "energy_wh": [1, 2]}')
    with pytest.raises(ConfigError, match="not a simulator state"):
        Site([MeterSpec("sdm630", 1)], clock=ManualClock(), state_path=state)


def test_bad_plug_parameters_are_refused() -> None:
    site = Site([MeterSpec("sdm630", 1)], clock=ManualClock())
    with pytest.raises(ConfigError, match="unknown EV profile"):
        Profile.parse("50kw")
    with pytest.raises(ConfigError, match="state of charge"):
        site.plug(Profile.AC_11KW, soc=1.5)
