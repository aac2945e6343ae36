"""Block planning: fewest frames, never over 125 registers, every register exactly once."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.meters import MAX_REGISTERS_PER_READ, load_map, plan_blocks
from protocols.meters.quantities import REQUIRED_QUANTITIES, Quantity
from protocols.meters.registermap import DataType, RegisterMap, parse_map

OTHER_QUANTITIES = sorted(set(Quantity) - REQUIRED_QUANTITIES)


@st.composite
def register_maps(draw: st.DrawFn) -> RegisterMap:
    """Random maps: non-overlapping registers of random types, random windows around them."""
    quantities = sorted(REQUIRED_QUANTITIES) + draw(
        st.lists(st.sampled_from(OTHER_QUANTITIES), unique=True, max_size=len(OTHER_QUANTITIES))
    )
    address = draw(st.integers(0, 1000))
    registers = []
    for quantity in quantities:
        data_type = draw(st.sampled_from(list(DataType)))
        address += draw(st.integers(0, 140))  # gaps, some wider than one frame
        registers.append((quantity, address, data_type))
        address += data_type.width
    # Windows: cut the address range at random register boundaries.
    windows = []
    if draw(st.booleans()):
        first = registers[0][1]
        for i, (_, reg_address, reg_type) in enumerate(registers):
            if i == len(registers) - 1 or draw(st.booleans()):
                windows.append({"first": first, "last": reg_address + reg_type.width - 1})
                if i + 1 < len(registers):
                    first = registers[i + 1][1]
    doc = {
        "name": "random",
        "source": "hypothesis",
        "function": draw(st.sampled_from(["holding", "input"])),
        "phases": 3,
        "serial": {"baud": 9600, "parity": "N", "stop_bits": 1},
        "registers": [
            {"quantity": q.value, "address": a, "type": t.value} for q, a, t in registers
        ],
        "windows": windows,
    }
    return parse_map("random", doc)


@settings(max_examples=300, deadline=None)
@given(register_maps(), st.integers(4, MAX_REGISTERS_PER_READ))
def test_blocks_respect_the_limit_and_cover_every_register_once(
    register_map: RegisterMap, max_registers: int
) -> None:
    blocks = plan_blocks(register_map, max_registers=max_registers)
    covered = [reg for block in blocks for reg in block.registers]
    assert sorted(r.address for r in covered) == sorted(r.address for r in register_map.registers)
    assert len(covered) == len(set(covered))
    for block in blocks:
        assert 1 <= block.count <= max_registers
        assert block.function_code == register_map.function.code
        window = register_map.window_of(block.start)
        assert window is not None
        assert block.end - 1 in window  # never reads across a window edge
        for reg in block.registers:
            assert block.start <= reg.address
            assert reg.end <= block.end
    # Fewest frames: no two neighbouring blocks could have been one.
    for a, b in itertools.pairwise(blocks):
        same_window = register_map.window_of(a.start) is register_map.window_of(b.start)
        assert not (same_window and b.end - a.start <= max_registers)


def test_sdm630_full_map_reads_in_three_frames() -> None:
    blocks = plan_blocks(load_map("sdm630"))
    assert [(b.start, b.count) for b in blocks] == [(0x0000, 76), (0x00C8, 26), (0x0156, 10)]


def test_planning_a_subset_reads_only_what_is_asked() -> None:
    blocks = plan_blocks(
        load_map("sdm630"), quantities=[Quantity.ENERGY_IMPORT_WH, Quantity.POWER_W]
    )
    assert [(b.start, b.count) for b in blocks] == [(0x0034, 0x4A - 0x34)]
