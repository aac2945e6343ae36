"""Credential devices (RFID reader, keypad), the relay file and the line's robustness."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient

from firmware_sim.clock import ManualClock
from firmware_sim.errors import ConfigError, ControlError
from firmware_sim.keys import EV_KEY, KEY_DOWN, KEY_LEFTSHIFT, decode_events, key_events
from firmware_sim.rfid import rdm6300_frame
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec
from tests.sim.conftest import control


def test_rdm6300_frame_layout_and_checksum() -> None:
    frame = rdm6300_frame("0a1b2c3d4e")
    assert frame[0] == 0x02
    assert frame[-1] == 0x03
    assert frame[1:11] == b"0A1B2C3D4E"
    assert frame[11:13] == f"{0x0A ^ 0x1B ^ 0x2C ^ 0x3D ^ 0x4E:02X}".encode()
    assert len(frame) == 14


@pytest.mark.parametrize("tag", ["", "0A1B2C3D4", "0A1B2C3D4E5F", "ZZ1B2C3D4E"])
def test_bad_tags_are_refused(tag: str) -> None:
    with pytest.raises(ConfigError, match="10 hex characters"):
        rdm6300_frame(tag)


def read_pty(path: str, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
    try:
        data = b""
        while len(data) < size:
            data += os.read(fd, size - len(data))
        return data
    finally:
        os.close(fd)


async def test_tap_writes_the_frame_to_the_reader_pty(sim: SimSite) -> None:
    reader = asyncio.create_task(asyncio.to_thread(read_pty, sim.endpoints()["rfid"], 14))
    await control(sim, "POST", "/tap", {"tag": "0A1B2C3D4E"})
    assert await asyncio.wait_for(reader, 5) == rdm6300_frame("0A1B2C3D4E")


def test_keys_are_key_down_up_pairs_with_shift_for_hash() -> None:
    events = key_events("1#")
    downs = [(code, value) for kind, code, value in events if kind == EV_KEY and value == KEY_DOWN]
    assert downs == [(2, 1), (KEY_LEFTSHIFT, 1), (4, 1)]  # KEY_1; Shift + KEY_3
    with pytest.raises(ConfigError, match="cannot type"):
        key_events("₹")


async def test_keys_arrive_as_input_events_on_the_keypad_pty(sim: SimSite) -> None:
    expected = key_events("123456#")
    size = len(expected) * 24
    reader = asyncio.create_task(asyncio.to_thread(read_pty, sim.endpoints()["keys"], size))
    await control(sim, "POST", "/keys", {"keys": "123456#"})
    assert decode_events(await asyncio.wait_for(reader, 5)) == expected


async def test_tap_without_a_reader_is_refused(tmp_path: Path) -> None:
    async with SimSite(SimConfig(), clock=ManualClock()) as bare:
        with pytest.raises(ControlError, match="no RFID reader") as refused:
            await control(bare, "POST", "/tap", {"tag": "0A1B2C3D4E"})
        assert refused.value.status == 409


async def test_relay_file_drives_the_relay_like_a_gpio_pin(tmp_path: Path) -> None:
    pin = tmp_path / "gpio17" / "value"
    pin.parent.mkdir()
    config = SimConfig(meters=(MeterSpec("sdm120", 1),), relay_file=pin)
    async with SimSite(config, clock=ManualClock()) as running:
        assert pin.read_text().strip() == "0"  # fail-safe: starts open
        pin.write_text("1\n")
        await relay_becomes(running, closed=True)
        pin.write_text("0\n")
        await relay_becomes(running, closed=False)


async def relay_becomes(sim: SimSite, *, closed: bool) -> None:
    """Wait (at most 5 s) for the simulator to notice the file, as the agent's test would."""
    async with asyncio.timeout(5):
        # The file is polled (like sysfs GPIO without edge interrupts): no event to await.
        while sim.site.relay_closed is not closed:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_garbage_on_the_line_is_dropped_and_the_bus_keeps_working(
    sim: SimSite, rtu_client: AsyncModbusSerialClient
) -> None:
    rng = random.Random(7)
    fd = os.open(sim.endpoints()["serial"], os.O_WRONLY | os.O_NOCTTY)
    try:
        for _ in range(5):
            os.write(fd, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))
            await asyncio.sleep(0.1)  # past the garbage silence
    finally:
        os.close(fd)
    await asyncio.sleep(0.2)
    response = await rtu_client.read_input_registers(0, count=2, device_id=1)
    assert not response.isError()
