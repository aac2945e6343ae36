"""A meter that refuses part of its map still gives readings, and any map — the site's own file,
a subset of quantities, each catalogue meter — is read from the simulator as the manual says.

Every test reads a real simulated meter (:mod:`firmware_sim`, Modbus TCP) through the agent's
own bus and poller; the refusal is the simulator's ``refuse`` fault: reads touching the
taken-away registers are answered with Modbus exception 2, as an older firmware does.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge_agent.config import BusTiming, MeterSettings, build
from edge_agent.meters.blocks import REFUSED_BLOCK_RETRY_S
from edge_agent.meters.bus import ModbusBus
from edge_agent.meters.poller import MeterPoller
from edge_agent.tech.checks import Level, MeterFacts, check_meter
from edge_agent.testing import FakeClock
from firmware_sim.clock import ManualClock
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec
from protocols.meters import Quantity, available_models, load_map

FAST = BusTiming(frame_gap_s=0.0, timeout_s=0.3, retries=0)
#: SDM630's third window: total and per-phase energies (sdm630.toml), 0x0156..0x017F.
SDM630_ENERGY_WINDOW = (0x0156, 0x017F)


def _site(meter: MeterSpec, clock: ManualClock) -> SimSite:
    config = SimConfig(
        meters=(meter,),
        tcp=("127.0.0.1", 0),
        relay_closed=True,
        control=None,
        state_path=None,
    )
    return SimSite(config, clock=clock)


@pytest.fixture
async def sdm630() -> AsyncIterator[SimSite]:
    clock = ManualClock(1000.0)
    async with _site(MeterSpec("sdm630", 1), clock) as sim:
        sim.plug("22kw")  # three phases: every quantity of the map has a value
        clock.advance(60)
        yield sim


def _settings(sim: SimSite, **fields: object) -> MeterSettings:
    host, port = sim.endpoints()["tcp"].rsplit(":", 1)
    data = {
        "id": "m1",
        "model": "sdm630",
        "unit_id": 1,
        "link": {"transport": "tcp", "host": host, "port": int(port)},
        **fields,
    }
    return build(MeterSettings, data)


def _assert_matches(
    values: dict[Quantity, float], truth: dict[Quantity, float], model: str = "sdm630"
) -> None:
    register_map = load_map(model)
    for quantity, value in values.items():
        # float32 keeps ~7 digits; a scaled integer (ABB) is exact to one unit of its scale.
        resolution = register_map.by_quantity[quantity].scale
        assert value == pytest.approx(truth[quantity], rel=1e-5, abs=resolution), quantity


async def test_a_refused_block_costs_only_its_quantities(
    sdm630: SimSite, caplog: pytest.LogCaptureFixture
) -> None:
    """Exception 2 on the energy-totals block: voltages, currents, power and the import
    register still arrive; the block is named as unavailable and not asked on every poll."""
    first, last = SDM630_ENERGY_WINDOW
    sdm630.set_fault("refuse", unit=1, first_address=first, last_address=last)
    settings = _settings(sdm630)
    async with ModbusBus(settings.link, FAST) as bus:
        poller = MeterPoller(settings, bus)
        with caplog.at_level(logging.INFO, logger="edge_agent.meters.poller"):
            reading = await poller.poll()
            assert reading is not None, poller.health.last_error
            frames_first = bus.frames
            again = await poller.poll()
            assert again is not None
        frames_second = bus.frames - frames_first

    truth = sdm630.site.values(1)
    refused = {
        Quantity.ENERGY_TOTAL_WH,
        Quantity.ENERGY_IMPORT_L1_WH,
        Quantity.ENERGY_IMPORT_L2_WH,
        Quantity.ENERGY_IMPORT_L3_WH,
    }
    expected = set(load_map("sdm630").by_quantity) - refused
    assert set(reading.values) == expected
    _assert_matches(reading.values, truth)
    assert reading.values[Quantity.ENERGY_IMPORT_WH] > 0
    assert poller.health.available is True
    assert poller.health.errors == 0
    [block] = poller.unavailable_blocks()
    assert block.label == "input 342-351"
    assert block.exception_code == 2
    assert set(block.block.quantities) == refused
    report = poller.unavailable_report()
    assert report[0]["block"] == "input 342-351"
    assert report[0]["retry_in_s"] == pytest.approx(REFUSED_BLOCK_RETRY_S, abs=5)
    # The refused block is remembered: the second poll does not ask it again.
    assert frames_first == len(poller.blocks)
    assert frames_second == len(poller.blocks) - 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "input 342-351" in warnings[0].getMessage()


async def test_a_refused_block_is_asked_again_after_the_retry_interval(sdm630: SimSite) -> None:
    """A meter whose firmware gained the block (here: the fault switched off) is read in full
    once the retry interval has passed, not before."""
    first, last = SDM630_ENERGY_WINDOW
    sdm630.set_fault("refuse", unit=1, first_address=first, last_address=last)
    settings = _settings(sdm630)
    mono = FakeClock(100.0)
    async with ModbusBus(settings.link, FAST) as bus:
        poller = MeterPoller(settings, bus, monotonic=mono)
        assert await poller.poll() is not None
        sdm630.clear_faults("refuse")
        mono.now += REFUSED_BLOCK_RETRY_S - 1
        early = await poller.poll()
        assert early is not None
        assert Quantity.ENERGY_TOTAL_WH not in early.values
        mono.now += 1
        late = await poller.poll()
    assert late is not None
    assert Quantity.ENERGY_TOTAL_WH in late.values
    assert poller.unavailable_blocks() == []


async def test_still_refused_on_retry_stays_unavailable_and_keeps_its_date(sdm630: SimSite) -> None:
    first, last = SDM630_ENERGY_WINDOW
    sdm630.set_fault("refuse", unit=1, first_address=first, last_address=last)
    settings = _settings(sdm630)
    mono = FakeClock(100.0)
    async with ModbusBus(settings.link, FAST) as bus:
        poller = MeterPoller(settings, bus, monotonic=mono)
        assert await poller.poll() is not None
        [before] = poller.unavailable_blocks()
        mono.now += REFUSED_BLOCK_RETRY_S
        frames = bus.frames
        assert await poller.poll() is not None
        assert bus.frames - frames == len(poller.blocks)  # it was asked, and refused again
    [after] = poller.unavailable_blocks()
    assert after.since == before.since
    assert after.retry_at == mono.now + REFUSED_BLOCK_RETRY_S


async def test_a_meter_refusing_every_block_is_a_failed_read(sdm630: SimSite) -> None:
    """Exception 2 everywhere is the wrong model or unit, not a partial map: no reading,
    counted as ``exception``, and every block is asked again on the next poll."""
    sdm630.set_fault("refuse", unit=1)  # the whole address space
    settings = _settings(sdm630)
    async with ModbusBus(settings.link, FAST) as bus:
        poller = MeterPoller(settings, bus)
        assert await poller.poll() is None
        frames = bus.frames
        assert await poller.poll() is None
        assert bus.frames - frames == len(poller.blocks)
    assert poller.health.failures["exception"] == 2
    assert poller.unavailable_blocks() == []


async def test_a_transient_exception_still_fails_the_whole_read(sdm630: SimSite) -> None:
    """Exception 4 (device failure) says nothing about the registers: the read fails as a
    timeout does and no block is marked unavailable."""
    sdm630.set_fault("exception", unit=1, exception_code=4)
    settings = _settings(sdm630)
    async with ModbusBus(settings.link, FAST) as bus:
        poller = MeterPoller(settings, bus)
        assert await poller.poll() is None
    assert poller.health.failures["exception"] == 1
    assert poller.unavailable_blocks() == []


async def test_chosen_quantities_are_all_that_is_read(sdm630: SimSite) -> None:
    """``quantities`` narrows the plan: the three a session needs sit in one SDM630 frame."""
    wanted = ["energy_import_wh", "power_w", "current_l1_a", "voltage_l1_v"]
    settings = _settings(sdm630, quantities=wanted)
    async with ModbusBus(settings.link, FAST) as bus:
        poller = MeterPoller(settings, bus)
        reading = await poller.poll()
        assert bus.frames == 1
    assert reading is not None
    assert {q.value for q in reading.values} == set(wanted)
    _assert_matches(reading.values, sdm630.site.values(1))


SITE_MAP = """
# A site's own map for an SDM630 fitted with an older firmware: the first parameter block only.
name = "SDM630 (site map)"
source = "Eastron SDM630 Modbus Protocol V1.8, input registers 30001-30076, kept by the site"
function = "input"
word_order = "big"
phases = 3

