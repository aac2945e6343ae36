"""Block planning: read a meter's whole map in the fewest Modbus frames.

On RS-485 every frame costs a request, the meter's turnaround (often 20-50 ms) and the
3.5-character silences; a few extra registers inside one frame cost microseconds. So the
planner bridges gaps between quantities whenever the meter answers the gap (it lies inside
one readable :class:`~protocols.meters.registermap.Window`) and the frame stays within the
protocol's 125-register limit (Modbus Application Protocol v1.1b3, §6.3/6.4: quantity
1..125 for function codes 3 and 4).

Greedy extension is optimal here: registers are intervals on a line, and a frame may hold any
run of them that fits a window and the limit, so closing a frame as late as possible never
costs an extra frame later.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from protocols.meters.quantities import Quantity
from protocols.meters.registermap import Register, RegisterMap

MAX_REGISTERS_PER_READ = 125


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers from ``start`` with ``function_code``."""

    function_code: int
    start: int
    count: int
    registers: tuple[Register, ...]

    @property
    def end(self) -> int:
        return self.start + self.count

    @property
    def label(self) -> str:
        """How a technician names the block: its register table and zero-based address range
        (``"input 342-353"``), what `meter raw` and a Modbus tool would ask for."""
        table = "input" if self.function_code == 4 else "holding"
        return f"{table} {self.start}-{self.end - 1}"

    @property
    def quantities(self) -> tuple[Quantity, ...]:
        return tuple(r.quantity for r in self.registers)


def plan_blocks(
    register_map: RegisterMap,
    *,
    quantities: Collection[Quantity] | None = None,
    max_registers: int = MAX_REGISTERS_PER_READ,
) -> tuple[Block, ...]:
    """Plan reads covering ``quantities`` (default: all of the map) in the fewest frames.

    Every register lands in exactly one block, no block splits a register, crosses a window
    edge or exceeds ``max_registers``.
    """
    if not 1 <= max_registers <= MAX_REGISTERS_PER_READ:
        raise ValueError(f"max_registers must be 1..{MAX_REGISTERS_PER_READ}")
    wanted = (
        register_map.registers
        if quantities is None
        else tuple(register_map.by_quantity[q] for q in quantities if q in register_map.by_quantity)
    )
    code = register_map.function.code
    blocks: list[Block] = []
    current: list[Register] = []
    for reg in sorted(wanted, key=lambda r: r.address):
        if current:
            start = current[0].address
            same_window = register_map.window_of(start) is register_map.window_of(reg.address)
            if same_window and reg.end - start <= max_registers:
                current.append(reg)
                continue
            blocks.append(_block(code, current))
        current = [reg]
    if current:
        blocks.append(_block(code, current))
    return tuple(blocks)


def _block(code: int, registers: list[Register]) -> Block:
    start = registers[0].address
    return Block(code, start, registers[-1].end - start, tuple(registers))
