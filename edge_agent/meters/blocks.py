"""Reading a meter block by block, where a block the meter refuses costs only its quantities.

A meter that answers one block of its map with Modbus exception 1, 2 or 3 (illegal function,
data address or data value: Modbus Application Protocol v1.1b3 §7) does not have those
registers — older firmware, a cheaper variant of the model, a site's map that asks too much —
and will say so again on every poll. That is a fact about the meter, not a failed read: the
blocks that answered still make a reading. Any other exception (4 device failure, 5/6
acknowledge/busy, 10/11 gateway) or a timeout is a failed read as before, because it says
nothing about the registers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from edge_agent.errors import BusError, BusFault
from edge_agent.meters.bus import ModbusBus
from protocols.meters import Block

#: The exception codes that mean "this device has no such registers" (MAP v1.1b3 §7).
REFUSAL_CODES = frozenset({1, 2, 3})
#: A refused block is asked again this often (seconds): rarely enough that a meter without
#: the block costs one extra frame per 10 minutes, often enough that a meter whose firmware
#: was upgraded (or a variant swapped in) is read in full again without a restart.
REFUSED_BLOCK_RETRY_S = 600.0


def is_refusal(exc: BusError) -> bool:
    """Whether ``exc`` is the meter saying it has no such registers (not a failed frame)."""
    return exc.kind is BusFault.EXCEPTION and exc.exception_code in REFUSAL_CODES


@dataclass(frozen=True, slots=True)
class RefusedBlock:
    """A block of the map the meter refused, and when it is asked again."""

    block: Block
    exception_code: int
    since: datetime
    #: Monotonic time of the next try.
    retry_at: float

    @property
    def label(self) -> str:
        return self.block.label

    def to_json(self, now_mono: float) -> dict[str, Any]:
        return {
            "block": self.block.label,
            "quantities": [q.value for q in self.block.quantities],
            "exception_code": self.exception_code,
            "since": self.since.isoformat(),
            "retry_in_s": round(max(0.0, self.retry_at - now_mono), 1),
        }


@dataclass
class BlockRead:
    """The blocks that answered (with their words) and the ones the meter refused."""

    answers: list[tuple[Block, Sequence[int]]] = field(default_factory=list)
    refused: list[tuple[Block, BusError]] = field(default_factory=list)


async def read_blocks(bus: ModbusBus, unit_id: int, blocks: Sequence[Block]) -> BlockRead:
    """Read ``blocks`` in order. A refusal (:func:`is_refusal`) is noted and the next block
    read; any other :class:`BusError` ends the read (raised)."""
    result = BlockRead()
    for block in blocks:
        try:
            words = await bus.read_registers(unit_id, block.function_code, block.start, block.count)
        except BusError as exc:
            if not is_refusal(exc):
                raise
            result.refused.append((block, exc))
            continue
        result.answers.append((block, words))
    return result