[serial]
baud = 9600
parity = "N"
stop_bits = 1

[[windows]]
first = 0
last = 0x4B

[[registers]]
quantity = "voltage_l1_v"
address = 0
type = "float32"
[[registers]]
quantity = "current_l1_a"
address = 6
type = "float32"
[[registers]]
quantity = "power_w"
address = 0x34
type = "float32"
[[registers]]
quantity = "energy_import_wh"
address = 0x48
type = "float32"
scale = 1000.0
"""


async def test_a_custom_map_file_reads_against_the_simulated_meter(
    sdm630: SimSite, tmp_path: Path
) -> None:
    path = tmp_path / "site-sdm630.toml"
    path.write_text(SITE_MAP)
    settings = _settings(sdm630, model="site-sdm630", map_file=str(path))
    async with ModbusBus(settings.link, FAST) as bus:
        poller = MeterPoller(settings, bus)
        reading = await poller.poll()
        assert bus.frames == 1
    assert reading is not None
    assert poller.register_map.name == "SDM630 (site map)"
    assert set(reading.values) == {
        Quantity.VOLTAGE_L1_V,
        Quantity.CURRENT_L1_A,
        Quantity.POWER_W,
        Quantity.ENERGY_IMPORT_WH,
    }
    _assert_matches(reading.values, sdm630.site.values(1))


@pytest.mark.parametrize("model", available_models())
async def test_each_catalogue_meter_reads_its_simulator_profile(model: str) -> None:
    """Every map (the new Selec MFM383A and Schneider EM6400NG among them) against the
    simulator serving that model: each quantity the map holds arrives with the value the
    simulated meter measures."""
    clock = ManualClock(1000.0)
    async with _site(MeterSpec(model, 7), clock) as sim:
        sim.plug("22kw")
        clock.advance(120)
        settings = _settings(sim, model=model, unit_id=7)
        async with ModbusBus(settings.link, FAST) as bus:
            reading = await MeterPoller(settings, bus).poll()
        truth = sim.site.values(7)
    assert reading is not None
    register_map = load_map(model)
    measured = {q for q in register_map.by_quantity if q in truth}
    assert set(reading.values) == measured
    _assert_matches(reading.values, truth, model)
    assert reading.values[Quantity.POWER_W] > 1000
    assert reading.values[Quantity.ENERGY_IMPORT_WH] > 0


def test_doctor_warns_for_a_refused_block_and_fails_when_sessions_need_it() -> None:
    """The pure check: a block of totals missing is a warning (the site charges and bills);
    a block holding the import register is a failure (no session can be billed)."""
    values = {Quantity.VOLTAGE_L1_V: 230.0, Quantity.POWER_W: 7000.0}
    totals = ("input 342-351", ("energy_total_wh", "energy_import_l1_wh"), 2)
    warn = check_meter(MeterFacts("m1", "sdm630", 1, "tcp", values=values, unavailable=(totals,)))
    assert warn.level is Level.WARN
    assert "block input 342-351 refused (exception 2): energy_total_wh" in warn.detail
    imports = ("input 72-75", ("energy_import_wh", "energy_export_wh"), 2)
    fail = check_meter(
        MeterFacts("m1", "sdm630", 1, "tcp", values=values, unavailable=(totals, imports))
    )
    assert fail.level is Level.FAIL
    assert "sessions need energy_import_wh" in fail.detail
    healthy = check_meter(MeterFacts("m1", "sdm630", 1, "tcp", values=values))
    assert healthy.level is Level.PASS
